//! The connector listener: tunnels (ALPN `postern-tunnel/1`) and the control plane (registration
//! and config long-poll, over HTTP on the same port).
//!
//! **Invariant:** every call and every tunnel on this listener needs a valid client certificate of
//! a connector that is registered and not revoked, except `POST /v1/connector/register`, which
//! needs a one-time registration token instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use postern_proto::api::{RegisterRequest, RegisterResponse};
use postern_proto::tunnel::TUNNEL_ALPN;
use postern_store::{CertRecord, RegisterError, StoreError};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use crate::api::{ApiFailure, ApiJson};
use crate::config::CONFIG_POLL_TIMEOUT;
use crate::state::Shared;

/// The connector a client certificate names, if the peer presented one.
#[derive(Clone, Debug)]
pub struct PeerConnector(pub Option<String>);

/// Tunnel HTTP/2 flow-control windows: large enough to fill a fast link on one stream, small
/// enough that a slow reader holds at most this much per stream in memory.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
const MAX_FRAME_BYTES: u32 = 256 << 10;
/// Tunnel liveness: a PING every interval, the tunnel dropped when one is not answered in time.
const TUNNEL_PING_INTERVAL: Duration = Duration::from_secs(10);
const TUNNEL_PING_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/connector/register", post(register))
        .route("/v1/connector/config", get(config))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(shared)
}

/// Handles one accepted connection on the connector listener.
pub async fn on_conn(
    shared: Arc<Shared>,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: crate::serve::Drain,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
) {
    let (_, conn) = tls.get_ref();
    let is_tunnel = conn.alpn_protocol() == Some(TUNNEL_ALPN);
    let connector = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| postern_pki::connector_id_from_cert(cert));
    if is_tunnel {
        run_tunnel(shared, tls, peer, connector).await;
        return;
    }
    let identity = PeerConnector(connector);
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(identity.clone());
            router.clone().oneshot(req)
        });
    crate::serve::serve_http(&builder, &drain, tls, service).await;
}

async fn run_tunnel(
    shared: Arc<Shared>,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    connector: Option<String>,
) {
    let Some(id) = connector else {
        tracing::warn!(%peer, "tunnel refused: no client certificate");
        return;
    };
    let connector = match shared.store.connector(&id).await {
        Ok(c) if c.revoked_at.is_none() => c,
        Ok(_) => {
            tracing::warn!(%peer, connector = %id, "tunnel refused: connector is revoked");
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, connector = %id, error = %e, "tunnel refused");
            return;
        }
    };
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .keep_alive_interval(TUNNEL_PING_INTERVAL)
        .keep_alive_timeout(TUNNEL_PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tls))
        .await;
    let (sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%peer, connector = %id, error = %e, "tunnel handshake failed");
            return;
        }
    };
    let tunnel = shared.tunnels.add(&connector.group, &id, peer, sender);
    tracing::info!(%peer, connector = %id, group = %connector.group, tunnel = tunnel.id, "tunnel opened");
    if let Err(e) = conn.await {
        tracing::info!(connector = %id, tunnel = tunnel.id, error = %e, "tunnel failed");
    }
    shared.tunnels.remove(&connector.group, tunnel.id);
    tracing::info!(connector = %id, tunnel = tunnel.id, "tunnel closed");
}

async fn register(
    State(shared): State<Arc<Shared>>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiFailure> {
    let ca = &shared.connector_ca;
    let validity = shared.config.connector_cert_validity;
    let registered = shared
        .store
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
        Err(RegisterError::Token(problem)) => {
            tracing::warn!(hostname = %req.hostname, "registration refused: {problem}");
            return Err(ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "token_refused",
                problem.to_string(),
            ));
        }
        Err(RegisterError::Sign(e)) => {
            let e: postern_pki::CsrError = e;
            return Err(ApiFailure::bad_request("bad_csr", e.to_string()));
        }
        Err(RegisterError::Store(e)) => return Err(e.into()),
    };
    tracing::info!(connector = %connector.id, group = %connector.group, hostname = %connector.hostname, "connector registered");
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
    Query(q): Query<ConfigQuery>,
) -> Result<Response, ApiFailure> {
    let id = peer.ok_or_else(|| {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "certificate_required",
            "this call needs the connector's client certificate; register the connector first",
        )
    })?;
    let connector = shared.store.connector(&id).await.map_err(|e| match e {
        StoreError::NotFound { .. } => ApiFailure::new(
            StatusCode::FORBIDDEN,
            "unknown_connector",
            format!("connector {id} is not registered with this edge"),
        ),
        other => other.into(),
    })?;
    if connector.revoked_at.is_some() {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "connector_revoked",
            format!("connector {id} was revoked; register it again with a new token"),
        ));
    }
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
    let doc = shared.connector_config(&id).await?;
    Ok(Json(doc).into_response())
}
