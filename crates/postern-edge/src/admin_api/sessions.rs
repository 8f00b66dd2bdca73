//! Ending a user's sessions at the edge: every session cookie issued to them until now stops
//! working on the next request, on every app.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{finish, Admin};
use crate::api::ApiFailure;
use crate::state::Shared;

#[derive(Serialize, Deserialize)]
pub struct RevokedView {
    /// The subject or email whose sessions were ended.
    pub user: String,
    /// Unix seconds: sessions issued at or before this no longer work.
    pub revoked_at: i64,
}

pub async fn revoke(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(user): Path<String>,
) -> Result<Json<RevokedView>, ApiFailure> {
    let audit = admin.begin(&shared, "user.revoke_sessions", &user);
    let result = async {
        // Emails compare without case, as the edge looks them up; subjects are exact.
        let user = match user.trim() {
            u if u.contains('@') => u.to_lowercase(),
            u => u.to_owned(),
        };
        if user.is_empty() || user.len() > 320 {
            return Err(ApiFailure::bad_request(
                "invalid_user",
                "name the user by email or subject, 1 to 320 characters",
            ));
        }
        let revoked_at = audit.store("").revoke_sessions(&user).await?;
        // The reload carries the revocation into the routing snapshot, and to other edges
        // through the config version.
        shared.reload().await?;
        tracing::info!(%user, "sessions revoked");
        Ok(RevokedView { user, revoked_at })
    }
    .await;
    finish(&audit, &result).await;
    result.map(Json)
}

#[derive(Serialize, Deserialize)]
pub struct RotatedView {
    /// Session cookies issued before keep working until they expire.
    pub rotated: bool,
}

/// Adds a new session-cookie key that seals from now on; cookies sealed with older keys still
/// open, so nobody is signed out.
pub async fn rotate_cookie_key(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
) -> Result<Json<RotatedView>, ApiFailure> {
    let audit = admin.begin(&shared, "session_keys.rotate", "session-cookie");
    let result = shared
        .auth
        .rotate_cookie_key(&audit.store(""))
        .await
        .map(|()| RotatedView { rotated: true })
        .map_err(ApiFailure::from);
    finish(&audit, &result).await;
    result.map(Json)
}
