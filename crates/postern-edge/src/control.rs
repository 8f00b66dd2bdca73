//! The connector listener: tunnels (ALPN `postern-tunnel/1`) and the control plane (registration
//! and config long-poll, over HTTP on the same port).
//!
//! **Invariant:** every call and every tunnel on this listener needs a valid client certificate of
//! a connector that is registered and not revoked, and that is the connector's current
//! certificate (by serial: after a renewal the previous one is accepted only until the new one is
//! first used), except `POST /v1/connector/register`, which needs a one-time registration token
//! instead.

use postern_obs::metrics::timed_store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use postern_pki::CertIdentity;
use postern_proto::api::{
    RegisterRequest, RegisterResponse, RenewRequest, RenewResponse, HEADER_CONNECTOR_HOSTNAME,
    HEADER_CONNECTOR_VERSION,
};
use postern_proto::text::{Escaped, MAX_HOSTNAME_BYTES, MAX_VERSION_BYTES};
use postern_proto::tunnel::TUNNEL_ALPN;
use postern_store::{CertRecord, CertRefusal, ConnectorReport, RegisterError, StoreError};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use crate::api::{ApiFailure, ApiJson};
use crate::audit::{Actor, Audited};
use crate::config::CONFIG_POLL_TIMEOUT;
use crate::state::Shared;

/// Reset streams a tunnel remembers (for h2's reset-stream duration), so data still in flight for
/// them is dropped quietly rather than answered as an error: more than one tunnel carries at once.
const TUNNEL_RESET_STREAMS_REMEMBERED: usize = 8192;

/// The connector (and which of its certificates) a client certificate names, if the peer
/// presented one.
#[derive(Clone, Debug)]
pub struct PeerConnector(pub Option<CertIdentity>);

/// Tunnel liveness: a PING every interval, the tunnel dropped when one is not answered in time.
const TUNNEL_PING_INTERVAL: Duration = Duration::from_secs(10);
const TUNNEL_PING_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/connector/register", post(register))
        .route(
            "/v1/connector/idp",
            axum::routing::get(crate::idp::connector_idp_info),
        )
        .route("/v1/connector/config", get(config))
        .route("/v1/connector/renew", post(renew))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(shared)
}

/// Handles one accepted connection on the connector listener.
pub async fn on_conn(
    shared: Arc<Shared>,
    router: Router,
    http: Arc<crate::serve::Http>,
    drain: crate::serve::Drain,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    slot: crate::serve::Slot,
) {
    let (_, conn) = tls.get_ref();
    let is_tunnel = conn.alpn_protocol() == Some(TUNNEL_ALPN);
    let connector = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| postern_pki::connector_identity_from_cert(cert));
    if is_tunnel {
        let _slot = slot;
        run_tunnel(shared, tls, peer, connector).await;
        return;
    }
    let identity = PeerConnector(connector);
    crate::serve::serve_http(&http, &drain, tls, slot, |activity| {
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let busy = activity.enter();
            req.extensions_mut().insert(identity.clone());
            req.extensions_mut().insert(ConnectInfo(peer));
            let answered = router.clone().oneshot(req);
            async move {
                Ok::<_, std::convert::Infallible>(crate::serve::tracked(answered.await?, busy))
            }
        })
    })
    .await;
}

