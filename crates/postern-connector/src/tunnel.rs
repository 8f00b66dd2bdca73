//! The connector's tunnels: it dials the edge, and on the TLS connection it opened it is the
//! HTTP/2 server. Each stream is one user request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::backend::Backends;
use crate::backoff::Backoff;

/// Matches the edge's windows: see `postern-edge`'s control module.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
const MAX_FRAME_BYTES: u32 = 256 << 10;
/// Many concurrent requests share one tunnel; this only bounds a misbehaving edge.
const MAX_CONCURRENT_STREAMS: u32 = 4096;
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
    pub tls: TlsConnector,
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
        let tls = tokio::time::timeout(
            DIAL_TIMEOUT,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .context("timed out in the TLS handshake with the edge")?
        .context("TLS handshake with the edge failed")?;
        Ok(tls)
    }
}

/// Keeps one tunnel open until shutdown, re-dialling with jittered exponential backoff.
pub async fn keep_open(
    slot: usize,
    dialer: Arc<Dialer>,
    backends: Arc<Backends>,
    mut shutdown: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let mut backoff = Backoff::new();
    while !*shutdown.borrow() {
        let started = Instant::now();
        let dialled = tokio::select! {
            d = dialer.dial() => d,
            _ = crate::stopped(&mut shutdown) => return,
        };
        match dialled {
            Ok(tls) => {
                tracing::info!(slot, edge = %dialer.host, "tunnel connected");
                serve(tls, backends.clone(), &mut shutdown, drain_timeout).await;
                tracing::info!(slot, "tunnel closed");
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
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    backends: Arc<Backends>,
    shutdown: &mut watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let service = hyper::service::service_fn(move |req| backends.clone().handle(req));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::info!(error = %e, "tunnel ended");
            }
        }
        _ = crate::stopped(shutdown) => {
            // GOAWAY: the edge sends nothing new here; streams in flight finish.
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(drain_timeout, conn).await.is_err() {
                tracing::warn!("tunnel did not drain in time; closing it");
            }
        }
    }
}
