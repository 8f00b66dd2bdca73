//! The config document the edge serves to a connector over mutual TLS.
//!
//! It lists exactly the apps the connector may forward to. The connector treats it as an
//! allow-list: a stream naming an app that is not in the newest document it applied is refused, so
//! even a compromised edge cannot make it reach an arbitrary internal address.

use serde::{Deserialize, Serialize};

/// Format version of [`ConnectorConfig`]; bumped on any incompatible change.
pub const CONFIG_FORMAT: u32 = 1;

/// A published app's ID (stable across renames).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(pub u64);

impl std::fmt::Display for AppId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a connector needs to know about one app it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoute {
    pub id: AppId,
    pub name: String,
    /// The app's public host, e.g. `whoami.example.com`.
    pub external_host: String,
    /// Where the connector sends the app's requests, e.g. `http://10.0.0.5:8080/`.
    pub internal_url: String,
    /// Send the external host as `Host` instead of the internal URL's host.
    pub preserve_host: bool,
    /// Accept any certificate from an `https` internal URL. Off unless the admin turns it on.
    pub insecure_skip_backend_tls_verify: bool,
    /// How long the app may take to send its response headers.
    pub backend_timeout_ms: u64,
}

/// The whole config of one connector at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    pub format: u32,
    /// Increases with every change on the edge; a document not newer than the applied one is
    /// ignored.
    pub version: u64,
    pub connector_id: String,
    pub group: String,
    pub apps: Vec<AppRoute>,
    /// The edge's renewal age for connector certificates, when it sets one shorter than the
    /// connector's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_after_secs: Option<u64>,
}

impl ConnectorConfig {
    pub fn app(&self, id: AppId) -> Option<&AppRoute> {
        self.apps.iter().find(|a| a.id == id)
    }
}
