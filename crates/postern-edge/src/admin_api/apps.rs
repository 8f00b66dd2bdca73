//! Published apps: publish, list, show, update (including maintenance mode), delete.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{finish, unknown_group, Admin};
use crate::api::{ApiFailure, ApiJson};
use crate::apps::{self, PublishApp, UpdateApp};
use crate::state::Shared;

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
    pub maintenance: bool,
    /// With `preauth: oidc`: how users sign in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in: Option<SignInView>,
    /// Live tunnels of the app's group right now.
    pub tunnels: usize,
    /// Why users may not reach the app right now, if they may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// An app's sign-in settings (never the client secret itself).
#[derive(Serialize, Deserialize)]
pub struct SignInView {
    /// `built-in` for the edge's own identity provider.
    pub issuer: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub assignment_required: bool,
    pub require_mfa: bool,
    pub cookie_http_only: bool,
    pub cookie_persistent: bool,
    /// A token without `email_verified` counts as verified (the admin vouches for the issuer).
    #[serde(default)]
    pub issuer_verifies_email: bool,
}

fn app_view(a: postern_store::App, tunnels: &HashMap<String, usize>) -> AppView {
    let open = tunnels.get(&a.group).copied().unwrap_or(0);
    let warning = if a.maintenance {
        Some("in maintenance mode: users get the maintenance page".to_owned())
    } else if open == 0 {
        Some(format!(
            "no connector of group {:?} is online: users get a 502",
            a.group
        ))
    } else {
        None
    };
    AppView {
        tunnels: open,
        warning,
        name: a.name,
        external_url: a.external_url,
        internal_url: a.internal_url,
        group: a.group,
        preauth: a.preauth.as_str().to_owned(),
        preserve_host: a.preserve_host,
        insecure_skip_backend_tls_verify: a.insecure_skip_backend_tls_verify,
        backend_timeout_secs: a.backend_timeout.as_secs(),
        maintenance: a.maintenance,
        sign_in: a.oidc.map(|o| SignInView {
            issuer_verifies_email: o.issuer_verifies_email,
            issuer: o.issuer.unwrap_or_else(|| "built-in".to_owned()),
            client_id: o.client_id,
            client_secret_set: o.client_secret.is_some(),
            assignment_required: a.access.assignment_required,
            require_mfa: a.access.require_mfa,
            cookie_http_only: a.cookie.http_only,
            cookie_persistent: a.cookie.persistent,
        }),
    }
}

fn tunnels_by_group(shared: &Shared) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (group, _) in shared.tunnels.snapshot() {
        *counts.entry(group).or_insert(0) += 1;
    }
    counts
}

pub async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<Vec<AppView>>, ApiFailure> {
    let counts = tunnels_by_group(&shared);
    let apps = shared.store.apps().await?;
    Ok(Json(
        apps.into_iter().map(|a| app_view(a, &counts)).collect(),
    ))
}

pub async fn show(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<AppView>, ApiFailure> {
    let app = shared.store.app(&name).await?;
    Ok(Json(app_view(app, &tunnels_by_group(&shared))))
}

/// Validates a publish or update request, including that its group exists. An app that signs
/// users in with the built-in identity provider gets its client there, made (or given the new
/// redirect URI) when it has none yet or its external URL changed.
async fn checked(
    shared: &Shared,
    req: &PublishApp,
    // The app as it was, and its stored sign-in settings (with the secret of the client the
    // edge registered with the built-in provider, which `PublishApp` does not carry).
    before: Option<(&PublishApp, Option<&postern_store::OidcClient>)>,
) -> Result<postern_store::NewApp, ApiFailure> {
    let mut new = apps::validate(req).map_err(|e| ApiFailure::bad_request("invalid_app", e.0))?;
    if new.external_host == shared.config.idp_host {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "host_taken",
            format!(
                "{} is the built-in identity provider's host (--idp-host); publish the app at another host",
                new.external_host
            ),
        ));
    }
    shared
        .store
        .group(&new.group)
        .await
        .map_err(|e| unknown_group(e, &new.group))?;
    if let Some(oidc) = new.oidc.as_mut().filter(|o| o.issuer.is_none()) {
        let moved =
            before.is_none_or(|(b, _)| b.external_url != req.external_url || b.issuer.is_some());
        // Still at the same address with the built-in provider: its client stays.
        if let (Some((_, Some(kept))), false) = (before, moved) {
            if kept.issuer.is_none() {
                oidc.client_id = kept.client_id.clone();
                oidc.client_secret = kept.client_secret.clone();
            }
        }
        if oidc.client_id.is_empty() || oidc.client_secret.is_none() || moved {
            let mut callback = url::Url::parse(&new.external_url)
                .map_err(|e| ApiFailure::bad_request("invalid_app", e.to_string()))?;
            callback.set_path(crate::preauth::CALLBACK_PATH);
            let (client_id, secret) = postern_idp::directory::ensure_app_client(
                &shared.store,
                &new.name,
                callback.as_str(),
            )
            .await
            .map_err(|e| ApiFailure::bad_request("invalid_app", e.to_string()))?;
            oidc.client_id = client_id;
            oidc.client_secret = Some(secret.0);
        }
    }
    Ok(new)
}

