//! Accepting TLS connections and serving HTTP on them, within limits, with a graceful drain on
//! shutdown.
//!
//! Every connection passes a [`Gate`] before any work is spent on it (a cap per client address and
//! in total, a rate of TLS handshakes per address), gets a deadline for its handshake, for its
//! first request and between requests, and is closed when the client stops reading what it
//! asked for. Each listener has its own gate, so a flood of the public listener never stops the
//! admin API or the connectors.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use postern_proto::limits::{HEADER_FIELDS_CEILING, REQUEST_HEAD_CEILING_BYTES};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;

/// A shutdown signal every accept loop watches.
pub type Shutdown = watch::Receiver<bool>;

/// The key under which a client address is counted: the address itself for IPv4 (and IPv4
/// mapped into IPv6), its /64 for IPv6, since one host is routinely given a whole /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A rate limiter keyed by client address.
pub type KeyedLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// A limiter allowing `per_second` with a burst of `burst_factor` times as many; `None` when the
/// rate is 0 (the limit is off).
pub fn keyed_limiter(per_second: u32, burst_factor: u32) -> Option<KeyedLimiter> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(burst_factor)).unwrap_or(rate);
    Some(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate).allow_burst(burst),
    ))
}

/// How often keyed limiters forget addresses that have been quiet long enough to be back at
/// a full burst, so a spray of source addresses cannot grow them without bound.
const LIMITER_SWEEP: Duration = Duration::from_secs(10);

/// Keeps a keyed limiter's memory bounded for as long as it lives.
pub fn sweep_limiter(limiter: Arc<KeyedLimiter>) {
    // Outside a runtime (unit tests of the limits) there is nothing to sweep with.
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let weak = Arc::downgrade(&limiter);
    drop(limiter);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LIMITER_SWEEP);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(limiter) = weak.upgrade() else {
                return;
            };
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
}

/// Why a connection was turned away before its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turned {
    /// The listener holds its maximum of connections.
    ListenerFull,
    /// The client address holds its maximum of connections.
    AddressFull,
    /// The client address starts handshakes faster than allowed.
    HandshakeRate,
}

impl Turned {
    fn as_str(self) -> &'static str {
        match self {
            Turned::ListenerFull => {
                "the listener holds its maximum of connections (--max-connections)"
            }
            Turned::AddressFull => {
                "this address holds its maximum of connections (--max-connections-per-ip)"
            }
            Turned::HandshakeRate => {
                "this address starts TLS handshakes too fast (--handshakes-per-ip)"
            }
        }
    }
}

/// What one listener admits: connections per client address and in total, and handshakes per
/// address and second. Taken once per connection, never per request.
pub struct Gate {
    name: &'static str,
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    handshakes: Option<Arc<KeyedLimiter>>,
    /// Connections turned away since the last warning, so a flood is logged once in a while
    /// rather than once per connection.
    turned_away: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// How often a listener that turns connections away says so in the log.
const TURNED_AWAY_LOG_EVERY: Duration = Duration::from_secs(10);

impl Gate {
    pub fn new(name: &'static str, max_total: usize, limits: &Limits) -> Arc<Gate> {
        let handshakes = keyed_limiter(limits.handshakes_per_ip, 5).map(Arc::new);
        if let Some(l) = &handshakes {
            sweep_limiter(l.clone());
        }
        Arc::new(Gate {
            name,
            max_total,
            max_per_ip: limits.max_connections_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            handshakes,
            turned_away: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// Admits a connection from `ip`, or says why not. The slot is given back when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Turned> {
        let key = client_key(ip);
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Turned::ListenerFull);
        }
        {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = per_ip.entry(key).or_insert(0);
            if *n >= self.max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(Turned::AddressFull);
            }
            *n += 1;
        }
        let slot = Slot {
            gate: self.clone(),
            key,
        };
        if let Some(limiter) = &self.handshakes {
            if limiter.check_key(&key).is_err() {
                return Err(Turned::HandshakeRate);
            }
        }
        Ok(slot)
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn turned_away(&self, peer: SocketAddr, why: Turned) {
        tracing::debug!(listener = self.name, %peer, "connection refused: {}", why.as_str());
        let n = self.turned_away.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= TURNED_AWAY_LOG_EVERY) {
            *last = Some(now);
            self.turned_away.store(0, Ordering::Relaxed);
            tracing::warn!(
                listener = self.name, refused = n, latest = %peer,
                "connections refused: {}", why.as_str()
            );
        }
    }
}

