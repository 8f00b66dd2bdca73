//! The user's request path: route by host, answer `robots.txt`, pick a tunnel, stream the request
//! down it and the response back.
//!
//! **Invariant:** bodies stream in both directions; the edge never holds a whole request or
//! response body. Backpressure is HTTP/2 flow control on the tunnel, end to end.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use postern_obs::metrics::Preauth as Decision;
use postern_obs::trace::{TRACEPARENT, TRACESTATE};
use postern_proto::body::{BodySent, Watched};
use postern_proto::tunnel::{HEADER_ERROR, HEADER_WS_ACCEPT, HEADER_WS_KEY};
use postern_proto::{StreamMeta, TunnelRefusal};
use postern_store::Preauth;

use crate::body::{EdgeBody, UserBody};
use crate::hygiene::{self, Forwarded};
use crate::observe::{CountedBody, CountingIo, Exchange, ObservedBody};
use crate::preauth;
use crate::rescue::Refusal;
use crate::state::{Route, Shared};
use crate::tunnels::{InFlight, NoTunnel, TunnelBody};

/// How many different tunnels a request is offered to when a tunnel closes before taking it.
const MAX_ATTEMPTS: usize = 3;
/// Extra time the edge gives the connector beyond the app's own timeout, which the connector
/// enforces and reports precisely.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

const ROBOTS_TXT: &str = "User-agent: *\nDisallow: /\n";

/// Serves one user request. Never fails: every problem becomes an error page. The request's
/// [`Exchange`] rides on the response body and is finished when it ends (or, for a WebSocket,
/// by the task that carries it).
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ObservedBody>, Infallible> {
    let id = rand::random::<u128>();
    let request_id = postern_obs::trace::hex(&id.to_be_bytes());
    // From here on the client is who the request is from: the peer, or the client a trusted
    // proxy names (`--trusted-proxy`); only `X-Forwarded-For` still names the peer.
    let via = peer.ip();
    let peer = SocketAddr::new(
        hygiene::client_ip(via, req.headers(), &shared.config.trusted_proxies),
        peer.port(),
    );
    // Cheap clones (shared bytes), kept for the log line and the error page.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let json = crate::rescue::wants_json(req.headers());
    let mut ex = Some(Exchange::open(
        &shared,
        id,
        &request_id,
        peer.ip(),
        &method,
        &uri,
        req.headers(),
    ));
    let resp = match route_and_forward(&shared, peer, via, req, &request_id, json, &mut ex).await {
        Ok(resp) => {
            tracing::debug!(%request_id, %method, path = uri.path(), status = resp.status().as_u16(), "forwarded");
            resp
        }
        Err(refusal) => {
            if let Some(left_out) = shared.refusal_log.admit() {
                tracing::warn!(
                    %request_id, %method, path = uri.path(), code = refusal.code(), client = %peer.ip(),
                    left_out, "request refused: {}", refusal.message()
                );
            }
            if let Some(ex) = ex.as_mut() {
                ex.set_refusal(refusal.code());
            }
            refusal.into_response(json, &request_id).map(EdgeBody::Page)
        }
    };
    if let Some(ex) = ex.as_mut() {
        ex.set_status(resp.status().as_u16());
    }
    Ok(resp.map(|body| ObservedBody::new(body, ex)))
}

