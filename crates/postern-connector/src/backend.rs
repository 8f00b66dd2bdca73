//! Forwarding one tunnel stream to its app over a keep-alive pool, and the app's response back.
//!
//! **Invariant:** bodies stream; the connector never holds a whole request or response.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use postern_proto::body::{keep_trailers, Watched};
use postern_proto::limits::{head_fits, MAX_RESPONSE_HEAD_BYTES};
use postern_proto::tunnel::{HEADER_ERROR, HEADER_WS_ACCEPT, HEADER_WS_KEY};
use postern_proto::{StreamMeta, TunnelRefusal};

use crate::apps::{AppEntry, Apps};
use crate::destination::{self, Guarded, Policy};

pub type StreamBody = Either<Incoming, Full<Bytes>>;
type BackendBody = Either<Watched<Incoming>, Empty<Bytes>>;
type Pool = Client<HttpsConnector<Guarded>, BackendBody>;

/// The connector's clients for apps: one that verifies `https` apps' certificates (the default)
/// and one for apps an admin explicitly marked `insecure_skip_backend_tls_verify`. Each is built
/// on first use, so an idle connector does not hold the system's CA bundle in memory.
pub struct Backends {
    verified: OnceLock<Pool>,
    unverified: OnceLock<Pool>,
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

    fn pool(&self, tls: rustls::ClientConfig) -> Pool {
        pool(tls, self.policy.clone(), self.lookup.clone())
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
        let client = if app.route.insecure_skip_backend_tls_verify {
            self.unverified
                .get_or_init(|| self.pool(postern_pki::insecure_backend_client_config()))
        } else {
            self.verified
                .get_or_init(|| self.pool(postern_pki::backend_client_config()))
        };
        let result = if req.method() == Method::CONNECT {
            websocket(client, &app, req, &meta).await
        } else {
            forward(client, &app, req).await
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

/// A keep-alive pool whose connections go only where the destination policy allows: names are
/// resolved and filtered by [`destination::Resolver`], IP literals judged by [`Guarded`].
fn pool(tls: rustls::ClientConfig, policy: Arc<Policy>, lookup: destination::Lookup) -> Pool {
    let mut http =
        HttpConnector::new_with_resolver(destination::Resolver::new(policy.clone(), lookup));
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(Guarded::new(http, policy));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https)
}

/// Rewrites a tunnel stream's head into the request to the app.
fn backend_head(app: &AppEntry, parts: &mut http::request::Parts) -> Result<(), TunnelRefusal> {
    let external = parts.uri.authority().map(|a| a.as_str().to_owned());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = Uri::builder()
        .scheme(app.scheme.clone())
        .authority(app.authority.clone())
        .path_and_query(app.path_for(path).ok_or(TunnelRefusal::PathOutsideApp)?)
        .build()
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
    client: &Pool,
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
    let resp = tokio::select! {
        r = client.request(backend_req) => r,
        () = deadline => return Err(TunnelRefusal::BackendTimeout),
    }
    .map_err(backend_error)?;
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
    client: &Pool,
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
    let resp = tokio::time::timeout(app.timeout, client.request(backend_req))
        .await
        .map_err(|_| TunnelRefusal::BackendTimeout)?
        .map_err(backend_error)?;
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

/// What a failed backend request tells the edge: a refusal by the destination policy, or an app
/// that could not be reached.
fn backend_error(e: hyper_util::client::legacy::Error) -> TunnelRefusal {
    if destination::is_refusal(&e) {
        return TunnelRefusal::DestinationRefused;
    }
    tracing::debug!(error = %e, "backend request error");
    TunnelRefusal::BackendUnreachable
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
