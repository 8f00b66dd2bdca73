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

/// Starts an edge on `dir/data` with `extra` flags; it must refuse to start. Its standard error.
async fn refused_start(dir: &std::path::Path, extra: &[&std::ffi::OsStr]) -> String {
    let out = tokio::process::Command::new(common::BIN)
        .args(["edge", "--data"])
        .arg(dir.join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--connector-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(extra)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(common::READY_TIMEOUT, out)
        .await
        .expect("the edge neither started nor stopped")
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn the_edge_refuses_to_start_with_files_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("countries.mmdb");
    std::fs::write(&junk, b"not a location database").unwrap();
    let err = refused_start(dir.path(), &["--geoip-db".as_ref(), junk.as_os_str()]).await;
    assert!(
        err.contains("--geoip-db") && err.contains("countries.mmdb") && err.contains("mmdb"),
        "{err}"
    );
    // Refused before anything was written.
    assert!(!dir.path().join("data").exists());

    // So is a SIEM file in a directory that does not exist.
    let missing = dir.path().join("missing/siem.jsonl");
    let err = refused_start(dir.path(), &["--siem-file".as_ref(), missing.as_os_str()]).await;
    assert!(
        err.contains("--siem-file") && err.contains("missing/siem.jsonl"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists());
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_client() {
    let [v4, v6] = common::geoip::geolite2();
    let edge = common::Edge::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--geoip-db",
        v4.to_str().unwrap(),
        "--geoip-db",
        v6.to_str().unwrap(),
    ])
    .await;
    let app = common::backends::app().await;
    edge.group("g").await;
    edge.publish("open", "open.localhost", &app.url(), "g", &[])
        .await;
    edge.publish(
        "signed",
        "signed.localhost",
        &app.url(),
        "g",
        &["--preauth", "oidc"],
    )
    .await;
    let _connector = edge.connector("g").await;

    // The proxy (loopback, trusted) forwards a client in Bracknell, who forged an entry of its
    // own to the left: the app learns the chain with the proxy appended.
    let resp = edge
        .client("open.localhost")
        .get(edge.url("open.localhost", "/"))
        .header("x-forwarded-for", "6.6.6.6, 81.2.69.142")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        common::backends::seen(&seen, "x-forwarded-for"),
        ["6.6.6.6, 81.2.69.142, 127.0.0.1"]
    );

    // A failed sign-in (a bad bearer token) is the client's, located by the real database.
    let resp = edge
        .client("signed.localhost")
        .get(edge.url("signed.localhost", "/"))
        .header("x-forwarded-for", "81.2.69.142")
        .header("accept", "application/json")
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let page: serde_json::Value = serde_json::from_str(
        &edge
            .admin_ok(&["logs", "signins", "--json", "--failed"])
            .await,
    )
    .unwrap();
    let s = &page["signins"][0];
    assert_eq!(s["ipAddress"], "81.2.69.142", "{page}");
    assert_eq!(s["location"]["countryOrRegion"], "GB", "{s}");
    assert_eq!(s["location"]["city"], "Bracknell", "{s}");
}
