//! Reading the audit log (filters by time, actor and action) and the sign-in log (by time, user,
//! app and result), in pages newest first; verifying both logs' hash chains.

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
    /// Stable across exports, for de-duplication.
    #[serde(default)]
    pub uid: String,
}

#[derive(Serialize, Deserialize)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Parses a time filter into Unix milliseconds.
pub(super) fn parse_time(name: &str, value: &str) -> Result<i64, ApiFailure> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        // Any offset (`+14:00`), which the weak parser does not read.
        .or_else(|| {
            time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        })
        .ok_or_else(|| {
            ApiFailure::bad_request(
                "invalid_time",
                format!("{name}={value:?} is not a time; use RFC 3339 (2026-01-31T12:00:00Z) or Unix seconds"),
            )
        })
}

fn cursor(c: Option<&str>) -> Result<Option<i64>, ApiFailure> {
    c.map(|c| {
        c.parse::<i64>().map_err(|_| {
            ApiFailure::bad_request(
                "invalid_cursor",
                format!("cursor {c:?} is not one this API gave out; pass next_cursor from the previous page"),
            )
        })
    })
    .transpose()
}

pub(super) fn rfc3339_ms(at_ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms.max(0) as u64),
    )
    .to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigninParams {
    /// RFC 3339 time or Unix seconds; sign-ins at or after it.
    since: Option<String>,
    /// RFC 3339 time or Unix seconds; sign-ins before it.
    until: Option<String>,
    /// The user's principal name (email), without case.
    user: Option<String>,
    /// The app's name.
    app: Option<String>,
    /// `success` or `failure`.
    result: Option<String>,
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    pub display_name: String,
    pub result: String,
}

