//! The connector's allow-list: the apps of its current config, parsed once per config version.
//!
//! **Invariant:** the connector only ever dials an internal URL that is in this list; a stream for
//! any other app is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use postern_proto::{AppId, AppRoute, ConnectorConfig};

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
    pub scheme: Scheme,
    pub authority: Authority,
    /// The internal URL's path without a trailing slash ("" for the root).
    pub base_path: String,
    pub timeout: Duration,
}

impl Apps {
    pub fn from_config(config: &ConnectorConfig) -> Apps {
        let mut by_id = HashMap::new();
        for route in &config.apps {
            match AppEntry::new(route) {
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

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl AppEntry {
    fn new(route: &AppRoute) -> Option<AppEntry> {
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
        Some(AppEntry {
            route: route.clone(),
            scheme,
            authority: authority.parse().ok()?,
            base_path: url.path().trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(route.backend_timeout_ms.max(1)),
        })
    }

    /// The internal path for a request path: the internal URL's path, then the request's. `None`
    /// when the app has a base path and the request's path has a dot segment (`..`, `.`, or their
    /// percent-encoded forms) that an app server would resolve to somewhere outside it.
    pub fn path_for(&self, path_and_query: &str) -> Option<String> {
        if !self.base_path.is_empty() {
            let path = path_and_query.split('?').next().unwrap_or("");
            if path.split('/').any(is_dot_segment) {
                return None;
            }
        }
        Some(format!("{}{}", self.base_path, path_and_query))
    }
}

fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    // `%2f` and `\` inside a segment split it in some servers: `..%2f` is a dot segment there.
    decoded
        .split('\\')
        .flat_map(|s| s.split("%2f"))
        .flat_map(|s| s.split("%5c"))
        .any(|part| part == "." || part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(internal: &str) -> AppEntry {
        AppEntry::new(&AppRoute {
            id: AppId(1),
            name: "a".into(),
            external_host: "a.example".into(),
            internal_url: internal.into(),
            preserve_host: false,
            insecure_skip_backend_tls_verify: false,
            backend_timeout_ms: 1000,
        })
        .unwrap()
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
        // Without a base path the app sees the path as sent: nothing to escape from.
        check_path("http://b/", "/../x", Some("/../x"));
        assert_eq!(entry("https://b").authority.as_str(), "b");
        assert_eq!(entry("http://b:81").authority.as_str(), "b:81");
    }
}
