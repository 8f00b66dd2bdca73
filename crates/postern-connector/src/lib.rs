//! The connector: the inside of Postern.
//!
//! It registers once (a CSR signed by the edge in exchange for a one-time token), then keeps
//! several tunnels open to the edge, pulls its config over mutual TLS, and forwards each tunnel
//! stream to the app it names.
//!
//! **Invariant:** the connector only dials out: to the edge, and to the internal URLs of the apps
//! in its current config that its own destination policy allows (`destination`). It listens on
//! no port.

mod apps;
mod backend;
mod backoff;
pub mod cli;
pub mod control;
mod credentials;
pub mod destination;
pub mod device;
mod pool;
mod probe;
pub mod register;
mod renew;
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
use crate::credentials::Credentials;

pub use apps::{check_path_within_base, normalise_path, PathRefusal, MAX_DECODE_ROUNDS};
pub use credentials::hostname;
pub use destination::{Policy as DestinationPolicy, Rule as DestinationRule};
pub use register::{register, register_as_admin, RegisterOptions};
pub use renew::DEFAULT_RENEW_AFTER;

/// How many tunnels a connector keeps open unless told otherwise: two, so one can fail or be
/// replaced without a gap.
pub const DEFAULT_TUNNELS: usize = 2;
/// How long shutdown waits for streams in flight.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RunOptions {
    pub state_dir: PathBuf,
    pub tunnels: usize,
    pub drain_timeout: Duration,
    /// Renew the certificate at this age (the edge may ask for sooner).
    pub renew_after: Duration,
    /// Where the connector may connect for apps (`--allow-destination`).
    pub destinations: DestinationPolicy,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` listens on nothing.
    pub metrics_listen: Option<std::net::SocketAddr>,
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
    let credentials = Arc::new(ArcSwap::from_pointee(
        Credentials::build(&identity.edge_ca_pem, &identity.cert_pem, &identity.key_pem)
            .with_context(|| {
                format!(
                    "the certificate in {} is not usable",
                    opts.state_dir.display()
                )
            })?,
    ));
    let client = credentials.load().control.clone();
    let apps = Arc::new(ArcSwap::from_pointee(Apps::default()));
    let (applied_tx, applied_rx) = watch::channel(0u64);
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Some(addr) = opts.metrics_listen {
        let handle = postern_obs::metrics::install()?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (metrics listener, --metrics-listen)")
        })?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
        postern_obs::listener::spawn(
            listener,
            handle,
            Arc::new(probe::ConnectorProbe {
                connector_id: reg.connector_id.clone(),
                applied: applied_rx.clone(),
                live: live.clone(),
                credentials: credentials.clone(),
            }),
        );
    }

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
    tracing::info!(connector = %reg.connector_id, group = %reg.group, edge = %reg.edge_url, apps = apps.load().len(), destinations = %opts.destinations.describe(), "connector running");

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
    let dialer = Arc::new(tunnel::Dialer {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        server_name,
        credentials: credentials.clone(),
        live,
    });
    let backends = Arc::new(backend::Backends::new(
        apps.clone(),
        applied_rx.clone(),
        opts.destinations.clone(),
    ));
    let (renewed_tx, renewed_rx) = watch::channel(0u64);
    let renewer = renew::Renewer {
        state_dir: opts.state_dir.clone(),
        edge: reg.edge_url.clone(),
        edge_ca_pem: identity.edge_ca_pem.clone(),
        credentials: credentials.clone(),
        renewed: renewed_tx,
        renew_after: opts.renew_after,
        apps: apps.clone(),
        applied: applied_rx,
    };

    let mut tasks = JoinSet::new();
    for slot in 0..opts.tunnels {
        tasks.spawn(tunnel::keep_open(
            slot,
            dialer.clone(),
            backends.clone(),
            shutdown.clone(),
            renewed_rx.clone(),
            opts.drain_timeout,
        ));
    }
    tasks.spawn(renewer.run(shutdown.clone()));
    tasks.spawn(backend::Backends::sweep(
        Arc::downgrade(&backends),
        shutdown.clone(),
    ));
    let watcher = control::watch_config(
        credentials,
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

/// The path the connector would send to an app whose internal URL is `internal_url`, for a
/// stream's `path_and_query`; `None` when the allow-list refuses the path (a dot segment under a
/// base path) or cannot use the URL. It runs the request path's own check (`apps`), through the
/// allow-list built from a one-app config, so the fuzz targets in `postern-fuzz` test exactly
/// what a stream meets.
pub fn internal_path(internal_url: &str, path_and_query: &str) -> Option<String> {
    let id = postern_proto::AppId(1);
    let config = postern_proto::ConnectorConfig {
        format: postern_proto::config::CONFIG_FORMAT,
        version: 1,
        connector_id: String::new(),
        group: String::new(),
        apps: vec![postern_proto::AppRoute {
            id,
            name: "app".to_owned(),
            external_host: "app.invalid".to_owned(),
            internal_url: internal_url.to_owned(),
            preserve_host: false,
            insecure_skip_backend_tls_verify: false,
            backend_timeout_ms: 1,
        }],
        renew_after_secs: None,
    };
    Apps::from_config(&config).get(id)?.path_for(path_and_query)
}