#[allow(clippy::too_many_arguments)]
async fn route_and_forward(
    shared: &Shared,
    peer: SocketAddr,
    via: std::net::IpAddr,
    req: Request<Incoming>,
    request_id: &str,
    json: bool,
    ex: &mut Option<Exchange>,
) -> Result<Response<EdgeBody>, Refusal> {
    shared.rates.check_ip(peer.ip())?;
    crate::guard::check_request_head(&req)?;
    let (host, authority) = request_host(&req).ok_or(Refusal::MissingHost)?;
    if let Some(ex) = ex.as_mut() {
        ex.set_host(&host);
    }
    if req.method() == Method::CONNECT {
        return Err(Refusal::ConnectNotAllowed);
    }
    if req.uri().path() == "/robots.txt" && matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(robots(request_id));
    }
    if host == shared.config.idp_host {
        return Ok(Box::pin(crate::idp::serve(shared, peer, req, request_id)).await);
    }
    let routes = shared.routes.load_full();
    let route = routes
        .get(&host)
        .ok_or_else(|| Refusal::UnknownApp { host: host.clone() })?
        .clone();
    if let Some(ex) = ex.as_mut() {
        ex.set_route(&route);
    }
    let version = routes.version;
    shared.rates.check_app(route.app_id, &route.name)?;
    if route.maintenance {
        return Err(Refusal::Maintenance {
            app: route.name.clone(),
        });
    }
    if req.uri().path() == preauth::JWKS_PATH && matches!(*req.method(), Method::GET | Method::HEAD)
    {
        return Ok(preauth::jwks_response(&shared.auth).map(EdgeBody::Page));
    }
    let identity = match &route.sign_in {
        None if route.preauth == Preauth::Oidc => {
            // The app's sign-in settings could not be used (logged at reload): refuse rather
            // than let anyone through.
            return Err(Refusal::SignInMisconfigured {
                app: route.name.clone(),
                reason: "its sign-in settings are not valid".into(),
            });
        }
        None => None,
        Some(sign_in) => {
            let guard_req = preauth::Request {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                json,
                request_id,
                client_ip: peer.ip(),
            };
            // Boxed: the guard's future is larger than the rest of the request's together, and
            // every request's future is moved several times on its way into a task.
            let guarded = Box::pin(preauth::guard(shared, &routes, sign_in, &guard_req)).await;
            route.metrics.preauth(match &guarded {
                Ok(preauth::Guarded::Forward(_)) => Decision::Allow,
                Ok(preauth::Guarded::Answer(_)) => Decision::Redirect,
                Err(_) => Decision::Deny,
            });
            match guarded? {
                preauth::Guarded::Forward(identity) => {
                    if let Some(ex) = ex.as_mut() {
                        ex.set_user(identity.subject(), identity.email());
                    }
                    Some(identity)
                }
                preauth::Guarded::Answer(resp) => {
                    let mut resp = resp.map(EdgeBody::Page);
                    hygiene::prepare_response(resp.headers_mut(), request_id);
                    return Ok(resp);
                }
            }
        }
    };
    drop(routes);
    if shared.shutting_down.load(Ordering::Relaxed) {
        return Err(Refusal::ShuttingDown);
    }
    let meta = StreamMeta {
        app: route.app_id,
        config_version: version,
        request_id: request_id.to_owned(),
    };
    let fwd = Forwarded {
        client_ip: peer.ip(),
        peer_ip: via,
        external_host: authority.as_str(),
        request_id,
    };
    if is_websocket_upgrade(&req) {
        let stream = Stream {
            authority: &authority,
            fwd: &fwd,
            meta: &meta,
            identity: identity.as_ref(),
        };
        // Boxed for the same reason as the sign-in guard: rare, and large.
        return Box::pin(websocket(shared, &route, req, &stream, ex)).await;
    }
    let (mut parts, body) = req.into_parts();
    hygiene::prepare_request(&mut parts.headers, &fwd);
    set_trace(&mut parts.headers, ex.as_ref());
    if let Some(identity) = &identity {
        identity.apply(&mut parts.headers);
    }
    meta.encode(&mut parts.headers);
    parts.uri = tunnel_uri(&authority, parts.uri.path_and_query())?;
    parts.version = Version::HTTP_2;
    crate::guard::check_tunnel_head(&parts)?;
    // A request without a body can be sent again if a tunnel refuses it unprocessed.
    let replay = http_body::Body::is_end_stream(&body).then(|| Replay::of(&parts));
    let stall_timeout = shared.config.limits.stall_timeout;
    let permit = shared.in_flight.acquire(peer.ip())?;
    let (mut body, outcome) = UserBody::new(body, stall_timeout);
    // The body's first 64 KiB (most bodies whole) arrive before the app hears of the request,
    // within the stall timeout in all: a client that sends slowly holds no app worker.
    if let Err(e) = body
        .prefetch(crate::body::PREFETCH_BYTES, stall_timeout)
        .await
    {
        tracing::debug!(error = %e, "request body refused before forwarding");
        return Err(outcome
            .refusal(stall_timeout)
            .unwrap_or(Refusal::BadRequestBody));
    }
    let counted = ex
        .as_ref()
        .map_or_else(Default::default, Exchange::bytes_in);
    let (body, sent) = Watched::new(
        CountedBody::new(body, counted),
        hygiene::clean_request_trailers,
    );
    let tunnel_req = Request::from_parts(parts, Either::Left(body));
    let sending = Instant::now();
    let (resp, mut in_flight) = send(shared, &route, tunnel_req, sent, replay)
        .await
        // A stream that failed because of what the client sent is the client's error.
        .map_err(|e| outcome.refusal(stall_timeout).unwrap_or(e))?;
    in_flight.hold(permit);
    if let Some(ex) = ex.as_mut() {
        ex.set_upstream(sending.elapsed());
        ex.set_connector(&in_flight.tunnel().connector_id);
    }
    let (mut parts, body) = resp.into_parts();
    refusal_from_connector(&parts.headers, &route)?;
    hygiene::prepare_response(&mut parts.headers, request_id);
    Ok(Response::from_parts(
        parts,
        EdgeBody::app(body, in_flight, &shared.stalls, peer.ip()),
    ))
}

