//! The connector's tunnels: it dials the edge, and on the TLS connection it opened it is the
//! HTTP/2 server. Each stream is one user request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;

use crate::credentials::Credentials;

use crate::backend::Backends;
use crate::backoff::Backoff;

/// Many concurrent requests share one tunnel; the edge stays within this, so it only bounds a
/// misbehaving edge.
const MAX_CONCURRENT_STREAMS: u32 = postern_proto::limits::TUNNEL_MAX_STREAMS;
const PING_INTERVAL: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A tunnel that lived this long counts as healthy: the next re-dial starts from a short delay.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Where and how to dial the edge.
pub struct Dialer {
    pub host: String,
    pub port: u16,
    pub server_name: ServerName<'static>,
    /// Read at each dial: a renewed certificate is used from the next tunnel on.
    pub credentials: Arc<ArcSwap<Credentials>>,
    /// Tunnels connected now (for `/readyz` and the metrics).
    pub live: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a tunnel as live while it is held.
struct Live<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Live<'a> {
    fn new(n: &'a std::sync::atomic::AtomicUsize) -> Live<'a> {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Live(n)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Dialer {
    async fn dial(&self) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(
            DIAL_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .context("timed out connecting to the edge")?
        .with_context(|| format!("cannot connect to the edge at {}:{}", self.host, self.port))?;
        tcp.set_nodelay(true)?;
        let connector = self.credentials.load().tunnel.clone();
        let tls = tokio::time::timeout(
            DIAL_TIMEOUT,
            connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .context("timed out in the TLS handshake with the edge")?
        .context("TLS handshake with the edge failed")?;
        Ok(tls)
    }
}

/// A tunnel being dialled.
type Dialling<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = anyhow::Result<TlsStream<TcpStream>>> + Send + 'a>,
>;

/// How one tunnel connection ended.
enum Ended {
    /// The connection closed or failed: dial again.
    Closed,
    /// The certificate was renewed: this new connection (dialled with it) takes over while the
    /// old one drains.
    Replaced(Box<TlsStream<TcpStream>>),
    /// Shutdown: drained.
    Shutdown,
}

/// Keeps one tunnel open until shutdown, re-dialling with jittered exponential backoff, and
/// replacing it when the certificate is renewed.
pub async fn keep_open(
    slot: usize,
    dialer: Arc<Dialer>,
    backends: Arc<Backends>,
    mut shutdown: watch::Receiver<bool>,
    mut renewed: watch::Receiver<u64>,
    drain_timeout: Duration,
) {
    let mut backoff = Backoff::new();
    let mut next = None;
    while !*shutdown.borrow() {
        let started = Instant::now();
        let dialled = match next.take() {
            Some(tls) => Ok(tls),
            None => tokio::select! {
                d = dialer.dial() => d,
                _ = crate::stopped(&mut shutdown) => return,
            },
        };
        match dialled {
            Ok(tls) => {
                tracing::info!(slot, edge = %dialer.host, "tunnel connected");
                renewed.borrow_and_update();
                let live = Live::new(&dialer.live);
                let ended = serve(
                    tls,
                    &backends,
                    &dialer,
                    &mut shutdown,
                    &mut renewed,
                    drain_timeout,
                )
                .await;
                drop(live);
                match ended {
                    Ended::Replaced(tls) => {
                        tracing::info!(slot, "tunnel replaced by one with the renewed certificate");
                        next = Some(*tls);
                        continue;
                    }
                    Ended::Shutdown => return,
                    Ended::Closed => tracing::info!(slot, "tunnel closed"),
                }
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
            }
            Err(e) => tracing::warn!(slot, error = %format!("{e:#}"), "cannot open a tunnel"),
        }
        if *shutdown.borrow() {
            return;
        }
        let wait = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
    }
}

async fn serve(
    tls: TlsStream<TcpStream>,
    backends: &Arc<Backends>,
    dialer: &Dialer,
    shutdown: &mut watch::Receiver<bool>,
    renewed: &mut watch::Receiver<u64>,
    drain_timeout: Duration,
) -> Ended {
    let backends = backends.clone();
    let service = hyper::service::service_fn(move |req| backends.clone().handle(req));
    let mut conn = Box::pin(
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .enable_connect_protocol()
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // The edge resets a stream whenever its user cancels a request, and many users may
            // cancel at once (a "rapid reset" against the edge is answered there). hyper's
            // default would end the whole tunnel after 20 such resets waiting to be accepted.
            .max_pending_accept_reset_streams(MAX_CONCURRENT_STREAMS as usize)
            // h2 counts these over the connection's whole life and ends it at the limit: any
            // limit is reached by a long-lived tunnel whose users cancel downloads. The peer is
            // the edge, authenticated by its certificate.
            .max_local_error_reset_streams(None)
            .initial_stream_window_size(postern_proto::limits::TUNNEL_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(postern_proto::limits::TUNNEL_CONNECTION_WINDOW_BYTES)
            .max_frame_size(postern_proto::limits::TUNNEL_MAX_FRAME_BYTES)
            .header_table_size(postern_proto::tunnel::HPACK_TABLE_BYTES)
            .max_header_list_size(postern_proto::limits::TUNNEL_MAX_HEADER_LIST_BYTES)
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .serve_connection(TokioIo::new(tls), service),
    );
    let mut watching_renewals = true;
    // The replacement tunnel being dialled after a renewal, polled alongside this one so the
    // connection in use never stalls.
    let mut replacement: Option<Dialling<'_>> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::info!(error = %e, "tunnel ended");
                }
                return Ended::Closed;
            }
            _ = crate::stopped(shutdown) => {
                // GOAWAY: the edge sends nothing new here; streams in flight finish.
                conn.as_mut().graceful_shutdown();
                if tokio::time::timeout(drain_timeout, conn).await.is_err() {
                    tracing::warn!("tunnel did not drain in time; closing it");
                }
                return Ended::Shutdown;
            }
            changed = renewed.changed(), if watching_renewals => {
                if changed.is_err() {
                    // The renewer is gone: nothing more will change.
                    watching_renewals = false;
                } else if replacement.is_none() {
                    replacement = Some(Box::pin(dialer.dial()));
                }
            }
            dialled = async { replacement.as_mut().expect("guarded by is_some").await }, if replacement.is_some() => {
                replacement = None;
                match dialled {
                    Ok(next) => {
                        conn.as_mut().graceful_shutdown();
                        tokio::spawn(async move {
                            if tokio::time::timeout(drain_timeout, conn).await.is_err() {
                                tracing::warn!("replaced tunnel did not drain in time; closing it");
                            }
                        });
                        return Ended::Replaced(Box::new(next));
                    }
                    // This tunnel's certificate is still valid: it carries on.
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot dial a tunnel with the renewed certificate; keeping this one"),
                }
            }
        }
    }
}
