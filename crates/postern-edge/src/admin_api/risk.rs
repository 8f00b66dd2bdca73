//! Identity protection for administrators, named as Entra names it: risky users
//! (`riskyUser`), risk detections (`riskDetection`), and the two decisions, confirm a user
//! compromised (user risk high, every session ends) or dismiss their risk.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::audit_log::{parse_time, rfc3339_ms};
use super::{finish, Admin};
use crate::api::ApiFailure;
use crate::state::Shared;

/// A user with detections, or one an administrator decided about.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct RiskyUserView {
    /// The user's subject at the issuer.
    pub id: String,
    pub issuer: String,
    pub user_principal_name: String,
    /// `none`, `low`, `medium` or `high`.
    pub risk_level: String,
    /// `atRisk`, `confirmedCompromised` or `dismissed`.
    pub risk_state: String,
    pub risk_last_updated_date_time: String,
}

/// One detection.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct RiskDetectionView {
    pub id: String,
    /// `anonymizedIPAddress`, `unlikelyTravel`, `unfamiliarFeatures`, `passwordSpray`,
    /// `leakedCredentials` or `bruteForce`.
    pub risk_event_type: String,
    pub risk_level: String,
    /// `atRisk`, `dismissed` or `confirmedCompromised`.
    pub risk_state: String,
    pub detected_date_time: String,
    pub user_id: String,
    pub user_principal_name: String,
    pub issuer: String,
    pub ip_address: String,
    /// `edge` (any issuer) or `idp` (the built-in provider).
    pub source: String,
    /// The request ID of the sign-in it was found in.
    pub correlation_id: String,
    pub additional_info: String,
}

fn view(u: postern_store::RiskyUser) -> RiskyUserView {
    RiskyUserView {
        risk_level: crate::risk::user_level(&u).as_str().to_owned(),
        id: u.subject,
        issuer: u.issuer,
        user_principal_name: u.user_principal_name,
        risk_state: u.state,
        risk_last_updated_date_time: rfc3339_ms(u.updated_at_ms),
    }
}

fn now_ms() -> i64 {
    postern_store::now() * 1000
}

/// `GET /v1/risk/users`: every user with detections or a decision, most recently changed first.
pub async fn users(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<RiskyUserView>>, ApiFailure> {
    let users = shared.store.risky_users(now_ms()).await?;
    Ok(Json(users.into_iter().map(view).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionParams {
    /// The user's principal name (email), without case.
    user: Option<String>,
    /// RFC 3339 time or Unix seconds; detections at or after it (default: 90 days back).
    since: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/risk/detections`: detections, newest first.
pub async fn detections(
    State(shared): State<Arc<Shared>>,
    Query(p): Query<DetectionParams>,
) -> Result<Json<Vec<RiskDetectionView>>, ApiFailure> {
    let since = match &p.since {
        Some(s) => parse_time("since", s)?,
        None => now_ms() - postern_store::DETECTION_RETENTION_MS,
    };
    // All of them up to the page's size unless fewer are asked for.
    let max = postern_store::MAX_DETECTION_PAGE as u32;
    let limit = i64::from(super::audit_log::page_limit(
        Some(p.limit.unwrap_or(max)),
        max,
    )?);
    let found = shared
        .store
        .detections(p.user.as_deref(), since, limit)
        .await?;
    Ok(Json(
        found
            .into_iter()
            .map(|d| RiskDetectionView {
                id: d.id,
                risk_event_type: d.kind,
                risk_level: d.level,
                risk_state: d.state,
                detected_date_time: rfc3339_ms(d.at_ms),
                user_id: d.subject,
                user_principal_name: d.user_principal_name,
                issuer: d.issuer,
                ip_address: d.ip_address,
                source: d.source,
                correlation_id: d.correlation_id,
                additional_info: d.detail,
            })
            .collect(),
    ))
}

/// `POST /v1/risk/users/{email}/confirm-compromised`: user risk high until dismissed; every
/// session at the edge and at the built-in provider ends.
pub async fn confirm_compromised(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(email): Path<String>,
) -> Result<Json<Vec<RiskyUserView>>, ApiFailure> {
    decide(&shared, &admin, &email, true).await
}

/// `POST /v1/risk/users/{email}/dismiss`: the detections standing against the user no longer
/// count.
pub async fn dismiss(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(email): Path<String>,
) -> Result<Json<Vec<RiskyUserView>>, ApiFailure> {
    decide(&shared, &admin, &email, false).await
}

async fn decide(
    shared: &Shared,
    admin: &Admin,
    email: &str,
    compromised: bool,
) -> Result<Json<Vec<RiskyUserView>>, ApiFailure> {
    let action = if compromised {
        "risk.confirm_compromised"
    } else {
        "risk.dismiss"
    };
    let audit = admin.begin(shared, action, email);
    let result = async {
        if email.is_empty() || email.len() > 320 {
            return Err(ApiFailure::bad_request(
                "invalid_user",
                "name the user by email, 1 to 320 characters",
            ));
        }
        let changed = audit.store("").decide_user_risk(email, compromised).await?;
        shared.reload().await?;
        tracing::info!(user = %email, action, "user risk decided");
        Ok(changed.into_iter().map(view).collect::<Vec<_>>())
    }
    .await;
    finish(&audit, &result).await;
    result.map(Json)
}
