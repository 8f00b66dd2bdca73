//! Certificate renewal: when the connector's certificate reaches the renewal age, a new key and
//! CSR are made here, the edge signs the CSR over mutual TLS with the current certificate, and
//! the new pair replaces the old one on disk and in use. Open tunnels are then replaced one by one
//! (the new one dialled before the old one drains), so no request fails.
//!
//! **Invariant:** like registration, renewal sends only a CSR; the new private key never leaves
//! this machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use postern_proto::api::{ApiError, RenewRequest, RenewResponse};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::apps::Apps;
use crate::backoff::Backoff;
use crate::credentials::Credentials;
use crate::state;

/// The renewal age unless `--renew-after` or the edge says otherwise (Entra application proxy
/// connectors renew at 180 days too).
pub const DEFAULT_RENEW_AFTER: Duration = Duration::from_secs(180 * 24 * 3600);
/// The longest the loop sleeps before looking again, so a changed clock or setting is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

pub struct Renewer {
    pub state_dir: PathBuf,
    pub edge: String,
    pub edge_ca_pem: String,
    pub credentials: Arc<ArcSwap<Credentials>>,
    /// Counts renewals; tunnels replace themselves when it moves.
    pub renewed: watch::Sender<u64>,
    /// The connector's own renewal age (`--renew-after`).
    pub renew_after: Duration,
    pub apps: Arc<ArcSwap<Apps>>,
    pub applied: watch::Receiver<u64>,
}

/// Why a renewal failed.
enum RenewError {
    /// The edge refused (revoked, unknown, bad CSR): retrying soon will not help.
    Refused(String),
    Transient(anyhow::Error),
}

impl Renewer {
    /// The renewal age in force: the shorter of the connector's and the edge's.
    fn age_limit(&self) -> Duration {
        match self.apps.load().renew_after {
            Some(edge) => edge.min(self.renew_after),
            None => self.renew_after,
        }
    }

    /// Renews whenever the certificate is due, until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new();
        loop {
            let due = self.credentials.load().issued_at + self.age_limit();
            let wait = due
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                    // A new config may carry a shorter renewal age.
                    _ = self.applied.changed() => {}
                    _ = crate::stopped(&mut shutdown) => return,
                }
                continue;
            }
            match self.renew_once().await {
                Ok(not_after) => {
                    backoff.reset();
                    tracing::info!(expires = %humantime::format_rfc3339_seconds(not_after), "certificate renewed");
                }
                Err(e) => {
                    let wait = match &e {
                        // Keep the current certificate; an admin must act (it may be revoked).
                        RenewError::Refused(msg) => {
                            tracing::error!("certificate renewal refused: {msg}");
                            MAX_SLEEP.min(self.age_limit().max(Duration::from_secs(60)))
                        }
                        RenewError::Transient(e) => {
                            let wait = backoff.next_delay();
                            tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "certificate renewal failed");
                            wait
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = crate::stopped(&mut shutdown) => return,
                    }
                }
            }
        }
    }

    async fn renew_once(&self) -> Result<SystemTime, RenewError> {
        let generated =
            postern_pki::generate_key_and_csr().map_err(|e| RenewError::Transient(e.into()))?;
        let client = self.credentials.load().control.clone();
        let resp = client
            .post(format!("{}/v1/connector/renew", self.edge))
            .json(&RenewRequest {
                csr_pem: generated.csr_pem,
            })
            .send()
            .await
            .map_err(|e| {
                RenewError::Transient(anyhow::Error::new(e).context("cannot reach the edge"))
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let msg = serde_json::from_str::<ApiError>(&text)
                .map(|e| e.error.message)
                .unwrap_or(text);
            return Err(match status {
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    RenewError::Refused(format!("{status}: {msg}"))
                }
                _ => RenewError::Transient(anyhow::anyhow!("the edge answered {status}: {msg}")),
            });
        }
        let renewed: RenewResponse = resp
            .json()
            .await
            .map_err(|e| RenewError::Transient(e.into()))?;
        // Built before anything is written: a certificate that does not fit the key is refused
        // here and the old pair stays in place.
        let next = Credentials::build(
            &self.edge_ca_pem,
            &renewed.certificate_pem,
            &generated.key_pem,
        )
        .map_err(|e| RenewError::Transient(e.context("the renewed certificate is not usable")))?;
        let not_after = next.not_after;
        self.store(&generated.key_pem, &renewed.certificate_pem)
            .map_err(RenewError::Transient)?;
        self.credentials.store(Arc::new(next));
        self.renewed.send_modify(|n| *n += 1);
        Ok(not_after)
    }

    /// Writes the new pair: each file is replaced atomically, the key first, so the state
    /// directory holds the new certificate only once its key is there.
    fn store(&self, key_pem: &str, cert_pem: &str) -> anyhow::Result<()> {
        let dir = &self.state_dir;
        postern_pki::write_private(&dir.join(state::KEY), key_pem.as_bytes())
            .with_context(|| format!("cannot write the renewed key to {}", dir.display()))?;
        postern_pki::write_public(&dir.join(state::CERT), cert_pem.as_bytes()).with_context(
            || format!("cannot write the renewed certificate to {}", dir.display()),
        )?;
        Ok(())
    }
}
