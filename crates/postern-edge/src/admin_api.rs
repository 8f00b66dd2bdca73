//! The admin API: JSON over HTTPS on the admin listener, every call authenticated with an admin
//! token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{ApiFailure, ApiJson};
use crate::apps::{self, PublishApp};
use crate::config::DEFAULT_TOKEN_TTL;
use crate::state::Shared;

/// The longest a registration token may live.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/groups", get(list_groups).post(create_group))
        .route("/v1/groups/{name}/registration-tokens", post(create_token))
        .route("/v1/apps", get(list_apps).post(publish_app))
        .route("/v1/apps/{name}", get(show_app).delete(delete_app))
        .route("/v1/connectors", get(list_connectors))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        "no such admin API route; see the README's admin API section",
    )
}

async fn authenticate(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiFailure> {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "token_required",
            "send the admin token as `Authorization: Bearer TOKEN` (the edge wrote it to DATA/admin-token)",
        ));
    };
    // Comparing digests keeps the comparison's timing independent of how much of the token matched.
    let ok = Sha256::digest(presented.as_bytes())
        == Sha256::digest(shared.admin_token.expose().as_bytes());
    if !ok {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "token_refused",
            "the admin token is not valid for this edge; check --token-file",
        ));
    }
    Ok(next.run(req).await)
}

#[derive(Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    name: String,
}

async fn list_groups(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<GroupView>>, ApiFailure> {
    let groups = shared.store.groups().await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|g| GroupView { name: g.name })
            .collect(),
    ))
}

async fn create_group(
    State(shared): State<Arc<Shared>>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiFailure> {
    apps::check_name(&req.name).map_err(|e| ApiFailure::bad_request("invalid_name", e.0))?;
    let group = shared.store.create_group(&req.name).await?;
    shared.reload().await?;
    tracing::info!(group = %group.name, "connector group created");
    Ok((StatusCode::CREATED, Json(GroupView { name: group.name })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    ttl_secs: Option<u64>,
}

#[derive(Serialize)]
struct TokenView {
    token: String,
    group: String,
    expires_in_secs: u64,
}

async fn create_token(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<TokenView>), ApiFailure> {
    // The body is optional: an empty one asks for the default lifetime.
    let req: CreateToken = if body.iter().all(u8::is_ascii_whitespace) {
        CreateToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiFailure::bad_request("bad_json", e.to_string()))?
    };
    let ttl = match req.ttl_secs {
        None => DEFAULT_TOKEN_TTL,
        Some(s) if s >= 1 && s <= MAX_TOKEN_TTL.as_secs() => Duration::from_secs(s),
        Some(s) => {
            return Err(ApiFailure::bad_request(
                "invalid_ttl",
                format!(
                    "ttl_secs {s} is out of range; use 1 to {}",
                    MAX_TOKEN_TTL.as_secs()
                ),
            ))
        }
    };
    let token = shared.store.create_registration_token(&group, ttl).await?;
    tracing::info!(%group, ttl_secs = ttl.as_secs(), "registration token created");
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            token,
            group,
            expires_in_secs: ttl.as_secs(),
        }),
    ))
}

/// An app as the admin API shows it.
#[derive(Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    pub external_url: String,
    pub internal_url: String,
    pub group: String,
    pub preauth: String,
    pub preserve_host: bool,
    pub insecure_skip_backend_tls_verify: bool,
    pub backend_timeout_secs: u64,
    /// Live tunnels of the app's group right now.
    pub tunnels: usize,
}

fn app_view(a: postern_store::App, tunnels: &HashMap<String, usize>) -> AppView {
    AppView {
        tunnels: tunnels.get(&a.group).copied().unwrap_or(0),
        name: a.name,
        external_url: a.external_url,
        internal_url: a.internal_url,
        group: a.group,
        preauth: a.preauth.as_str().to_owned(),
        preserve_host: a.preserve_host,
        insecure_skip_backend_tls_verify: a.insecure_skip_backend_tls_verify,
        backend_timeout_secs: a.backend_timeout.as_secs(),
    }
}

fn tunnels_by_group(shared: &Shared) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (group, _) in shared.tunnels.snapshot() {
        *counts.entry(group).or_insert(0) += 1;
    }
    counts
}

async fn list_apps(State(shared): State<Arc<Shared>>) -> Result<Json<Vec<AppView>>, ApiFailure> {
    let counts = tunnels_by_group(&shared);
    let apps = shared.store.apps().await?;
    Ok(Json(
        apps.into_iter().map(|a| app_view(a, &counts)).collect(),
    ))
}

async fn show_app(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<AppView>, ApiFailure> {
    let app = shared.store.app(&name).await?;
    Ok(Json(app_view(app, &tunnels_by_group(&shared))))
}

async fn publish_app(
    State(shared): State<Arc<Shared>>,
    ApiJson(req): ApiJson<PublishApp>,
) -> Result<(StatusCode, Json<AppView>), ApiFailure> {
    let new = apps::validate(&req).map_err(|e| ApiFailure::bad_request("invalid_app", e.0))?;
    let app = shared.store.publish_app(&new).await?;
    shared.reload().await?;
    tracing::info!(app = %app.name, external = %app.external_url, internal = %app.internal_url, group = %app.group, "app published");
    Ok((
        StatusCode::CREATED,
        Json(app_view(app, &tunnels_by_group(&shared))),
    ))
}

async fn delete_app(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    shared.store.delete_app(&name).await?;
    shared.reload().await?;
    tracing::info!(app = %name, "app deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A connector as the admin API shows it.
#[derive(Serialize, Deserialize)]
pub struct ConnectorView {
    pub id: String,
    pub group: String,
    pub hostname: String,
    pub version: String,
    pub status: String,
    pub tunnels: usize,
    /// Requests carried by its open tunnels.
    pub requests: u64,
    pub registered_at: i64,
    pub cert_not_after: Option<i64>,
}

async fn list_connectors(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<ConnectorView>>, ApiFailure> {
    let mut open: HashMap<String, (usize, u64)> = HashMap::new();
    for (_, t) in shared.tunnels.snapshot() {
        let entry = open.entry(t.connector_id.clone()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += t.served();
    }
    let connectors = shared.store.connectors().await?;
    Ok(Json(
        connectors
            .into_iter()
            .map(|c| {
                let (tunnels, requests) = open.get(&c.id).copied().unwrap_or((0, 0));
                ConnectorView {
                    status: if c.revoked_at.is_some() {
                        "revoked"
                    } else if tunnels > 0 {
                        "active"
                    } else {
                        "inactive"
                    }
                    .to_owned(),
                    tunnels,
                    requests,
                    id: c.id,
                    group: c.group,
                    hostname: c.hostname,
                    version: c.version,
                    registered_at: c.registered_at,
                    cert_not_after: c.cert_not_after,
                }
            })
            .collect(),
    ))
}
