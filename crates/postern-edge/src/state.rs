//! What every part of the edge shares: the store, the routing snapshot, the tunnel pool, the CAs.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use postern_pki::{Ca, ServerCerts};
use postern_proto::{AppId, AppRoute, ConnectorConfig};
use postern_store::{Preauth, Store, StoreError};
use tokio::sync::watch;

use crate::config::{EdgeConfig, Secret};
use crate::tunnels::TunnelPool;

/// How the router sees one published app.
#[derive(Debug)]
pub struct Route {
    pub app_id: AppId,
    pub name: String,
    pub group: String,
    pub preauth: Preauth,
    pub timeout: Duration,
    /// Users get the maintenance page; nothing is forwarded.
    pub maintenance: bool,
    /// With `preauth: oidc`: how users sign in, and who may.
    pub sign_in: Option<Arc<crate::preauth::SignIn>>,
    /// The app's request metrics, registered once per snapshot.
    pub metrics: postern_obs::metrics::AppMetrics,
}

/// An immutable routing table, swapped whole on every config change.
#[derive(Debug, Default)]
pub struct Routes {
    pub version: u64,
    by_host: HashMap<String, Arc<Route>>,
    /// Sessions of these principals (subject, email, or `session:ID`) issued at or before the
    /// time given (Unix seconds) no longer work.
    pub revoked: HashMap<String, i64>,
    /// Conditional access: the policies every signed-in request is decided by.
    pub access: crate::preauth::access::Access,
}

impl Routes {
    /// The app published at `host` (lower-case, without port).
    pub fn get(&self, host: &str) -> Option<&Arc<Route>> {
        self.by_host.get(host)
    }

    /// Whether `client_id` is the built-in provider's client of an app here (whose sign-ins
    /// the edge decides at its callback).
    pub fn is_app_client(&self, client_id: &str) -> bool {
        self.by_host
            .values()
            .any(|r| r.sign_in.as_ref().is_some_and(|s| s.client_id == client_id))
    }

    /// The app named `name`.
    pub fn named(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_host.values().find(|r| r.name == name)
    }
}

pub struct Shared {
    pub config: EdgeConfig,
    pub store: Store,
    /// The built-in OpenID Connect provider, served on `config.idp_host`.
    pub idp: Arc<postern_idp::Idp>,
    /// The provider's routes, built once.
    pub idp_router: axum::Router,
    pub routes: ArcSwap<Routes>,
    /// The config version, watched by connectors' long-polls.
    pub version: watch::Sender<u64>,
    pub tunnels: TunnelPool,
    pub server_ca: Arc<Ca>,
    /// The public (and connector) listener's certificates: told on every reload which names
    /// are served, as only those get a certificate on demand.
    pub public_certs: Arc<ServerCerts>,
    pub connector_ca: Ca,
    pub admin_token: Secret,
    pub shutting_down: AtomicBool,
    /// Turns true when shutdown starts; long-polls end on it so they do not hold up the drain.
    pub stopping: watch::Receiver<bool>,
    /// Serialises reloads so an older snapshot never replaces a newer one.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// One backup at a time: each writes a copy of the database.
    pub backup_lock: tokio::sync::Mutex<()>,
    /// Held while a change to policies, locations or the apps they name is checked and
    /// written, so two changes cannot each pass a check the other breaks.
    pub access_writes: tokio::sync::Mutex<()>,
    /// Pre-authentication: cookie keys, assertion keys, issuers.
    pub auth: crate::preauth::Auth,
    /// Request rates per client address and per app.
    pub rates: crate::guard::Rates,
    /// Requests in flight through tunnels per client address.
    pub in_flight: Arc<crate::guard::InFlightPerAddress>,
    /// Warning lines for refused requests (`left_out` counts those not written).
    pub refusal_log: crate::log_budget::LogBudget,
    /// Responses whose users may stop reading them.
    pub stalls: Arc<crate::body::StallWatch>,
    /// The access log (`--access-log`), if on.
    pub access_log: Option<postern_obs::access::AccessLog>,
    /// Where client addresses are (`--geoip-db`); empty locates nothing.
    pub geoip: crate::geoip::GeoIp,
    /// The anonymizer list and the sign-in judge (`--anonymizer-list`).
    pub risk: Arc<crate::risk::Protection>,
    /// When each live connector's newest certificate expires (Unix seconds), for the
    /// `postern_certificate_expiry_seconds{certificate="connector:ID"}` gauges.
    pub connector_certs: std::sync::Mutex<HashMap<String, i64>>,
}