/// One admitted connection, counted until dropped.
pub struct Slot {
    gate: Arc<Gate>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.gate.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.key);
            }
        }
        drop(per_ip);
        self.gate.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTP server settings of a listener, chosen per connection by the ALPN the client
/// negotiated (browsers always offer it; there is no guessing from the first bytes, which a
/// silent client would never send).
pub struct Http {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    timeouts: Timeouts,
}

/// The deadlines of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub request_head: Duration,
    pub idle: Duration,
    pub stall: Duration,
}

impl Timeouts {
    pub fn of(limits: &Limits) -> Timeouts {
        Timeouts {
            request_head: limits.request_head_timeout,
            idle: limits.idle_timeout,
            stall: limits.stall_timeout,
        }
    }
}

impl Http {
    /// `connect_protocol` enables RFC 8441 extended CONNECT on HTTP/2.
    pub fn new(connect_protocol: bool, timeouts: Timeouts) -> Http {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // The head deadline is the connection's own (`drive`): hyper's would start as soon as a
        // response ends, closing idle keep-alive connections after the head timeout instead of
        // the idle timeout.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_header_size(REQUEST_HEAD_CEILING_BYTES)
            .max_headers(HEADER_FIELDS_CEILING)
            .keep_alive(true);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            // What HTTP/2 counts (32 bytes a field on top of names and values) for a head that
            // HTTP/1.1 would read.
            .max_header_list_size((REQUEST_HEAD_CEILING_BYTES + 32 * HEADER_FIELDS_CEILING) as u32)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        if connect_protocol {
            h2.enable_connect_protocol();
        }
        Http { h1, h2, timeouts }
    }
}

/// Concurrent requests one HTTP/2 client connection may have: the common default of servers
/// (nginx's `http2_max_concurrent_streams` is 128).
const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Tracks a listener's connections so shutdown can let them finish what they are doing.
#[derive(Clone)]
pub struct Drain {
    stop: watch::Sender<bool>,
    /// Every live connection holds a clone; draining waits until none is left.
    live: Arc<Mutex<Option<mpsc::Sender<()>>>>,
    done: Arc<tokio::sync::Mutex<mpsc::Receiver<()>>>,
}

impl Drain {
    pub fn new() -> Drain {
        let (tx, rx) = mpsc::channel(1);
        Drain {
            stop: watch::channel(false).0,
            live: Arc::new(Mutex::new(Some(tx))),
            done: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }

    /// Asks every tracked connection to finish its in-flight requests and close, and waits until
    /// they have. Connections accepted afterwards are closed at once.
    pub async fn drain(&self) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.stop.send_replace(true);
        let mut done = self.done.lock().await;
        // Resolves with `None` once every connection's sender is dropped.
        while done.recv().await.is_some() {}
    }

    /// A ticket for one connection: `None` once draining started.
    fn enter(&self) -> Option<(mpsc::Sender<()>, watch::Receiver<bool>)> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref().map(|tx| (tx.clone(), self.stop.subscribe()))
    }
}

