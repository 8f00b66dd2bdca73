//! Pre-authentication state: who is assigned to which app, whose sessions were revoked, and the
//! edge's key rings (kept here so several edges share them).

use sqlx::Row;

use crate::model::Assignee;
use crate::{bump_version, now, Store, StoreError};

impl Store {
    /// Assigns `who` to the app; assigning twice is not an error. Returns whether it was new.
    pub async fn assign(&self, app: &str, who: &Assignee) -> Result<bool, StoreError> {
        let app_id = self.app(app).await?.id;
        let mut tx = self.write().await?;
        let res = sqlx::query(
            "INSERT OR IGNORE INTO app_assignments (app_id, kind, value, created_at)
             VALUES (?, ?, ?, ?)",
        )
        .bind(app_id)
        .bind(who.kind())
        .bind(who.value())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let added = res.rows_affected() == 1;
        if added {
            bump_version(&mut tx).await?;
        }
        self.commit(tx).await?;
        Ok(added)
    }

    pub async fn unassign(&self, app: &str, who: &Assignee) -> Result<(), StoreError> {
        let app_id = self.app(app).await?.id;
        let mut tx = self.write().await?;
        let res =
            sqlx::query("DELETE FROM app_assignments WHERE app_id = ? AND kind = ? AND value = ?")
                .bind(app_id)
                .bind(who.kind())
                .bind(who.value())
                .execute(&mut *tx)
                .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "assignment",
                name: format!("{} {} on {app}", who.kind(), who.value()),
            });
        }
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Every assignment, as `(app ID, assignee)`, for the edge's routing snapshot.
    pub async fn assignments(&self) -> Result<Vec<(i64, Assignee)>, StoreError> {
        let rows = sqlx::query("SELECT app_id, kind, value FROM app_assignments ORDER BY 1, 2, 3")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let value: String = r.get(2);
                let who = match r.get::<String, _>(1).as_str() {
                    "user" => Assignee::User(value),
                    "group" => Assignee::Group(value),
                    _ => return None,
                };
                Some((r.get(0), who))
            })
            .collect())
    }

    /// Ends every session of `principal` (a subject or an email) issued until now.
    pub async fn revoke_sessions(&self, principal: &str) -> Result<i64, StoreError> {
        let at = now();
        let mut tx = self.write().await?;
        record_revocation(&mut tx, principal, at).await?;
        self.commit(tx).await?;
        Ok(at)
    }

    /// Ends one session of the edge (a sign-out) by its ID: recorded as the principal
    /// `session:<id>`. Sign-outs older than `max_session_secs`, the longest a session lives, are
    /// pruned on the way: every session they ended has expired by now anyway.
    pub async fn sign_out_session(
        &self,
        session_id: &str,
        max_session_secs: i64,
    ) -> Result<i64, StoreError> {
        let at = now();
        let mut tx = self.write().await?;
        sqlx::query(
            "DELETE FROM session_revocations WHERE principal LIKE 'session:%' AND revoked_at < ?",
        )
        .bind(at - max_session_secs)
        .execute(&mut *tx)
        .await?;
        record_revocation(&mut tx, &format!("session:{session_id}"), at).await?;
        self.commit(tx).await?;
        Ok(at)
    }

    /// `(principal, revoked_at)` for every revocation.
    pub async fn session_revocations(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT principal, revoked_at FROM session_revocations")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The key ring stored for `purpose`, creating it from `make` if there is none. Two edges
    /// starting at once end up with the same ring: the first insert wins and both read it back.
    pub async fn key_ring(
        &self,
        purpose: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT OR IGNORE INTO edge_keys (purpose, id, material, created_at)
             VALUES (?, 'ring', ?, ?)",
        )
        .bind(purpose)
        .bind(make())
        .bind(now())
        .execute(&self.pool)
        .await?;
        let material: String =
            sqlx::query_scalar("SELECT material FROM edge_keys WHERE purpose = ? AND id = 'ring'")
                .bind(purpose)
                .fetch_one(&self.pool)
                .await?;
        Ok(material)
    }

    /// Replaces the key ring for `purpose` (after a rotation).
    pub async fn save_key_ring(&self, purpose: &str, material: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO edge_keys (purpose, id, material, created_at) VALUES (?, 'ring', ?, ?)
             ON CONFLICT (purpose, id) DO UPDATE SET material = excluded.material",
        )
        .bind(purpose)
        .bind(material)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }
}

/// Records that `principal`'s sessions issued until `at` are revoked, and bumps the config
/// version so every edge reloads its routing with it.
pub(crate) async fn record_revocation(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    principal: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO session_revocations (principal, revoked_at) VALUES (?, ?)
         ON CONFLICT (principal) DO UPDATE SET revoked_at = excluded.revoked_at",
    )
    .bind(principal)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    bump_version(tx).await
}
