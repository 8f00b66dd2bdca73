//! Conditional access: named locations and policies, and what-if.
//!
//! A change is checked with every other policy and location (and the apps' own rules) as they
//! would be after it, the names a changed policy refers to against the apps and groups the
//! store knows: a refused one names the field and changes nothing. Changes are checked and
//! written one at a time (`Shared::access_writes`).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use postern_auth::session::Session;
use postern_auth::UnixTime;
use postern_policy::{NamedLocation, Platform, Policies, Policy, RiskLevel, Verdict};
use postern_store::AccessDoc;
use serde::{Deserialize, Serialize};

use super::{finish, Admin};
use crate::api::{ApiFailure, ApiJson};
use crate::preauth::access::{app_rules, stored, AnyName, StoreNames};
use crate::state::Shared;

fn invalid(e: postern_policy::PolicyError) -> ApiFailure {
    ApiFailure::bad_request("invalid_policy", e.to_string())
}

/// Checks the policies and locations as they would be, naming the field of the first problem;
/// the names `changed` refers to must exist (others were checked when they were stored: a name
/// that has gone since matches nothing, and does not hold up unrelated changes).
async fn check(
    shared: &Shared,
    policies: &[Policy],
    locations: &[NamedLocation],
    changed: Option<&Policy>,
) -> Result<Policies, ApiFailure> {
    if let Some(p) = changed {
        let names = StoreNames::load(&shared.store).await?;
        Policies::compile(std::slice::from_ref(p), locations, &names).map_err(invalid)?;
    }
    let rules = app_rules(&shared.store.apps().await?);
    Policies::compile_with_rules(&rules, policies, locations, &AnyName).map_err(invalid)
}

/// Refuses to rename or delete an app a policy names: the policy would silently stop applying.
pub async fn app_unreferenced(shared: &Shared, app: &str) -> Result<(), ApiFailure> {
    let (policies, _) = current(shared).await?;
    let target = postern_policy::AppTarget::App(app.to_owned());
    let naming: Vec<&str> = policies
        .iter()
        .filter(|p| p.apps.include.contains(&target) || p.apps.exclude.contains(&target))
        .map(|p| p.name.as_str())
        .collect();
    if naming.is_empty() {
        return Ok(());
    }
    Err(ApiFailure::new(
        StatusCode::CONFLICT,
        "in_use",
        format!(
            "app {app:?} is named by the access policies {naming:?}; change them first, or they \
             would stop applying"
        ),
    ))
}

async fn current(shared: &Shared) -> Result<(Vec<Policy>, Vec<NamedLocation>), ApiFailure> {
    stored(&shared.store)
        .await
        .map_err(|e| ApiFailure::new(StatusCode::INTERNAL_SERVER_ERROR, "policies_unusable", e))
}

fn path_matches(path: &str, body: &str) -> Result<(), ApiFailure> {
    if path != body {
        return Err(ApiFailure::bad_request(
            "name_mismatch",
            format!("the URL names {path:?} but the body names {body:?}; make them the same"),
        ));
    }
    Ok(())
}

fn json<T: Serialize>(v: &T) -> Result<String, ApiFailure> {
    serde_json::to_string(v).map_err(ApiFailure::internal)
}

