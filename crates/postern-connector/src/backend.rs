//! Forwarding one tunnel stream to its app over a kept HTTP/1.1 connection ([`crate::pool`]), and
//! the app's response back.
//!
//! **Invariant:** bodies stream; the connector never holds a whole request or response.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use postern_proto::body::{keep_trailers, Watched};
use postern_proto::limits::{head_fits, MAX_RESPONSE_HEAD_BYTES};
use postern_proto::tunnel::{HEADER_ERROR, HEADER_WS_ACCEPT, HEADER_WS_KEY};
use postern_proto::{StreamMeta, TunnelRefusal};
use tower_service::Service;

use crate::apps::{AppEntry, Apps};
use crate::destination::{self, Guarded, Policy};
use crate::pool;

pub type StreamBody = Either<Incoming, Full<Bytes>>;
pub(crate) type BackendBody = Either<Watched<Incoming>, Empty<Bytes>>;
/// Dials an app: TCP (only where the destination policy allows), then TLS for `https` apps.
type Dialer = HttpsConnector<Guarded>;

/// How the connector reaches apps: a dialer that verifies `https` apps' certificates (the
/// default) and one for apps an admin explicitly marked `insecure_skip_backend_tls_verify`, each
/// built on first use, so an idle connector does not hold the system's CA bundle in memory. The
/// connections themselves are kept per app, in [`AppEntry::connections`].
pub struct Backends {
    verified: OnceLock<Dialer>,
    unverified: OnceLock<Dialer>,
    apps: Arc<ArcSwap<Apps>>,
    /// The config version applied, for streams routed with a newer one.
    applied: tokio::sync::watch::Receiver<u64>,
    /// Which addresses the pools may connect to.
    policy: Arc<Policy>,
    lookup: destination::Lookup,
}

/// How long a stream routed with a newer config than the connector's waits for that config
/// before it is refused. Config changes reach connectors within a second.
const CONFIG_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(3);

impl Backends {
    pub fn new(
        apps: Arc<ArcSwap<Apps>>,
        applied: tokio::sync::watch::Receiver<u64>,
        policy: Policy,
    ) -> Backends {
        Backends {
            verified: OnceLock::new(),
            unverified: OnceLock::new(),
            apps,
            applied,
            policy: Arc::new(policy),
            lookup: destination::system_lookup(),
        }
    }

    fn dialer(&self, app: &AppEntry) -> &Dialer {
        let dial = |tls| dialer(tls, self.policy.clone(), self.lookup.clone());
        if app.route.insecure_skip_backend_tls_verify {
            self.unverified
                .get_or_init(|| dial(postern_pki::insecure_backend_client_config()))
        } else {
            self.verified
                .get_or_init(|| dial(postern_pki::backend_client_config()))
        }
    }

    /// Drops idle and closed app connections every [`pool::SWEEP_INTERVAL`], until shutdown or
    /// until the connector is gone.
    pub async fn sweep(backends: Weak<Backends>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(pool::SWEEP_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = crate::stopped(&mut shutdown) => return,
            }
            let Some(backends) = backends.upgrade() else {
                return;
            };
            let now = Instant::now();
            for app in backends.apps.load().iter() {
                app.connections.sweep(now);
            }
        }
    }

    /// Serves one tunnel stream. Never fails: problems become a response carrying
    /// [`HEADER_ERROR`], which the edge turns into the user's error page.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<StreamBody>, std::convert::Infallible> {
        let mut resolved = resolve(&self.apps.load(), req.headers());
        if let Err((TunnelRefusal::UnknownApp, Some(meta))) = &resolved {
            // The edge routed with a newer config than this connector has (an app just
            // published): wait briefly for it instead of refusing.
            let wanted = meta.config_version;
            if wanted > self.apps.load().version {
                let mut applied = self.applied.clone();
                let _ =
                    tokio::time::timeout(CONFIG_CATCH_UP, applied.wait_for(|v| *v >= wanted)).await;
                resolved = resolve(&self.apps.load(), req.headers());
            }
        }
        let (meta, app) = match resolved {
            Ok(found) => found,
            Err((refusal, meta)) => {
                if let Some(meta) = &meta {
                    tracing::warn!(app = %meta.app, edge_version = meta.config_version, applied = self.apps.load().version, request_id = %meta.request_id, "stream refused: app not in this connector's config");
                }
                let request_id = meta.map(|m| m.request_id);
                return Ok(refusal_response(refusal, request_id.as_deref()));
            }
        };
        let dialer = self.dialer(&app);
        let result = if req.method() == Method::CONNECT {
            websocket(dialer, &app, req, &meta).await
        } else {
            forward(dialer, &app, req).await
        };
        Ok(result.unwrap_or_else(|r| {
            tracing::warn!(app = %app.route.name, request_id = %meta.request_id, code = r.as_str(), "backend request failed");
            refusal_response(r, Some(&meta.request_id))
        }))
    }
}