pub async fn publish(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    ApiJson(req): ApiJson<PublishApp>,
) -> Result<(StatusCode, Json<AppView>), ApiFailure> {
    let audit = admin.begin(&shared, "app.publish", &req.name);
    let result = async {
        let new = checked(&shared, &req, None).await?;
        let detail = format!(
            "{} -> {} (group {}, preauth {})",
            new.external_url,
            new.internal_url,
            new.group,
            new.preauth.as_str()
        );
        let app = audit.store(&detail).publish_app(&new).await?;
        shared.reload().await?;
        tracing::info!(app = %app.name, external = %app.external_url, internal = %app.internal_url, group = %app.group, "app published");
        Ok(app_view(app, &tunnels_by_group(&shared)))
    }
    .await;
    finish(&audit, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

/// What an update changed, field by field, for the audit log.
fn changes(before: &PublishApp, after: &PublishApp) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} -> {b}"));
        }
    };
    field("name", before.name.clone(), after.name.clone());
    field(
        "external_url",
        before.external_url.clone(),
        after.external_url.clone(),
    );
    field(
        "internal_url",
        before.internal_url.clone(),
        after.internal_url.clone(),
    );
    field("group", before.group.clone(), after.group.clone());
    field("preauth", before.preauth.clone(), after.preauth.clone());
    field(
        "preserve_host",
        before.preserve_host.to_string(),
        after.preserve_host.to_string(),
    );
    field(
        "insecure_skip_backend_tls_verify",
        before.insecure_skip_backend_tls_verify.to_string(),
        after.insecure_skip_backend_tls_verify.to_string(),
    );
    field(
        "backend_timeout_secs",
        format!("{:?}", before.backend_timeout_secs),
        format!("{:?}", after.backend_timeout_secs),
    );
    field(
        "issuer",
        format!("{:?}", before.issuer),
        format!("{:?}", after.issuer),
    );
    field(
        "client_id",
        format!("{:?}", before.client_id),
        format!("{:?}", after.client_id),
    );
    for (name, a, b) in [
        (
            "assignment_required",
            before.assignment_required,
            after.assignment_required,
        ),
        ("require_mfa", before.require_mfa, after.require_mfa),
        (
            "cookie_http_only",
            before.cookie_http_only,
            after.cookie_http_only,
        ),
        (
            "cookie_persistent",
            before.cookie_persistent,
            after.cookie_persistent,
        ),
        (
            "issuer_verifies_email",
            before.issuer_verifies_email,
            after.issuer_verifies_email,
        ),
    ] {
        field(name, a.to_string(), b.to_string());
    }
    // The secret itself never reaches the audit log.
    if before.client_secret != after.client_secret {
        out.push("client_secret: changed".to_owned());
    }
    out
}