/// How often the edge asks the store whether its config moved without it (a risk detection, a
/// change by another writer): one indexed read.
pub const STORE_RECHECK: Duration = Duration::from_secs(1);

impl Shared {
    /// Reloads whenever the store's config version is not the snapshot's, checked every
    /// [`STORE_RECHECK`] until shutdown. Changes made through this edge reload at once anyway.
    pub async fn follow_store(self: Arc<Self>) {
        let mut stopping = self.stopping.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(STORE_RECHECK) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let seen = self.routes.load().version;
            match self.store.config_version().await {
                Ok(v) if v == seen => {}
                Ok(_) => {
                    if let Err(e) = self.reload().await {
                        tracing::error!(error = %e, "cannot reload the config the store holds");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the store's config version"),
            }
        }
    }

    /// Rebuilds the routing snapshot from the store, moves or closes tunnels whose connector
    /// changed group or was revoked, and tells waiting connectors.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let version = self.store.config_version().await?;
        let apps = self.store.apps().await?;
        let mut assigned: HashMap<i64, Vec<postern_store::Assignee>> = HashMap::new();
        for (app, who) in self.store.assignments().await? {
            assigned.entry(app).or_default().push(who);
        }
        let access =
            crate::preauth::access::Access::load(&self.store, &self.idp.issuer, &apps).await?;
        let revoked = self
            .store
            .session_revocations()
            .await?
            .into_iter()
            .collect();
        let live: Vec<_> = self
            .store
            .connectors()
            .await?
            .into_iter()
            .filter(|c| c.revoked_at.is_none())
            .collect();
        *self
            .connector_certs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = live
            .iter()
            .filter_map(|c| Some((c.id.clone(), c.cert_not_after?)))
            .collect();
        let connectors: HashMap<String, String> =
            live.into_iter().map(|c| (c.id, c.group)).collect();
        let by_host: HashMap<String, Arc<Route>> = apps
            .into_iter()
            .map(|a| {
                let sign_in = match a.preauth {
                    Preauth::Passthrough => None,
                    Preauth::Oidc => crate::preauth::SignIn::new(
                        &a,
                        assigned.remove(&a.id).unwrap_or_default(),
                        &self.idp.issuer,
                    )
                    .map(Arc::new),
                };
                let route = Route {
                    app_id: AppId(a.id as u64),
                    metrics: postern_obs::metrics::AppMetrics::new(&a.name),
                    name: a.name,
                    group: a.group,
                    preauth: a.preauth,
                    timeout: a.backend_timeout,
                    maintenance: a.maintenance,
                    sign_in,
                };
                (a.external_host, Arc::new(route))
            })
            .collect();
        self.public_certs.serve_names(
            by_host
                .keys()
                .cloned()
                .chain(std::iter::once(self.config.idp_host.clone())),
        );
        self.routes.store(Arc::new(Routes {
            version,
            by_host,
            revoked,
            access,
        }));
        let closed = self.tunnels.reconcile(|id| connectors.get(id).cloned());
        if closed > 0 {
            tracing::info!(tunnels = closed, "closed the tunnels of revoked connectors");
        }
        self.version.send_if_modified(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
        Ok(())
    }

    /// The config document for one connector: the apps of its group.
    pub async fn connector_config(
        &self,
        connector_id: &str,
    ) -> Result<ConnectorConfig, StoreError> {
        let connector = self.store.live_connector(connector_id).await?;
        let version = self.store.config_version().await?;
        let apps = self
            .store
            .apps()
            .await?
            .into_iter()
            .filter(|a| a.group == connector.group)
            .map(|a| AppRoute {
                id: AppId(a.id as u64),
                name: a.name,
                external_host: a.external_host,
                internal_url: a.internal_url,
                preserve_host: a.preserve_host,
                insecure_skip_backend_tls_verify: a.insecure_skip_backend_tls_verify,
                backend_timeout_ms: a.backend_timeout.as_millis() as u64,
            })
            .collect();
        Ok(ConnectorConfig {
            format: postern_proto::config::CONFIG_FORMAT,
            version,
            connector_id: connector.id,
            group: connector.group,
            apps,
            renew_after_secs: self.config.connector_renew_after.map(|d| d.as_secs()),
        })
    }
}