pub async fn list_policies(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<Policy>>, ApiFailure> {
    Ok(Json(current(&shared).await?.0))
}

pub async fn list_locations(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<NamedLocation>>, ApiFailure> {
    Ok(Json(current(&shared).await?.1))
}

/// `PUT /v1/policies/{name}`: creates or replaces a policy.
pub async fn put_policy(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<(StatusCode, Json<Policy>), ApiFailure> {
    let status = save(
        &shared,
        &admin,
        AccessDoc::Policy,
        &name,
        &policy,
        || {
            path_matches(&name, &policy.name)?;
            if let Some(reason) = crate::preauth::access::reserved_name(&name) {
                return Err(ApiFailure::bad_request(
                    "invalid_policy",
                    format!("{name}: name: {reason}"),
                ));
            }
            Policies::check_new_policy(&policy).map_err(invalid)
        },
        |all| replace(&mut all.0, &name, |p| &p.name, &policy),
    )
    .await?;
    Ok((status, Json(policy)))
}

/// `items` with the one named `name` replaced by `item`, or `item` added at the end.
fn replace<T: Clone>(items: &mut Vec<T>, name: &str, name_of: fn(&T) -> &String, item: &T) {
    match items.iter_mut().find(|i| name_of(i) == name) {
        Some(i) => *i = item.clone(),
        None => items.push(item.clone()),
    }
}

/// Stores a policy or location named `name` (the body names `body_name`) once the whole set,
/// changed by `change`, compiles; audited, then reloaded. Answers 200 when it replaced one,
/// 201 when it is new.
async fn save<T: Serialize>(
    shared: &Shared,
    admin: &Admin,
    kind: AccessDoc,
    name: &str,
    item: &T,
    // The body's own checks: its name is the path's, and the rules for what is written.
    own: impl FnOnce() -> Result<(), ApiFailure>,
    change: impl FnOnce(&mut (Vec<Policy>, Vec<NamedLocation>)),
) -> Result<StatusCode, ApiFailure> {
    let action = match kind {
        AccessDoc::Policy => "policy.put",
        AccessDoc::Location => "location.put",
    };
    let audit = admin.begin(shared, action, name);
    let result = async {
        let _one_at_a_time = shared.access_writes.lock().await;
        own()?;
        let mut all = current(shared).await?;
        change(&mut all);
        let changed = match kind {
            AccessDoc::Policy => all.0.iter().find(|p| p.name == name),
            AccessDoc::Location => None,
        };
        check(shared, &all.0, &all.1, changed).await?;
        let doc = json(item)?;
        let existed = audit.store(&doc).put_access_doc(kind, name, &doc).await?;
        shared.reload().await?;
        tracing::info!(kind = action, name, "access policy or location saved");
        Ok(existed)
    }
    .await;
    finish(&audit, &result).await;
    Ok(if result? {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    })
}

pub async fn delete_policy(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let audit = admin.begin(&shared, "policy.delete", &name);
    let result = async {
        let _one_at_a_time = shared.access_writes.lock().await;
        audit
            .store("")
            .delete_access_doc(AccessDoc::Policy, &name)
            .await?;
        shared.reload().await?;
        tracing::info!(policy = %name, "access policy deleted");
        Ok(())
    }
    .await;
    finish(&audit, &result).await;
    result.map(|()| StatusCode::NO_CONTENT)
}

/// `PUT /v1/locations/{name}`: creates or replaces a named location.
pub async fn put_location(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
    ApiJson(location): ApiJson<NamedLocation>,
) -> Result<(StatusCode, Json<NamedLocation>), ApiFailure> {
    let status = save(
        &shared,
        &admin,
        AccessDoc::Location,
        &name,
        &location,
        || {
            path_matches(&name, &location.name)?;
            Policies::check_new_location(&location).map_err(invalid)
        },
        |all| replace(&mut all.1, &name, |l| &l.name, &location),
    )
    .await?;
    Ok((status, Json(location)))
}

/// Deletes a named location no policy refers to.
pub async fn delete_location(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let audit = admin.begin(&shared, "location.delete", &name);
    let result = async {
        let _one_at_a_time = shared.access_writes.lock().await;
        let (policies, mut locations) = current(&shared).await?;
        let before = locations.len();
        locations.retain(|l| l.name != name);
        if locations.len() < before {
            check(&shared, &policies, &locations, None)
                .await
                .map_err(|e| {
                    ApiFailure::new(
                        StatusCode::CONFLICT,
                        "in_use",
                        format!(
                            "{name:?} is still used by a policy ({}); change that policy first",
                            e.message
                        ),
                    )
                })?;
        }
        audit
            .store("")
            .delete_access_doc(AccessDoc::Location, &name)
            .await?;
        shared.reload().await?;
        tracing::info!(location = %name, "named location deleted");
        Ok(())
    }
    .await;
    finish(&audit, &result).await;
    result.map(|()| StatusCode::NO_CONTENT)
}

/// The latest time what-if decides at: 9999-12-31T23:59:59Z.
const LATEST_WHAT_IF: u64 = 253_402_300_799;

/// A sign-in to explain without making it.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhatIf {
    /// A directory user's email, or any user's subject or email (with `groups`).
    pub user: String,
    pub app: String,
    pub ip: IpAddr,
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Groups, for a user the directory does not know (an external issuer's).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The sign-in used a second factor; a passkey.
    #[serde(default)]
    pub mfa: bool,
    #[serde(default)]
    pub passkey: bool,
    #[serde(default)]
    pub sign_in_risk: Option<RiskLevel>,
    #[serde(default)]
    pub user_risk: Option<RiskLevel>,
    /// Unix seconds; now by default.
    #[serde(default)]
    pub at: Option<u64>,
}

#[derive(Deserialize, Serialize)]
pub struct WhatIfView {
    /// `allow`, `block`, `require_mfa`, `require_passkey`, `require_sign_in`.
    pub result: String,
    /// The enforced policy that decided it, if one did.
    pub policy: Option<String>,
    /// Where the address is, when the edge has a location database.
    pub country: Option<String>,
    /// The sign-in and user risk the decision was made with (given, or as they stand now).
    pub sign_in_risk: RiskLevel,
    pub user_risk: RiskLevel,
    /// Every policy that applied, in order: name, state, outcome.
    pub policies: Vec<WhatIfPolicy>,
}

#[derive(Deserialize, Serialize)]
pub struct WhatIfPolicy {
    pub name: String,
    pub state: postern_policy::PolicyState,
    /// `satisfied`, `blocked`, `needs_mfa`, `needs_passkey`, `needs_sign_in`.
    pub outcome: String,
}

/// `POST /v1/policies/what-if`: which policies apply to a sign-in and what they decide, with the
/// same code every request is decided by.
pub async fn what_if(
    State(shared): State<Arc<Shared>>,
    ApiJson(q): ApiJson<WhatIf>,
) -> Result<Json<WhatIfView>, ApiFailure> {
    let routes = shared.routes.load_full();
    if !shared.store.apps().await?.iter().any(|a| a.name == q.app) {
        return Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("app {:?} does not exist", q.app),
        ));
    }
    if q.at.is_some_and(|at| at > LATEST_WHAT_IF) {
        return Err(ApiFailure::bad_request(
            "invalid_request",
            format!("at is Unix seconds up to {LATEST_WHAT_IF} (the end of year 9999)"),
        ));
    }
    let now = UnixTime::from_secs(q.at.unwrap_or_else(|| UnixTime::now().secs()));
    // A directory user by email or by subject.
    let directory = match shared.store.user(&q.user).await {
        Ok(u) => Some(u),
        Err(_) => shared.store.user_by_id(&q.user).await.ok(),
    };
    let (subject, email, groups) = match &directory {
        // As a sign-in would carry it: the email only when the administrator vouches for it.
        Some(u) => (
            u.id.clone(),
            shared
                .store
                .email_verified(&u.id)
                .await?
                .then(|| u.email.clone()),
            u.groups.clone(),
        ),
        None => (
            q.user.clone(),
            q.user.contains('@').then(|| q.user.clone()),
            q.groups.clone(),
        ),
    };
    let mut amr = vec!["pwd".to_owned()];
    if q.mfa {
        amr.push("otp".to_owned());
    }
    if q.passkey {
        amr = vec!["hwk".to_owned(), "user".to_owned()];
    }
    let session = Session {
        id: postern_auth::session::SessionId::generate(),
        app: postern_auth::AppId::new("what-if").map_err(ApiFailure::internal)?,
        issuer: if directory.is_some() {
            shared.idp.issuer.clone()
        } else {
            String::new()
        },
        subject,
        email,
        name: None,
        groups,
        amr,
        acr: None,
        auth_time: Some(now),
        issued_at: now,
        expires_at: now,
    };
    let assigned = routes
        .named(&q.app)
        .and_then(|r| r.sign_in.as_ref())
        .is_some_and(|s| s.assigned(&session));
    let country = shared.geoip.locate(q.ip).and_then(|l| l.country_or_region);
    // As Entra's what-if: the risk given, else what the address and the user show now.
    let sign_in_risk = q
        .sign_in_risk
        .unwrap_or_else(|| shared.risk.request_risk(q.ip));
    let user_risk = q.user_risk.unwrap_or_else(|| {
        let access = &routes.access;
        access
            .user_risk(&session)
            .max(access.named_user_risk(&q.user))
    });
    let decision = routes
        .access
        .decide(
            &session,
            (&q.app, assigned),
            q.ip,
            country.as_deref(),
            q.platform.unwrap_or(Platform::Other),
            (sign_in_risk, user_risk),
            now,
        )
        .map_err(|r| {
            ApiFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "policies_unusable",
                r.message(),
            )
        })?;
    let (result, policy) = match &decision.verdict {
        Verdict::Allow => ("allow", None),
        Verdict::Block { policy } => ("block", Some(policy)),
        Verdict::RequireMfa { policy } => ("require_mfa", Some(policy)),
        Verdict::RequirePasskey { policy } => ("require_passkey", Some(policy)),
        Verdict::RequireSignIn { policy } => ("require_sign_in", Some(policy)),
    };
    Ok(Json(WhatIfView {
        result: result.to_owned(),
        policy: policy.map(|p| p.to_string()),
        country,
        sign_in_risk,
        user_risk,
        policies: decision
            .results
            .iter()
            .map(|r| WhatIfPolicy {
                name: r.policy.to_string(),
                state: r.state,
                outcome: match r.outcome {
                    postern_policy::Outcome::Satisfied => "satisfied",
                    postern_policy::Outcome::Blocked => "blocked",
                    postern_policy::Outcome::NeedsMfa => "needs_mfa",
                    postern_policy::Outcome::NeedsPasskey => "needs_passkey",
                    postern_policy::Outcome::NeedsSignIn => "needs_sign_in",
                }
                .to_owned(),
            })
            .collect(),
    }))
}
