//! The metrics listener (`--metrics-listen`): plain HTTP/1.1 for a scraper and a health checker.
//! `/metrics` is the Prometheus text exposition, `/healthz` answers 200 while the process runs,
//! `/readyz` 200 when the [`Probe`] says ready and 503 with its reason otherwise.
//!
//! It is an operator's port: it serves nothing else, and bounds its connections and their heads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections the metrics listener serves at once: a few scrapers and health checkers.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a request head may take to arrive.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How often histograms are folded so samples between scrapes do not pile up.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// The Prometheus text exposition format's content type.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the process reports on `/readyz`, and the gauges it reads (rather than counts) before a
/// scrape.
pub trait Probe: Send + Sync + 'static {
    /// `Ok` when ready to serve; otherwise the reason, for the 503's body.
    fn ready(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
    /// Sets gauges from the current state (tunnels, certificate expiry) just before `/metrics`
    /// is rendered.
    fn refresh(&self) {}
}

/// Serves the listener until the process ends.
pub fn spawn(listener: TcpListener, handle: PrometheusHandle, probe: Arc<dyn Probe>) {
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics listener: accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let handle = handle.clone();
            let probe = probe.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let handle = handle.clone();
                    let probe = probe.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&handle, &*probe, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
}

async fn answer(
    handle: &PrometheusHandle,
    probe: &dyn Probe,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            probe.refresh();
            let mut resp = text(StatusCode::OK, handle.render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(EXPOSITION),
            );
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match probe.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
