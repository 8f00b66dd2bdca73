//! `postern connector register`: a key and CSR made here, signed by the edge in exchange for a
//! one-time registration token.
//!
//! **Invariant:** the private key never leaves this machine; only the CSR is sent. Nothing is
//! written to the state directory unless the edge accepted the registration.

use std::path::Path;

use anyhow::{bail, Context};
use postern_proto::api::{ApiError, RegisterRequest, RegisterResponse};

use crate::state::{self, Registration};

pub struct RegisterOptions<'a> {
    pub edge_url: &'a str,
    pub token: &'a str,
    pub state_dir: &'a Path,
    /// PEM of the CA the edge's certificate chains to.
    pub edge_ca_pem: &'a str,
    pub hostname: &'a str,
}

pub async fn register(opts: RegisterOptions<'_>) -> anyhow::Result<Registration> {
    register_with(opts, None).await
}

/// Registers with an administrator's access token from the built-in identity provider (see
/// [`crate::device`]) instead of a registration token, joining `group`.
pub async fn register_as_admin(
    opts: RegisterOptions<'_>,
    access_token: &str,
    group: &str,
) -> anyhow::Result<Registration> {
    register_with(opts, Some((access_token, group))).await
}

async fn register_with(
    opts: RegisterOptions<'_>,
    admin: Option<(&str, &str)>,
) -> anyhow::Result<Registration> {
    let existed = opts.state_dir.exists();
    let result = register_into(&opts, admin).await;
    if result.is_err() && !existed {
        // Leave nothing behind: the directory was made here only to check it is writable.
        let _ = std::fs::remove_dir(opts.state_dir);
    }
    result
}

async fn register_into(
    opts: &RegisterOptions<'_>,
    admin: Option<(&str, &str)>,
) -> anyhow::Result<Registration> {
    if state::is_registered(opts.state_dir) {
        bail!(
            "{} already holds a registered connector; use another --state directory, or delete it to register again",
            opts.state_dir.display()
        );
    }
    let edge = crate::control::edge_base(opts.edge_url)?;
    // The token is spent once the edge accepts it: make sure the state can be stored first.
    std::fs::create_dir_all(opts.state_dir)
        .with_context(|| format!("cannot create --state {}", opts.state_dir.display()))?;
    let probe = opts.state_dir.join(".write-test");
    postern_pki::write_private(&probe, b"")
        .with_context(|| format!("--state {} is not writable", opts.state_dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    let tls =
        postern_pki::client_config(opts.edge_ca_pem, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
            .context("the --ca-file does not hold a usable CA certificate")?;
    let generated = postern_pki::generate_key_and_csr()?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let resp = client
        .post(format!("{edge}/v1/connector/register"))
        .json(&RegisterRequest {
            token: opts.token.trim().to_owned(),
            access_token: admin.map(|(t, _)| t.to_owned()),
            group: admin.map(|(_, g)| g.to_owned()),
            csr_pem: generated.csr_pem,
            hostname: opts.hostname.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .send()
        .await
        .with_context(|| format!("cannot reach the edge at {edge}; check --edge and --ca-file"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<ApiError>(&text)
            .map(|e| e.error.message)
            .unwrap_or(text);
        bail!("the edge refused the registration ({status}): {reason}");
    }
    let reg: RegisterResponse = resp
        .json()
        .await
        .context("the edge's answer is not valid")?;

    let dir = opts.state_dir;
    postern_pki::write_private(&dir.join(state::KEY), generated.key_pem.as_bytes())?;
    postern_pki::write_public(&dir.join(state::CERT), reg.certificate_pem.as_bytes())?;
    postern_pki::write_public(&dir.join(state::EDGE_CA), opts.edge_ca_pem.as_bytes())?;
    postern_pki::write_public(
        &dir.join(state::CONNECTOR_CA),
        reg.connector_ca_pem.as_bytes(),
    )?;
    let registration = Registration {
        connector_id: reg.connector_id,
        group: reg.group,
        edge_url: edge,
    };
    // Written last: its presence means the registration is complete.
    postern_pki::write_public(
        &dir.join(state::REGISTRATION),
        serde_json::to_string_pretty(&registration)?.as_bytes(),
    )?;
    Ok(registration)
}
