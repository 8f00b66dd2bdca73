//! Identity protection's records: detections (what was found about a sign-in or an account) and
//! risky users (the administrator's decision about each user with detections). The levels and
//! kinds are `postern_policy::risk`'s words; the store keeps them as text and does not judge.
//!
//! **Bounds:** one detection of a kind per user per [`DETECTION_DEDUP_MS`] (a spray or a flood
//! of sign-ins adds no more rows than users × kinds per hour), and detections older than
//! [`DETECTION_RETENTION_MS`] are pruned as new ones arrive.

use sqlx::Row;

use crate::access::record_revocation;
use crate::{bump_version, now, Store, StoreError, BUILT_IN_ISSUER};

/// A detection of the same kind for the same user within this long is not stored again.
pub const DETECTION_DEDUP_MS: i64 = 3_600_000;
/// Detections are kept this long (user risk looks back as far).
pub const DETECTION_RETENTION_MS: i64 = 90 * 24 * 3_600_000;
/// The most detections one query returns.
pub const MAX_DETECTION_PAGE: i64 = 1_000;
/// The most recent failures [`Store::recent_failures`] returns.
pub const MAX_RECENT_FAILURES: i64 = 2_000;

/// A detection to record.
#[derive(Clone, Debug)]
pub struct NewDetection {
    pub at_ms: i64,
    /// The issuer that knows the user (`postern-idp` for the built-in provider's own records).
    pub issuer: String,
    pub subject: String,
    pub user_principal_name: String,
    /// `anonymizedIPAddress`, `unlikelyTravel`, …
    pub kind: String,
    /// `low`, `medium` or `high`.
    pub level: String,
    pub ip_address: String,
    pub detail: String,
    /// `edge` or `idp`: who saw it.
    pub source: String,
    /// The request ID of the sign-in it was found in.
    pub correlation_id: String,
}

/// A stored detection.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDetection {
    pub id: String,
    pub at_ms: i64,
    pub issuer: String,
    pub subject: String,
    pub user_principal_name: String,
    pub kind: String,
    pub level: String,
    pub ip_address: String,
    pub detail: String,
    pub source: String,
    pub correlation_id: String,
    /// `atRisk`, `dismissed` or `confirmedCompromised`.
    pub state: String,
}

/// A user with detections, or one an administrator decided about.
#[derive(Clone, Debug, PartialEq)]
pub struct RiskyUser {
    pub issuer: String,
    pub subject: String,
    pub user_principal_name: String,
    /// `atRisk`, `confirmedCompromised` or `dismissed`.
    pub state: String,
    pub updated_at_ms: i64,
    /// The levels of the detections standing against the user (not dismissed, within the
    /// retention period).
    pub standing: Vec<String>,
}

/// A recent failed sign-in at the built-in provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentFailure {
    pub at_ms: i64,
    pub ip_address: String,
    pub account: String,
}

const DETECTION_COLUMNS: &str = "uid, at_ms, issuer, subject, user_principal_name, kind, level, ip_address, detail, source, correlation_id, state";

fn detection(r: &sqlx::sqlite::SqliteRow) -> StoredDetection {
    StoredDetection {
        id: r.get(0),
        at_ms: r.get(1),
        issuer: r.get(2),
        subject: r.get(3),
        user_principal_name: r.get(4),
        kind: r.get(5),
        level: r.get(6),
        ip_address: r.get(7),
        detail: r.get(8),
        source: r.get(9),
        correlation_id: r.get(10),
        state: r.get(11),
    }
}

