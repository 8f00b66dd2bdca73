//! The connector's allow-list: the apps of its current config, parsed once per config version.
//!
//! **Invariant:** the connector only ever dials an internal URL that is in this list; a stream for
//! any other app is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use postern_proto::{AppId, AppRoute, ConnectorConfig};

use crate::backend::BackendBody;
use crate::pool::Connections;

#[derive(Default)]
pub struct Apps {
    pub version: u64,
    by_id: HashMap<AppId, Arc<AppEntry>>,
    /// The edge's certificate renewal age, when it sets one.
    pub renew_after: Option<Duration>,
}

/// One app, ready for the request path.
pub struct AppEntry {
    pub route: AppRoute,
    pub authority: Authority,
    /// `scheme://authority/`: what the backend connector dials.
    pub origin: Uri,
    /// The internal URL's path without a trailing slash ("" for the root).
    pub base_path: String,
    pub timeout: Duration,
    /// Keep-alive connections to the app, carried over to the next config while the app's
    /// origin and certificate check stay the same.
    pub connections: Arc<Connections<BackendBody>>,
}

impl Apps {
    pub fn from_config(config: &ConnectorConfig) -> Apps {
        Apps::default().next(config)
    }

    /// The apps of a newer config, keeping the connections of apps whose origin is unchanged.
    pub fn next(&self, config: &ConnectorConfig) -> Apps {
        let mut by_id = HashMap::new();
        for route in &config.apps {
            match AppEntry::new(route, self.get(route.id)) {
                Some(entry) => {
                    by_id.insert(route.id, Arc::new(entry));
                }
                None => {
                    tracing::warn!(app = %route.name, url = %route.internal_url, "skipping an app whose internal URL cannot be used")
                }
            }
        }
        Apps {
            version: config.version,
            by_id,
            renew_after: config.renew_after_secs.map(Duration::from_secs),
        }
    }

    pub fn get(&self, id: AppId) -> Option<&Arc<AppEntry>> {
        self.by_id.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<AppEntry>> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl AppEntry {
    fn new(route: &AppRoute, previous: Option<&Arc<AppEntry>>) -> Option<AppEntry> {
        let url = url::Url::parse(&route.internal_url).ok()?;
        let scheme = match url.scheme() {
            "http" => Scheme::HTTP,
            "https" => Scheme::HTTPS,
            _ => return None,
        };
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let authority: Authority = authority.parse().ok()?;
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let connections = previous
            .filter(|p| {
                p.origin == origin
                    && p.route.insecure_skip_backend_tls_verify
                        == route.insecure_skip_backend_tls_verify
            })
            .map_or_else(Default::default, |p| p.connections.clone());
        Some(AppEntry {
            route: route.clone(),
            authority,
            origin,
            base_path: url.path().trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(route.backend_timeout_ms.max(1)),
            connections,
        })
    }

    /// The internal path for a request path: the internal URL's path, then the request's. `None`
    /// when the app has a base path and [`check_path_within_base`] refuses the request's path.
    pub fn path_for(&self, path_and_query: &str) -> Option<String> {
        if !self.base_path.is_empty() {
            if let Err(why) = check_path_within_base(path_and_query) {
                tracing::debug!(app = %self.route.name, reason = why.as_str(), "path refused: it could leave the app's base path");
                return None;
            }
        }
        Some(format!("{}{}", self.base_path, path_and_query))
    }
}

/// How many times the base-path check undoes percent-encoding. One round is what every server
/// does; some decode again (a proxy in front of the app, or a framework that decodes a decoded
/// path). A path still changing after this many rounds is refused rather than guessed at.
pub const MAX_DECODE_ROUNDS: usize = 3;

/// Why [`check_path_within_base`] refused a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathRefusal {
    /// The path does not start with `/` (it would be glued onto the base path's last segment).
    NotAbsolute,
    /// Some reading of the path has a `.` or `..` segment.
    DotSegment,
    /// The path is percent-encoded more than [`MAX_DECODE_ROUNDS`] times over.
    Overencoded,
}

impl PathRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            PathRefusal::NotAbsolute => "not an absolute path",
            PathRefusal::DotSegment => "dot segment",
            PathRefusal::Overencoded => "encoded too many times",
        }
    }
}

