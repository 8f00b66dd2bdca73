//! OpenID Connect clients of the built-in identity provider, and the provider's own operations
//! (signing key rotation, sign-in events).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use postern_idp::directory::{self, ClientRequest};
use serde::{Deserialize, Serialize};

use super::users::directory_failure;
use super::{finish, Admin};
use crate::api::{ApiFailure, ApiJson};
use crate::state::Shared;

#[derive(Serialize, Deserialize)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub id_token_alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Only in the answer to creation: the secret is stored as a hash and never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

fn view(c: postern_store::Client, secret: Option<postern_store::ClientSecret>) -> ClientView {
    ClientView {
        client_id: c.client_id,
        name: c.name,
        public: c.public,
        redirect_uris: c.redirect_uris,
        post_logout_redirect_uris: c.post_logout_redirect_uris,
        id_token_alg: c.id_token_alg.as_str().to_owned(),
        app: c.app_name,
        client_secret: secret.map(|s| s.0),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    name: String,
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    public: bool,
    /// `ES256` (default) or `RS256`.
    #[serde(default)]
    id_token_alg: Option<String>,
}

pub async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<Vec<ClientView>>, ApiFailure> {
    let clients = shared.store.clients().await?;
    Ok(Json(clients.into_iter().map(|c| view(c, None)).collect()))
}

pub async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    ApiJson(req): ApiJson<CreateClient>,
) -> Result<(StatusCode, Json<ClientView>), ApiFailure> {
    let name = req.name.clone();
    let request = ClientRequest {
        name: req.name,
        redirect_uris: req.redirect_uris,
        post_logout_redirect_uris: req.post_logout_redirect_uris,
        public: req.public,
        id_token_alg: req.id_token_alg,
    };
    let audit = admin.begin(&shared, "client.create", &name);
    let detail = format!(
        "{}, redirect URIs {}",
        if request.public {
            "public"
        } else {
            "confidential"
        },
        request.redirect_uris.join(" ")
    );
    let result = async {
        let (client, secret) = directory::create_client(&audit.store(&detail), request)
            .await
            .map_err(directory_failure)?;
        // A client that wants RS256 needs an RSA key in the ring.
        shared
            .idp
            .maintain_keys(false)
            .await
            .map_err(ApiFailure::internal)?;
        Ok(view(client, secret))
    }
    .await;
    finish(&audit, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

pub async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let audit = admin.begin(&shared, "client.delete", &id);
    let result = audit
        .store("deleted with its codes and grants")
        .delete_client(&id)
        .await
        .map_err(ApiFailure::from);
    finish(&audit, &result).await;
    result?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize)]
pub struct SigningKeyView {
    pub kid: String,
    pub alg: String,
    pub created_at: i64,
    pub activates_at: i64,
    pub retires_at: Option<i64>,
}

async fn keys(shared: &Shared) -> Result<Vec<SigningKeyView>, ApiFailure> {
    Ok(shared
        .store
        .signing_keys()
        .await?
        .into_iter()
        .map(|k| SigningKeyView {
            kid: k.kid,
            alg: k.alg.as_str().to_owned(),
            created_at: k.created_at,
            activates_at: k.activates_at,
            retires_at: k.retires_at,
        })
        .collect())
}

pub async fn signing_keys(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<SigningKeyView>>, ApiFailure> {
    Ok(Json(keys(&shared).await?))
}

/// Publishes a successor key now; it signs once relying parties have had time to fetch it.
pub async fn rotate_keys(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
) -> Result<Json<Vec<SigningKeyView>>, ApiFailure> {
    let audit = admin.begin(&shared, "idp.rotate_keys", "signing-keys");
    let store = audit.store("a successor key published");
    let result = match shared.idp.maintain_keys_in(&store, true).await {
        Ok(()) => keys(&shared).await,
        Err(e) => Err(ApiFailure::internal(e)),
    };
    finish(&audit, &result).await;
    Ok(Json(result?))
}

#[derive(Serialize, Deserialize)]
pub struct SigninEventView {
    pub at_ms: i64,
    pub email: String,
    pub user_id: Option<String>,
    pub ip: String,
    pub client_id: Option<String>,
    pub outcome: String,
    pub reason: String,
}

#[derive(Deserialize)]
pub struct EventsQuery {
    email: Option<String>,
    limit: Option<u32>,
}

pub async fn signin_events(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<SigninEventView>>, ApiFailure> {
    let limit = q.limit.unwrap_or(100).min(postern_store::MAX_AUDIT_PAGE);
    let events = shared
        .store
        .signin_events(q.email.as_deref(), limit)
        .await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| SigninEventView {
                at_ms: e.at_ms,
                email: e.email,
                user_id: e.user_id,
                ip: e.ip,
                client_id: e.client_id,
                outcome: e.outcome,
                reason: e.reason,
            })
            .collect(),
    ))
}