/// Accepts TLS connections on `listener` and hands each to `on_conn` until shutdown. Connections
/// the gate turns away are closed before the handshake; handshakes that take longer than
/// `handshake_timeout` are dropped.
pub async fn accept_tls<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    gate: Arc<Gate>,
    handshake_timeout: Duration,
    mut shutdown: Shutdown,
    on_conn: F,
) where
    F: Fn(TlsStream<TcpStream>, SocketAddr, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let on_conn = Arc::new(on_conn);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = gate.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match gate.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                gate.turned_away(peer, why);
                // Closed at once: no TLS state, no task.
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let on_conn = on_conn.clone();
        tokio::spawn(async move {
            // The slot goes with the connection (into a WebSocket, after an upgrade), or is given
            // back here when the handshake fails.
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => on_conn(tls, peer, slot).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// What a connection is doing, for its deadlines: requests in flight, when the last one ended,
/// and whether the next one's head is arriving. Shared by the connection's task, its reads and
/// its requests' response bodies.
pub struct Activity {
    started: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `started` when the last request ended; `u64::MAX` before the first.
    last_end_ms: AtomicU64,
    /// Milliseconds after `started` when bytes began to arrive with no request in flight: a
    /// request head, which must then be complete within the head timeout. `u64::MAX` when none
    /// is arriving. (HTTP/1.1 only: HTTP/2 sends frames between requests.) Bytes of the next
    /// head that arrive while a request is still in flight (pipelined, or sent early) are not
    /// seen arriving: such a head has the idle timeout, counted from the response's end.
    head_since_ms: AtomicU64,
    /// Wakes the connection's task when a head begins, to time it.
    head_began: tokio::sync::Notify,
}

/// What a connection with no request in flight waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// A request head: the connection's first, or one whose bytes began to arrive.
    Head,
    /// The next request, on a connection at rest between requests.
    NextRequest,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_end_ms: AtomicU64::new(u64::MAX),
            head_since_ms: AtomicU64::new(u64::MAX),
            head_began: tokio::sync::Notify::new(),
        })
    }

    /// Counts a request in flight until the returned guard (kept with its response body) drops.
    pub fn enter(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(u64::MAX, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Bytes arrived: with no request in flight, a request head has begun.
    fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since_ms.load(Ordering::Relaxed) == u64::MAX
        {
            let ms = self.started.elapsed().as_millis() as u64;
            self.head_since_ms.store(ms, Ordering::Relaxed);
            self.head_began.notify_one();
        }
    }

    /// When the connection may be closed if nothing happens meanwhile, and what it waits for;
    /// `None` while a request is in flight.
    fn deadline(&self, t: &Timeouts) -> Option<(Instant, Waiting)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let after = |ms| self.started + Duration::from_millis(ms);
        Some(match self.head_since_ms.load(Ordering::Relaxed) {
            u64::MAX => match self.last_end_ms.load(Ordering::Relaxed) {
                u64::MAX => (self.started + t.request_head, Waiting::Head),
                ms => (after(ms) + t.idle, Waiting::NextRequest),
            },
            ms => (after(ms) + t.request_head, Waiting::Head),
        })
    }
}