async fn run_tunnel(
    shared: Arc<Shared>,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    connector: Option<CertIdentity>,
) {
    let Some(identity) = connector else {
        tracing::warn!(%peer, "tunnel refused: no client certificate");
        return;
    };
    let id = identity.connector_id.clone();
    let connector = match timed_store(
        "authenticate_connector",
        shared
            .store
            .authenticate_connector(&id, &identity.serial_hex),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%peer, connector = %id, serial = %identity.serial_hex, "tunnel refused: {e}");
            return;
        }
    };
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(postern_proto::limits::TUNNEL_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(postern_proto::limits::TUNNEL_CONNECTION_WINDOW_BYTES)
        .max_frame_size(postern_proto::limits::TUNNEL_MAX_FRAME_BYTES)
        .header_table_size(postern_proto::tunnel::HPACK_TABLE_BYTES)
        .max_header_list_size(postern_proto::limits::TUNNEL_MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(TUNNEL_PING_INTERVAL)
        .keep_alive_timeout(TUNNEL_PING_TIMEOUT)
        .keep_alive_while_idle(true)
        // Every response a user cancels or stops reading is reset here while the connector may
        // still be sending it. h2 remembers only 50 reset streams for a second by default, and
        // answers data for a forgotten one with a local error that it counts over the
        // connection's whole life, ending the tunnel (and every request on it) at 1024: a few
        // clients that start downloads and leave could tear tunnels down. The peer is a
        // connector, authenticated by its certificate.
        .max_concurrent_reset_streams(TUNNEL_RESET_STREAMS_REMEMBERED)
        .max_local_error_reset_streams(None)
        .handshake(TokioIo::new(tls))
        .await;
    let (sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%peer, connector = %id, error = %e, "tunnel handshake failed");
            return;
        }
    };
    let report = ConnectorReport {
        hostname: None,
        version: None,
        address: Some(peer.ip().to_string()),
    };
    seen(&shared, &id, &report).await;
    let tunnel = shared.tunnels.add(&connector.group, &id, peer, sender);
    // A move or revocation committed between the lookup above and the add would have missed
    // this tunnel; one more look puts it where it belongs.
    match shared.store.connector(&id).await {
        Ok(now) if now.revoked_at.is_none() && now.group == connector.group => {}
        _ => {
            if let Err(e) = shared.reload().await {
                tracing::error!(error = %e, "cannot reload after a connector changed");
            }
        }
    }
    tracing::info!(%peer, connector = %id, group = %connector.group, tunnel = tunnel.id, "tunnel opened");
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::info!(connector = %id, tunnel = tunnel.id, error = %e, "tunnel failed");
            }
        }
        _ = tunnel.closed() => {
            tracing::info!(connector = %id, tunnel = tunnel.id, "closing the tunnel of a revoked connector");
        }
    }
    shared.tunnels.remove(tunnel.id);
    seen(&shared, &id, &report).await;
    tracing::info!(connector = %id, tunnel = tunnel.id, "tunnel closed");
}

async fn seen(shared: &Shared, id: &str, report: &ConnectorReport) {
    if let Err(e) = shared.store.connector_seen(id, report).await {
        tracing::warn!(connector = %id, error = %e, "cannot record that a connector was seen");
    }
}

/// The connector named by the caller's client certificate, if it is registered, not revoked, and
/// the certificate is its current one.
async fn calling_connector(
    shared: &Shared,
    peer: Option<&CertIdentity>,
) -> Result<postern_store::Connector, ApiFailure> {
    let identity = peer.ok_or_else(|| {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "certificate_required",
            "this call needs the connector's client certificate; register the connector first",
        )
    })?;
    timed_store(
        "authenticate_connector",
        shared
            .store
            .authenticate_connector(&identity.connector_id, &identity.serial_hex),
    )
    .await
    .map_err(|e| {
            let code = match &e {
                CertRefusal::Unknown(_) => "unknown_connector",
                CertRefusal::Revoked(_) => "connector_revoked",
                CertRefusal::NotCurrent(_) => "certificate_not_current",
                CertRefusal::Store(_) => return ApiFailure::internal(e),
            };
            tracing::warn!(connector = %identity.connector_id, serial = %identity.serial_hex, "control call refused: {e}");
            ApiFailure::new(StatusCode::FORBIDDEN, code, e.to_string())
        })
}

