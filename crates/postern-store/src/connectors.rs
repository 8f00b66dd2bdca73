//! Registration, connectors, their certificates and their health reports.

use std::time::Duration;

use base64::Engine;
use sqlx::Row;

use crate::model::{self, CertRecord, Connector, ConnectorReport, TokenProblem};
use crate::{bump_version, hex, now, token_hash, RegisterError, Store, StoreError};

impl Store {
    // Registration ---------------------------------------------------------------------------

    /// Creates a one-time registration token for `group`, valid for `ttl`. Returns the token;
    /// only its hash is stored.
    pub async fn create_registration_token(
        &self,
        group: &str,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let group = self.group(group).await?;
        let bytes: [u8; 32] = rand::random();
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let now = now();
        sqlx::query(
            "INSERT INTO registration_tokens (hash, group_id, created_at, expires_at)
             VALUES (?, ?, ?, ?)",
        )
        .bind(token_hash(&token))
        .bind(group.id)
        .bind(now)
        .bind(now.saturating_add(ttl.as_secs() as i64))
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// Registers a connector with a one-time token. `sign` is given the new connector's ID and
    /// returns its certificate; if it fails, nothing is stored and the token stays usable.
    pub async fn register_connector<E>(
        &self,
        token: &str,
        hostname: &str,
        version: &str,
        sign: impl FnOnce(&str) -> Result<CertRecord, E>,
    ) -> Result<(Connector, CertRecord), RegisterError<E>> {
        let hash = token_hash(token);
        let now = now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT t.group_id, t.expires_at, t.used_at, g.name
             FROM registration_tokens t JOIN groups g ON g.id = t.group_id WHERE t.hash = ?",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(RegisterError::Token(TokenProblem::Unknown));
        };
        let group_id: i64 = row.get(0);
        let expires_at: i64 = row.get(1);
        let used_at: Option<i64> = row.get(2);
        let group: String = row.get(3);
        if used_at.is_some() {
            return Err(RegisterError::Token(TokenProblem::Used));
        }
        if expires_at <= now {
            return Err(RegisterError::Token(TokenProblem::Expired));
        }
        let id = format!("c_{}", hex(&rand::random::<[u8; 8]>()));
        let cert = sign(&id).map_err(RegisterError::Sign)?;
        let consumed = sqlx::query(
            "UPDATE registration_tokens SET used_at = ?, used_by = ?
             WHERE hash = ? AND used_at IS NULL",
        )
        .bind(now)
        .bind(&id)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        if consumed.rows_affected() != 1 {
            return Err(RegisterError::Token(TokenProblem::Used));
        }
        sqlx::query(
            "INSERT INTO connectors (id, group_id, hostname, version, registered_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(group_id)
        .bind(hostname)
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_cert(&mut tx, &id, &cert, now).await?;
        bump_version(&mut tx).await?;
        tx.commit().await?;
        let connector = Connector {
            id,
            group,
            hostname: hostname.to_owned(),
            version: version.to_owned(),
            registered_at: now,
            revoked_at: None,
            cert_not_after: Some(cert.not_after),
            address: None,
            last_seen_at: None,
        };
        Ok((connector, cert))
    }

    // Connectors -----------------------------------------------------------------------------

    pub async fn connector(&self, id: &str) -> Result<Connector, StoreError> {
        let row = sqlx::query(&format!("{CONNECTOR_SELECT} WHERE c.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(model::connector_from_row(&r)),
            None => Err(StoreError::NotFound {
                what: "connector",
                name: id.to_owned(),
            }),
        }
    }

    pub async fn connectors(&self) -> Result<Vec<Connector>, StoreError> {
        let rows = sqlx::query(&format!(
            "{CONNECTOR_SELECT} ORDER BY c.registered_at, c.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(model::connector_from_row).collect())
    }

    /// Revokes a connector: from now on its certificate opens no tunnel and makes no call.
    /// Returns the connector as it is now; revoking twice is refused.
    pub async fn revoke_connector(&self, id: &str) -> Result<Connector, StoreError> {
        let mut tx = self.pool.begin().await?;
        let res =
            sqlx::query("UPDATE connectors SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if res.rows_affected() == 0 {
            drop(tx);
            let c = self.connector(id).await?;
            return Err(StoreError::Conflict(format!(
                "connector {} is already revoked",
                c.id
            )));
        }
        bump_version(&mut tx).await?;
        tx.commit().await?;
        self.connector(id).await
    }

    /// Moves a live connector to another group; its tunnels then carry that group's apps.
    pub async fn move_connector(&self, id: &str, group: &str) -> Result<Connector, StoreError> {
        let group = self.group(group).await?;
        let current = self.live_connector(id).await?;
        if current.group == group.name {
            return Ok(current);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE connectors SET group_id = ? WHERE id = ?")
            .bind(group.id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        bump_version(&mut tx).await?;
        tx.commit().await?;
        self.connector(id).await
    }

    /// Issues a renewed certificate to a live connector. `sign` gets the connector's ID; if it
    /// fails, nothing is stored.
    pub async fn renew_connector<E>(
        &self,
        id: &str,
        sign: impl FnOnce(&str) -> Result<CertRecord, E>,
    ) -> Result<(Connector, CertRecord), RegisterError<E>> {
        let connector = self.live_connector(id).await?;
        let cert = sign(&connector.id).map_err(RegisterError::Sign)?;
        let mut tx = self.pool.begin().await?;
        // Checked again inside the transaction: a revocation that raced the signing wins.
        let revoked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM connectors WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if !matches!(revoked, Some(None)) {
            return Err(StoreError::Conflict(format!("connector {id} was revoked")).into());
        }
        insert_cert(&mut tx, id, &cert, now()).await?;
        tx.commit().await?;
        let connector = self.connector(id).await?;
        Ok((connector, cert))
    }

    /// Records that a connector was just seen, with what it reports about itself.
    pub async fn connector_seen(
        &self,
        id: &str,
        report: &ConnectorReport,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connectors SET last_seen_at = ?,
                 hostname = COALESCE(?, hostname),
                 version = COALESCE(?, version),
                 address = COALESCE(?, address)
             WHERE id = ?",
        )
        .bind(now())
        .bind(&report.hostname)
        .bind(&report.version)
        .bind(&report.address)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The connector, refused as `Conflict` when it is revoked.
    pub async fn live_connector(&self, id: &str) -> Result<Connector, StoreError> {
        let c = self.connector(id).await?;
        if c.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "connector {id} is revoked; register a new one with `postern admin connector token --group NAME`"
            )));
        }
        Ok(c)
    }
}

const TOKEN_PREFIX: &str = "pst_";

const CONNECTOR_SELECT: &str = "SELECT c.id, g.name, c.hostname, c.version, c.registered_at,
    c.revoked_at, (SELECT MAX(not_after) FROM certificates WHERE connector_id = c.id),
    c.address, c.last_seen_at
    FROM connectors c JOIN groups g ON g.id = c.group_id";

async fn insert_cert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    connector: &str,
    cert: &CertRecord,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO certificates (serial, connector_id, pem, not_before, not_after, issued_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&cert.serial_hex)
    .bind(connector)
    .bind(&cert.pem)
    .bind(cert.not_before)
    .bind(cert.not_after)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
