//! Pulling the connector's config from the edge: a long-poll over mutual TLS that returns as soon
//! as the edge's config version moves past the one applied here.

use std::sync::Arc;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use postern_proto::api::ApiError;
use postern_proto::ConnectorConfig;
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::apps::Apps;
use crate::backoff::Backoff;
use crate::credentials::Credentials;

/// Normalises `--edge`: an `https` URL with a host, reduced to scheme, host and port.
pub fn edge_base(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).with_context(|| {
        format!("--edge {url:?} is not a URL; use e.g. https://edge.example.com:8444")
    })?;
    if parsed.scheme() != "https" {
        bail!("--edge {url:?} must use https: the connector only talks to the edge over TLS");
    }
    let host = parsed
        .host_str()
        .with_context(|| format!("--edge {url:?} has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    Ok(format!("https://{host}:{port}"))
}

/// Why a config fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The edge says this connector may not run (revoked, unknown): retrying will not help.
    Refused(String),
    /// Network or server trouble: try again later.
    Transient(anyhow::Error),
}

/// Fetches the config; with `after`, waits for a version newer than it (`Ok(None)`: none came).
pub async fn fetch(
    client: &reqwest::Client,
    edge: &str,
    after: Option<u64>,
) -> Result<Option<ConnectorConfig>, FetchError> {
    let mut url = format!("{edge}/v1/connector/config");
    if let Some(v) = after {
        url.push_str(&format!("?after={v}"));
    }
    let resp = client.get(&url).send().await.map_err(|e| {
        FetchError::Transient(anyhow::Error::new(e).context(format!("cannot reach {edge}")))
    })?;
    match resp.status() {
        StatusCode::OK => resp
            .json()
            .await
            .map(Some)
            .map_err(|e| FetchError::Transient(e.into())),
        StatusCode::NOT_MODIFIED => Ok(None),
        s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            let text = resp.text().await.unwrap_or_default();
            let msg = serde_json::from_str::<ApiError>(&text)
                .map(|e| e.error.message)
                .unwrap_or(text);
            Err(FetchError::Refused(format!(
                "the edge refused this connector ({s}): {msg}"
            )))
        }
        s => Err(FetchError::Transient(anyhow::anyhow!(
            "the edge answered {s}"
        ))),
    }
}

/// Keeps `apps` current until shutdown. Returns an error only when the edge refuses this
/// connector for good.
pub async fn watch_config(
    credentials: Arc<ArcSwap<Credentials>>,
    edge: String,
    apps: Arc<ArcSwap<Apps>>,
    applied: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new();
    loop {
        let current = apps.load().version;
        let after = (current > 0).then_some(current);
        // Loaded each time: a renewed certificate is used from the next poll on.
        let client = credentials.load().control.clone();
        let fetched = tokio::select! {
            r = fetch(&client, &edge, after) => r,
            _ = crate::stopped(&mut shutdown) => return Ok(()),
        };
        match fetched {
            Ok(Some(config)) => {
                backoff.reset();
                apply(&apps, &applied, config);
            }
            Ok(None) => backoff.reset(),
            Err(FetchError::Refused(msg)) => bail!(msg),
            Err(FetchError::Transient(e)) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "config fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = crate::stopped(&mut shutdown) => return Ok(()),
                }
            }
        }
    }
}

/// Applies a config document unless it is not newer than the one in force.
pub fn apply(apps: &ArcSwap<Apps>, applied: &watch::Sender<u64>, config: ConnectorConfig) -> bool {
    let current = apps.load();
    if config.version <= current.version {
        tracing::debug!(
            version = config.version,
            applied = current.version,
            "ignoring a config that is not newer"
        );
        return false;
    }
    let next = current.next(&config);
    tracing::info!(
        version = config.version,
        apps = config.apps.len(),
        "config applied"
    );
    apps.store(Arc::new(next));
    applied.send_replace(config.version);
    true
}

#[cfg(test)]
mod tests {
    use postern_proto::config::CONFIG_FORMAT;

    use super::*;

    fn config(version: u64, apps: usize) -> ConnectorConfig {
        ConnectorConfig {
            format: CONFIG_FORMAT,
            version,
            connector_id: "c".into(),
            group: "g".into(),
            apps: (0..apps)
                .map(|i| postern_proto::AppRoute {
                    id: postern_proto::AppId(i as u64 + 1),
                    name: format!("a{i}"),
                    external_host: format!("a{i}.example"),
                    internal_url: "http://10.0.0.1/".into(),
                    preserve_host: false,
                    insecure_skip_backend_tls_verify: false,
                    backend_timeout_ms: 1000,
                })
                .collect(),
            renew_after_secs: None,
        }
    }

    #[test]
    fn a_config_not_newer_than_the_applied_one_is_ignored() {
        let apps = ArcSwap::from_pointee(Apps::default());
        let (tx, rx) = watch::channel(0);
        assert!(apply(&apps, &tx, config(5, 2)));
        assert_eq!(
            (apps.load().version, apps.load().len(), *rx.borrow()),
            (5, 2, 5)
        );
        // Same version, older version: ignored, whatever they hold.
        assert!(!apply(&apps, &tx, config(5, 0)));
        assert!(!apply(&apps, &tx, config(4, 7)));
        assert_eq!(
            (apps.load().version, apps.load().len(), *rx.borrow()),
            (5, 2, 5)
        );
        assert!(apply(&apps, &tx, config(6, 1)));
        assert_eq!((apps.load().version, apps.load().len()), (6, 1));
    }
}