/// Sends a request down a tunnel of the route's group, waiting in the queue for one if none is
/// online, and moving to another tunnel when the chosen one closed before the request left (a
/// connector that went away or sent GOAWAY). A stream the connector accepted and then lost is not
/// replayed: its body is gone and the app may have seen it.
/// The head of a bodyless request, to send it again on another tunnel.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(parts: &http::request::Parts) -> Replay {
        Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    fn request(&self) -> Request<TunnelBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Whether the connector refused a stream without processing it: it arrived after the connector
/// said GOAWAY (the tunnel is being replaced or drained), or was reset with REFUSED_STREAM. Such
/// a request may be retried, whatever its method (RFC 9113, section 8.7).
fn unprocessed(err: &hyper::Error) -> bool {
    let Some(h2) = std::error::Error::source(err).and_then(|s| s.downcast_ref::<h2::Error>())
    else {
        return false;
    };
    let graceful_goaway =
        h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
    graceful_goaway || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}

async fn send(
    shared: &Shared,
    route: &Route,
    req: Request<TunnelBody>,
    sent: BodySent,
    replay: Option<Replay>,
) -> Result<(Response<Incoming>, InFlight), Refusal> {
    let deadline = tokio::time::Instant::now() + shared.config.queue_timeout;
    let lost = || Refusal::TunnelLost {
        app: route.name.clone(),
    };
    let mut next = Some(req);
    let mut exclude = None;
    for _ in 0..MAX_ATTEMPTS {
        let Some(req) = next.take() else { break };
        let queued = Instant::now();
        let picked = shared
            .tunnels
            .acquire(&route.group, exclude, deadline, shared.config.max_queued)
            .await
            .map_err(|e| {
                route.metrics.queue_timeout();
                match e {
                    NoTunnel::TimedOut => Refusal::NoConnectorOnline {
                        app: route.name.clone(),
                        group: route.group.clone(),
                    },
                    NoTunnel::QueueFull => Refusal::QueueFull {
                        app: route.name.clone(),
                    },
                    NoTunnel::Busy => Refusal::ConnectorsBusy {
                        app: route.name.clone(),
                        group: route.group.clone(),
                    },
                }
            })?;
        route.metrics.queue_wait(queued.elapsed());
        let tunnel = picked.tunnel().id;
        let mut sender = picked.tunnel().sender();
        // The app's time counts from when the request body has been sent in full: a slow upload
        // is not a slow app.
        let deadline = {
            let sent = sent.clone();
            let limit = route.timeout + TIMEOUT_MARGIN;
            async move {
                sent.wait().await;
                tokio::time::sleep(limit).await;
            }
        };
        let outcome = tokio::select! {
            r = sender.try_send_request(req) => Ok(r),
            () = deadline => Err(()),
        };
        match outcome {
            Err(()) => {
                return Err(Refusal::BackendTimeout {
                    app: route.name.clone(),
                    timeout: route.timeout,
                })
            }
            Ok(Ok(resp)) => return Ok((resp, picked)),
            Ok(Err(mut err)) => {
                match err.take_message() {
                    // The tunnel closed before the request left: nothing reached the app.
                    Some(unsent) => {
                        tracing::debug!(tunnel, "tunnel closed; retrying on another");
                        exclude = Some(tunnel);
                        next = Some(unsent);
                    }
                    None if replay.is_some() && unprocessed(err.error()) => {
                        tracing::debug!(tunnel, "the connector refused the stream unprocessed; retrying on another tunnel");
                        exclude = Some(tunnel);
                        next = replay.as_ref().map(Replay::request);
                    }
                    None => {
                        // A torn-down tunnel fails all its streams at once: within the same
                        // budget as refusal warnings.
                        if let Some(left_out) = shared.refusal_log.admit() {
                            tracing::warn!(tunnel, error = %err.error(), left_out, "tunnel stream failed");
                        }
                        return Err(lost());
                    }
                }
            }
        }
    }
    Err(lost())
}