/// A request in flight on a connection.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.started.elapsed().as_millis() as u64;
        a.last_end_ms.store(ms, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight on its connection until it ends.
pub struct Tracked<B> {
    inner: B,
    busy: Option<Busy>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, busy: Busy) -> Tracked<B> {
        Tracked {
            inner,
            busy: Some(busy),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = polled {
            this.busy.take();
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

/// Serves HTTP/1.1 (with upgrades) or HTTP/2 on one connection until it ends, it idles past its
/// deadline, or the listener drains. `service` gets the connection's [`Activity`] to count its
/// requests with [`Tracked`] bodies.
pub async fn serve_http<S, B, M>(
    http: &Http,
    drain: &Drain,
    io: TlsStream<TcpStream>,
    slot: Slot,
    make_service: M,
) where
    M: FnOnce(Arc<Activity>) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Tracked<B>>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Without a ticket the listener is draining: the connection is dropped unserved.
    let Some((_live, stop)) = drain.enter() else {
        return;
    };
    let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Activity::new();
    let service = make_service(activity.clone());
    let io = StallIo::new(io, http.timeouts.stall).holding(slot);
    if h2 {
        let conn = http.h2.serve_connection(TokioIo::new(io), service);
        drive(conn, &activity, &http.timeouts, stop, false).await;
    } else {
        let io = TokioIo::new(io.watching_heads(activity.clone()));
        let conn = http.h1.serve_connection(io, service).with_upgrades();
        drive(conn, &activity, &http.timeouts, stop, true).await;
    }
}

/// A served connection that can be asked to finish its requests and close.
trait Closable: Future<Output = hyper::Result<()>> {
    fn close(self: Pin<&mut Self>);
}

impl<I, S, B> Closable for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Closable for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection, closing it gracefully once it has been idle past its deadline or the
/// listener drains, and at once when a request head is late (HTTP/1.1 cannot close gracefully
/// in the middle of one, and the client has nothing in flight to lose). A graceful close that has
/// not finished after the head timeout, with nothing in flight, is cut short.
async fn drive<C>(
    conn: C,
    activity: &Activity,
    t: &Timeouts,
    mut stop: watch::Receiver<bool>,
    h1: bool,
) where
    C: Closable,
{
    tokio::pin!(conn);
    let mut closing = false;
    // Checked at the deadline, not before: a request that starts and ends in between pushes the
    // deadline back, and the check then sleeps again until the new one.
    let mut check_at = activity
        .deadline(t)
        .map_or_else(|| Instant::now() + t.idle, |(at, _)| at);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().close();
                closing = true;
                check_at = Instant::now() + t.request_head;
            }
            () = activity.head_began.notified(), if !closing => {
                if let Some((deadline, _)) = activity.deadline(t) {
                    check_at = check_at.min(deadline);
                }
            }
            _ = tokio::time::sleep_until(check_at) => {
                if closing {
                    // A graceful close waits for the client (HTTP/2: the answer to its PING); one
                    // with nothing in flight gets the head timeout to finish, then is dropped.
                    if activity.deadline(t).is_some() {
                        tracing::debug!("dropping a connection that did not finish closing");
                        return;
                    }
                    check_at = Instant::now() + t.idle.min(t.request_head);
                    continue;
                }
                match activity.deadline(t) {
                    Some((deadline, waiting)) if deadline <= Instant::now() => {
                        if waiting == Waiting::Head && h1 {
                            tracing::debug!("closing a connection whose request head is late");
                            return;
                        }
                        tracing::debug!("closing an idle connection");
                        conn.as_mut().close();
                        closing = true;
                        check_at = Instant::now() + t.request_head;
                    }
                    Some((deadline, _)) => check_at = deadline,
                    // Busy: look again once an idle period could have passed.
                    None => check_at = Instant::now() + t.idle.min(t.request_head),
                }
            }
        }
    }
}

/// A connection whose writes fail once they have made no progress for the stall timeout: a
/// client that stops reading what it asked for is cut off (like nginx's `send_timeout`), which
/// frees its file descriptor and the tunnel stream feeding it.
pub struct StallIo<T> {
    inner: T,
    timeout: Duration,
    /// Armed while a write is waiting for the client to read.
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// The listener's slot for this connection, held for as long as the connection lives: after
    /// an upgrade that is as long as the WebSocket, whose task owns the connection then.
    slot: Option<Slot>,
    /// Told of reads, to time request heads (HTTP/1.1).
    heads: Option<Arc<Activity>>,
}

impl<T> StallIo<T> {
    pub fn new(inner: T, timeout: Duration) -> StallIo<T> {
        StallIo {
            inner,
            timeout,
            stall: None,
            armed: false,
            slot: None,
            heads: None,
        }
    }

    pub fn watching_heads(mut self, activity: Arc<Activity>) -> StallIo<T> {
        self.heads = Some(activity);
        self
    }

    pub fn holding(mut self, slot: Slot) -> StallIo<T> {
        self.slot = Some(slot);
        self
    }

    /// Called when a write could not make progress: starts the stall clock (if it is not running)
    /// and fails once it runs out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = Instant::now() + self.timeout;
        let sleep = match &mut self.stall {
            Some(s) => {
                if !self.armed {
                    s.as_mut().reset(deadline);
                }
                s
            }
            None => self
                .stall
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the stall timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed(&mut self) {
        self.armed = false;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Some(activity), true) = (&this.heads, buf.filled().len() > before) {
            activity.read_some();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.stalled(cx).map(Err),
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.stalled(cx).map(Err),
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.stalled(cx).map(Err),
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.stalled(cx).map(Err),
            ready => ready,
        }
    }
}

