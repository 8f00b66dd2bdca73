//! The admin API: JSON over HTTPS on the admin listener. Every call but the OpenAPI document is
//! authenticated with an admin token (the bootstrap token or one made with `POST
//! /v1/admin-tokens`), gets a request ID (`X-Request-Id`, also in error bodies and the audit
//! log), and every change is recorded in the audit log.
//!
//! **Invariant:** the routes served are exactly [`routes`] plus [`PUBLIC_ROUTES`], and
//! `docs/openapi.yaml` documents exactly those (a test compares them).

mod access;
mod apps;
mod audit_log;
mod backup;
mod clients;
mod connectors;
mod groups;
mod risk;
mod sessions;
mod tokens;
mod users;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use sha2::{Digest, Sha256};

use crate::api::ApiFailure;
use crate::audit::{Actor, Audited};
use crate::state::Shared;

pub use access::{WhatIf, WhatIfPolicy, WhatIfView};
pub use apps::{AppView, AssignmentView, SignInView};
pub use audit_log::{
    AppliedPolicy, AuditEventView, AuditPage, LogVerification, SigninPage, SigninView, Verification,
};
pub use backup::VersionView;
pub use clients::{ClientView, SigninEventView, SigningKeyView};
pub use connectors::ConnectorView;
pub use groups::GroupView;
pub use risk::{RiskDetectionView, RiskyUserView};
pub use tokens::{AdminTokenView, NewAdminTokenView};
pub use users::{DirectoryGroupView, UserView};

/// The OpenAPI document of this API, kept in the repository and served as is.
pub const OPENAPI_YAML: &str = include_str!("../../../../docs/openapi.yaml");

/// Largest request body the admin API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Routes that need no token.
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[("GET", "/v1/openapi.yaml"), ("GET", "/v1/version")];

