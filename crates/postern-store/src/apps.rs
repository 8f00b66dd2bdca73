//! Connector groups and published apps.

use sqlx::Row;

use crate::model::{self, App, Group, NewApp};
use crate::{bump_version, is_unique_violation, now, Store, StoreError};

impl Store {
    // Groups ---------------------------------------------------------------------------------

    pub async fn create_group(&self, name: &str) -> Result<Group, StoreError> {
        let mut tx = self.write().await?;
        let res = sqlx::query("INSERT INTO groups (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(now())
            .execute(&mut *tx)
            .await;
        let id = match res {
            Ok(r) => r.last_insert_rowid(),
            Err(e) if is_unique_violation(&e) => return Err(group_exists(name)),
            Err(e) => return Err(e.into()),
        };
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        Ok(Group {
            id,
            name: name.to_owned(),
        })
    }

    pub async fn groups(&self) -> Result<Vec<Group>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM groups ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Group {
                id: r.get(0),
                name: r.get(1),
            })
            .collect())
    }

    pub async fn group(&self, name: &str) -> Result<Group, StoreError> {
        let row = sqlx::query("SELECT id, name FROM groups WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Group {
            id: r.get(0),
            name: r.get(1),
        })
        .ok_or_else(|| no_group(name))
    }

    /// Renames a group; its apps and connectors follow (they refer to it by ID).
    pub async fn rename_group(&self, name: &str, new_name: &str) -> Result<Group, StoreError> {
        let mut tx = self.write().await?;
        let res = sqlx::query("UPDATE groups SET name = ? WHERE name = ?")
            .bind(new_name)
            .bind(name)
            .execute(&mut *tx)
            .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => return Err(no_group(name)),
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(group_exists(new_name)),
            Err(e) => return Err(e.into()),
        }
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        self.group(new_name).await
    }

    /// Deletes a group that no app and no live connector uses. Its revoked connectors (and their
    /// certificates) and its registration tokens go with it; the audit log keeps their history.
    pub async fn delete_group(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM groups WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let id = id.ok_or_else(|| no_group(name))?;
        let apps: Vec<String> =
            sqlx::query_scalar("SELECT name FROM apps WHERE group_id = ? ORDER BY name")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        if !apps.is_empty() {
            return Err(StoreError::InUse(format!(
                "connector group {name:?} still carries apps {}; move them to another group (`postern admin app update NAME --group OTHER`) or delete them first",
                apps.join(", ")
            )));
        }
        let connectors: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM connectors WHERE group_id = ? AND revoked_at IS NULL ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        if !connectors.is_empty() {
            return Err(StoreError::InUse(format!(
                "connector group {name:?} still has connectors {}; move them (`postern admin connector move ID --group OTHER`) or revoke them first",
                connectors.join(", ")
            )));
        }
        for sql in [
            "DELETE FROM certificates WHERE connector_id IN
                 (SELECT id FROM connectors WHERE group_id = ?)",
            "DELETE FROM connectors WHERE group_id = ?",
            "DELETE FROM registration_tokens WHERE group_id = ?",
            "DELETE FROM groups WHERE id = ?",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        Ok(())
    }

    // Apps -----------------------------------------------------------------------------------

    pub async fn publish_app(&self, app: &NewApp) -> Result<App, StoreError> {
        let group = self.group(&app.group).await?;
        let mut tx = self.write().await?;
        let insert = sqlx::query(
            "INSERT INTO apps (name, external_url, external_host, internal_url, group_id, preauth,
                               preserve_host, insecure_skip_backend_tls_verify, backend_timeout_ms,
                               maintenance, oidc_issuer, oidc_client_id, oidc_client_secret,
                               assignment_required, require_mfa, cookie_http_only,
                               cookie_persistent, issuer_verifies_email, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        let res = bind_settings(insert, app, group.id)
            .bind(now())
            .execute(&mut *tx)
            .await;
        if let Err(e) = &res {
            if is_unique_violation(e) {
                return Err(app_conflict(e, app));
            }
        }
        res?;
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        self.app(&app.name).await
    }

    /// Replaces the settings of the app named `name` (its ID stays, so tunnels in flight and the
    /// audit log keep referring to the same app). `app.name` may differ to rename it.
    pub async fn update_app(&self, name: &str, app: &NewApp) -> Result<App, StoreError> {
        let group = self.group(&app.group).await?;
        let mut tx = self.write().await?;
        let update = sqlx::query(
            "UPDATE apps SET name = ?, external_url = ?, external_host = ?, internal_url = ?,
                 group_id = ?, preauth = ?, preserve_host = ?,
                 insecure_skip_backend_tls_verify = ?, backend_timeout_ms = ?, maintenance = ?,
                 oidc_issuer = ?, oidc_client_id = ?, oidc_client_secret = ?,
                 assignment_required = ?, require_mfa = ?, cookie_http_only = ?,
                 cookie_persistent = ?, issuer_verifies_email = ?
             WHERE name = ?",
        );
        let res = bind_settings(update, app, group.id)
            .bind(name)
            .execute(&mut *tx)
            .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => return Err(no_app(name)),
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(app_conflict(&e, app)),
            Err(e) => return Err(e.into()),
        }
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        self.app(&app.name).await
    }

    pub async fn apps(&self) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(&format!("{APP_SELECT} ORDER BY a.name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(model::app_from_row).collect()
    }

    pub async fn app(&self, name: &str) -> Result<App, StoreError> {
        let row = sqlx::query(&format!("{APP_SELECT} WHERE a.name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => model::app_from_row(&r),
            None => Err(no_app(name)),
        }
    }

    pub async fn delete_app(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let res = sqlx::query("DELETE FROM apps WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(no_app(name));
        }
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        Ok(())
    }
}

const APP_SELECT: &str = "SELECT a.id, a.name, a.external_url, a.external_host, a.internal_url,
    g.name, a.preauth, a.preserve_host, a.insecure_skip_backend_tls_verify, a.backend_timeout_ms,
    a.maintenance, a.oidc_issuer, a.oidc_client_id, a.oidc_client_secret, a.assignment_required,
    a.require_mfa, a.cookie_http_only, a.cookie_persistent, a.issuer_verifies_email
    FROM apps a JOIN groups g ON g.id = a.group_id";

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds an app's settings in the column order both `INSERT` and `UPDATE` list them.
fn bind_settings<'q>(query: Query<'q>, app: &'q NewApp, group_id: i64) -> Query<'q> {
    query
        .bind(&app.name)
        .bind(&app.external_url)
        .bind(&app.external_host)
        .bind(&app.internal_url)
        .bind(group_id)
        .bind(app.preauth.as_str())
        .bind(app.preserve_host)
        .bind(app.insecure_skip_backend_tls_verify)
        .bind(app.backend_timeout.as_millis() as i64)
        .bind(app.maintenance)
        .bind(app.oidc.as_ref().and_then(|o| o.issuer.clone()))
        .bind(app.oidc.as_ref().map(|o| o.client_id.clone()))
        .bind(app.oidc.as_ref().and_then(|o| o.client_secret.clone()))
        .bind(app.access.assignment_required)
        .bind(app.access.require_mfa)
        .bind(app.cookie.http_only)
        .bind(app.cookie.persistent)
        .bind(app.oidc.as_ref().is_some_and(|o| o.issuer_verifies_email))
}

fn no_group(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "connector group",
        name: name.to_owned(),
    }
}

fn group_exists(name: &str) -> StoreError {
    StoreError::Conflict(format!("a connector group named {name:?} already exists"))
}

fn no_app(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "app",
        name: name.to_owned(),
    }
}

fn app_conflict(e: &sqlx::Error, app: &NewApp) -> StoreError {
    StoreError::Conflict(if e.to_string().contains("apps.name") {
        format!("an app named {:?} is already published", app.name)
    } else {
        format!(
            "another app is already published at {}; each external host serves one app",
            app.external_host
        )
    })
}
