//! The built-in identity provider on the public listener: requests for `--idp-host` go to
//! `postern_idp::router` instead of a tunnel; on a timer its signing keys are rotated and what
//! it keeps is pruned (expired codes, device codes and sessions, old sign-in events, expired
//! state in memory).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::body::EdgeBody;
use crate::state::Shared;

/// How often the key ring checks whether a key is due for rotation or removal, and the
/// provider's housekeeping runs. Codes live a minute and device codes ten, so ten minutes keeps
/// at most a few intervals' worth of expired rows; each run is a handful of indexed deletes.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(600);
/// Largest response the provider writes (its pages and JSON are a few kilobytes).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Serves one request to the identity provider's host.
pub async fn serve(
    shared: &Shared,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    request_id: &str,
) -> Response<EdgeBody> {
    let device = req
        .headers()
        .get(http::header::USER_AGENT)
        .map(|ua| postern_policy::device_detail(&String::from_utf8_lossy(ua.as_bytes())))
        .unwrap_or_default();
    let caller = postern_idp::Caller {
        ip: peer.ip(),
        request_id: request_id.to_owned(),
        device,
        location: shared.geoip.sign_in_location(peer.ip()),
    };
    req.extensions_mut().insert(caller);
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

/// Publishes new signing keys ahead of use and removes expired ones, and runs the provider's
/// housekeeping (retention), at start and then every [`KEY_CHECK_INTERVAL`], until shutdown.
pub async fn maintain_keys(shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    housekeeping(&shared).await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEY_CHECK_INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if let Err(e) = shared.idp.maintain_keys(false).await {
            tracing::error!(error = %e, "cannot rotate the identity provider's signing keys");
        }
        housekeeping(&shared).await;
    }
}

async fn housekeeping(shared: &Shared) {
    match shared.idp.housekeeping(postern_idp::now()).await {
        Ok(pruned) if pruned.total() > 0 => tracing::info!(
            signin_events = pruned.signin_events,
            codes = pruned.codes,
            device_codes = pruned.device_codes,
            sessions = pruned.sessions,
            "identity provider records past their retention deleted"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot prune the identity provider's records"),
    }
}

/// `GET /v1/connector/idp` on the connector listener: the issuer and the public client a
/// connector uses to sign an administrator in (no client certificate: it is not registered yet).
pub async fn connector_idp_info(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
) -> Result<axum::Json<postern_proto::api::IdpInfo>, crate::api::ApiFailure> {
    let client = postern_idp::directory::connector_client(&shared.store)
        .await
        .map_err(crate::api::ApiFailure::internal)?;
    Ok(axum::Json(postern_proto::api::IdpInfo {
        issuer: shared.idp.issuer.clone(),
        client_id: client.client_id,
    }))
}

/// Checks a registration that presents an access token instead of a registration token: the
/// token must be the built-in provider's, issued to the connector client, for an enabled user
/// with the admin role; the group must exist. Returns a one-time token for the group, which
/// the registration then spends like any other.
pub async fn admin_registration_token(
    shared: &Shared,
    req: &postern_proto::api::RegisterRequest,
) -> Result<(String, crate::audit::Actor), crate::api::ApiFailure> {
    use crate::api::ApiFailure;
    let refused =
        |code: &'static str, msg: String| ApiFailure::new(StatusCode::FORBIDDEN, code, msg);
    let access = req.access_token.as_deref().unwrap_or_default();
    let claims = shared.idp.check_access_token(access).await.map_err(|e| {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "token_refused",
            format!("the sign-in token was refused ({e}); run the registration again"),
        )
    })?;
    let client = postern_idp::directory::connector_client(&shared.store)
        .await
        .map_err(ApiFailure::internal)?;
    if claims.client_id != client.client_id {
        return Err(refused(
            "token_refused",
            "the sign-in token was issued to another client; sign in through `postern connector register`".to_owned(),
        ));
    }
    let user = shared.store.user_by_id(&claims.sub).await.map_err(|_| {
        refused(
            "not_admin",
            "the signed-in user no longer exists".to_owned(),
        )
    })?;
    if !user.enabled || !user.admin {
        tracing::warn!(user = %user.email, "connector registration refused: not an administrator");
        return Err(refused(
            "not_admin",
            format!(
                "{} does not hold the admin role, so cannot register connectors; ask an administrator to approve the registration",
                user.email
            ),
        ));
    }
    let group = req.group.as_deref().unwrap_or_default();
    let token = shared
        .store
        .create_registration_token(group, ADMIN_REGISTRATION_TOKEN_TTL)
        .await
        .map_err(|e| match e {
            postern_store::StoreError::NotFound { .. } => ApiFailure::bad_request(
                "unknown_group",
                format!("connector group {group:?} does not exist; create it with `postern admin group create {group}`"),
            ),
            other => other.into(),
        })?;
    tracing::info!(user = %user.email, group, hostname = %req.hostname, "connector registration approved by an administrator");
    Ok((token, crate::audit::Actor::approved_by(&user.email)))
}

/// The registration token an administrator's approval turns into lives only for the call.
const ADMIN_REGISTRATION_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Conditional access for the built-in provider's own OpenID clients: the edge's policies,
/// named locations and risk, decided when the provider is about to send a signed-in user back to
/// a client that is not one of the edge's apps (those are decided at the edge's callback). Such
/// a client is matched by policies for `all` apps.
pub struct ProviderAccess(pub std::sync::Weak<Shared>);

impl postern_idp::ConditionalAccess for ProviderAccess {
    fn decide(
        &self,
        ask: &postern_idp::AccessAsk<'_>,
    ) -> Option<Result<postern_policy::Decision, String>> {
        let shared = self.0.upgrade()?;
        let routes = shared.routes.load();
        if routes.is_app_client(ask.client_id) {
            return None;
        }
        let now = postern_auth::UnixTime::now();
        let auth_time = postern_auth::UnixTime::from_secs(ask.auth_time.max(0) as u64);
        let session = postern_auth::session::Session {
            id: postern_auth::session::SessionId::generate(),
            app: postern_auth::AppId::new("idp").ok()?,
            issuer: shared.idp.issuer.clone(),
            subject: ask.user.id.clone(),
            email: ask.email_verified.then(|| ask.user.email.clone()),
            name: None,
            groups: ask.user.groups.clone(),
            amr: ask.amr.to_vec(),
            acr: None,
            auth_time: Some(auth_time),
            issued_at: auth_time,
            expires_at: now,
        };
        let caller = ask.caller;
        let country = caller
            .location
            .as_ref()
            .and_then(|l| l.country_or_region.clone());
        let platform = crate::preauth::access::platform_of_system(caller.device.0.as_deref());
        let risk = (
            shared.risk.request_risk(caller.ip).max(ask.found_risk),
            routes
                .access
                .user_risk(&session)
                .max(ask.found_risk)
                .max(ask.user_risk),
        );
        let decided = routes.access.decide(
            &session,
            (&format!("client:{}", ask.client_id), false),
            caller.ip,
            country.as_deref(),
            platform,
            risk,
            now,
        );
        Some(decided.map_err(|refusal| refusal.message()))
    }
}