/// Every authenticated route: method, path, handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<Shared>>)> {
    vec![
        (Method::GET, "/v1/groups", get(groups::list)),
        (Method::POST, "/v1/groups", post(groups::create)),
        (Method::PATCH, "/v1/groups/{name}", patch(groups::rename)),
        (Method::DELETE, "/v1/groups/{name}", delete(groups::remove)),
        (
            Method::POST,
            "/v1/groups/{name}/registration-tokens",
            post(groups::create_registration_token),
        ),
        (Method::GET, "/v1/apps", get(apps::list)),
        (Method::POST, "/v1/apps", post(apps::publish)),
        (Method::GET, "/v1/apps/{name}", get(apps::show)),
        (Method::PATCH, "/v1/apps/{name}", patch(apps::update)),
        (Method::DELETE, "/v1/apps/{name}", delete(apps::remove)),
        (
            Method::GET,
            "/v1/apps/{name}/assignments",
            get(apps::list_assignments),
        ),
        (
            Method::POST,
            "/v1/apps/{name}/assignments",
            post(apps::assign),
        ),
        (
            Method::DELETE,
            "/v1/apps/{name}/assignments",
            delete(apps::unassign),
        ),
        (
            Method::POST,
            "/v1/users/{email}/revoke-sessions",
            post(sessions::revoke),
        ),
        (
            Method::POST,
            "/v1/session-keys/rotate",
            post(sessions::rotate_cookie_key),
        ),
        (Method::GET, "/v1/connectors", get(connectors::list)),
        (Method::GET, "/v1/connectors/{id}", get(connectors::show)),
        (
            Method::PATCH,
            "/v1/connectors/{id}",
            patch(connectors::update),
        ),
        (
            Method::POST,
            "/v1/connectors/{id}/revoke",
            post(connectors::revoke),
        ),
        (Method::GET, "/v1/admin-tokens", get(tokens::list)),
        (Method::POST, "/v1/admin-tokens", post(tokens::create)),
        (
            Method::DELETE,
            "/v1/admin-tokens/{id}",
            delete(tokens::revoke),
        ),
        (Method::GET, "/v1/policies", get(access::list_policies)),
        (Method::POST, "/v1/policies/what-if", post(access::what_if)),
        (Method::PUT, "/v1/policies/{name}", put(access::put_policy)),
        (
            Method::DELETE,
            "/v1/policies/{name}",
            delete(access::delete_policy),
        ),
        (Method::GET, "/v1/locations", get(access::list_locations)),
        (
            Method::PUT,
            "/v1/locations/{name}",
            put(access::put_location),
        ),
        (
            Method::DELETE,
            "/v1/locations/{name}",
            delete(access::delete_location),
        ),
        (Method::GET, "/v1/risk/users", get(risk::users)),
        (Method::GET, "/v1/risk/detections", get(risk::detections)),
        (
            Method::POST,
            "/v1/risk/users/{email}/confirm-compromised",
            post(risk::confirm_compromised),
        ),
        (
            Method::POST,
            "/v1/risk/users/{email}/dismiss",
            post(risk::dismiss),
        ),
        (Method::GET, "/v1/backup", get(backup::create)),
        (Method::GET, "/v1/audit", get(audit_log::query)),
        (Method::GET, "/v1/signins", get(audit_log::signins)),
        (Method::GET, "/v1/logs/verify", get(audit_log::verify)),
        (Method::GET, "/v1/users", get(users::list)),
        (Method::POST, "/v1/users", post(users::create)),
        (Method::GET, "/v1/users/{email}", get(users::show)),
        (
            Method::POST,
            "/v1/users/{email}/disable",
            post(users::disable),
        ),
        (
            Method::POST,
            "/v1/users/{email}/enable",
            post(users::enable),
        ),
        (
            Method::POST,
            "/v1/users/{email}/password",
            post(users::reset_password),
        ),
        (
            Method::POST,
            "/v1/users/{email}/mfa-reset",
            post(users::mfa_reset),
        ),
        (
            Method::POST,
            "/v1/users/{email}/email-verified",
            post(users::set_email_verified),
        ),
        (Method::GET, "/v1/directory-groups", get(users::groups)),
        (
            Method::POST,
            "/v1/directory-groups/{name}/members",
            post(users::add_member),
        ),
        (
            Method::DELETE,
            "/v1/directory-groups/{name}/members/{email}",
            delete(users::remove_member),
        ),
        (Method::GET, "/v1/clients", get(clients::list)),
        (Method::POST, "/v1/clients", post(clients::create)),
        (Method::DELETE, "/v1/clients/{id}", delete(clients::remove)),
        (
            Method::GET,
            "/v1/idp/signing-keys",
            get(clients::signing_keys),
        ),
        (
            Method::POST,
            "/v1/idp/signing-keys/rotate",
            post(clients::rotate_keys),
        ),
        (
            Method::GET,
            "/v1/idp/signin-events",
            get(clients::signin_events),
        ),
    ]
}

pub fn router(shared: Arc<Shared>) -> Router {
    let mut authenticated = Router::new();
    for (_, path, handler) in routes() {
        authenticated = authenticated.route(path, handler);
    }
    authenticated
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authenticate,
        ))
        .route("/v1/openapi.yaml", get(openapi))
        .route("/v1/version", get(backup::version))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(shared)
}

async fn openapi() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/yaml")],
        OPENAPI_YAML,
    )
        .into_response()
}

async fn not_found() -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        "no such admin API route; the routes are listed in /v1/openapi.yaml",
    )
}

async fn method_not_allowed() -> ApiFailure {
    ApiFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; the routes are listed in /v1/openapi.yaml",
    )
}

