//! One request as the operator sees it: the [`Exchange`] is opened when a request arrives, filled
//! in along the way (app, user, connector, upstream time, refusal), carried by the response body
//! and finished once, when that body ends (or, for a WebSocket, when it closes). Finishing feeds
//! the metrics and the access log from the same record, so the two never disagree.
//!
//! Also the edge's trace context (`traceparent` in, a new span out) and its `/readyz` probe.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use postern_obs::access::{millis, AccessLog, Record};
use postern_obs::metrics::AppMetrics;
use postern_obs::trace::{TraceContext, TRACEPARENT};

use crate::body::{BoxError, EdgeBody};
use crate::state::{Route, Shared};

/// A request in progress, finished exactly once.
pub struct Exchange {
    started: Instant,
    time: SystemTime,
    /// For the access log; empty without one.
    pub request_id: String,
    /// The `traceparent` sent on to the connector and the app.
    pub traceparent: String,
    trace_id: String,
    /// Whether the incoming `traceparent` was used (else `tracestate` is dropped too).
    pub continued_trace: bool,
    route: Option<Arc<Route>>,
    host: String,
    method: String,
    path: String,
    client_ip: IpAddr,
    user_sub: Option<String>,
    user_email: Option<String>,
    connector_id: Option<String>,
    upstream: Option<Duration>,
    refusal: Option<&'static str>,
    status: u16,
    /// Request body bytes, counted by [`CountedBody`] as they pass.
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    websocket: bool,
    log: Option<AccessLog>,
}

