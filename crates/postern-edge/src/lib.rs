//! The edge: the public side of Postern.
//!
//! It terminates users' TLS, routes by host to a published app, and streams each request down a
//! tunnel that a connector of the app's group dialled in. It also runs the connector listener
//! (tunnels and the control plane) and the admin API.
//!
//! **Invariant:** the edge never dials a connector or an app; every byte to an internal app goes
//! down a tunnel the connector opened.

pub mod admin_api;
pub mod api;
pub mod apps;
mod audit;
mod body;
pub mod config;
mod control;
pub mod data;
mod forward;
pub mod geoip;
mod guard;
pub mod hygiene;
mod idp;
mod log_budget;
mod observe;
pub mod preauth;
mod redirect;
pub mod rescue;
pub mod risk;
mod serve;
pub mod siem;
pub mod signins;
mod state;
mod tunnels;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use postern_pki::{Ca, ServerCerts};
use postern_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub use config::{EdgeConfig, Secret};

pub use data::files;

/// A started edge.
pub struct RunningEdge {
    pub public_addr: SocketAddr,
    pub connector_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where `/metrics` is served, with `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// The plain-HTTP redirect listener, with `--http-listen`.
    pub http_addr: Option<SocketAddr>,
    /// The server CA certificate file.
    pub ca_path: PathBuf,
    /// Where the admin token was written (`None` when it came from the environment).
    pub admin_token_path: Option<PathBuf>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    accept_loops: JoinSet<()>,
    drains: Vec<serve::Drain>,
    /// Keeps other edges out of the data directory until this one is dropped.
    _lock: data::DataLock,
}

use state::Shared;

impl RunningEdge {
    pub fn admin_token(&self) -> &Secret {
        &self.shared.admin_token
    }

    /// The built-in identity provider's issuer URL.
    pub fn idp_issuer(&self) -> &str {
        &self.shared.idp.issuer
    }

    /// The built-in identity provider, for the quickstart to set up its directory.
    pub fn idp(&self) -> &std::sync::Arc<postern_idp::Idp> {
        &self.shared.idp
    }

    /// Stops accepting connections, lets in-flight requests finish (up to the drain timeout),
    /// then returns. Tunnels close when the edge is dropped.
    pub async fn shutdown(mut self) {
        self.shared.shutting_down.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        while self.accept_loops.join_next().await.is_some() {}
        let drain = self.shared.config.drain_timeout;
        let all = futures_util::future::join_all(self.drains.iter().map(|d| d.drain()));
        if tokio::time::timeout(drain, all).await.is_err() {
            tracing::warn!(
                secs = drain.as_secs(),
                "drain timeout passed; closing remaining connections"
            );
        }
    }
}

/// What the operator's flags name, opened and checked: the same work as the start of
/// [`start`], for `postern edge --check-config`. Writes nothing and binds nothing.
pub fn check(config: &EdgeConfig) -> anyhow::Result<()> {
    open_named(config).map(drop)
}

/// The files and settings the operator named, opened.
struct Named {
    geoip: geoip::GeoIp,
    risk: risk::Protection,
    leaked: Option<postern_idp::LeakedPasswords>,
    fixed_certs: Option<ServerCerts>,
}

fn open_named(config: &EdgeConfig) -> anyhow::Result<Named> {
    anyhow::ensure!(
        config.tls_names.len() <= config::MAX_TLS_NAMES,
        "{} --tls-name flags given; at most {} are allowed",
        config.tls_names.len(),
        config::MAX_TLS_NAMES
    );
    let geoip = geoip::GeoIp::open(&config.geoip_db)
        .and_then(|g| g.with_asn(&config.asn_db))
        .map_err(anyhow::Error::msg)?;
    siem::check(&config.siem)?;
    let risk =
        risk::Protection::open(config.anonymizer_list.as_deref()).map_err(anyhow::Error::msg)?;
    let leaked = match &config.leaked_passwords {
        Some(dir) => Some(postern_idp::LeakedPasswords::open(dir).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let fixed_certs = match &config.tls_cert {
        Some((cert, key)) => Some(ServerCerts::fixed(cert, key)?),
        None => None,
    };
    Ok(Named {
        geoip,
        risk,
        leaked,
        fixed_certs,
    })
}

/// Starts the edge: opens the store, loads or creates the CAs and the admin token, binds the
/// three listeners and serves until [`RunningEdge::shutdown`].
pub async fn start(config: EdgeConfig) -> anyhow::Result<RunningEdge> {
    // Before anything registers a metric: handles taken earlier would record nowhere.
    let metrics = match config.metrics_listen {
        Some(_) => Some(postern_obs::metrics::install()?),
        None => None,
    };
    // Files the operator named are checked before anything is written to the data directory.
    let Named {
        geoip,
        risk,
        leaked,
        fixed_certs,
    } = open_named(&config)?;
    let risk = Arc::new(risk);
    let dir = &config.data_dir;
    let data_lock = data::lock(dir)?;
    let server_ca = Arc::new(
        Ca::load_or_create(
            &dir.join(files::CA_CERT),
            &dir.join(files::CA_KEY),
            "Postern local CA",
        )
        .context("loading the edge's server CA")?,
    );
    let connector_ca = Ca::load_or_create(
        &dir.join(files::CONNECTOR_CA_CERT),
        &dir.join(files::CONNECTOR_CA_KEY),
        "Postern connector CA",
    )
    .context("loading the edge's connector CA")?;
    let (admin_token, admin_token_path) = data::admin_token(dir, config.bootstrap_token.clone())?;
    let store = Store::open_sqlite(&dir.join(files::STATE_DB)).await?;

    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} ({what}); pick another address with the matching flag")
        })
    };
    let public = bind(config.listen, "public listener, --listen").await?;
    let connector = bind(
        config.connector_listen,
        "connector listener, --connector-listen",
    )
    .await?;
    let admin = bind(config.admin_listen, "admin listener, --admin-listen").await?;
    let public_addr = public.local_addr()?;
    let connector_addr = connector.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let http_listener = match config.http_listen {
        Some(addr) => Some(bind(addr, "HTTP redirect listener, --http-listen").await?),
        None => None,
    };
    let http_addr = http_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind(addr, "metrics listener, --metrics-listen").await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let access_log = match &config.access_log {
        Some(dest) => Some(postern_obs::access::AccessLog::open(dest).await?),
        None => None,
    };

    // With the local CA, the public and connector listeners issue certificates only for the
    // names served (the default names here, apps' hosts and the identity provider's host set on
    // every reload): any other SNI fails its handshake.
    let certs = match fixed_certs {
        Some(certs) => Arc::new(certs),
        None => Arc::new(ServerCerts::local(
            server_ca.clone(),
            &default_names(
                &[public_addr, connector_addr, admin_addr],
                &config.tls_names,
            ),
        )?),
    };
    // The admin listener always uses the local CA, so `--ca-file DATA/ca.pem` works for the CLI
    // whatever certificate the public side presents. It serves its default names only.
    let admin_certs = Arc::new(ServerCerts::local(
        server_ca.clone(),
        &default_names(&[admin_addr], &config.tls_names),
    )?);
    let public_tls = TlsAcceptor::from(Arc::new(postern_pki::public_server_config(certs.clone())?));
    let admin_tls = TlsAcceptor::from(Arc::new(postern_pki::public_server_config(admin_certs)?));
    let connector_tls = TlsAcceptor::from(Arc::new(postern_pki::connector_listener_config(
        certs.clone(),
        connector_ca.cert_der(),
        vec![
            postern_proto::tunnel::TUNNEL_ALPN.to_vec(),
            b"h2".to_vec(),
            b"http/1.1".to_vec(),
        ],
    )?));

    let issuer = match public_addr.port() {
        443 => format!("https://{}", config.idp_host),
        port => format!("https://{}:{port}", config.idp_host),
    };
    let idp = postern_idp::Idp::new(store.clone(), issuer, leaked)
        .await
        .context("loading the identity provider's signing keys")?;
    let issuer_http = reqwest::Client::builder()
        .use_preconfigured_tls(postern_pki::issuer_client_config(&[server_ca
            .cert_der()
            .clone()]))
        .redirect(reqwest::redirect::Policy::none())
        // The built-in provider is this edge's own public listener.
        .resolve(&config.idp_host, public_addr)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("building the HTTP client for identity providers")?;
    let auth = preauth::Auth::load(&store, issuer_http).await?;
    let config_limits = config.limits.clone();
    let (version_tx, _) = watch::channel(0);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        config,
        store,
        idp_router: postern_idp::router(idp.clone()),
        idp,
        routes: ArcSwap::default(),
        version: version_tx,
        tunnels: tunnels::TunnelPool::default(),
        server_ca,
        public_certs: certs,
        connector_ca,
        admin_token,
        shutting_down: Default::default(),
        stopping: shutdown_rx.clone(),
        reload_lock: Default::default(),
        backup_lock: Default::default(),
        access_writes: Default::default(),
        auth,
        rates: guard::Rates::new(&config_limits),
        in_flight: guard::InFlightPerAddress::new(config_limits.requests_in_flight_per_ip),
        refusal_log: log_budget::LogBudget::per_second(log_budget::REFUSAL_LINES_PER_SECOND),
        stalls: body::StallWatch::start(config_limits.stall_timeout, config_limits.stalled_streams),
        access_log,
        geoip,
        risk,
        connector_certs: Default::default(),
    });
    shared.risk.watch();
    if shared.config.tls_cert.is_some() {
        watch_operator_certs(shared.public_certs.clone(), shutdown_rx.clone());
    }
    shared
        .idp
        .set_access(Box::new(idp::ProviderAccess(Arc::downgrade(&shared))));
    shared.reload().await?;
    tokio::spawn(idp::maintain_keys(shared.clone()));
    tokio::spawn(shared.clone().follow_store());
    siem::start(&shared.store, &shared.config.siem)?;

    let mut accept_loops = JoinSet::new();
    let public_drain = serve::Drain::new();
    let control_drain = serve::Drain::new();
    let admin_drain = serve::Drain::new();
    let limits = shared.config.limits.clone();
    let timeouts = serve::Timeouts::of(&limits);
    let caps = ListenerCaps::within(
        limits.max_connections,
        fd_limit(),
        shared.config.http_listen.is_some(),
    );
    let public_gate = serve::Gate::new("public", caps.public, &limits);
    let connector_gate = serve::Gate::new("connector", caps.connector, &limits);
    let admin_gate = serve::Gate::new("admin", caps.admin, &limits);
    if let Some(listener) = http_listener {
        accept_loops.spawn(redirect::serve(
            listener,
            serve::Gate::new("http", caps.http, &limits),
            shared.clone(),
            public_addr.port(),
            shutdown_rx.clone(),
        ));
    }

    {
        let shared = shared.clone();
        let http = Arc::new(serve::Http::new(false, timeouts));
        let drain = public_drain.clone();
        accept_loops.spawn(serve::accept_tls(
            public,
            public_tls,
            public_gate,
            limits.handshake_timeout,
            shutdown_rx.clone(),
            move |tls, peer, slot| {
                let shared = shared.clone();
                let http = http.clone();
                let drain = drain.clone();
                async move {
                    serve::serve_http(&http, &drain, tls, slot, |activity| {
                        hyper::service::service_fn(move |req| {
                            let busy = activity.enter();
                            let handled = forward::handle(shared.clone(), peer, req);
                            async move { Ok::<_, Infallible>(serve::tracked(handled.await?, busy)) }
                        })
                    })
                    .await
                }
            },
        ));
    }
    {
        let shared = shared.clone();
        let router = control::router(shared.clone());
        let http = Arc::new(serve::Http::new(false, timeouts));
        let drain = control_drain.clone();
        accept_loops.spawn(serve::accept_tls(
            connector,
            connector_tls,
            connector_gate,
            limits.handshake_timeout,
            shutdown_rx.clone(),
            move |tls, peer, slot| {
                control::on_conn(
                    shared.clone(),
                    router.clone(),
                    http.clone(),
                    drain.clone(),
                    tls,
                    peer,
                    slot,
                )
            },
        ));
    }
    {
        let router = admin_api::router(shared.clone());
        let http = Arc::new(serve::Http::new(false, timeouts));
        let drain = admin_drain.clone();
        accept_loops.spawn(serve::accept_tls(
            admin,
            admin_tls,
            admin_gate,
            limits.handshake_timeout,
            shutdown_rx,
            move |tls, _peer, slot| {
                let router = router.clone();
                let http = http.clone();
                let drain = drain.clone();
                async move {
                    serve::serve_http(&http, &drain, tls, slot, |activity| {
                        hyper::service::service_fn(move |req| {
                            let busy = activity.enter();
                            let answered = router.clone().oneshot(req);
                            async move { Ok::<_, Infallible>(serve::tracked(answered.await?, busy)) }
                        })
                    })
                    .await
                }
            },
        ));
    }

    // Served last: ready means bound and loaded.
    if let (Some(listener), Some(handle)) = (metrics_listener, metrics) {
        postern_obs::listener::spawn(
            listener,
            handle,
            Arc::new(observe::EdgeProbe::new(shared.clone())),
        );
    }
    tracing::info!(%public_addr, %connector_addr, %admin_addr, metrics_addr = metrics_addr.map(|a| a.to_string()).as_deref().unwrap_or("none"), data = %shared.config.data_dir.display(), "edge started");
    Ok(RunningEdge {
        public_addr,
        connector_addr,
        admin_addr,
        metrics_addr,
        http_addr,
        ca_path: shared.config.data_dir.join(files::CA_CERT),
        admin_token_path,
        shared,
        shutdown: shutdown_tx,
        accept_loops,
        drains: vec![public_drain, control_drain, admin_drain],
        _lock: data_lock,
    })
}

/// Reloads the operator's certificate (`--tls-cert`/`--tls-key`) on SIGHUP and when its files
/// change (checked every [`config::CERT_RECHECK`]), so a renewal (certbot, cert-manager) needs no
/// restart: new connections get the new pair, open ones keep theirs. A pair that does not load
/// whole is logged and the current one kept.
fn watch_operator_certs(certs: Arc<ServerCerts>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(config::CERT_RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            let (result, why) = tokio::select! {
                _ = stop.changed() => return,
                _ = hup => (certs.reload(), "SIGHUP"),
                _ = tick.tick() => (certs.reload_if_changed(), "the files changed"),
            };
            match result {
                Ok(true) => tracing::info!(
                    cause = why,
                    not_after = ?certs.not_after().map(humantime::format_rfc3339_seconds),
                    "reloaded --tls-cert and --tls-key; new connections get them"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    cause = why,
                    error = %e,
                    "cannot reload --tls-cert and --tls-key; still serving the previous pair"
                ),
            }
        }
    });
}

/// The process's file-descriptor limit, raised to its hard maximum first.
fn fd_limit() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n as usize,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file-descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft as usize)
        }
    }
}

/// How many connections each listener holds at most, all within the file-descriptor limit.
#[derive(Debug, PartialEq, Eq)]
struct ListenerCaps {
    public: usize,
    connector: usize,
    admin: usize,
    /// The plain-HTTP redirect listener (`--http-listen`); 0 without one.
    http: usize,
}

impl ListenerCaps {
    /// The configured public cap (`--max-connections`), the connector and admin listeners' own,
    /// and the descriptors for everything else, fitted within `fds`: the others take at most a
    /// fixed share each (an eighth for connectors, a sixteenth for the admin API and for the rest),
    /// so a low limit does not leave the public listener, where users and WebSockets are, a
    /// sliver. The HTTP redirect listener, when there is one, takes a sixteenth too.
    fn within(configured: usize, fds: usize, http: bool) -> ListenerCaps {
        let connector = config::CONNECTOR_MAX_CONNECTIONS.min(fds / 8);
        let admin = config::ADMIN_MAX_CONNECTIONS.min(fds / 16);
        let other = config::OTHER_FDS.min(fds / 16);
        let http = match http {
            true => config::HTTP_MAX_CONNECTIONS.min(fds / 16),
            false => 0,
        };
        let room = fds.saturating_sub(connector + admin + other + http).max(64);
        if configured > room {
            tracing::warn!(
                configured, fds, cap = room,
                "--max-connections is above what the file-descriptor limit allows; using the lower cap (raise the limit with `ulimit -n` or LimitNOFILE=)"
            );
        }
        ListenerCaps {
            public: configured.min(room),
            connector,
            admin,
            http,
        }
    }
}

/// Names in the certificate shown to clients that send no SNI (they dialled an IP address) or
/// ask for one of these names: loopback, the listeners' addresses and the `--tls-name`s.
fn default_names(addrs: &[SocketAddr], tls_names: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let extra = addrs
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| ip.to_string())
        .chain(tls_names.iter().cloned());
    for name in extra {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_share_the_file_descriptor_limit() {
        // A generous limit: every listener gets its own cap, the public one what is configured.
        let big = ListenerCaps::within(config::DEFAULT_MAX_CONNECTIONS, 1 << 20, true);
        assert_eq!(
            big,
            ListenerCaps {
                public: config::DEFAULT_MAX_CONNECTIONS,
                connector: config::CONNECTOR_MAX_CONNECTIONS,
                admin: config::ADMIN_MAX_CONNECTIONS,
                http: config::HTTP_MAX_CONNECTIONS,
            }
        );
        // A hard limit of 20,000 (a small VM): three quarters and more go to the public listener,
        // and all of them together stay within it.
        let vm = ListenerCaps::within(config::DEFAULT_MAX_CONNECTIONS, 20_000, false);
        assert_eq!(vm.connector, 2_500);
        assert_eq!(vm.admin, 1_024);
        assert_eq!(vm.public, 20_000 - 2_500 - 1_024 - 1_024);
        // With the HTTP redirect listener, its share comes out of the public listener's.
        let redirecting = ListenerCaps::within(config::DEFAULT_MAX_CONNECTIONS, 20_000, true);
        assert_eq!(redirecting.http, 1_024);
        assert_eq!(redirecting.public, vm.public - 1_024);
        // The usual default soft limit, if it cannot be raised.
        let small = ListenerCaps::within(config::DEFAULT_MAX_CONNECTIONS, 1_024, false);
        assert_eq!((small.public, small.connector, small.admin), (768, 128, 64));
        // A configured cap below the limit is kept.
        assert_eq!(ListenerCaps::within(500, 20_000, false).public, 500);
    }
}
