//! Reading the audit log: filters by time, actor and action; pages newest first.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::ApiFailure;
use crate::state::Shared;

/// Events per page unless the caller asks otherwise.
const DEFAULT_PAGE: u32 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// RFC 3339 time or Unix seconds; events at or after it.
    since: Option<String>,
    /// RFC 3339 time or Unix seconds; events before it.
    until: Option<String>,
    actor: Option<String>,
    /// An action (`app.publish`) or a prefix ending in `.` (`connector.`).
    action: Option<String>,
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct AuditEventView {
    pub id: i64,
    /// RFC 3339, milliseconds.
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `success` or `failure`.
    pub result: String,
    pub detail: String,
    pub request_id: String,
}

#[derive(Serialize, Deserialize)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Parses a time filter into Unix milliseconds.
fn parse_time(name: &str, value: &str) -> Result<i64, ApiFailure> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            ApiFailure::bad_request(
                "invalid_time",
                format!("{name}={value:?} is not a time; use RFC 3339 (2026-01-31T12:00:00Z) or Unix seconds"),
            )
        })
}

pub async fn query(
    State(shared): State<Arc<Shared>>,
    Query(p): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiFailure> {
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > postern_store::MAX_AUDIT_PAGE {
        return Err(ApiFailure::bad_request(
            "invalid_limit",
            format!(
                "limit {limit} is out of range; use 1 to {}",
                postern_store::MAX_AUDIT_PAGE
            ),
        ));
    }
    let before_id = p
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiFailure::bad_request(
                    "invalid_cursor",
                    format!("cursor {c:?} is not one this API gave out; pass next_cursor from the previous page"),
                )
            })
        })
        .transpose()?;
    let q = postern_store::AuditQuery {
        since_ms: p
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until_ms: p
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
        actor: p.actor,
        action: p.action,
        before_id,
        limit,
    };
    let events = shared.store.audit(&q).await?;
    let next_cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        events: events
            .into_iter()
            .map(|e| AuditEventView {
                id: e.id,
                time: humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms.max(0) as u64),
                )
                .to_string(),
                actor: e.actor,
                action: e.action,
                target: e.target,
                result: e.result,
                detail: e.detail,
                request_id: e.request_id,
            })
            .collect(),
        next_cursor,
    }))
}