impl Store {
    /// Records `d` unless a standing detection of its kind for its user is younger than
    /// [`DETECTION_DEDUP_MS`] (one dismissed does not hide a new one); marks the user at risk
    /// (again, after a dismissal). Returns whether it was stored. The config version moves, so
    /// every edge sees the new user risk.
    pub async fn record_detection(&self, d: &NewDetection) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let recent: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM risk_detections WHERE issuer = ? AND subject = ? AND kind = ?
             AND at_ms > ? AND state = 'atRisk' LIMIT 1",
        )
        .bind(&d.issuer)
        .bind(&d.subject)
        .bind(&d.kind)
        .bind(d.at_ms - DETECTION_DEDUP_MS)
        .fetch_optional(&mut *tx)
        .await?;
        if recent.is_some() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM risk_detections WHERE at_ms < ?")
            .bind(d.at_ms - DETECTION_RETENTION_MS)
            .execute(&mut *tx)
            .await?;
        let cut = |s: &str| crate::logs::cut(s).to_owned();
        sqlx::query(
            "INSERT INTO risk_detections (uid, at_ms, issuer, subject, user_principal_name, kind,
             level, ip_address, detail, source, correlation_id, state)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'atRisk')",
        )
        .bind(crate::logs::new_uid())
        .bind(d.at_ms)
        .bind(cut(&d.issuer))
        .bind(cut(&d.subject))
        .bind(cut(&d.user_principal_name))
        .bind(&d.kind)
        .bind(&d.level)
        .bind(cut(&d.ip_address))
        .bind(cut(&d.detail))
        .bind(&d.source)
        .bind(cut(&d.correlation_id))
        .execute(&mut *tx)
        .await?;
        // A confirmed compromise stays confirmed; otherwise the user is at risk.
        sqlx::query(
            "INSERT INTO risky_users (issuer, subject, user_principal_name, state, updated_at_ms)
             VALUES (?, ?, ?, 'atRisk', ?)
             ON CONFLICT (issuer, subject) DO UPDATE SET
                user_principal_name = excluded.user_principal_name,
                state = CASE state WHEN 'confirmedCompromised' THEN state ELSE 'atRisk' END,
                updated_at_ms = excluded.updated_at_ms",
        )
        .bind(cut(&d.issuer))
        .bind(cut(&d.subject))
        .bind(cut(&d.user_principal_name))
        .bind(d.at_ms)
        .execute(&mut *tx)
        .await?;
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// Detections, newest first: all, or those of the user whose principal name is `upn` (any
    /// case), since `since_ms`, at most `limit` (≤ [`MAX_DETECTION_PAGE`]).
    pub async fn detections(
        &self,
        upn: Option<&str>,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<StoredDetection>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DETECTION_COLUMNS} FROM risk_detections
             WHERE at_ms >= ? AND (? IS NULL OR lower(user_principal_name) = lower(?))
             ORDER BY at_ms DESC, id DESC LIMIT ?"
        ))
        .bind(since_ms)
        .bind(upn)
        .bind(upn)
        .bind(limit.clamp(1, MAX_DETECTION_PAGE))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(detection).collect())
    }

    /// The levels of the standing detections of `subject` (of `issuer`) found at or after
    /// `since_ms`: what one sign-in showed.
    pub async fn detection_levels_since(
        &self,
        issuer: &str,
        subject: &str,
        since_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT level FROM risk_detections
             WHERE issuer = ? AND subject = ? AND at_ms >= ? AND state = 'atRisk'",
        )
        .bind(issuer)
        .bind(subject)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every user with detections or a decision, with the levels standing against them at
    /// `now_ms`.
    pub async fn risky_users(&self, now_ms: i64) -> Result<Vec<RiskyUser>, StoreError> {
        self.risky(None, now_ms).await
    }

    /// The user `subject` of `issuer`, as [`Store::risky_users`] lists them, if at risk or
    /// decided about.
    pub async fn risky_user(
        &self,
        issuer: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Option<RiskyUser>, StoreError> {
        Ok(self
            .risky(Some((issuer, subject)), now_ms)
            .await?
            .into_iter()
            .next())
    }

    async fn risky(
        &self,
        user: Option<(&str, &str)>,
        now_ms: i64,
    ) -> Result<Vec<RiskyUser>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.issuer, u.subject, u.user_principal_name, u.state, u.updated_at_ms,
                (SELECT group_concat(DISTINCT d.level) FROM risk_detections d
                 WHERE d.issuer = u.issuer AND d.subject = u.subject AND d.state = 'atRisk'
                 AND d.at_ms >= ?)
             FROM risky_users u WHERE ? IS NULL OR (u.issuer = ? AND u.subject = ?)
             ORDER BY u.updated_at_ms DESC",
        )
        .bind(now_ms - DETECTION_RETENTION_MS)
        .bind(user.map(|u| u.0))
        .bind(user.map(|u| u.0))
        .bind(user.map(|u| u.1))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RiskyUser {
                issuer: r.get(0),
                subject: r.get(1),
                user_principal_name: r.get(2),
                state: r.get(3),
                updated_at_ms: r.get(4),
                standing: r
                    .get::<Option<String>, _>(5)
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// An administrator's decision about the user whose principal name is `upn` (any case,
    /// every issuer that knows it): `confirmedCompromised` (user risk high until dismissed, and
    /// every session and grant ends) or `dismissed` (the standing detections no longer count).
    /// Returns the users changed; [`StoreError::NotFound`] when none has a record.
    pub async fn decide_user_risk(
        &self,
        upn: &str,
        compromised: bool,
    ) -> Result<Vec<RiskyUser>, StoreError> {
        let mut tx = self.write().await?;
        let mut keys: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT issuer, subject, user_principal_name FROM risky_users
             WHERE lower(user_principal_name) = lower(?)",
        )
        .bind(upn)
        .fetch_all(&mut *tx)
        .await?;
        // A directory user with no detections yet can still be confirmed compromised.
        if keys.is_empty() && compromised {
            let user: Option<(String, String)> =
                sqlx::query_as("SELECT id, email FROM idp_users WHERE email = lower(?)")
                    .bind(upn)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((id, email)) = user {
                keys.push((BUILT_IN_ISSUER.to_owned(), id, email));
            }
        }
        if keys.is_empty() {
            return Err(StoreError::NotFound {
                what: "user at risk",
                name: upn.to_owned(),
            });
        }
        let at = now();
        let state = if compromised {
            "confirmedCompromised"
        } else {
            "dismissed"
        };
        for (issuer, subject, name) in &keys {
            sqlx::query(
                "INSERT INTO risky_users (issuer, subject, user_principal_name, state, updated_at_ms)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (issuer, subject) DO UPDATE SET state = excluded.state,
                    updated_at_ms = excluded.updated_at_ms",
            )
            .bind(issuer)
            .bind(subject)
            .bind(name)
            .bind(state)
            .bind(at * 1000)
            .execute(&mut *tx)
            .await?;
            if compromised {
                record_revocation(&mut tx, subject, at).await?;
                record_revocation(&mut tx, &name.to_lowercase(), at).await?;
                crate::idp::revoke_everything(&mut tx, subject).await?;
            } else {
                sqlx::query(
                    "UPDATE risk_detections SET state = 'dismissed'
                     WHERE issuer = ? AND subject = ? AND state = 'atRisk'",
                )
                .bind(issuer)
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            }
        }
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        let changed = self.risky_users(at * 1000).await?;
        Ok(changed
            .into_iter()
            .filter(|u| keys.iter().any(|k| k.0 == u.issuer && k.1 == u.subject))
            .collect())
    }

    /// Failed sign-ins at the built-in provider since `since_ms` from `ip` or for `account`,
    /// newest first, at most [`MAX_RECENT_FAILURES`].
    pub async fn recent_failures(
        &self,
        ip: &str,
        account: &str,
        since_ms: i64,
    ) -> Result<Vec<RecentFailure>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, ip_address, user_principal_name FROM signins
             WHERE issuer = ? AND result = 'failure' AND at_ms >= ?
             AND (ip_address = ? OR user_principal_name = ?)
             ORDER BY at_ms DESC LIMIT ?",
        )
        .bind(BUILT_IN_ISSUER)
        .bind(since_ms)
        .bind(ip)
        .bind(account)
        .bind(MAX_RECENT_FAILURES)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RecentFailure {
                at_ms: r.get(0),
                ip_address: r.get(1),
                account: r.get(2),
            })
            .collect())
    }

    /// The user's most recent successful sign-ins through `issuer`, newest first, at most
    /// `limit`: the history identity protection compares a new sign-in with.
    pub async fn sign_in_history(
        &self,
        issuer: &str,
        subject: &str,
        limit: i64,
    ) -> Result<Vec<crate::Signin>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM signins WHERE issuer = ? AND user_id = ? AND result = 'success'
             ORDER BY id DESC LIMIT ?",
            crate::logs::SIGNIN_COLUMNS
        ))
        .bind(issuer)
        .bind(subject)
        .bind(limit.clamp(1, crate::MAX_SIGNIN_PAGE as i64))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(crate::logs::signin_from_row).collect())
    }
}