/// The allow-list check: which app a stream is for, if its metadata is sound and the app is in
/// this connector's config. A refusal carries the metadata when it could be read.
pub(crate) fn resolve(
    apps: &Apps,
    headers: &http::HeaderMap,
) -> Result<(StreamMeta, Arc<AppEntry>), (TunnelRefusal, Option<StreamMeta>)> {
    let meta = StreamMeta::decode(headers).map_err(|e| {
        tracing::warn!(error = %e, "stream refused: bad metadata");
        (TunnelRefusal::BadMetadata, None)
    })?;
    match apps.get(meta.app) {
        Some(app) => Ok((meta, app.clone())),
        None => Err((TunnelRefusal::UnknownApp, Some(meta))),
    }
}

/// A dialer whose connections go only where the destination policy allows: names are resolved
/// and filtered by [`destination::Resolver`], IP literals judged by [`Guarded`].
fn dialer(tls: rustls::ClientConfig, policy: Arc<Policy>, lookup: destination::Lookup) -> Dialer {
    let mut http =
        HttpConnector::new_with_resolver(destination::Resolver::new(policy.clone(), lookup));
    http.enforce_http(false);
    http.set_nodelay(true);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(Guarded::new(http, policy))
}

/// A new connection to the app, ready for a request. Dialling (TCP, then TLS for `https` apps)
/// is bounded by the app's timeout.
async fn open(dialer: &Dialer, app: &AppEntry) -> Result<SendRequest<BackendBody>, TunnelRefusal> {
    let mut dialer = dialer.clone();
    let dial = async {
        std::future::poll_fn(|cx| dialer.poll_ready(cx)).await?;
        dialer.call(app.origin.clone()).await
    };
    let io = match tokio::time::timeout(app.timeout, dial).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) if destination::is_refusal(&*e) => {
            return Err(TunnelRefusal::DestinationRefused)
        }
        Ok(Err(e)) => return Err(unreachable("dial", &*e)),
        Err(_) => return Err(unreachable("dial", &"no answer within the app's timeout")),
    };
    let (mut sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| unreachable("handshake", &e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "app connection ended");
        }
    });
    sender
        .ready()
        .await
        .map_err(|e| unreachable("handshake", &e))?;
    Ok(sender)
}

/// Sends a request on a kept connection to the app, or on a new one when none is ready. A kept
/// connection that turns out closed before the request was written to it (the app timed it out)
/// is dropped and the request goes on the next: a request is never written twice.
async fn send(
    dialer: &Dialer,
    app: &AppEntry,
    mut req: Request<BackendBody>,
) -> Result<(Response<Incoming>, SendRequest<BackendBody>), TunnelRefusal> {
    loop {
        let (mut sender, kept) = match app.connections.take() {
            Some(sender) => (sender, true),
            None => (open(dialer, app).await?, false),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, sender)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if kept => req = unsent,
                _ => return Err(unreachable("request", e.error())),
            },
        }
    }
}

