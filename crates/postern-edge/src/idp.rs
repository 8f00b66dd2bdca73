//! The built-in identity provider on the public listener: requests for `--idp-host` go to
//! `postern_idp::router` instead of a tunnel, and its signing keys are rotated on a timer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::body::EdgeBody;
use crate::state::Shared;

/// How often the key ring checks whether a key is due for rotation or removal.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(600);
/// Largest response the provider writes (its pages and JSON are a few kilobytes).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Serves one request to the identity provider's host.
pub async fn serve(shared: &Shared, peer: SocketAddr, mut req: Request<Incoming>) -> Response<EdgeBody> {
    req.extensions_mut().insert(postern_idp::ClientIp(peer.ip()));
    let router = shared.idp_router.clone();
    let resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = resp.into_parts();
    // The provider's answers are small pages and JSON; collected so the edge's body type stays
    // the one every other page uses.
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(collected) => Response::from_parts(parts, EdgeBody::page(collected.to_bytes())),
        Err(e) => {
            tracing::error!(error = %e, "identity provider response failed");
            let mut resp = Response::new(EdgeBody::page("identity provider error\n"));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// Publishes new signing keys ahead of use and removes expired ones, until shutdown.
pub async fn maintain_keys(shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEY_CHECK_INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if let Err(e) = shared.idp.maintain_keys(false).await {
            tracing::error!(error = %e, "cannot rotate the identity provider's signing keys");
        }
    }
}