fn refusal_from_connector(headers: &HeaderMap, route: &Route) -> Result<(), Refusal> {
    let Some(code) = headers.get(&HEADER_ERROR) else {
        return Ok(());
    };
    let app = route.name.clone();
    Err(match code.to_str().ok().and_then(TunnelRefusal::parse) {
        Some(TunnelRefusal::UnknownApp) => Refusal::ConnectorLacksApp { app },
        Some(TunnelRefusal::BackendTimeout) => Refusal::BackendTimeout {
            app,
            timeout: route.timeout,
        },
        Some(TunnelRefusal::PathOutsideApp) => Refusal::PathOutsideApp { app },
        Some(TunnelRefusal::UpgradeRefused) => Refusal::UpgradeRefused { app },
        Some(TunnelRefusal::ResponseHeadTooLarge) => Refusal::ResponseHeadTooLarge { app },
        Some(TunnelRefusal::DestinationRefused) => Refusal::DestinationRefused { app },
        Some(TunnelRefusal::BackendUnreachable) | Some(TunnelRefusal::BadMetadata) | None => {
            Refusal::BackendUnreachable { app }
        }
    })
}

/// What a tunnel stream is sent with: the user's authority, the forwarding headers, the stream
/// metadata and the signed-in user.
#[derive(Clone, Copy)]
struct Stream<'a> {
    authority: &'a Authority,
    fwd: &'a Forwarded<'a>,
    meta: &'a StreamMeta,
    identity: Option<&'a preauth::Identity>,
}

