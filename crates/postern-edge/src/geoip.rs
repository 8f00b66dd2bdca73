//! Where a client address is: MaxMind-format databases (`--geoip-db FILE`, repeatable, e.g. one
//! for IPv4 and one for IPv6), read with the `maxminddb` crate into memory at start.
//!
//! Two record layouts are read: MaxMind's GeoIP2/GeoLite2 City (`country.iso_code`,
//! `city.names.en`, `subdivisions[0].names.en`, `location.latitude`) and the flat one of the
//! `ip-location-db` builds (`country_code`, `city`, `state1`, `latitude`). A database in which
//! neither is found is refused at start: a location policy that silently finds no country would
//! fail open.
//!
//! Networks come from ASN databases (`--asn-db FILE`: GeoLite2-ASN, or the `ip-location-db` ASN
//! builds), whose records name `autonomous_system_number`; one in which no such number is found
//! is refused at start the same way.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{PathElement, Reader, WithinOptions};
use postern_store::Location;
use serde::Deserialize;

/// Records examined at start to recognise a database's layout: the first networks that have
/// data. Real databases have a country on nearly every record.
const LAYOUT_PROBE_RECORDS: usize = 10_000;
/// The longest city or region name kept (longer ones are cut).
const NAME_BYTES: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `country.iso_code`, `city.names.en`, …
    MaxMind,
    /// `country_code`, `city`, `state1`, `latitude`, `longitude`.
    Flat,
}

struct Db {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    layout: Layout,
}

/// The location databases, searched in the order given, and the ASN databases.
pub struct GeoIp {
    dbs: Vec<Db>,
    asn_dbs: Vec<(PathBuf, Reader<Vec<u8>>)>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.dbs.iter().map(|d| (&d.path, d.layout)))
            .entries(self.asn_dbs.iter().map(|(p, _)| p))
            .finish()
    }
}

#[derive(Deserialize)]
struct FlatRecord<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    city: Option<&'a str>,
    #[serde(borrow, default)]
    state1: Option<&'a str>,
    #[serde(default)]
    latitude: Option<Degrees>,
    #[serde(default)]
    longitude: Option<Degrees>,
}

/// A coordinate stored as a double or, as the flat builds store them, a single-precision float.
#[derive(Clone, Copy)]
struct Degrees(f64);

