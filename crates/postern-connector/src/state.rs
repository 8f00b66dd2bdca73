//! The connector's state directory: its key (mode 0600), its certificate, the edge CA it trusts
//! and what registration told it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const KEY: &str = "connector-key.pem";
pub const CERT: &str = "connector.pem";
pub const EDGE_CA: &str = "edge-ca.pem";
pub const CONNECTOR_CA: &str = "connector-ca.pem";
pub const REGISTRATION: &str = "registration.json";

/// What the connector remembers about its registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub connector_id: String,
    pub group: String,
    /// The edge's connector listener, e.g. `https://edge.example.com:8444`.
    pub edge_url: String,
}

/// Everything a registered connector needs to run.
pub struct Identity {
    pub registration: Registration,
    pub key_pem: String,
    pub cert_pem: String,
    pub edge_ca_pem: String,
}

pub fn is_registered(dir: &Path) -> bool {
    dir.join(REGISTRATION).exists()
}

pub fn load(dir: &Path) -> anyhow::Result<Identity> {
    let read = |name: &str| -> anyhow::Result<String> {
        let path: PathBuf = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}; register this connector first with `postern connector register --state {}`",
                path.display(),
                dir.display()
            )
        })
    };
    let registration: Registration = serde_json::from_str(&read(REGISTRATION)?)
        .with_context(|| format!("{} is corrupt", dir.join(REGISTRATION).display()))?;
    Ok(Identity {
        registration,
        key_pem: read(KEY)?,
        cert_pem: read(CERT)?,
        edge_ca_pem: read(EDGE_CA)?,
    })
}