/// The base-path check: `Ok` when a request path (with its query, as the edge sent it) stays
/// inside an app's base path however the app's server reads it, judged on [`normalise_path`].
/// A path with any `.` or `..` segment in that reading is refused, even one that would climb
/// back into the base: no legitimate client sends one (browsers resolve them first).
pub fn check_path_within_base(path_and_query: &str) -> Result<(), PathRefusal> {
    let path = path_and_query.split('?').next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathRefusal::NotAbsolute);
    }
    let normalised = normalise_path(path)?;
    if normalised.split('/').any(is_dot_segment) {
        return Err(PathRefusal::DotSegment);
    }
    Ok(())
}

/// A path as the most lenient app server could read it, with its dot segments left in place:
/// percent-encoding undone (again and again, up to [`MAX_DECODE_ROUNDS`]; also IIS's `%u002e`
/// and overlong UTF-8 such as `%c0%ae`), `\` read as `/`, each segment cut at its first `;`
/// (path parameters: Tomcat reads `/..;x/` as `/../`) and at a NUL, trailing spaces dropped, and
/// empty segments (repeated slashes) dropped. Pure, for the check and for fuzzing it.
pub fn normalise_path(path: &str) -> Result<String, PathRefusal> {
    let mut bytes = path.as_bytes().to_vec();
    let mut rounds = 0;
    loop {
        let next = decode_once(&bytes);
        if next == bytes {
            break;
        }
        rounds += 1;
        if rounds > MAX_DECODE_ROUNDS {
            return Err(PathRefusal::Overencoded);
        }
        bytes = next;
    }
    let mut out = String::with_capacity(bytes.len() + 1);
    for segment in bytes.split(|b| *b == b'/' || *b == b'\\') {
        let segment = segment
            .split(|b| *b == b';' || *b == 0)
            .next()
            .unwrap_or_default();
        let end = segment
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let segment = &segment[..end];
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(&String::from_utf8_lossy(segment));
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `.`, `..`, and the longer runs of dots that Windows servers trim down to them.
fn is_dot_segment(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b == b'.')
}

/// One round of percent-decoding: `%XY`, IIS's `%uXXXX`, and overlong UTF-8 forms of `.`, `/`
/// and `\` (which lenient decoders read as those characters). Anything else stays as it is.
fn decode_once(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let at = |k: usize| input.get(i + k).copied().and_then(hex);
            if let (Some(h), Some(l)) = (at(1), at(2)) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            if matches!(input.get(i + 1), Some(b'u' | b'U')) {
                if let (Some(a), Some(b), Some(c), Some(d)) = (at(2), at(3), at(4), at(5)) {
                    let code = ((a * 16 + b) * 16 + c) * 16 + d;
                    if let Some(ch) = char::from_u32(code) {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += 6;
                        continue;
                    }
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    undo_overlong(out)
}

/// Overlong UTF-8 encodings of `.`, `/` and `\`, read as those characters.
fn undo_overlong(bytes: Vec<u8>) -> Vec<u8> {
    const FORMS: [(&[u8], u8); 6] = [
        (&[0xc0, 0xae], b'.'),
        (&[0xe0, 0x80, 0xae], b'.'),
        (&[0xc0, 0xaf], b'/'),
        (&[0xe0, 0x80, 0xaf], b'/'),
        (&[0xc1, 0x9c], b'\\'),
        (&[0xe0, 0x81, 0x9c], b'\\'),
    ];
    if !bytes.iter().any(|b| matches!(b, 0xc0 | 0xc1 | 0xe0)) {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    'outer: while i < bytes.len() {
        for (form, plain) in FORMS {
            if bytes[i..].starts_with(form) {
                out.push(plain);
                i += form.len();
                continue 'outer;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(internal: &str) -> AppEntry {
        AppEntry::new(
            &AppRoute {
                id: AppId(1),
                name: "a".into(),
                external_host: "a.example".into(),
                internal_url: internal.into(),
                preserve_host: false,
                insecure_skip_backend_tls_verify: false,
                backend_timeout_ms: 1000,
            },
            None,
        )
        .unwrap()
    }

    fn config(apps: &[(u64, &str, bool)]) -> ConnectorConfig {
        ConnectorConfig {
            format: 1,
            version: 1,
            connector_id: "c".into(),
            group: "g".into(),
            apps: apps
                .iter()
                .map(|&(id, internal, insecure)| AppRoute {
                    id: AppId(id),
                    name: format!("app{id}"),
                    external_host: format!("app{id}.example"),
                    internal_url: internal.into(),
                    preserve_host: false,
                    insecure_skip_backend_tls_verify: insecure,
                    backend_timeout_ms: 1000,
                })
                .collect(),
            renew_after_secs: None,
        }
    }

    #[test]
    fn a_new_config_keeps_connections_only_to_the_same_origin() {
        let before = Apps::from_config(&config(&[
            (1, "http://10.0.0.1:8080/a", false),
            (2, "https://10.0.0.2/", false),
            (3, "https://10.0.0.3/", false),
            (4, "http://10.0.0.4/", false),
        ]));
        let after = before.next(&config(&[
            // Another base path, same origin: the same connections serve it.
            (1, "http://10.0.0.1:8080/b", false),
            // Another port.
            (2, "https://10.0.0.2:8443/", false),
            // The certificate check turned off: connections verified under the old rule go.
            (3, "https://10.0.0.3/", true),
            // A new app.
            (5, "http://10.0.0.4/", false),
        ]));
        let same = |id| {
            let (Some(a), Some(b)) = (before.get(AppId(id)), after.get(AppId(id))) else {
                return false;
            };
            Arc::ptr_eq(&a.connections, &b.connections)
        };
        assert!(same(1));
        assert!(!same(2));
        assert!(!same(3));
        assert!(after.get(AppId(4)).is_none());
        assert_eq!(after.get(AppId(5)).unwrap().connections.len(), 0);
    }

    fn check_path(internal: &str, path: &str, expected: Option<&str>) {
        assert_eq!(
            entry(internal).path_for(path).as_deref(),
            expected,
            "{internal} {path}"
        );
    }

    #[test]
    fn paths_join() {
        check_path("http://b:8080", "/x?y=1", Some("/x?y=1"));
        check_path("http://b:8080/", "/x", Some("/x"));
        check_path("http://b/app/", "/x?q", Some("/app/x?q"));
        check_path("http://b/app", "/", Some("/app/"));
        check_path(
            "http://b/app/",
            "/a..b/c.d?x=../y",
            Some("/app/a..b/c.d?x=../y"),
        );
        // Dot segments cannot leave a base path.
        check_path("http://b/app/", "/../secret", None);
        check_path("http://b/app/", "/x/./y", None);
        check_path("http://b/app/", "/%2e%2e/secret", None);
        check_path("http://b/app/", "/%2E./secret", None);
        check_path("http://b/app/", "/..%2fsecret", None);
        check_path("http://b/app/", "/..\\secret", None);
        check_path("http://b/app/", "/..;/secret", None);
        // Without a base path the app sees the path as sent: nothing to escape from.
        check_path("http://b/", "/../x", Some("/../x"));
        assert_eq!(entry("https://b").authority.as_str(), "b");
        assert_eq!(entry("http://b:81").authority.as_str(), "b:81");
    }

    /// The base-path check, case by case: every way a server may read a path as climbing out.
    #[test]
    fn the_base_path_check_reads_paths_as_leniently_as_any_server() {
        use PathRefusal::*;
        for (path, expected) in [
            // Ordinary paths pass, whatever their query says.
            ("/", Ok(())),
            ("/x", Ok(())),
            ("/a/b/c.html?q=1", Ok(())),
            ("/a..b/c.d?x=../y", Ok(())),
            ("/.well-known/x", Ok(())),
            ("/..well/x", Ok(())),
            ("/x/...y", Ok(())),
            ("/caf%C3%A9", Ok(())),
            ("/100%25", Ok(())),
            ("/a%2Fb", Ok(())),
            ("/a;jsessionid=1/b", Ok(())),
            ("//double//slashes///", Ok(())),
            ("/x?../../etc/passwd", Ok(())),
            ("/%zz/%2", Ok(())),
            // Plain dot segments.
            ("/..", Err(DotSegment)),
            ("/../secret", Err(DotSegment)),
            ("/x/./y", Err(DotSegment)),
            ("/x/.", Err(DotSegment)),
            ("/x/..?q", Err(DotSegment)),
            // Percent-encoded, in any case, whole or in part.
            ("/%2e%2e/secret", Err(DotSegment)),
            ("/%2E%2E/secret", Err(DotSegment)),
            ("/%2e./secret", Err(DotSegment)),
            ("/.%2e/secret", Err(DotSegment)),
            ("/%2e/x", Err(DotSegment)),
            // Encoded separators split a segment in some servers.
            ("/..%2fsecret", Err(DotSegment)),
            ("/..%2Fsecret", Err(DotSegment)),
            ("/x%2f..%2fsecret", Err(DotSegment)),
            ("/..%5csecret", Err(DotSegment)),
            ("/..%5Csecret", Err(DotSegment)),
            ("/%2e%2e%5csecret", Err(DotSegment)),
            // Backslashes are separators on Windows servers.
            ("/..\\secret", Err(DotSegment)),
            ("/x\\..\\y", Err(DotSegment)),
            ("\\..", Err(NotAbsolute)),
            // Path parameters: Tomcat and others read `..;x` as `..`.
            ("/..;/secret", Err(DotSegment)),
            ("/..;jsessionid=x/secret", Err(DotSegment)),
            ("/.;/x", Err(DotSegment)),
            ("/%2e%2e;/secret", Err(DotSegment)),
            ("/..%3b/secret", Err(DotSegment)),
            // Repeated slashes collapse in some servers; the dot segment is still one.
            ("//..//secret", Err(DotSegment)),
            ("/x//..", Err(DotSegment)),
            // Double (and triple) encoding, for a proxy or framework that decodes again.
            ("/%252e%252e/secret", Err(DotSegment)),
            ("/..%252fsecret", Err(DotSegment)),
            ("/%25252e%25252e/secret", Err(DotSegment)),
            ("/%2525252e/x", Err(Overencoded)),
            // IIS's %u encoding and overlong UTF-8 forms of '.', '/' and '\\'.
            ("/%u002e%u002e/secret", Err(DotSegment)),
            ("/%U002E./secret", Err(DotSegment)),
            ("/%c0%ae%c0%ae/secret", Err(DotSegment)),
            ("/%e0%80%ae%e0%80%ae/secret", Err(DotSegment)),
            ("/..%c0%afsecret", Err(DotSegment)),
            ("/..%c1%9csecret", Err(DotSegment)),
            // NUL truncation and trailing spaces or dots (Windows trims them).
            ("/..%00/secret", Err(DotSegment)),
            ("/..%00.jpg", Err(DotSegment)),
            ("/..%20/secret", Err(DotSegment)),
            ("/.. /secret", Err(DotSegment)),
            ("/.../secret", Err(DotSegment)),
            ("/..../secret", Err(DotSegment)),
            // An encoded '?' is part of the path, not the start of the query.
            ("/x%3f/../y", Err(DotSegment)),
            // A path that does not start at the root would be glued onto the base.
            ("", Err(NotAbsolute)),
            ("*", Err(NotAbsolute)),
            ("..", Err(NotAbsolute)),
            ("x/y", Err(NotAbsolute)),
            ("?q", Err(NotAbsolute)),
        ] {
            assert_eq!(check_path_within_base(path), expected, "{path:?}");
        }
    }

    #[test]
    fn normalising_shows_what_a_lenient_server_reads() {
        for (path, expected) in [
            ("/", Ok("/")),
            ("//a///b/", Ok("/a/b")),
            ("/a%2fb", Ok("/a/b")),
            ("/a\\b", Ok("/a/b")),
            ("/a;p=1/b;q", Ok("/a/b")),
            ("/%252e%252e", Ok("/..")),
            ("/%u0041", Ok("/A")),
            ("/x%00y/z", Ok("/x/z")),
            ("/%2525252e", Err(PathRefusal::Overencoded)),
        ] {
            assert_eq!(
                normalise_path(path).as_deref(),
                expected.as_ref().copied(),
                "{path:?}"
            );
        }
    }

    /// Random paths over an alphabet of the tricky bytes: the check never panics, and whatever it
    /// lets through reads without a dot segment and, resolved as RFC 3986 does under a base path,
    /// stays under it.
    #[test]
    fn paths_that_pass_stay_inside_the_base() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "/", "\\", ".", "..", "%2e", "%2E", "%2f", "%5c", "%25", ";", "a", "%00", " ", "?",
            "%u002e", "%c0%ae", "%3b", "x=1",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xba5e);
        for _ in 0..20_000 {
            let mut path = String::from("/");
            for _ in 0..rng.gen_range(0..10) {
                path.push_str(pieces[rng.gen_range(0..pieces.len())]);
            }
            if check_path_within_base(&path).is_err() {
                continue;
            }
            let normalised = normalise_path(path.split('?').next().unwrap()).unwrap();
            let resolved = remove_dot_segments(&format!("/base{normalised}"));
            assert!(
                resolved == "/base" || resolved.starts_with("/base/"),
                "{path:?} passed the check but resolves to {resolved:?}"
            );
        }
    }

    /// RFC 3986 §5.2.4, for the property above.
    fn remove_dot_segments(path: &str) -> String {
        let mut out: Vec<&str> = Vec::new();
        for segment in path.split('/').skip(1) {
            match segment {
                "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s),
            }
        }
        format!("/{}", out.join("/"))
    }
}