/// The connector, refused when it was revoked meanwhile (a long-poll's wait may end with it).
async fn still_live(shared: &Shared, id: &str) -> Result<postern_store::Connector, ApiFailure> {
    match shared.store.connector(id).await {
        Ok(c) if c.revoked_at.is_none() => Ok(c),
        Ok(_) => Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "connector_revoked",
            CertRefusal::Revoked(id.to_owned()).to_string(),
        )),
        Err(StoreError::NotFound { .. }) => Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "unknown_connector",
            CertRefusal::Unknown(id.to_owned()).to_string(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// What the connector says about itself in its control-plane headers: bounded, and refused
/// (naming the header) when not printable, since it is stored, listed and logged.
fn report(headers: &http::HeaderMap, peer: SocketAddr) -> Result<ConnectorReport, ApiFailure> {
    let header = |name: &'static str, max: usize| -> Result<Option<String>, ApiFailure> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        let text = postern_proto::text::check_reported_bytes(name, value.as_bytes(), max)
            .map_err(invalid_field)?;
        Ok((!text.is_empty()).then(|| text.to_owned()))
    };
    Ok(ConnectorReport {
        hostname: header(HEADER_CONNECTOR_HOSTNAME, MAX_HOSTNAME_BYTES)?,
        version: header(HEADER_CONNECTOR_VERSION, MAX_VERSION_BYTES)?,
        address: Some(peer.ip().to_string()),
    })
}

/// A reported value refused before anything was stored.
fn invalid_field(e: postern_proto::text::TextError) -> ApiFailure {
    tracing::warn!(field = e.field(), "connector call refused: {e}");
    let mut failure = ApiFailure::bad_request("invalid_field", e.to_string());
    failure.request_id = Some(crate::forward::new_request_id());
    failure
}

