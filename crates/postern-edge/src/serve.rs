//! Accepting TLS connections and serving HTTP on them, with a graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1.1 client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP server settings shared by the edge's listeners.
pub fn http_builder(connect_protocol: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let mut h2 = builder.http2();
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if connect_protocol {
        h2.enable_connect_protocol();
    }
    builder
}

/// Tracks a listener's connections so shutdown can let them finish what they are doing.
#[derive(Clone)]
pub struct Drain(Arc<std::sync::Mutex<Option<GracefulShutdown>>>);

impl Drain {
    pub fn new() -> Drain {
        Drain(Arc::new(std::sync::Mutex::new(Some(
            GracefulShutdown::new(),
        ))))
    }

    /// Asks every tracked connection to finish its in-flight requests and close, and waits until
    /// they have. Connections accepted afterwards are closed at once.
    pub async fn drain(&self) {
        let graceful = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(g) = graceful {
            g.shutdown().await;
        }
    }
}

/// A shutdown signal every accept loop watches.
pub type Shutdown = watch::Receiver<bool>;

/// Accepts TLS connections on `listener` and hands each to `on_conn` until shutdown. Draining the
/// connections already accepted is the caller's job (through the graceful-shutdown watcher it gave
/// `on_conn`).
pub async fn accept_tls<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mut shutdown: Shutdown,
    on_conn: F,
) where
    F: Fn(TlsStream<TcpStream>, SocketAddr) -> Fut + Send + Sync + 'static,
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
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let on_conn = on_conn.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => on_conn(tls, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Serves HTTP (1.1 or 2, with upgrades) on one connection under a graceful-shutdown watcher.
pub fn serve_http<S, B>(
    builder: &auto::Builder<TokioExecutor>,
    drain: &Drain,
    io: TlsStream<TcpStream>,
    service: S,
) -> impl Future<Output = ()> + Send + 'static
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let watcher = drain
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|g| g.watcher());
    async move {
        // Without a watcher the listener is draining: the connection is dropped unserved.
        if let Some(watcher) = watcher {
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
    }
}
