//! Connector groups and their registration tokens.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{finish, Admin};
use crate::api::{ApiFailure, ApiJson};
use crate::apps::check_name;
use crate::config::DEFAULT_TOKEN_TTL;
use crate::state::Shared;

/// The longest a registration token may live.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    /// Apps the group carries.
    #[serde(default)]
    pub apps: usize,
    /// Connectors in the group that are not revoked.
    #[serde(default)]
    pub connectors: usize,
    /// Tunnels open from the group's connectors.
    #[serde(default)]
    pub tunnels: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameGroup {
    name: String,
}

async fn view(shared: &Shared, name: &str) -> Result<GroupView, ApiFailure> {
    let apps = shared.store.apps().await?;
    let connectors = shared.store.connectors().await?;
    let tunnels = shared.tunnels.snapshot();
    Ok(GroupView {
        name: name.to_owned(),
        apps: apps.iter().filter(|a| a.group == name).count(),
        connectors: connectors
            .iter()
            .filter(|c| c.group == name && c.revoked_at.is_none())
            .count(),
        tunnels: tunnels.iter().filter(|(g, _)| g == name).count(),
    })
}

pub async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<Vec<GroupView>>, ApiFailure> {
    let mut out = Vec::new();
    for g in shared.store.groups().await? {
        out.push(view(&shared, &g.name).await?);
    }
    Ok(Json(out))
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiFailure> {
    let audit = admin.begin(&shared, "group.create", &req.name);
    let result = async {
        check_name(&req.name).map_err(|e| ApiFailure::bad_request("invalid_name", e.0))?;
        let group = audit.store("").create_group(&req.name).await?;
        shared.reload().await?;
        tracing::info!(group = %group.name, "connector group created");
        view(&shared, &group.name).await
    }
    .await;
    finish(&audit, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

pub async fn rename(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<RenameGroup>,
) -> Result<Json<GroupView>, ApiFailure> {
    let audit = admin.begin(&shared, "group.rename", &name);
    let result = async {
        check_name(&req.name).map_err(|e| ApiFailure::bad_request("invalid_name", e.0))?;
        let group = audit
            .store(&format!("renamed to {}", req.name))
            .rename_group(&name, &req.name)
            .await?;
        shared.reload().await?;
        tracing::info!(from = %name, to = %group.name, "connector group renamed");
        view(&shared, &group.name).await
    }
    .await;
    finish(&audit, &result).await;
    Ok(Json(result?))
}

pub async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let audit = admin.begin(&shared, "group.delete", &name);
    let result = async {
        audit.store("").delete_group(&name).await?;
        shared.reload().await?;
        tracing::info!(group = %name, "connector group deleted");
        Ok(())
    }
    .await;
    finish(&audit, &result).await;
    result.map(|()| StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    ttl_secs: Option<u64>,
}

#[derive(Serialize)]
pub struct TokenView {
    token: String,
    group: String,
    expires_in_secs: u64,
}

pub async fn create_registration_token(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(group): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<TokenView>), ApiFailure> {
    let audit = admin.begin(&shared, "registration_token.create", &group);
    let result = async {
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
        let token = audit
            .store(&format!("expires in {}s", ttl.as_secs()))
            .create_registration_token(&group, ttl)
            .await?;
        tracing::info!(%group, ttl_secs = ttl.as_secs(), "registration token created");
        Ok(TokenView {
            token,
            group: group.clone(),
            expires_in_secs: ttl.as_secs(),
        })
    }
    .await;
    // The token itself never reaches the audit log.
    finish(&audit, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}
