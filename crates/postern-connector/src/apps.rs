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

    /// The internal path for a request path: the internal URL's path, then the request's.
    pub fn path_for(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_path, path_and_query)
    }
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

    #[test]
    fn paths_join() {
        assert_eq!(entry("http://b:8080").path_for("/x?y=1"), "/x?y=1");
        assert_eq!(entry("http://b:8080/").path_for("/x"), "/x");
        assert_eq!(entry("http://b/app/").path_for("/x?q"), "/app/x?q");
        assert_eq!(entry("http://b/app").path_for("/"), "/app/");
        assert_eq!(entry("https://b").authority.as_str(), "b");
        assert_eq!(entry("http://b:81").authority.as_str(), "b:81");
    }
}
