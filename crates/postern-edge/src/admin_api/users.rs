//! The built-in identity provider's directory: users (create, list, show, disable, enable,
//! password reset, MFA reset) and directory groups (not connector groups).
//!
//! Disabling a user, resetting their password or their MFA ends their sessions at the provider,
//! revokes the tokens issued to them and ends their app sessions at the edge, at once: the store
//! records the revocation in the same transaction, and the routing snapshot is reloaded with it
//! before the answer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use postern_idp::directory::{self, DirectoryError, UserRequest};
use serde::{Deserialize, Serialize};

use super::{finish, Admin};
use crate::api::{ApiFailure, ApiJson};
use crate::state::Shared;

#[derive(Serialize, Deserialize)]
pub struct UserView {
    /// The stable subject (`sub`) of the user's tokens.
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub enabled: bool,
    pub admin: bool,
    pub require_mfa: bool,
    pub mfa_enrolled: bool,
    /// How many passkeys the user has enrolled (`user mfa-reset` removes them).
    #[serde(default)]
    pub passkeys: i64,
    pub groups: Vec<String>,
    pub created_at: i64,
    /// An administrator vouched for the email: the provider's tokens say `email_verified: true`.
    #[serde(default)]
    pub email_verified: bool,
}

pub fn user_view(u: postern_store::User, email_verified: bool) -> UserView {
    UserView {
        email_verified,
        id: u.id,
        email: u.email,
        display_name: u.display_name,
        enabled: u.enabled,
        admin: u.admin,
        require_mfa: u.require_mfa,
        mfa_enrolled: u.mfa_enrolled,
        passkeys: u.passkeys,
        groups: u.groups,
        created_at: u.created_at,
    }
}

#[derive(Serialize, Deserialize)]
pub struct DirectoryGroupView {
    pub name: String,
    pub members: Vec<String>,
}

/// The view of a user an operation returned, with whether their email is verified.
async fn viewed(
    shared: &Shared,
    user: Result<postern_store::User, ApiFailure>,
) -> Result<UserView, ApiFailure> {
    let user = user?;
    let verified = shared.store.email_verified(&user.id).await?;
    Ok(user_view(user, verified))
}

/// Turns a directory failure into the API's answer.
pub fn directory_failure(e: DirectoryError) -> ApiFailure {
    match e {
        DirectoryError::Invalid(m) => ApiFailure::bad_request("invalid_request", m),
        DirectoryError::WeakPassword(w) => ApiFailure::bad_request("weak_password", w.to_string()),
        DirectoryError::Store(s) => s.into(),
        DirectoryError::Hash(h) => ApiFailure::internal(h),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    require_mfa: bool,
    #[serde(default)]
    groups: Vec<String>,
    /// The administrator vouches that the address is the user's.
    #[serde(default)]
    email_verified: bool,
}

pub async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<Vec<UserView>>, ApiFailure> {
    let users = shared.store.users().await?;
    let verified = shared.store.verified_emails().await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| {
                let v = verified.contains(&u.id);
                user_view(u, v)
            })
            .collect(),
    ))
}

