//! The records the store hands out.

use std::time::Duration;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::StoreError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
}

/// How the edge treats a request before forwarding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preauth {
    /// Forward without signing the user in (the app does its own authentication).
    Passthrough,
}

impl Preauth {
    pub fn as_str(self) -> &'static str {
        match self {
            Preauth::Passthrough => "passthrough",
        }
    }

    pub fn parse(s: &str) -> Option<Preauth> {
        match s {
            "passthrough" => Some(Preauth::Passthrough),
            _ => None,
        }
    }
}

/// An app to publish, already validated by the caller.
#[derive(Clone, Debug)]
pub struct NewApp {
    pub name: String,
    pub external_url: String,
    pub external_host: String,
    pub internal_url: String,
    pub group: String,
    pub preauth: Preauth,
    pub preserve_host: bool,
    pub insecure_skip_backend_tls_verify: bool,
    pub backend_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    pub id: i64,
    pub name: String,
    pub external_url: String,
    pub external_host: String,
    pub internal_url: String,
    pub group: String,
    pub preauth: Preauth,
    pub preserve_host: bool,
    pub insecure_skip_backend_tls_verify: bool,
    pub backend_timeout: Duration,
}

pub(crate) fn app_from_row(r: &SqliteRow) -> Result<App, StoreError> {
    let preauth: String = r.get(6);
    let timeout_ms: i64 = r.get(9);
    Ok(App {
        id: r.get(0),
        name: r.get(1),
        external_url: r.get(2),
        external_host: r.get(3),
        internal_url: r.get(4),
        group: r.get(5),
        preauth: Preauth::parse(&preauth).ok_or_else(|| {
            StoreError::Conflict(format!(
                "stored app has an unknown preauth mode {preauth:?}"
            ))
        })?,
        preserve_host: r.get(7),
        insecure_skip_backend_tls_verify: r.get(8),
        backend_timeout: Duration::from_millis(timeout_ms.max(0) as u64),
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connector {
    pub id: String,
    pub group: String,
    pub hostname: String,
    pub version: String,
    /// Unix seconds.
    pub registered_at: i64,
    pub revoked_at: Option<i64>,
    /// Expiry (Unix seconds) of the newest certificate issued to it.
    pub cert_not_after: Option<i64>,
}

pub(crate) fn connector_from_row(r: &SqliteRow) -> Connector {
    Connector {
        id: r.get(0),
        group: r.get(1),
        hostname: r.get(2),
        version: r.get(3),
        registered_at: r.get(4),
        revoked_at: r.get(5),
        cert_not_after: r.get(6),
    }
}

/// A certificate issued to a connector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRecord {
    pub serial_hex: String,
    pub pem: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a registration token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenProblem {
    Unknown,
    Used,
    Expired,
}

impl std::fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenProblem::Unknown => {
                "the registration token is not known to this edge; create one with `postern admin connector token --group NAME`"
            }
            TokenProblem::Used => {
                "the registration token was already used; each token registers one connector, create a new one with `postern admin connector token --group NAME`"
            }
            TokenProblem::Expired => {
                "the registration token has expired; create a new one with `postern admin connector token --group NAME`"
            }
        })
    }
}
