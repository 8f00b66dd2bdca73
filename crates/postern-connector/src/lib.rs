//! The connector: the inside of Postern.
//!
//! It registers once (a CSR signed by the edge in exchange for a one-time token), then keeps
//! several tunnels open to the edge, pulls its config over mutual TLS, and forwards each tunnel
//! stream to the app it names.
//!
//! **Invariant:** the connector only dials out: to the edge, and to the internal URLs of the apps
//! in its current config. It listens on no port.

mod apps;
mod backend;
mod backoff;
pub mod control;
pub mod register;
pub mod state;
mod tunnel;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::apps::Apps;
use crate::backoff::Backoff;
use crate::control::FetchError;

pub use register::{register, RegisterOptions};

/// How many tunnels a connector keeps open unless told otherwise: two, so one can fail or be
/// replaced without a gap.
pub const DEFAULT_TUNNELS: usize = 2;
/// How long shutdown waits for streams in flight.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RunOptions {
    pub state_dir: PathBuf,
    pub tunnels: usize,
    pub drain_timeout: Duration,
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Runs a registered connector until `shutdown` turns true (then drains and returns `Ok`) or the
/// edge refuses it for good (an error naming why).
pub async fn run(opts: RunOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    if opts.tunnels == 0 {
        bail!("--tunnels must be at least 1");
    }
    let identity = state::load(&opts.state_dir)?;
    let reg = identity.registration.clone();
    let client = control::client(&identity)?;
    let apps = Arc::new(ArcSwap::from_pointee(Apps::default()));
    let (applied_tx, applied_rx) = watch::channel(0u64);

    // The first config before the first tunnel: a stream must never arrive to an empty allow-list
    // just because the connector started.
    let mut backoff = Backoff::new();
    let mut rx = shutdown.clone();
    loop {
        match control::fetch(&client, &reg.edge_url, None).await {
            Ok(Some(config)) => {
                control::apply(&apps, &applied_tx, config);
                break;
            }
            Ok(None) => {}
            Err(FetchError::Refused(msg)) => bail!(msg),
            Err(FetchError::Transient(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot fetch the config yet")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = crate::stopped(&mut rx) => return Ok(()),
        }
    }
    tracing::info!(connector = %reg.connector_id, group = %reg.group, edge = %reg.edge_url, apps = apps.load().len(), "connector running");

    let url = url::Url::parse(&reg.edge_url).context("the registered edge URL is invalid")?;
    let host = url
        .host_str()
        .context("the registered edge URL has no host")?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let server_name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .context("the registered edge URL's host is not a valid TLS server name")?;
    let tls = postern_pki::connector_client_config(
        &identity.edge_ca_pem,
        &identity.cert_pem,
        &identity.key_pem,
        vec![postern_proto::tunnel::TUNNEL_ALPN.to_vec()],
    )?;
    let dialer = Arc::new(tunnel::Dialer {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        server_name,
        tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
    });
    let backends = Arc::new(backend::Backends::new(apps.clone(), applied_rx));

    let mut tasks = JoinSet::new();
    for slot in 0..opts.tunnels {
        tasks.spawn(tunnel::keep_open(
            slot,
            dialer.clone(),
            backends.clone(),
            shutdown.clone(),
            opts.drain_timeout,
        ));
    }
    let watcher = control::watch_config(
        client,
        reg.edge_url.clone(),
        apps,
        applied_tx,
        shutdown.clone(),
    );
    let refused = watcher.await;
    // The watcher returns on shutdown (Ok) or when the edge refuses this connector (Err); in both
    // cases the tunnels are done too.
    if refused.is_err() {
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
    refused
}
