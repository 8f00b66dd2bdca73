//! Apps for the tests to publish: real HTTP servers on ephemeral loopback ports.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub type TestBody = BoxBody<Bytes, std::io::Error>;

/// A deterministic byte stream of `len` bytes, in 64 KiB chunks, and its SHA-256.
pub struct Pattern {
    remaining: u64,
    block: Bytes,
}

const BLOCK: usize = 64 * 1024;

impl Pattern {
    pub fn new(len: u64) -> Pattern {
        let mut x: u32 = 0x9e37_79b9;
        let block: Vec<u8> = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        Pattern {
            remaining: len,
            block: Bytes::from(block),
        }
    }

    pub fn sha256(len: u64) -> String {
        let mut p = Pattern::new(len);
        let mut h = Sha256::new();
        while let Some(chunk) = p.next_chunk() {
            h.update(&chunk);
        }
        hex(&h.finalize())
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = self.remaining.min(BLOCK as u64) as usize;
        self.remaining -= n as u64;
        Some(self.block.slice(..n))
    }
}

impl http_body::Body for Pattern {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.get_mut().next_chunk().map(|c| Ok(Frame::data(c))))
    }
}

impl futures_util::Stream for Pattern {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().next_chunk().map(Ok))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The test app. Paths:
/// - `/download?bytes=N`: N pattern bytes;
/// - `/upload`: answers the SHA-256 and length of the request body;
/// - `/slow?ms=N`: waits N ms before answering;
/// - `/trailers`: a chunked response with trailers, reporting the request's trailers in them;
/// - anything else: the request head as JSON (method, uri, headers).
#[derive(Clone)]
pub struct App {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// TCP connections the app accepted.
    pub connections: Arc<AtomicUsize>,
    /// Downloads the app is sending now: a download stops counting when its body is dropped,
    /// finished or cut off.
    pub downloads: Arc<AtomicUsize>,
}

/// Counts a download in progress until dropped.
struct Sending(Arc<AtomicUsize>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

pub async fn app() -> App {
    app_on("127.0.0.1").await
}

/// The test app on another loopback address (any of 127.0.0.0/8 reaches this machine).
pub async fn app_on(ip: &str) -> App {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let downloads = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let sending = downloads.clone();
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::Relaxed);
            let counter = counter.clone();
            let sending = sending.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    handle(req, sending.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    App {
        addr,
        hits,
        connections,
        downloads,
    }
}

fn query_u64(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(
    req: Request<Incoming>,
    downloads: Arc<AtomicUsize>,
) -> Result<Response<TestBody>, Infallible> {
    let full = |s: String| {
        Full::new(Bytes::from(s))
            .map_err(|never| match never {})
            .boxed()
    };
    let resp = match req.uri().path() {
        "/download" => {
            downloads.fetch_add(1, Ordering::Relaxed);
            let sending = Sending(downloads);
            let body = Pattern::new(query_u64(&req, "bytes")).map_frame(move |f| {
                let _counted = &sending;
                f
            });
            Response::new(BodyExt::boxed(body))
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut h = Sha256::new();
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    len += data.len() as u64;
                    h.update(&data);
                }
            }
            Response::new(full(
                serde_json::json!({"sha256": hex(&h.finalize()), "len": len}).to_string(),
            ))
        }
        "/big-head" => {
            // A response head of the size asked for: one large header.
            let mut resp = Response::new(full("big head".into()));
            let value = "h".repeat(query_u64(&req, "bytes") as usize);
            resp.headers_mut()
                .insert("x-big", HeaderValue::from_str(&value).unwrap());
            resp
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_u64(&req, "ms"))).await;
            Response::new(full("slow done".into()))
        }
        "/trailers" => {
            let mut body = req.into_body();
            let mut seen = String::new();
            let mut forged = "no";
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(t) = frame.into_trailers() {
                    if t.keys().any(|k| k.as_str().contains("postern")) {
                        forged = "yes";
                    }
                    seen = t
                        .get("x-request-trailer")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                }
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
            trailers.insert("x-saw-postern-trailer", HeaderValue::from_static(forged));
            trailers.insert(
                "x-saw-request-trailer",
                HeaderValue::from_str(if seen.is_empty() { "none" } else { &seen }).unwrap(),
            );
            let frames = futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"part one, "))),
                Ok(Frame::data(Bytes::from_static(b"part two"))),
                Ok(Frame::trailers(trailers)),
            ]);
            let mut resp = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(frames)));
            resp.headers_mut().insert(
                "trailer",
                HeaderValue::from_static(
                    "x-checksum, x-saw-request-trailer, x-saw-postern-trailer",
                ),
            );
            resp
        }
        _ => {
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let json = serde_json::json!({
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "headers": headers,
            });
            let mut resp = Response::new(full(json.to_string()));
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            resp
        }
    };
    Ok(resp)
}

/// All values of header `name` the app saw, from the JSON the app echoes.
pub fn seen(json: &serde_json::Value, name: &str) -> Vec<String> {
    json["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

/// A WebSocket app that echoes every message and answers a close.
pub async fn websocket_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                // Reading on after a close lets tungstenite send the close reply; the stream then
                // ends.
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A listener that accepts connections and never answers (for timeouts).
pub async fn black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            held.push(tcp);
        }
    });
    addr
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub fn status_of(resp: &Response<Incoming>) -> StatusCode {
    resp.status()
}

pub fn executor() -> TokioExecutor {
    TokioExecutor::new()
}

/// An HTTPS app with a certificate from a CA nobody trusts.
pub async fn tls_app() -> SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    let ca = postern_pki::Ca::load_or_create(
        &dir.path().join("ca.pem"),
        &dir.path().join("ca-key.pem"),
        "untrusted",
    )
    .unwrap();
    let (chain, key) = ca.issue_server(&["127.0.0.1".to_owned()]).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(postern_pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello over tls",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}