pub async fn update(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
    ApiJson(patch): ApiJson<UpdateApp>,
) -> Result<Json<AppView>, ApiFailure> {
    if patch.is_empty() {
        return Err(ApiFailure::bad_request(
            "nothing_to_change",
            "the update names no field to change; send e.g. {\"internal_url\": \"http://10.0.0.5:8080/\"} or {\"maintenance\": true}",
        ));
    }
    let only_maintenance = patch.maintenance.is_some()
        && UpdateApp {
            maintenance: None,
            ..patch.clone()
        }
        .is_empty();
    let action = if only_maintenance {
        "app.maintenance"
    } else {
        "app.update"
    };
    let audit = admin.begin(&shared, action, &name);
    let result = async {
        let _one_at_a_time = shared.access_writes.lock().await;
        let stored = shared.store.app(&name).await?;
        let current = PublishApp::from_app(&stored);
        let next = current.clone().patched(&patch);
        if next.name != current.name {
            super::access::app_unreferenced(&shared, &current.name).await?;
        }
        let new = checked(&shared, &next, Some((&current, stored.oidc.as_ref()))).await?;
        // Maintenance mode is its own audit action, so it can be searched for.
        let mut records = Vec::new();
        let maintenance = if next.maintenance { "on" } else { "off" };
        if current.maintenance != next.maintenance {
            records.push(("app.maintenance", maintenance.to_owned()));
        }
        let changed = changes(&current, &next);
        if !changed.is_empty() || current.maintenance == next.maintenance {
            let detail = if changed.is_empty() {
                "no change".to_owned()
            } else {
                changed.join("; ")
            };
            records.push(("app.update", detail));
        }
        let records: Vec<(&str, &str)> = records.iter().map(|(a, d)| (*a, d.as_str())).collect();
        let app = audit.store_all(&records).update_app(&name, &new).await?;
        shared.reload().await?;
        tracing::info!(app = %name, "app updated");
        Ok(app_view(app, &tunnels_by_group(&shared)))
    }
    .await;
    finish(&audit, &result).await;
    result.map(Json)
}

pub async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let audit = admin.begin(&shared, "app.delete", &name);
    let result = async {
        let _one_at_a_time = shared.access_writes.lock().await;
        super::access::app_unreferenced(&shared, &name).await?;
        audit.store("").delete_app(&name).await?;
        shared.reload().await?;
        tracing::info!(app = %name, "app deleted");
        Ok(())
    }
    .await;
    finish(&audit, &result).await;
    result.map(|()| StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize, Clone)]
pub struct AssignmentView {
    /// `user` (by subject or email) or `group` (as named in the `groups` claim).
    pub kind: String,
    pub value: String,
}

fn assignee(a: &AssignmentView) -> Result<postern_store::Assignee, ApiFailure> {
    let value = a.value.trim();
    if value.is_empty() || value.len() > 320 {
        return Err(ApiFailure::bad_request(
            "invalid_assignment",
            "value must name a user (subject or email) or a group, 1 to 320 characters",
        ));
    }
    if value.chars().any(postern_proto::text::is_unsafe_char) {
        return Err(ApiFailure::bad_request(
            "invalid_assignment",
            "value must not hold control characters; name a user (subject or email) or a group",
        ));
    }
    match a.kind.as_str() {
        "user" => Ok(postern_store::Assignee::User(value.to_owned())),
        "group" => Ok(postern_store::Assignee::Group(value.to_owned())),
        other => Err(ApiFailure::bad_request(
            "invalid_assignment",
            format!("kind {other:?} is not known; use \"user\" or \"group\""),
        )),
    }
}

pub async fn list_assignments(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AssignmentView>>, ApiFailure> {
    let app = shared.store.app(&name).await?;
    let all = shared.store.assignments().await?;
    Ok(Json(
        all.into_iter()
            .filter(|(id, _)| *id == app.id)
            .map(|(_, who)| AssignmentView {
                kind: who.kind().to_owned(),
                value: who.value().to_owned(),
            })
            .collect(),
    ))
}

pub async fn assign(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<AssignmentView>,
) -> Result<(StatusCode, Json<AssignmentView>), ApiFailure> {
    let audit = admin.begin(&shared, "app.assign", &name);
    let result = async {
        let who = assignee(&req)?;
        let detail = format!("{} {}", req.kind, req.value);
        audit.store(&detail).assign(&name, &who).await?;
        shared.reload().await?;
        Ok(req.clone())
    }
    .await;
    finish(&audit, &result).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

pub async fn unassign(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<AssignmentView>,
) -> Result<StatusCode, ApiFailure> {
    let audit = admin.begin(&shared, "app.unassign", &name);
    let result = async {
        let who = assignee(&req)?;
        let detail = format!("{} {}", req.kind, req.value);
        audit.store(&detail).unassign(&name, &who).await?;
        shared.reload().await?;
        Ok(())
    }
    .await;
    finish(&audit, &result).await;
    result.map(|()| StatusCode::NO_CONTENT)
}