/// An app that could not be reached, logged with why.
fn unreachable(stage: &str, e: &dyn std::fmt::Display) -> TunnelRefusal {
    tracing::debug!(stage, error = %e, "backend request error");
    TunnelRefusal::BackendUnreachable
}

/// Rewrites a tunnel stream's head into the request to the app: its path in origin form, and
/// the app's `Host` (or the user's, with `preserve_host`).
fn backend_head(app: &AppEntry, parts: &mut http::request::Parts) -> Result<(), TunnelRefusal> {
    let external = parts.uri.authority().map(|a| a.as_str().to_owned());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = Uri::try_from(app.path_for(path).ok_or(TunnelRefusal::PathOutsideApp)?)
        .map_err(|_| TunnelRefusal::BadMetadata)?;
    parts.version = Version::HTTP_11;
    StreamMeta::strip(&mut parts.headers);
    let host = match (&external, app.route.preserve_host) {
        (Some(ext), true) => ext.clone(),
        _ => app.authority.as_str().to_owned(),
    };
    let host = HeaderValue::from_str(&host).map_err(|_| TunnelRefusal::BadMetadata)?;
    parts.headers.insert(header::HOST, host);
    Ok(())
}

async fn forward(
    dialer: &Dialer,
    app: &AppEntry,
    req: Request<Incoming>,
) -> Result<Response<StreamBody>, TunnelRefusal> {
    let (mut parts, body) = req.into_parts();
    backend_head(app, &mut parts)?;
    let (body, sent) = Watched::new(body, keep_trailers);
    let backend_req = Request::from_parts(parts, Either::Left(body));
    // The app's time counts from when the request body has been sent in full.
    let deadline = async {
        sent.wait().await;
        tokio::time::sleep(app.timeout).await;
    };
    let (resp, sender) = tokio::select! {
        r = send(dialer, app, backend_req) => r?,
        () = deadline => return Err(TunnelRefusal::BackendTimeout),
    };
    // Kept now, it is taken again once this response's body has been read to its end.
    app.connections.put(sender, Instant::now());
    app_response(resp)
}

/// The app's response as it goes back up the tunnel: hop-by-hop and reserved headers removed,
/// and refused if its head is larger than a tunnel carries, so an app can never end the tunnel
/// it answers on. (Its trailers are bounded by the HTTP/1.1 client itself, at 16 KiB.)
fn app_response(resp: Response<Incoming>) -> Result<Response<StreamBody>, TunnelRefusal> {
    let (mut parts, body) = resp.into_parts();
    postern_proto::hop::strip_hop_by_hop(&mut parts.headers);
    // Only the connector speaks `postern-*` to the edge; an app cannot.
    StreamMeta::strip(&mut parts.headers);
    if !head_fits(
        &parts.headers,
        &[(":status".len(), 3)],
        MAX_RESPONSE_HEAD_BYTES,
    ) {
        return Err(TunnelRefusal::ResponseHeadTooLarge);
    }
    parts.version = Version::HTTP_2;
    Ok(Response::from_parts(parts, Either::Left(body)))
}