async fn register(
    State(shared): State<Arc<Shared>>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiFailure> {
    // Before any work and before anything is recorded: an unauthenticated caller's values are
    // bounded and printable, or refused.
    req.check().map_err(invalid_field)?;
    let ca = &shared.connector_ca;
    let validity = shared.config.connector_cert_validity;
    let mut req = req;
    let request_id = crate::forward::new_request_id();
    // The actor is who vouched for the registration: the administrator who approved the device
    // sign-in, or the registration token presented; never the hostname the caller chose.
    let actor = if req.access_token.is_some() {
        // An administrator approved this registration by signing in: their approval stands in
        // for a registration token, made and spent in this call.
        match crate::idp::admin_registration_token(&shared, &req).await {
            Ok((token, approver)) => {
                req.token = token;
                approver
            }
            Err(failure) => {
                Audited::new(
                    &shared.store,
                    &Actor::unauthenticated(),
                    "connector.register",
                    "-",
                    &request_id,
                )
                .finish::<()>(Err(&failure.detail()))
                .await;
                return Err(failure);
            }
        }
    } else {
        Actor::registration_token(&req.token)
    };
    let audit = Audited::new(
        &shared.store,
        &actor,
        "connector.register",
        "-",
        &request_id,
    );
    let registered = audit
        .store(&format!("hostname {}", req.hostname))
        .register_connector(&req.token, &req.hostname, &req.version, |id| {
            let cert = ca.sign_connector_csr(&req.csr_pem, id, validity)?;
            Ok(CertRecord {
                serial_hex: cert.serial_hex,
                pem: cert.pem,
                not_before: cert.not_before.unix_timestamp(),
                not_after: cert.not_after.unix_timestamp(),
            })
        })
        .await;
    let (connector, cert) = match registered {
        Ok(r) => r,
        Err(e) => {
            let failure = match e {
                RegisterError::Token(problem) => {
                    tracing::warn!(hostname = %Escaped(&req.hostname), "registration refused: {problem}");
                    ApiFailure::new(
                        StatusCode::UNAUTHORIZED,
                        "token_refused",
                        problem.to_string(),
                    )
                }
                RegisterError::Sign(e) => {
                    let e: postern_pki::CsrError = e;
                    ApiFailure::bad_request("bad_csr", e.to_string())
                }
                RegisterError::Store(e) => e.into(),
            };
            audit.finish::<()>(Err(&failure.detail())).await;
            return Err(failure);
        }
    };
    tracing::info!(connector = %connector.id, group = %connector.group, hostname = %Escaped(&connector.hostname), "connector registered");
    audit.finish(Ok(&cert)).await;
    // The registration is committed: a failed reload must not turn it into an error the
    // connector would retry with a spent token. The next change reloads anyway.
    if let Err(e) = shared.reload().await {
        tracing::error!(error = %e, "cannot reload routing after a registration");
    }
    Ok(Json(RegisterResponse {
        connector_id: connector.id,
        group: connector.group,
        certificate_pem: cert.pem,
        connector_ca_pem: ca.cert_pem().to_owned(),
    }))
}

#[derive(Deserialize)]
struct ConfigQuery {
    /// The version the connector has applied; the call waits until a newer one exists.
    after: Option<u64>,
}

async fn config(
    State(shared): State<Arc<Shared>>,
    Extension(PeerConnector(peer)): Extension<PeerConnector>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: http::HeaderMap,
    Query(q): Query<ConfigQuery>,
) -> Result<Response, ApiFailure> {
    let report = report(&headers, addr)?;
    let connector = calling_connector(&shared, peer.as_ref()).await?;
    seen(&shared, &connector.id, &report).await;
    if let Some(after) = q.after {
        let mut rx = shared.version.subscribe();
        let mut stopping = shared.stopping.clone();
        let newer = tokio::select! {
            r = tokio::time::timeout(CONFIG_POLL_TIMEOUT, rx.wait_for(|v| *v > after)) => r.is_ok(),
            // A shutting-down edge ends its long-polls at once; the connector polls again
            // (another edge, or this one after its restart).
            _ = stopping.wait_for(|s| *s) => false,
        };
        if !newer {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
    }
    // Looked up again: the change that ended the wait may be this connector's revocation. The
    // certificate was judged when the call began; a renewal during the wait does not undo that.
    let connector = still_live(&shared, &connector.id).await?;
    let doc = shared.connector_config(&connector.id).await?;
    Ok(Json(doc).into_response())
}

/// Signs a new certificate for a live connector that proves itself with its current one.
async fn renew(
    State(shared): State<Arc<Shared>>,
    Extension(PeerConnector(peer)): Extension<PeerConnector>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<RenewResponse>, ApiFailure> {
    let request_id = crate::forward::new_request_id();
    let peer_id = peer.as_ref().map(|p| p.connector_id.clone());
    let actor = Actor::connector(peer_id.as_deref().unwrap_or("unknown"));
    let target = peer_id.unwrap_or_else(|| "-".to_owned());
    let audit = Audited::new(
        &shared.store,
        &actor,
        "connector.renew",
        &target,
        &request_id,
    );
    let result = async {
        let connector = calling_connector(&shared, peer.as_ref()).await?;
        let presented = peer.as_ref().map_or("", |p| p.serial_hex.as_str());
        let ca = &shared.connector_ca;
        let validity = shared.config.connector_cert_validity;
        let renewed = audit
            .store("")
            .renew_connector(&connector.id, presented, |id| {
                let cert = ca.sign_connector_csr(&req.csr_pem, id, validity)?;
                Ok(CertRecord {
                    serial_hex: cert.serial_hex,
                    pem: cert.pem,
                    not_before: cert.not_before.unix_timestamp(),
                    not_after: cert.not_after.unix_timestamp(),
                })
            })
            .await;
        match renewed {
            Ok((_, cert)) => Ok(cert),
            Err(RegisterError::Sign(e)) => {
                let e: postern_pki::CsrError = e;
                Err(ApiFailure::bad_request("bad_csr", e.to_string()))
            }
            // A revocation or another renewal that won the race with this one.
            Err(RegisterError::Store(StoreError::Conflict(m))) => {
                Err(ApiFailure::new(StatusCode::FORBIDDEN, "renewal_refused", m))
            }
            Err(RegisterError::Store(e)) => Err(e.into()),
            Err(RegisterError::Token(p)) => Err(ApiFailure::internal(p)),
        }
    }
    .await;
    match result {
        Ok(cert) => {
            tracing::info!(connector = %target, not_after = cert.not_after, "connector certificate renewed");
            // Only a live connector's: a revocation that committed after this renewal has
            // already removed it.
            if let Some(not_after) = shared
                .connector_certs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(&target)
            {
                *not_after = cert.not_after;
            }
            audit.finish(Ok(&cert)).await;
            Ok(Json(RenewResponse {
                certificate_pem: cert.pem,
                not_after: cert.not_after,
            }))
        }
        Err(failure) => {
            tracing::warn!(connector = %target, "renewal refused: {}", failure.message);
            audit.finish::<()>(Err(&failure.detail())).await;
            Err(failure)
        }
    }
}