/// A sign-in as Entra's `signIn` resource names its fields.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SigninView {
    /// Stable across exports, for de-duplication.
    pub id: String,
    /// The record's place in the sign-in log's chain.
    pub sequence: i64,
    pub created_date_time: String,
    pub user_id: Option<String>,
    pub user_principal_name: String,
    pub app_id: Option<String>,
    pub app_display_name: Option<String>,
    pub ip_address: String,
    pub client_app_used: String,
    pub correlation_id: String,
    pub is_interactive: bool,
    pub status: SigninStatus,
    pub device_detail: DeviceDetail,
    /// Where the client was, when the edge has a location database (`--geoip-db`); its parts
    /// are null where the database does not know them.
    pub location: Option<SigninLocation>,
    pub authentication_requirement: String,
    pub authentication_methods_used: Vec<String>,
    /// `success`, `failure` or `notApplied` (no enforced policy applied, or not decided: the
    /// built-in provider's own steps, a sign-in refused before its decision).
    pub conditional_access_status: String,
    /// Each policy that applied and its result: `success`, `failure`, `reportOnlySuccess`,
    /// `reportOnlyFailure`.
    pub applied_conditional_access_policies: Vec<AppliedPolicy>,
    /// The sign-in risk identity protection found: `none`, `low`, `medium`, `high`.
    pub risk_level_during_sign_in: String,
    /// The detections found in this sign-in (`anonymizedIPAddress`, `unlikelyTravel`, …).
    #[serde(rename = "riskEventTypes_v2")]
    pub risk_event_types_v2: Vec<String>,
    /// Who checked the credentials: the issuer's URL or `postern-idp`.
    pub issuer: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SigninStatus {
    /// `0` on success, otherwise Postern's stable reason code.
    pub error_code: String,
    pub failure_reason: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigninLocation {
    pub city: Option<String>,
    pub state: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country_or_region: Option<String>,
    pub geo_coordinates: Option<GeoCoordinates>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GeoCoordinates {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDetail {
    pub operating_system: Option<String>,
    pub browser: Option<String>,
}

impl SigninView {
    pub fn from_stored(s: postern_store::Signin) -> SigninView {
        let r = s.record;
        let success = r.result == postern_store::SigninResult::Success;
        let decided = r.decided;
        SigninView {
            id: s.uid,
            sequence: s.id,
            created_date_time: rfc3339_ms(r.at_ms),
            user_id: r.user_id,
            user_principal_name: r.user_principal_name,
            app_id: r.app_id,
            app_display_name: r.app_display_name,
            ip_address: r.ip_address,
            client_app_used: r.client_app_used,
            correlation_id: r.correlation_id,
            is_interactive: r.is_interactive,
            status: SigninStatus {
                error_code: if success {
                    "0".to_owned()
                } else {
                    r.error_code
                },
                failure_reason: r.failure_reason,
            },
            device_detail: DeviceDetail {
                operating_system: r.operating_system,
                browser: r.browser,
            },
            location: r.location.map(|l| SigninLocation {
                city: l.city,
                state: l.state,
                country_or_region: l.country_or_region,
                geo_coordinates: l.coordinates.map(|(latitude, longitude)| GeoCoordinates {
                    latitude,
                    longitude,
                }),
            }),
            authentication_requirement: r.authentication_requirement,
            authentication_methods_used: r.authentication_methods,
            conditional_access_status: decided
                .as_ref()
                .map_or("notApplied", |d| &d.conditional_access_status)
                .to_owned(),
            applied_conditional_access_policies: decided
                .as_ref()
                .map(|d| {
                    d.applied_policies
                        .iter()
                        .map(|p| {
                            let (name, result) = p.rsplit_once(':').unwrap_or((p, ""));
                            AppliedPolicy {
                                display_name: name.to_owned(),
                                result: result.to_owned(),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default(),
            risk_level_during_sign_in: decided
                .as_ref()
                .map_or("none", |d| &d.risk_level)
                .to_owned(),
            risk_event_types_v2: decided.map(|d| d.risk_event_types).unwrap_or_default(),
            issuer: r.issuer,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct SigninPage {
    pub signins: Vec<SigninView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub async fn signins(
    State(shared): State<Arc<Shared>>,
    Query(p): Query<SigninParams>,
) -> Result<Json<SigninPage>, ApiFailure> {
    let limit = page_limit(p.limit, postern_store::MAX_SIGNIN_PAGE)?;
    let result = match p.result.as_deref() {
        None => None,
        Some("success") => Some(postern_store::SigninResult::Success),
        Some("failure") => Some(postern_store::SigninResult::Failure),
        Some(other) => {
            return Err(ApiFailure::bad_request(
                "invalid_result",
                format!("result={other:?} is not one; use success or failure"),
            ))
        }
    };
    let q = postern_store::SigninQuery {
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
        user: p.user,
        app: p.app,
        result,
        before_id: cursor(p.cursor.as_deref())?,
        after_id: None,
        limit,
    };
    let found = shared.store.signins(&q).await?;
    let next_cursor = (found.len() == limit as usize)
        .then(|| found.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(SigninPage {
        signins: found.into_iter().map(SigninView::from_stored).collect(),
        next_cursor,
    }))
}

#[derive(Serialize, Deserialize)]
pub struct LogVerification {
    /// `audit` or `signins`.
    pub log: String,
    pub records: u64,
    pub intact: bool,
    /// The first bad record: `altered`, `missing` or `inserted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Its sequence number (the audit event's `id`, the sign-in's `sequence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<i64>,
}

#[derive(Serialize, Deserialize)]
pub struct Verification {
    pub intact: bool,
    pub logs: Vec<LogVerification>,
}

/// `GET /v1/logs/verify`: walks each log's hash chain from its anchor to its head.
pub async fn verify(State(shared): State<Arc<Shared>>) -> Result<Json<Verification>, ApiFailure> {
    let mut logs = Vec::new();
    for log in postern_store::Log::ALL {
        let v = shared.store.verify_log(log).await?;
        logs.push(LogVerification {
            log: log.as_str().to_owned(),
            records: v.records,
            intact: v.broken.is_none(),
            problem: v.broken.as_ref().map(|b| b.kind().to_owned()),
            record: v.broken.as_ref().map(|b| b.id()),
        });
    }
    Ok(Json(Verification {
        intact: logs.iter().all(|l| l.intact),
        logs,
    }))
}

pub async fn query(
    State(shared): State<Arc<Shared>>,
    Query(p): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiFailure> {
    let limit = page_limit(p.limit, postern_store::MAX_AUDIT_PAGE)?;
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
        after_id: None,
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
                uid: e.uid,
            })
            .collect(),
        next_cursor,
    }))
}

/// The page size asked for (or the default), refused outside 1 to `max`.
pub(super) fn page_limit(asked: Option<u32>, max: u32) -> Result<u32, ApiFailure> {
    let limit = asked.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > max {
        return Err(ApiFailure::bad_request(
            "invalid_limit",
            format!("limit {limit} is out of range; use 1 to {max}"),
        ));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_unix_seconds_or_rfc_3339_with_any_offset() {
        let utc = parse_time("since", "2026-12-01T10:00:00Z").unwrap();
        assert_eq!(utc, 1_796_119_200_000);
        assert_eq!(parse_time("since", "1796119200").unwrap(), utc);
        assert_eq!(
            parse_time("since", "2026-12-02T00:00:00+14:00").unwrap(),
            utc
        );
        assert_eq!(
            parse_time("since", "2026-12-01T05:30:00-04:30").unwrap(),
            utc
        );
        for bad in ["yesterday", "2026-13-01T00:00:00Z", ""] {
            assert!(parse_time("since", bad).is_err(), "{bad}");
        }
    }
}
