//! Location databases: the real GeoLite2 city database places known addresses, in both of its
//! files; the edge refuses at start a database in which no country is found.

mod common;

use postern_edge::geoip::GeoIp;

#[test]
fn the_geolite2_database_places_known_addresses() {
    let geo = GeoIp::open(&common::geoip::geolite2()).unwrap();
    let at = |ip: &str| geo.locate(ip.parse().unwrap()).unwrap();
    // MaxMind's own test address, in Bracknell.
    let uk = at("81.2.69.142");
    assert_eq!(uk.country_or_region.as_deref(), Some("GB"));
    assert_eq!(uk.city.as_deref(), Some("Bracknell"));
    assert_eq!(uk.state.as_deref(), Some("England"));
    let (lat, lon) = uk.coordinates.unwrap();
    assert!(
        (51.0..52.0).contains(&lat) && (-1.0..0.0).contains(&lon),
        "{lat} {lon}"
    );
    // IPv6 from the second file; IPv4-mapped IPv6 from the first.
    assert_eq!(at("2001:200::1").country_or_region.as_deref(), Some("JP"));
    assert_eq!(
        at("::ffff:81.2.69.142").country_or_region.as_deref(),
        Some("GB")
    );
    // Private and documentation ranges are nowhere.
    for nowhere in ["10.1.2.3", "127.0.0.1", "192.0.2.1", "fd00::1"] {
        assert_eq!(geo.locate(nowhere.parse().unwrap()), None, "{nowhere}");
    }
}

#[tokio::test]
async fn the_edge_refuses_to_start_with_a_database_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("countries.mmdb");
    std::fs::write(&junk, b"not a location database").unwrap();
    let out = tokio::process::Command::new(common::BIN)
        .args(["edge", "--data"])
        .arg(dir.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--connector-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0", "--geoip-db"])
        .arg(&junk)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(common::READY_TIMEOUT, out)
        .await
        .expect("the edge neither started nor stopped")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--geoip-db") && err.contains("countries.mmdb") && err.contains("mmdb"),
        "{err}"
    );
}