/// Carries an HTTP/1.1 WebSocket upgrade as an RFC 8441 extended CONNECT stream. The connector
/// performs the real upgrade with the app, so the app's own `Sec-WebSocket-Accept`, protocol and
/// extensions come back to the user unchanged.
async fn websocket(
    shared: &Shared,
    route: &Route,
    mut req: Request<Incoming>,
    stream: &Stream<'_>,
    ex: &mut Option<Exchange>,
) -> Result<Response<EdgeBody>, Refusal> {
    let Stream {
        authority,
        fwd,
        meta,
        identity,
    } = *stream;
    let user_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    let mut headers = parts.headers;
    let key = headers.remove(header::SEC_WEBSOCKET_KEY);
    hygiene::prepare_request(&mut headers, fwd);
    set_trace(&mut headers, ex.as_ref());
    if let Some(identity) = identity {
        identity.apply(&mut headers);
    }
    meta.encode(&mut headers);
    if let Some(key) = key {
        headers.insert(HEADER_WS_KEY, key);
    }
    let mut tunnel_req = Request::new(Either::Right(Empty::<Bytes>::new()));
    *tunnel_req.method_mut() = Method::CONNECT;
    *tunnel_req.uri_mut() = tunnel_uri(authority, parts.uri.path_and_query())?;
    *tunnel_req.version_mut() = Version::HTTP_2;
    *tunnel_req.headers_mut() = headers;
    tunnel_req
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    {
        let (parts, body) = tunnel_req.into_parts();
        crate::guard::check_tunnel_head(&parts)?;
        tunnel_req = Request::from_parts(parts, body);
    }

    let permit = shared.in_flight.acquire(fwd.client_ip)?;
    let sending = Instant::now();
    let (resp, mut in_flight) = send(shared, route, tunnel_req, BodySent::already(), None).await?;
    in_flight.hold(permit);
    if let Some(ex) = ex.as_mut() {
        ex.set_upstream(sending.elapsed());
        ex.set_connector(&in_flight.tunnel().connector_id);
    }
    refusal_from_connector(resp.headers(), route)?;
    if resp.status() != StatusCode::OK {
        // The app refused the upgrade; its answer goes to the user as is.
        let (mut parts, body) = resp.into_parts();
        hygiene::prepare_response(&mut parts.headers, &meta.request_id);
        return Ok(Response::from_parts(
            parts,
            EdgeBody::app(body, in_flight, &shared.stalls, fwd.client_ip),
        ));
    }
    if !resp.headers().contains_key(&HEADER_WS_ACCEPT) {
        return Err(Refusal::UpgradeRefused {
            app: route.name.clone(),
        });
    }
    let mut switching = Response::new(EdgeBody::page(Bytes::new()));
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    {
        let h = switching.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        for name in [
            header::SEC_WEBSOCKET_PROTOCOL,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ] {
            if let Some(v) = resp.headers().get(&name) {
                h.insert(name, v.clone());
            }
        }
        if let Some(accept) = resp.headers().get(&HEADER_WS_ACCEPT) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
            h.insert(hygiene::X_REQUEST_ID, v);
        }
    }
    let tunnel_upgrade = hyper::upgrade::on(resp);
    let request_id = meta.request_id.clone();
    // The WebSocket's record is written when it closes, with the bytes it carried.
    let mut ex = ex.take();
    if let Some(ex) = ex.as_mut() {
        ex.set_status(StatusCode::SWITCHING_PROTOCOLS.as_u16());
    }
    let grace = shared.config.limits.stall_timeout;
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let (mut sent, mut received) = (0, 0);
        match tokio::try_join!(user_upgrade, tunnel_upgrade) {
            Ok((user, tunnel)) => {
                let mut user = CountingIo::new(TokioIo::new(user));
                let mut tunnel = TokioIo::new(tunnel);
                if let Err(e) = relay(&mut user, &mut tunnel, grace).await {
                    tracing::debug!(%request_id, error = %e, "websocket ended");
                }
                (received, sent) = user.counts();
            }
            Err(e) => tracing::warn!(%request_id, error = %e, "websocket upgrade failed"),
        }
        if let Some(ex) = ex {
            ex.websocket_closed(received, sent);
        }
    });
    Ok(switching)
}