impl<'de> Deserialize<'de> for Degrees {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Degrees, D::Error> {
        struct Number;
        impl serde::de::Visitor<'_> for Number {
            type Value = Degrees;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of degrees")
            }
            fn visit_f32<E>(self, v: f32) -> Result<Degrees, E> {
                Ok(Degrees(f64::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Degrees, E> {
                Ok(Degrees(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Degrees, E> {
                Ok(Degrees(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Degrees, E> {
                Ok(Degrees(v as f64))
            }
        }
        d.deserialize_any(Number)
    }
}

impl GeoIp {
    /// Opens every database, refusing one that cannot be read or whose layout is neither known
    /// one; the message names the file and the fix.
    pub fn open(paths: &[PathBuf]) -> Result<GeoIp, String> {
        let dbs = paths
            .iter()
            .map(|p| open_one(p))
            .collect::<Result<_, _>>()?;
        Ok(GeoIp {
            dbs,
            asn_dbs: Vec::new(),
        })
    }

    /// Adds ASN databases, refusing one that cannot be read or names no network.
    pub fn with_asn(mut self, paths: &[PathBuf]) -> Result<GeoIp, String> {
        for path in paths {
            let shown = path.display();
            plain_file("--asn-db", path)?;
            let reader = Reader::open_readfile(path).map_err(|e| {
                format!("--asn-db {shown}: cannot be read as a MaxMind database ({e}); give a .mmdb file")
            })?;
            if !names_networks(&reader) {
                return Err(format!(
                    "--asn-db {shown}: no autonomous_system_number found in its records; give a \
                     GeoLite2-ASN (or ip-location-db ASN) database"
                ));
            }
            tracing::info!(path = %shown, "ASN database loaded");
            self.asn_dbs.push((path.clone(), reader));
        }
        Ok(self)
    }

    /// The network (autonomous system number) of `ip`, from the first ASN database that
    /// knows it.
    pub fn asn(&self, ip: IpAddr) -> Option<u32> {
        let ip = postern_policy::unmapped(ip);
        self.asn_dbs.iter().find_map(|(_, reader)| {
            reader
                .lookup(ip)
                .ok()?
                .decode_path::<u32>(&[PathElement::Key("autonomous_system_number")])
                .ok()
                .flatten()
        })
    }

    /// What a sign-in records of where `ip` is: nothing without a database (`--geoip-db`), an
    /// empty place when no database knows the address.
    pub fn sign_in_location(&self, ip: IpAddr) -> Option<Location> {
        (!self.dbs.is_empty()).then(|| self.locate(ip).unwrap_or_default())
    }

    /// Where `ip` is, from the first database that knows it; `None` when none does.
    pub fn locate(&self, ip: IpAddr) -> Option<Location> {
        let ip = postern_policy::unmapped(ip);
        self.dbs.iter().find_map(|db| {
            // An IPv6 address in an IPv4-only database is an error, not a miss: skip it.
            let found = db.reader.lookup(ip).ok()?;
            match db.layout {
                Layout::MaxMind => found
                    .decode::<maxminddb::geoip2::City>()
                    .ok()
                    .flatten()
                    .map(|c| {
                        location(
                            c.country.iso_code,
                            c.city.names.english,
                            c.subdivisions.first().and_then(|s| s.names.english),
                            c.location.latitude.zip(c.location.longitude),
                        )
                    }),
                Layout::Flat => found.decode::<FlatRecord>().ok().flatten().map(|r| {
                    location(
                        r.country_code,
                        r.city,
                        r.state1,
                        r.latitude.zip(r.longitude).map(|(lat, lon)| (lat.0, lon.0)),
                    )
                }),
            }
        })
    }
}

/// Whether one of the database's first records names an autonomous system.
fn names_networks(reader: &Reader<Vec<u8>>) -> bool {
    let Ok(networks) = reader.networks(WithinOptions::default()) else {
        return false;
    };
    networks
        .filter_map(Result::ok)
        .filter(|r| r.has_data())
        .take(LAYOUT_PROBE_RECORDS)
        .any(|r| {
            matches!(
                r.decode_path::<u32>(&[PathElement::Key("autonomous_system_number")]),
                Ok(Some(_))
            )
        })
}

fn location(
    country: Option<&str>,
    city: Option<&str>,
    state: Option<&str>,
    coordinates: Option<(f64, f64)>,
) -> Location {
    let name = |s: Option<&str>| {
        s.map(|s| s.trim())
            .map(|s| &s[..s.floor_char_boundary(NAME_BYTES)])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Location {
        city: name(city),
        state: name(state),
        country_or_region: country
            .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_ascii_uppercase),
        coordinates: coordinates.filter(|(lat, lon)| {
            lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
        }),
    }
}

/// The largest database read (GeoIP2 City is about 100 MiB).
const MAX_DATABASE_BYTES: u64 = 1024 * 1024 * 1024;

/// Refuses a path that is not a regular file of at most [`MAX_DATABASE_BYTES`] (a device or a
/// pipe would be read forever).
fn plain_file(flag: &str, path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{flag} {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{flag} {shown}: not a regular file; give a .mmdb file"
        ));
    }
    if meta.len() > MAX_DATABASE_BYTES {
        return Err(format!(
            "{flag} {shown}: {} bytes, more than the {MAX_DATABASE_BYTES} read",
            meta.len()
        ));
    }
    Ok(())
}

fn open_one(path: &Path) -> Result<Db, String> {
    let shown = path.display();
    plain_file("--geoip-db", path)?;
    let reader = Reader::open_readfile(path).map_err(|e| {
        format!("--geoip-db {shown}: cannot be read as a MaxMind database ({e}); give a .mmdb file")
    })?;
    let layout = layout_of(&reader).ok_or_else(|| {
        format!(
            "--geoip-db {shown}: no country found in its records, in either the MaxMind \
             (country.iso_code) or the flat (country_code) layout; location policies would find \
             no country, so the edge does not start with it. Give a city or country database"
        )
    })?;
    tracing::info!(path = %shown, ?layout, database_type = %reader.metadata().database_type, "location database loaded");
    Ok(Db {
        path: path.to_owned(),
        reader,
        layout,
    })
}

/// The layout of the first of the database's first records that names a country.
fn layout_of(reader: &Reader<Vec<u8>>) -> Option<Layout> {
    let networks = reader.networks(WithinOptions::default()).ok()?;
    let maxmind = [PathElement::Key("country"), PathElement::Key("iso_code")];
    let flat = [PathElement::Key("country_code")];
    networks
        .filter_map(Result::ok)
        .filter(|r| r.has_data())
        .take(LAYOUT_PROBE_RECORDS)
        .find_map(|r| {
            let has = |path: &[PathElement<'_>]| {
                matches!(r.decode_path::<&str>(path), Ok(Some(c)) if !c.is_empty())
            };
            if has(&maxmind) {
                Some(Layout::MaxMind)
            } else if has(&flat) {
                Some(Layout::Flat)
            } else {
                None
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxminddb_writer::paths::IpAddrWithMask;
    use maxminddb_writer::Database;
    use serde::Serialize;
    use std::collections::BTreeMap;

    fn write(dir: &Path, name: &str, v6: bool, records: &[(&str, serde_json::Value)]) -> PathBuf {
        let mut db = Database::default();
        db.metadata.binary_format_major_version = 2;
        if v6 {
            db.metadata.ip_version = maxminddb_writer::metadata::IpVersion::V6;
        }
        for (net, value) in records {
            let data = db.insert_value(Value(value.clone())).unwrap();
            db.insert_node(net.parse::<IpAddrWithMask>().unwrap(), data);
        }
        let path = dir.join(name);
        db.write_to(std::fs::File::create(&path).unwrap()).unwrap();
        path
    }

    /// A JSON value as MMDB types: maps, strings, doubles.
    struct Value(serde_json::Value);
    impl Serialize for Value {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match &self.0 {
                serde_json::Value::Object(m) => {
                    let m: BTreeMap<&String, Value> =
                        m.iter().map(|(k, v)| (k, Value(v.clone()))).collect();
                    m.serialize(s)
                }
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|v| Value(v.clone()))
                    .collect::<Vec<_>>()
                    .serialize(s),
                serde_json::Value::String(t) => s.serialize_str(t),
                // Whole numbers as MMDB's uint32 (as ASNs are stored), others as doubles.
                serde_json::Value::Number(n) => match n.as_u64() {
                    Some(u) => s.serialize_u32(u as u32),
                    None => s.serialize_f64(n.as_f64().unwrap()),
                },
                serde_json::Value::Bool(b) => s.serialize_bool(*b),
                serde_json::Value::Null => s.serialize_unit(),
            }
        }
    }

    #[test]
    fn both_layouts_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let maxmind = write(
            dir.path(),
            "city.mmdb",
            false,
            &[(
                "81.2.69.0/24",
                serde_json::json!({
                    "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
                    "city": {"names": {"en": "London", "de": "London"}},
                    "subdivisions": [{"names": {"en": "England"}}],
                    "location": {"latitude": 51.5142, "longitude": -0.0931},
                }),
            )],
        );
        let flat = write(
            dir.path(),
            "flat-v6.mmdb",
            true,
            &[(
                "2001:200::/32",
                serde_json::json!({
                    "country_code": "jp", "city": "Tokyo", "state1": "Tokyo",
                    "latitude": 35.69, "longitude": 139.69, "timezone": "Asia/Tokyo",
                }),
            )],
        );
        let geo = GeoIp::open(&[maxmind, flat]).unwrap();
        assert_eq!(
            geo.locate("81.2.69.142".parse().unwrap()),
            Some(Location {
                city: Some("London".into()),
                state: Some("England".into()),
                country_or_region: Some("GB".into()),
                coordinates: Some((51.5142, -0.0931)),
            })
        );
        // An IPv4-mapped IPv6 address is looked up as IPv4.
        assert_eq!(
            geo.locate("::ffff:81.2.69.1".parse().unwrap())
                .and_then(|l| l.country_or_region),
            Some("GB".into())
        );
        assert_eq!(
            geo.locate("2001:200::1".parse().unwrap()),
            Some(Location {
                city: Some("Tokyo".into()),
                state: Some("Tokyo".into()),
                country_or_region: Some("JP".into()),
                coordinates: Some((35.69, 139.69)),
            })
        );
        assert_eq!(geo.locate("10.0.0.1".parse().unwrap()), None);
        assert_eq!(geo.locate("2a00::1".parse().unwrap()), None);
    }

    #[test]
    fn hostile_records_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = write(
            dir.path(),
            "odd.mmdb",
            false,
            &[
                (
                    "192.0.2.0/24",
                    serde_json::json!({
                        "country_code": "XYZ", "city": "x".repeat(10_000),
                        "latitude": 500.0, "longitude": 0.0,
                    }),
                ),
                (
                    "198.51.100.0/24",
                    serde_json::json!({"country_code": "FR", "city": "  "}),
                ),
            ],
        );
        let geo = GeoIp::open(&[db]).unwrap();
        let odd = geo.locate("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(odd.country_or_region, None);
        assert_eq!(odd.city.map(|c| c.len()), Some(NAME_BYTES));
        assert_eq!(odd.coordinates, None);
        let blank = geo.locate("198.51.100.1".parse().unwrap()).unwrap();
        assert_eq!(
            (blank.city, blank.country_or_region),
            (None, Some("FR".into()))
        );
    }

    #[test]
    fn a_database_without_countries_or_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let asn = write(
            dir.path(),
            "asn.mmdb",
            false,
            &[(
                "8.8.8.0/24",
                serde_json::json!({"autonomous_system_number": 15169}),
            )],
        );
        let err = GeoIp::open(std::slice::from_ref(&asn)).unwrap_err();
        assert!(
            err.contains("asn.mmdb") && err.contains("no country"),
            "{err}"
        );
        // It is an ASN database, though; a city database is not.
        let geo = GeoIp::open(&[]).unwrap().with_asn(&[asn]).unwrap();
        assert_eq!(geo.asn("8.8.8.8".parse().unwrap()), Some(15169));
        assert_eq!(geo.asn("::ffff:8.8.8.8".parse().unwrap()), Some(15169));
        assert_eq!(geo.asn("9.9.9.9".parse().unwrap()), None);
        let city = write(
            dir.path(),
            "city.mmdb",
            false,
            &[("8.8.8.0/24", serde_json::json!({"country_code": "US"}))],
        );
        let err = GeoIp::open(&[]).unwrap().with_asn(&[city]).unwrap_err();
        assert!(
            err.contains("--asn-db") && err.contains("city.mmdb"),
            "{err}"
        );
        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a database").unwrap();
        let err = GeoIp::open(&[junk]).unwrap_err();
        assert!(
            err.contains("junk.mmdb") && err.contains("cannot be read"),
            "{err}"
        );
        let err = GeoIp::open(&[dir.path().join("missing.mmdb")]).unwrap_err();
        assert!(err.contains("missing.mmdb"), "{err}");
        // A device is never read: it would not end.
        let err = GeoIp::open(&[PathBuf::from("/dev/zero")]).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
