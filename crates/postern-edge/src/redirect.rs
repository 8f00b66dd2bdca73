//! `--http-listen`: plain HTTP (port 80) that sends every request for a host the edge serves to
//! the same URL over HTTPS, with a permanent redirect that keeps the method (308).
//!
//! Nothing is served over plain HTTP: no app, no sign-in, no cookie. A host the edge does not
//! serve gets a 404 naming it, never a redirect elsewhere. Each connection answers one request
//! and closes; connections are admitted by the listener's own [`Gate`] (per address and in all)
//! and their heads bounded in size and time.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::forward::{new_request_id, request_host};
use crate::serve::{Gate, Shutdown};
use crate::state::Shared;

/// Largest request head read: a redirect needs the request line and `Host`.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Accepts plain HTTP connections until shutdown, answering each with a redirect to HTTPS on
/// the public listener's port.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
    https_port: u16,
    mut shutdown: Shutdown,
) {
    let head_timeout = shared.config.limits.request_head_timeout;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(listener = "http", error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match gate.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                gate.turned_away(peer, why);
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let answer = redirect(&shared, https_port, &req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            // A client that sends its head and then never reads the answer is let go too.
            let _ = tokio::time::timeout(head_timeout * 2, conn).await;
        });
    }
}

/// The answer to one plain-HTTP request.
fn redirect(shared: &Shared, https_port: u16, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = new_request_id();
    let Some((host, _)) = request_host(req) else {
        return text(
            StatusCode::BAD_REQUEST,
            &request_id,
            "the request names no usable host (one Host header with a host name)",
        );
    };
    let served = host == shared.config.idp_host || shared.routes.load().get(&host).is_some();
    if !served {
        return text(
            StatusCode::NOT_FOUND,
            &request_id,
            &format!(
                "no app is published at {}",
                postern_proto::text::escape(&host)
            ),
        );
    }
    let port = match https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let Ok(location) = HeaderValue::from_str(&location) else {
        return text(
            StatusCode::BAD_REQUEST,
            &request_id,
            "the request's path cannot be redirected",
        );
    };
    let mut resp = text(
        StatusCode::PERMANENT_REDIRECT,
        &request_id,
        "this site is served over HTTPS",
    );
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

fn text(status: StatusCode, request_id: &str, why: &str) -> Response<Full<Bytes>> {
    let body = format!("{why}\nrequest ID: {request_id}\n");
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", id);
    }
    resp
}
