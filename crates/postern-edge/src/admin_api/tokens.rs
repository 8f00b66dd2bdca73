//! Admin API tokens: named, optionally expiring, revocable; shown once at creation.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{finish, Admin};
use crate::api::{ApiFailure, ApiJson};
use crate::state::Shared;

/// The longest an admin token may live when it is given a lifetime at all.
const MAX_ADMIN_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Serialize, Deserialize)]
pub struct AdminTokenView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A new token: the only time its value is shown.
#[derive(Serialize, Deserialize)]
pub struct NewAdminTokenView {
    #[serde(flatten)]
    pub info: AdminTokenView,
    pub token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminToken {
    name: String,
    /// Lifetime in seconds; none for a token that lives until revoked.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

fn view(t: postern_store::AdminToken) -> AdminTokenView {
    AdminTokenView {
        id: t.id,
        name: t.name,
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
        revoked_at: t.revoked_at,
    }
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<AdminTokenView>>, ApiFailure> {
    let tokens = shared.store.admin_tokens().await?;
    Ok(Json(tokens.into_iter().map(view).collect()))
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    ApiJson(req): ApiJson<CreateAdminToken>,
) -> Result<(StatusCode, Json<NewAdminTokenView>), ApiFailure> {
    // The target becomes the new token's ID once the store made it.
    let audit = admin.begin(&shared, "admin_token.create", &req.name);
    let result = async {
        crate::apps::check_name(&req.name)
            .map_err(|e| ApiFailure::bad_request("invalid_name", e.0))?;
        let ttl = match req.ttl_secs {
            None => None,
            Some(s) if s >= 1 && s <= MAX_ADMIN_TOKEN_TTL.as_secs() => {
                Some(Duration::from_secs(s))
            }
            Some(s) => {
                return Err(ApiFailure::bad_request(
                    "invalid_ttl",
                    format!(
                        "ttl_secs {s} is out of range; use 1 to {}, or leave it out for a token that lives until revoked",
                        MAX_ADMIN_TOKEN_TTL.as_secs()
                    ),
                ))
            }
        };
        let (info, token) = audit
            .store(&format!("name {}", req.name))
            .create_admin_token(&req.name, ttl)
            .await?;
        tracing::info!(token = %info.id, name = %info.name, "admin token created");
        Ok(NewAdminTokenView {
            info: view(info),
            token,
        })
    }
    .await;
    finish(&audit, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

pub async fn revoke(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Json<AdminTokenView>, ApiFailure> {
    let audit = admin.begin(&shared, "admin_token.revoke", &id);
    let result = async {
        let name = shared.store.admin_token(&id).await?.name;
        let t = audit
            .store(&format!("name {name}"))
            .revoke_admin_token(&id)
            .await?;
        tracing::info!(token = %id, "admin token revoked");
        Ok(view(t))
    }
    .await;
    finish(&audit, &result).await;
    result.map(Json)
}