/// Copies a WebSocket's bytes both ways until both sides have ended, or until one side has ended
/// and the other has not followed within `grace` (the stall timeout): an app that closes its
/// WebSocket frees the user's connection, its listener slot and its tunnel stream even when the
/// client never closes its own side, and a client that leaves frees the app's.
async fn relay<U, T>(user: &mut U, tunnel: &mut T, grace: Duration) -> std::io::Result<()>
where
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut user_in, mut user_out) = tokio::io::split(user);
    let (mut tunnel_in, mut tunnel_out) = tokio::io::split(tunnel);
    let up = async {
        tokio::io::copy(&mut user_in, &mut tunnel_out).await?;
        tunnel_out.shutdown().await
    };
    let down = async {
        tokio::io::copy(&mut tunnel_in, &mut user_out).await?;
        user_out.shutdown().await
    };
    tokio::pin!(up, down);
    let rest = tokio::select! {
        r = &mut up => { r?; tokio::time::timeout(grace, &mut down).await }
        r = &mut down => { r?; tokio::time::timeout(grace, &mut up).await }
    };
    rest.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the other side did not close within the stall timeout",
        ))
    })
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// The URI of a tunnel stream: the user's authority (host and port) as `:authority`, the user's
/// path and query.
fn tunnel_uri(authority: &Authority, path: Option<&PathAndQuery>) -> Result<Uri, Refusal> {
    let authority = authority.clone();
    Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority)
        .path_and_query(
            path.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        )
        .build()
        .map_err(|_| Refusal::MissingHost)
}

/// The request's host (lower-case, without port or trailing dot: what routing matches) and its
/// authority as the user sent it, lower-cased (host and port: what the app may be shown).
pub fn request_host<B>(req: &Request<B>) -> Option<(String, Authority)> {
    // Two `Host` headers name no one host (RFC 9112, 3.2: answered 400).
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        return None;
    }
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => {
            let raw = req.headers().get(header::HOST)?.to_str().ok()?;
            Authority::from_str(raw).ok()?
        }
    };
    // An authority with userinfo (`user@host`) is not a host a browser sends; refusing it keeps
    // user-chosen text out of `X-Forwarded-Host` and a preserved `Host`.
    if authority.as_str().contains('@') {
        return None;
    }
    let authority = Authority::from_str(&authority.as_str().to_ascii_lowercase()).ok()?;
    let host = authority.host().trim_end_matches('.').to_owned();
    (!host.is_empty()).then_some((host, authority))
}

fn robots(request_id: &str) -> Response<EdgeBody> {
    let mut resp = Response::new(EdgeBody::page(ROBOTS_TXT));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(hygiene::X_REQUEST_ID, v);
    }
    resp
}

/// A random request ID: 128 bits, hex.
pub fn new_request_id() -> String {
    postern_obs::trace::hex(&rand::random::<u128>().to_be_bytes())
}

/// Sets the `traceparent` the connector passes on to the app: the user's trace with the edge's
/// span, or a new trace. A `tracestate` goes with it only when the user's trace was kept.
fn set_trace(headers: &mut HeaderMap, ex: Option<&Exchange>) {
    let Some(ex) = ex else { return };
    if let Ok(mut v) = HeaderValue::from_str(&ex.traceparent) {
        // Unique to this hop: never indexed, like the request ID. Indexed, each would take a
        // place in the tunnel's HPACK table and every next one would be compared with all of
        // them (h2 chains entries of one name) before being added in turn.
        v.set_sensitive(true);
        headers.insert(TRACEPARENT, v);
    }
    if !ex.continued_trace {
        headers.remove(TRACESTATE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_host(uri: &str, host_header: Option<&str>, expected: Option<&str>) {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host_header {
            b = b.header(header::HOST, h);
        }
        let req = b.body(()).unwrap();
        let got = request_host(&req).map(|(h, _)| h);
        assert_eq!(got.as_deref(), expected, "{uri} {host_header:?}");
    }

    #[test]
    fn hosts() {
        check_host("/", Some("App.Example:8443"), Some("app.example"));
        check_host("/", Some("app.example."), Some("app.example"));
        check_host("https://a.example/x", Some("b.example"), Some("a.example"));
        check_host("/", None, None);
        check_host("/", Some(""), None);
        check_host("/", Some("bad host"), None);
        check_host("/", Some("[::1]:8443"), Some("[::1]"));
        check_host("/", Some("evil%2f@app.example"), None);
        check_host("https://u@app.example/", None, None);
    }
}