/// Wraps a finished response's body so the connection counts it until it ends.
pub fn tracked<B>(resp: Response<B>, busy: Busy) -> Response<Tracked<B>> {
    resp.map(|b| Tracked::new(b, busy))
}

/// A body that is already complete, for tests of the wrappers.
#[cfg(test)]
fn full(s: &'static str) -> http_body_util::Full<bytes::Bytes> {
    http_body_util::Full::new(bytes::Bytes::from_static(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped = IpAddr::V6(Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]));
        assert_eq!(client_key(mapped), "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    fn limits(per_ip: usize, handshakes: u32) -> Limits {
        Limits {
            max_connections_per_ip: per_ip,
            handshakes_per_ip: handshakes,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn the_gate_counts_per_address_and_in_total_and_gives_back_on_drop() {
        let gate = Gate::new("test", 3, &limits(2, 0));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Turned::AddressFull));
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some(Turned::ListenerFull));
        assert_eq!(gate.open(), 3);
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _a3 = gate.admit(a).unwrap();
        assert_eq!(gate.per_ip.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_gate_limits_handshakes_per_address() {
        let gate = Gate::new("test", 1000, &limits(1000, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        // A burst of five times the rate, then refusals; another address is unaffected.
        let admitted: Vec<_> = (0..10).map(|_| gate.admit(a)).collect();
        assert_eq!(admitted.iter().filter(|r| r.is_ok()).count(), 10);
        assert_eq!(gate.admit(a).err(), Some(Turned::HandshakeRate));
        let _b = gate.admit(b).unwrap();
        // A refused handshake gives its slot back.
        assert_eq!(gate.open(), 11);
    }

    #[tokio::test]
    async fn tracked_bodies_count_a_request_until_they_end() {
        let activity = Activity::new();
        let t = Timeouts {
            request_head: Duration::from_secs(1),
            idle: Duration::from_secs(5),
            stall: Duration::from_secs(5),
        };
        let first = activity.deadline(&t).unwrap();
        assert_eq!(first, (activity.started + t.request_head, Waiting::Head));
        let body = Tracked::new(full("hello"), activity.enter());
        assert_eq!(activity.deadline(&t), None);
        activity.read_some();
        assert_eq!(activity.deadline(&t), None, "a request body is no head");
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        let (after, waiting) = activity.deadline(&t).unwrap();
        assert!(after >= activity.started + t.idle);
        assert_eq!(waiting, Waiting::NextRequest);
        // The next request's first bytes: its head has the head timeout from then.
        activity.read_some();
        let (head, waiting) = activity.deadline(&t).unwrap();
        assert_eq!(waiting, Waiting::Head);
        assert!(head < after && head >= activity.started + t.request_head);
        activity.read_some();
        assert_eq!(
            activity.deadline(&t),
            Some((head, Waiting::Head)),
            "timed from the first bytes"
        );
        let _busy = activity.enter();
        assert_eq!(activity.deadline(&t), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_does_not_read_fails_after_the_stall_timeout() {
        // A pipe whose reader never reads: writes fill its buffer, then wait.
        let (writer, _reader) = tokio::io::duplex(16);
        let mut io = StallIo::new(writer, Duration::from_secs(30));
        let err = io.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (writer, mut reader) = tokio::io::duplex(16);
        let mut io = StallIo::new(writer, Duration::from_secs(30));
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let mut total = 0;
            while total < 256 {
                // Reads a little every 20 s: each write waits less than the stall timeout.
                tokio::time::sleep(Duration::from_secs(20)).await;
                total += tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                    .await
                    .unwrap();
            }
        });
        io.write_all(&[0u8; 256]).await.unwrap();
        drop(io);
        read.await.unwrap();
    }
}