impl Exchange {
    /// Opens the record of a request that just arrived. `id` (128 random bits, `request_id` in
    /// hex) also starts the trace when the request brings no valid `traceparent`.
    pub fn open(
        shared: &Shared,
        id: u128,
        request_id: &str,
        client_ip: IpAddr,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Exchange {
        let mut incoming = headers.get_all(TRACEPARENT).iter();
        // Two `traceparent` headers are as invalid as a malformed one.
        let incoming = match (incoming.next(), incoming.next()) {
            (Some(v), None) => TraceContext::parse(v.as_bytes()),
            _ => None,
        };
        let trace = TraceContext::next_hop(incoming, id, rand::random());
        let log = shared.access_log.clone();
        let path = match (&log, shared.config.access_log_query) {
            (None, _) => String::new(),
            (Some(_), true) => uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
            (Some(_), false) => uri.path().to_owned(),
        };
        Exchange {
            started: Instant::now(),
            time: SystemTime::now(),
            request_id: if log.is_some() {
                request_id.to_owned()
            } else {
                String::new()
            },
            traceparent: trace.header(),
            trace_id: if log.is_some() {
                trace.trace_id_hex()
            } else {
                String::new()
            },
            continued_trace: incoming.is_some(),
            route: None,
            host: String::new(),
            method: if log.is_some() {
                method.as_str().to_owned()
            } else {
                String::new()
            },
            path,
            client_ip,
            user_sub: None,
            user_email: None,
            connector_id: None,
            upstream: None,
            refusal: None,
            status: 0,
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: 0,
            websocket: false,
            log,
        }
    }

    pub fn set_host(&mut self, host: &str) {
        if self.log.is_some() {
            self.host = host.to_owned();
        }
    }

    pub fn set_route(&mut self, route: &Arc<Route>) {
        self.route = Some(route.clone());
    }

    pub fn set_user(&mut self, subject: &str, email: Option<&str>) {
        if self.log.is_some() {
            self.user_sub = Some(subject.to_owned());
            self.user_email = email.map(str::to_owned);
        }
    }

    pub fn set_connector(&mut self, connector_id: &str) {
        if self.log.is_some() {
            self.connector_id = Some(connector_id.to_owned());
        }
    }

    pub fn set_upstream(&mut self, took: Duration) {
        self.upstream = Some(took);
    }

    pub fn set_refusal(&mut self, code: &'static str) {
        self.refusal = Some(code);
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// The counter the request body adds to.
    pub fn bytes_in(&self) -> Arc<AtomicU64> {
        self.bytes_in.clone()
    }

    /// The app's metrics, or those of unknown hosts.
    pub fn app_metrics(&self) -> &AppMetrics {
        match &self.route {
            Some(r) => &r.metrics,
            None => AppMetrics::unknown(),
        }
    }

    /// A WebSocket that carried these bytes closed.
    pub fn websocket_closed(mut self, bytes_in: u64, bytes_out: u64) {
        self.websocket = true;
        self.bytes_in.store(bytes_in, Ordering::Relaxed);
        self.bytes_out = bytes_out;
        self.finish();
    }

    /// Feeds the metrics and the access log.
    pub fn finish(self) {
        let duration = self.started.elapsed();
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        self.app_metrics().request_done(
            self.status,
            duration,
            self.upstream,
            bytes_in,
            self.bytes_out,
        );
        if let Some(code) = self.refusal {
            postern_obs::metrics::refusal(code);
        }
        let Some(log) = &self.log else { return };
        log.log(Record {
            time: self.time,
            request_id: self.request_id,
            traceparent: self.traceparent,
            trace_id: self.trace_id,
            app: self
                .route
                .as_ref()
                .map_or(postern_obs::metrics::UNKNOWN_APP, |r| r.name.as_str())
                .to_owned(),
            host: self.host,
            method: self.method,
            path: self.path,
            status: self.status,
            bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: millis(duration),
            upstream_ms: self.upstream.map(millis),
            client_ip: self.client_ip,
            user_sub: self.user_sub,
            user_email: self.user_email,
            connector_id: self.connector_id,
            refusal: self.refusal,
            websocket: self.websocket,
        });
    }
}

/// The response body the user receives: counts the bytes sent and finishes the [`Exchange`]
/// when it ends, fails or is dropped (the user went away).
pub struct ObservedBody {
    inner: EdgeBody,
    exchange: Option<Box<Exchange>>,
}

impl ObservedBody {
    pub fn new(inner: EdgeBody, exchange: Option<Exchange>) -> ObservedBody {
        ObservedBody {
            inner,
            exchange: exchange.map(Box::new),
        }
    }

    fn finish(&mut self) {
        if let Some(ex) = self.exchange.take() {
            ex.finish();
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(ex), Some(data)) = (this.exchange.as_mut(), frame.data_ref()) {
                    ex.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body on its way down a tunnel, counting its bytes.
pub struct CountedBody<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> CountedBody<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>) -> CountedBody<B> {
        CountedBody { inner, count }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The edge's `/readyz` and the gauges read at each scrape. It is served only once the listeners
/// are bound and the routing config is loaded, so ready means the store answers and the edge is
/// not shutting down.
pub struct EdgeProbe {
    shared: Arc<Shared>,
    /// Connectors seen with tunnels at an earlier scrape: shown 0 once their tunnels are gone.
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Connectors whose certificate expiry an earlier scrape showed: NaN once revoked.
    certs_seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl EdgeProbe {
    pub fn new(shared: Arc<Shared>) -> EdgeProbe {
        EdgeProbe {
            shared,
            seen: Default::default(),
            certs_seen: Default::default(),
        }
    }
}

impl postern_obs::listener::Probe for EdgeProbe {
    fn ready(&self) -> Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let shared = &self.shared;
            if shared.shutting_down.load(Ordering::Relaxed) {
                return Err("shutting down".into());
            }
            postern_obs::metrics::timed_store("config_version", shared.store.config_version())
                .await
                .map(|_| ())
                .map_err(|e| format!("the store is not reachable: {e}"))
        })
    }

    fn refresh(&self) {
        let shared = &self.shared;
        let live = shared.tunnels.census();
        for (group, n) in &live.per_group {
            postern_obs::metrics::tunnels_in_group(group, *n);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for gone in seen.iter().filter(|c| !live.per_connector.contains_key(*c)) {
            postern_obs::metrics::tunnels_of_connector(gone, 0);
        }
        seen.retain(|c| live.per_connector.contains_key(c));
        for (connector, n) in &live.per_connector {
            postern_obs::metrics::tunnels_of_connector(connector, *n);
            seen.insert(connector.clone());
        }
        drop(seen);
        postern_obs::metrics::connectors_online(live.per_connector.len());
        let now = SystemTime::now();
        let left = |at: SystemTime| match at.duration_since(now) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        if let Some(at) = shared.public_certs.not_after() {
            postern_obs::metrics::certificate_expiry("edge", left(at));
        }
        if let Some(at) = postern_pki::der_not_after(shared.server_ca.cert_der()) {
            postern_obs::metrics::certificate_expiry("edge-ca", left(at));
        }
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let certs = shared
            .connector_certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut certs_seen = self.certs_seen.lock().unwrap_or_else(|p| p.into_inner());
        // A revoked connector's certificate no longer matters: NaN, which no threshold alerts on.
        for gone in certs_seen.iter().filter(|c| !certs.contains_key(*c)) {
            postern_obs::metrics::certificate_expiry_unknown(&format!("connector:{gone}"));
        }
        certs_seen.retain(|c| certs.contains_key(c));
        for (connector, not_after) in certs {
            postern_obs::metrics::certificate_expiry(
                &format!("connector:{connector}"),
                not_after.saturating_sub(now_secs),
            );
            certs_seen.insert(connector);
        }
    }
}

/// The user's side of a WebSocket, counting the bytes read from the user and written to them.
pub struct CountingIo<T> {
    inner: T,
    read: u64,
    written: u64,
}

impl<T> CountingIo<T> {
    pub fn new(inner: T) -> CountingIo<T> {
        CountingIo {
            inner,
            read: 0,
            written: 0,
        }
    }

    /// Bytes read from the user, and written to them.
    pub fn counts(&self) -> (u64, u64) {
        (self.read, self.written)
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.written += *n as u64;
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