/// The request's ID, given by the outermost layer.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Gives every call a request ID: in the `X-Request-Id` header, in error bodies, in the audit log.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = crate::forward::new_request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Some(mut failure) = resp.extensions_mut().remove::<ApiFailure>() {
        failure.request_id = Some(id.clone());
        resp = failure.into_response();
        resp.extensions_mut().remove::<ApiFailure>();
    } else if is_bare_rejection(&resp) {
        // An extractor's plain-text refusal (a query string that does not parse): the same
        // JSON error as every other, with its reason.
        let status = resp.status();
        let reason = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            std::mem::take(resp.body_mut()),
            4096,
        ))
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
        let mut failure = ApiFailure::new(status, "invalid_request", reason);
        failure.request_id = Some(id.clone());
        resp = failure.into_response();
        resp.extensions_mut().remove::<ApiFailure>();
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// A 4xx answer in plain text: what axum's extractors send when they refuse a request.
fn is_bare_rejection(resp: &Response) -> bool {
    resp.status().is_client_error()
        && resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/plain"))
}

/// The authenticated caller of an admin call.
#[derive(Clone, Debug)]
pub struct Admin {
    pub actor: Actor,
    pub request_id: String,
}

impl Admin {
    /// Starts an audited change: take the store handle from it for the change, then call
    /// [`Admin::finish`] with the result.
    pub fn begin(&self, shared: &Shared, action: &str, target: &str) -> Audited {
        Audited::new(&shared.store, &self.actor, action, target, &self.request_id)
    }
}

/// Records how an audited change ended (see [`Audited::finish`]).
pub async fn finish<T>(audit: &Audited, result: &Result<T, ApiFailure>) {
    match result {
        Ok(v) => audit.finish(Ok(v)).await,
        Err(f) => audit.finish::<T>(Err(&f.detail())).await,
    }
}

async fn authenticate(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiFailure> {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(presented) = presented else {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "token_required",
            "send an admin token as `Authorization: Bearer TOKEN` (the edge wrote one to DATA/admin-token)",
        ));
    };
    // Comparing digests keeps the comparison's timing independent of how much of the token matched.
    let actor = if Sha256::digest(presented.as_bytes())
        == Sha256::digest(shared.admin_token.expose().as_bytes())
    {
        Actor::bootstrap()
    } else {
        match shared.store.authenticate_admin_token(presented).await? {
            Some(token) => Actor::admin_token(&token.id),
            None => {
                tracing::warn!(
                    path = req.uri().path(),
                    "admin call refused: unknown, revoked or expired token"
                );
                return Err(ApiFailure::new(
                    StatusCode::UNAUTHORIZED,
                    "token_refused",
                    "the admin token is not valid for this edge (unknown, revoked or expired); check --token-file",
                ));
            }
        }
    };
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    req.extensions_mut().insert(Admin { actor, request_id });
    Ok(next.run(req).await)
}

/// A `Store` "not found" for a group named in a request body is the caller's mistake.
fn unknown_group(e: postern_store::StoreError, group: &str) -> ApiFailure {
    match e {
        postern_store::StoreError::NotFound { .. } => {
            // The command to create it only for a name that could exist: a name with control
            // characters is quoted (escaped), never repeated raw.
            let hint = if crate::apps::check_name(group).is_ok() {
                format!("; create it with `postern admin group create {group}`")
            } else {
                String::new()
            };
            ApiFailure::bad_request(
                "unknown_group",
                format!("connector group {group:?} does not exist{hint}"),
            )
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The routes `docs/openapi.yaml` documents, as `(METHOD, path)`.
    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(OPENAPI_YAML).unwrap();
        let paths = doc["paths"].as_mapping().expect("openapi.yaml has paths");
        let mut out = BTreeSet::new();
        for (path, item) in paths {
            let path = path.as_str().unwrap().to_owned();
            for (key, _) in item.as_mapping().unwrap() {
                let key = key.as_str().unwrap();
                if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&key) {
                    out.insert((key.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn openapi_documents_exactly_the_routes_served() {
        let mut served: BTreeSet<(String, String)> = routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_owned()))
            .collect();
        served.extend(
            PUBLIC_ROUTES
                .iter()
                .map(|(m, p)| (m.to_string(), p.to_string())),
        );
        let documented = documented();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not in docs/openapi.yaml: {undocumented:?}; documented but not served: {unserved:?}"
        );
    }
}