pub async fn show(
    State(shared): State<Arc<Shared>>,
    Path(email): Path<String>,
) -> Result<Json<UserView>, ApiFailure> {
    let user = shared.store.user(&email).await.map_err(ApiFailure::from);
    Ok(Json(viewed(&shared, user).await?))
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiFailure> {
    let target = req.email.trim().to_ascii_lowercase();
    let audit = admin.begin(&shared, "user.create", &target);
    let detail = format!(
        "admin {}, require_mfa {}, email_verified {}, groups [{}]",
        req.admin,
        req.require_mfa,
        req.email_verified,
        req.groups.join(", ")
    );
    let request = UserRequest {
        email: req.email,
        display_name: req.display_name,
        password: req.password,
        admin: req.admin,
        require_mfa: req.require_mfa,
        groups: req.groups,
        email_verified: req.email_verified,
    };
    let created = directory::create_user(&audit.store(&detail), request)
        .await
        .map_err(directory_failure);
    let result = viewed(&shared, created).await;
    finish(&audit, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

/// After a change that ended a user's sessions: the edge's routing snapshot takes the recorded
/// revocation, so their app session cookies stop working from the next request.
async fn end_app_sessions<T>(
    shared: &Shared,
    result: Result<T, ApiFailure>,
) -> Result<T, ApiFailure> {
    let done = result?;
    shared.reload().await?;
    Ok(done)
}

async fn set_enabled(
    shared: Arc<Shared>,
    admin: Admin,
    email: String,
    enabled: bool,
) -> Result<Json<UserView>, ApiFailure> {
    let action = if enabled {
        "user.enable"
    } else {
        "user.disable"
    };
    let audit = admin.begin(&shared, action, &email);
    let detail = if enabled {
        "enabled"
    } else {
        "disabled; sessions (also at apps) ended and tokens revoked"
    };
    let changed = audit
        .store(detail)
        .set_user_enabled(&email, enabled)
        .await
        .map_err(ApiFailure::from);
    let result = viewed(&shared, changed).await;
    let result = if enabled {
        result
    } else {
        end_app_sessions(&shared, result).await
    };
    finish(&audit, &result).await;
    Ok(Json(result?))
}

pub async fn disable(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(email): Path<String>,
) -> Result<Json<UserView>, ApiFailure> {
    set_enabled(shared, admin, email, false).await
}

pub async fn enable(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(email): Path<String>,
) -> Result<Json<UserView>, ApiFailure> {
    set_enabled(shared, admin, email, true).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    password: String,
}

pub async fn reset_password(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(email): Path<String>,
    ApiJson(req): ApiJson<ResetPassword>,
) -> Result<Json<UserView>, ApiFailure> {
    let audit = admin.begin(&shared, "user.reset_password", &email);
    let store = audit.store("password replaced; sessions (also at apps) ended and tokens revoked");
    let changed = directory::reset_password(&store, &email, req.password)
        .await
        .map_err(directory_failure);
    let result = viewed(&shared, changed).await;
    let result = end_app_sessions(&shared, result).await;
    finish(&audit, &result).await;
    Ok(Json(result?))
}

pub async fn mfa_reset(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(email): Path<String>,
) -> Result<Json<UserView>, ApiFailure> {
    let audit = admin.begin(&shared, "user.mfa_reset", &email);
    let changed = audit
        .store("authenticator, recovery codes and passkeys removed; sessions (also at apps) ended")
        .reset_mfa(&email)
        .await
        .map_err(ApiFailure::from);
    let result = viewed(&shared, changed).await;
    let result = end_app_sessions(&shared, result).await;
    finish(&audit, &result).await;
    Ok(Json(result?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailVerified {
    verified: bool,
}

/// `POST /v1/users/{email}/email-verified`: whether an administrator vouches for the address.
/// Tokens issued from now on carry it as `email_verified`.
pub async fn set_email_verified(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(email): Path<String>,
    ApiJson(req): ApiJson<EmailVerified>,
) -> Result<Json<UserView>, ApiFailure> {
    let audit = admin.begin(&shared, "user.email_verified", &email);
    let detail = if req.verified {
        "email marked verified"
    } else {
        "email marked unverified"
    };
    let changed = audit
        .store(detail)
        .set_email_verified(&email, req.verified)
        .await
        .map_err(ApiFailure::from);
    let result = viewed(&shared, changed).await;
    finish(&audit, &result).await;
    Ok(Json(result?))
}

pub async fn groups(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<DirectoryGroupView>>, ApiFailure> {
    let groups = shared.store.directory_groups().await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|g| DirectoryGroupView {
                name: g.name,
                members: g.members,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    email: String,
}

pub async fn add_member(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(group): Path<String>,
    ApiJson(req): ApiJson<AddMember>,
) -> Result<Json<UserView>, ApiFailure> {
    let audit = admin.begin(&shared, "directory_group.add_member", &group);
    let store = audit.store(&format!("added {}", req.email.trim().to_ascii_lowercase()));
    let changed = directory::add_group_member(&store, &group, &req.email)
        .await
        .map_err(directory_failure);
    let result = viewed(&shared, changed).await;
    finish(&audit, &result).await;
    Ok(Json(result?))
}

pub async fn remove_member(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path((group, email)): Path<(String, String)>,
) -> Result<Json<UserView>, ApiFailure> {
    let audit = admin.begin(&shared, "directory_group.remove_member", &group);
    let changed = audit
        .store(&format!("removed {}", email.trim().to_ascii_lowercase()))
        .remove_group_member(&group, &email)
        .await
        .map_err(ApiFailure::from);
    let result = viewed(&shared, changed).await;
    finish(&audit, &result).await;
    Ok(Json(result?))
}