/// An RFC 8441 WebSocket stream from the edge, made into a real HTTP/1.1 upgrade with the app.
async fn websocket(
    dialer: &Dialer,
    app: &AppEntry,
    mut req: Request<Incoming>,
    meta: &StreamMeta,
) -> Result<Response<StreamBody>, TunnelRefusal> {
    let is_ws = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return Err(TunnelRefusal::BadMetadata);
    }
    let key = req.headers_mut().remove(&HEADER_WS_KEY);
    let tunnel_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    backend_head(app, &mut parts)?;
    parts.method = Method::GET;
    parts.extensions = http::Extensions::new();
    let h = &mut parts.headers;
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Some(key) = key {
        h.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    let backend_req = Request::from_parts(parts, Either::Right(Empty::new()));
    let (resp, sender) = tokio::time::timeout(app.timeout, send(dialer, app, backend_req))
        .await
        .map_err(|_| TunnelRefusal::BackendTimeout)??;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Still HTTP: the connection serves the next request. (After a 101 it is the WebSocket's.)
        app.connections.put(sender, Instant::now());
    }
    if resp.status().is_success() {
        // A 2xx that is not 101 would read as "upgraded" on an HTTP/2 CONNECT stream.
        return Err(TunnelRefusal::UpgradeRefused);
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The app refused the upgrade with an error: its answer goes back as is.
        return app_response(resp);
    }
    let mut ok = Response::new(Either::Right(Full::new(Bytes::new())));
    for name in [
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ] {
        if let Some(v) = resp.headers().get(&name) {
            ok.headers_mut().insert(name, v.clone());
        }
    }
    if let Some(accept) = resp.headers().get(header::SEC_WEBSOCKET_ACCEPT) {
        ok.headers_mut().insert(HEADER_WS_ACCEPT, accept.clone());
    }
    let backend_upgrade = hyper::upgrade::on(resp);
    let request_id = meta.request_id.clone();
    tokio::spawn(async move {
        match tokio::try_join!(tunnel_upgrade, backend_upgrade) {
            Ok((tunnel, backend)) => {
                let mut tunnel = TokioIo::new(tunnel);
                let mut backend = TokioIo::new(backend);
                if let Err(e) = tokio::io::copy_bidirectional(&mut tunnel, &mut backend).await {
                    tracing::debug!(%request_id, error = %e, "websocket ended");
                }
            }
            Err(e) => tracing::warn!(%request_id, error = %e, "websocket upgrade failed"),
        }
    });
    Ok(ok)
}

fn refusal_response(r: TunnelRefusal, request_id: Option<&str>) -> Response<StreamBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(r.as_str()))));
    *resp.status_mut() = r.status();
    resp.headers_mut()
        .insert(HEADER_ERROR, HeaderValue::from_static(r.as_str()));
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        resp.headers_mut().insert("x-request-id", id);
    }
    resp
}

#[cfg(test)]
mod tests {
    use postern_proto::{AppId, AppRoute, ConnectorConfig};

    use super::*;

    fn apps() -> Apps {
        Apps::from_config(&ConnectorConfig {
            format: 1,
            version: 3,
            connector_id: "c".into(),
            group: "g".into(),
            apps: vec![AppRoute {
                id: AppId(7),
                name: "seven".into(),
                external_host: "seven.example".into(),
                internal_url: "http://10.0.0.7:8080/".into(),
                preserve_host: false,
                insecure_skip_backend_tls_verify: false,
                backend_timeout_ms: 1000,
            }],
            renew_after_secs: None,
        })
    }

    fn check(app: Option<u64>, expected: Result<&str, TunnelRefusal>) {
        let mut headers = http::HeaderMap::new();
        if let Some(id) = app {
            StreamMeta {
                app: AppId(id),
                config_version: 3,
                request_id: "rid".into(),
            }
            .encode(&mut headers);
        }
        let got = resolve(&apps(), &headers)
            .map(|(_, app)| app.route.name.clone())
            .map_err(|(r, _)| r);
        assert_eq!(got.as_deref().map_err(|r| *r), expected, "app {app:?}");
    }

    #[test]
    fn only_apps_in_the_config_are_reachable() {
        check(Some(7), Ok("seven"));
        check(Some(8), Err(TunnelRefusal::UnknownApp));
        check(Some(0), Err(TunnelRefusal::UnknownApp));
        check(None, Err(TunnelRefusal::BadMetadata));
    }

    #[test]
    fn refusals_are_marked_for_the_edge() {
        let resp = refusal_response(TunnelRefusal::UnknownApp, Some("rid"));
        assert_eq!(resp.status(), http::StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(resp.headers()[&HEADER_ERROR], "unknown-app");
    }
}
