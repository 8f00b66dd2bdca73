//! Fuzz target for the connector's base-path check: a request path that passes must never reach
//! outside the app's internal base path, however the app's server resolves it.

use std::str::FromStr as _;

use postern_fuzz::{resolve_like_a_server, within};

/// Internal URLs with their base paths (without the trailing slash), and one without a base path.
const APPS: &[(&str, &str)] = &[
    ("http://backend:8080/app/", "/app"),
    ("http://backend:8080/app", "/app"),
    ("https://backend/a/b/", "/a/b"),
    ("http://backend/", ""),
];

/// What random inputs are spelled from: separators, dots and their encodings, and plain text,
/// so that random bytes make paths worth checking.
const PIECES: &[&str] = &[
    "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";", "%25", "%", "?", "a",
    "app", "b", "~", "%c0%ae", "//", "./", "../",
];

/// A corpus file that is a path is used as it is; any other input spells one from [`PIECES`].
fn path_from(input: &[u8]) -> String {
    match std::str::from_utf8(input) {
        Ok(path) if path.starts_with('/') => path.to_owned(),
        _ => std::iter::once("/")
            .chain(input.iter().map(|b| PIECES[usize::from(*b) % PIECES.len()]))
            .collect(),
    }
}

/// The check under test. A thin wrapper: the target needs only "the path the app receives, or a
/// refusal" for an internal URL and a request's path and query.
fn internal_path(internal_url: &str, path_and_query: &str) -> Option<String> {
    postern_connector::internal_path(internal_url, path_and_query)
}

#[test]
fn fuzz_base_path() {
    bolero::check!().for_each(|input: &[u8]| {
        let path = path_from(input);
        let path = path.as_str();
        // What reaches the connector is a request target hyper accepted in origin form.
        if http::uri::PathAndQuery::from_str(path).is_err() {
            return;
        }
        for (url, base) in APPS {
            let Some(sent) = internal_path(url, path) else {
                // Refusing is always safe, but never for a plain path.
                let plain = path
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .split('/')
                    .skip(1)
                    .all(|s| {
                        !s.is_empty()
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    });
                assert!(!plain, "{url} refused the plain path {path:?}");
                continue;
            };
            assert_eq!(sent, format!("{base}{path}"), "{url} {path:?}");
            let resolved = resolve_like_a_server(&sent);
            assert!(
                within(base, &resolved),
                "{url}: {path:?} was sent as {sent:?}, which a server resolves to {resolved:?}, \
                 outside {base:?}"
            );
        }
    });
}
