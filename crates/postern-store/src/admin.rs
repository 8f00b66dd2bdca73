//! Admin API tokens and the audit log.

use std::time::Duration;

use base64::Engine;

use crate::model::{self, AdminToken, AuditEvent, AuditQuery, NewAuditEvent};
use crate::{hex, now, token_hash, Store, StoreError};

/// Prefix of admin API tokens, so a leaked one is recognisable (e.g. by secret scanners).
const ADMIN_TOKEN_PREFIX: &str = "pat_";
/// The most audit events one page returns.
pub const MAX_AUDIT_PAGE: u32 = 1000;

impl Store {
    /// Creates an admin API token; returns its record and the token, which is not stored.
    pub async fn create_admin_token(
        &self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<(AdminToken, String), StoreError> {
        let mut tx = self.write().await?;
        let id = format!("tok_{}", hex(&rand::random::<[u8; 6]>()));
        let token = format!(
            "{ADMIN_TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        );
        let now = now();
        let expires_at = ttl.map(|t| now.saturating_add(t.as_secs() as i64));
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(name)
        .bind(token_hash(&token))
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        self.commit_naming(tx, Some(&id), None).await?;
        Ok((self.admin_token(&id).await?, token))
    }

    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        let rows = sqlx::query(&format!("{TOKEN_SELECT} ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(model::admin_token_from_row).collect())
    }

    pub async fn admin_token(&self, id: &str) -> Result<AdminToken, StoreError> {
        let row = sqlx::query(&format!("{TOKEN_SELECT} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| model::admin_token_from_row(&r))
            .ok_or_else(|| StoreError::NotFound {
                what: "admin token",
                name: id.to_owned(),
            })
    }

    /// The live (not revoked, not expired) admin token whose value is `token`, marked as used.
    pub async fn authenticate_admin_token(
        &self,
        token: &str,
    ) -> Result<Option<AdminToken>, StoreError> {
        let now = now();
        let row = sqlx::query(&format!(
            "{TOKEN_SELECT} WHERE hash = ? AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > ?)"
        ))
        .bind(token_hash(token))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let token = model::admin_token_from_row(&row);
        sqlx::query("UPDATE admin_tokens SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(&token.id)
            .execute(&self.pool)
            .await?;
        Ok(Some(token))
    }

    pub async fn revoke_admin_token(&self, id: &str) -> Result<AdminToken, StoreError> {
        let mut tx = self.write().await?;
        let res = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let token = self.admin_token(id).await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "admin token {id} is already revoked"
            )));
        }
        self.commit(tx).await?;
        Ok(token)
    }

    // Audit ----------------------------------------------------------------------------------

    /// Records an event on its own transaction (a refused change; see [`Store::audited`] for
    /// a change, whose record commits with it).
    pub async fn record(&self, event: &NewAuditEvent<'_>) -> Result<(), StoreError> {
        self.record_audit(&crate::Audit {
            actor: event.actor.to_owned(),
            action: event.action.to_owned(),
            target: event.target.to_owned(),
            outcome: event.outcome,
            detail: event.detail.to_owned(),
            request_id: event.request_id.to_owned(),
        })
        .await
    }

    /// Audit events matching `q`, newest first, at most `q.limit` (capped at
    /// [`MAX_AUDIT_PAGE`]).
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = String::from(
            "SELECT id, at_ms, actor, action, target, result, detail, request_id, uid
             FROM audit_events WHERE 1 = 1",
        );
        if q.since_ms.is_some() {
            sql.push_str(" AND at_ms >= ?");
        }
        if q.until_ms.is_some() {
            sql.push_str(" AND at_ms < ?");
        }
        if q.actor.is_some() {
            sql.push_str(" AND actor = ?");
        }
        let action_prefix = q.action.as_deref().filter(|a| a.ends_with('.'));
        match (&q.action, action_prefix) {
            (Some(_), Some(_)) => sql.push_str(" AND substr(action, 1, ?) = ?"),
            (Some(_), None) => sql.push_str(" AND action = ?"),
            (None, _) => {}
        }
        if q.before_id.is_some() {
            sql.push_str(" AND id < ?");
        }
        if q.after_id.is_some() {
            sql.push_str(" AND id > ? ORDER BY id LIMIT ?");
        } else {
            sql.push_str(" ORDER BY id DESC LIMIT ?");
        }
        let mut query = sqlx::query(&sql);
        if let Some(v) = q.since_ms {
            query = query.bind(v);
        }
        if let Some(v) = q.until_ms {
            query = query.bind(v);
        }
        if let Some(v) = &q.actor {
            query = query.bind(v);
        }
        match (&q.action, action_prefix) {
            (Some(_), Some(p)) => query = query.bind(p.chars().count() as i64).bind(p),
            (Some(a), None) => query = query.bind(a),
            (None, _) => {}
        }
        if let Some(v) = q.before_id {
            query = query.bind(v);
        }
        if let Some(v) = q.after_id {
            query = query.bind(v);
        }
        query = query.bind(q.limit.clamp(1, MAX_AUDIT_PAGE) as i64);
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(model::audit_from_row).collect())
    }
}

const TOKEN_SELECT: &str =
    "SELECT id, name, created_at, expires_at, last_used_at, revoked_at FROM admin_tokens";
