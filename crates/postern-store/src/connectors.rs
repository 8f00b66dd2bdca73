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
        let mut tx = self.write().await?;
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
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
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
        let mut tx = self.write().await?;
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
            "INSERT INTO connectors (id, group_id, hostname, version, registered_at, cert_serial)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(group_id)
        .bind(hostname)
        .bind(version)
        .bind(now)
        .bind(&cert.serial_hex)
        .execute(&mut *tx)
        .await?;
        insert_cert(&mut tx, &id, &cert, now).await?;
        bump_version(&mut tx).await?;
        let detail = format!("group {group}, certificate expires {}", cert.not_after);
        self.commit_naming(tx, Some(&id), Some(detail)).await?;
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
        let mut tx = self.write().await?;
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
        self.commit(tx).await?;
        self.connector(id).await
    }

    /// Moves a live connector to another group; its tunnels then carry that group's apps.
    pub async fn move_connector(&self, id: &str, group: &str) -> Result<Connector, StoreError> {
        let group = self.group(group).await?;
        let current = self.live_connector(id).await?;
        if current.group == group.name {
            return Ok(current);
        }
        let mut tx = self.write().await?;
        sqlx::query("UPDATE connectors SET group_id = ? WHERE id = ?")
            .bind(group.id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        self.connector(id).await
    }

    /// Issues a renewed certificate to a live connector that called with the certificate whose
    /// serial is `presented` (its current or, until the current one is used, the previous one).
    /// The new certificate becomes current and the presented one previous: it stays valid until
    /// the new one is first used, so the renewal's answer can be lost without locking the
    /// connector out. `sign` gets the connector's ID; if it fails, nothing is stored.
    pub async fn renew_connector<E>(
        &self,
        id: &str,
        presented: &str,
        sign: impl FnOnce(&str) -> Result<CertRecord, E>,
    ) -> Result<(Connector, CertRecord), RegisterError<E>> {
        let connector = self.live_connector(id).await?;
        let cert = sign(&connector.id).map_err(RegisterError::Sign)?;
        let mut tx = self.write().await?;
        // Checked again inside the transaction: a revocation or another renewal that raced the
        // signing wins.
        let row = sqlx::query(
            "SELECT revoked_at, cert_serial, previous_cert_serial FROM connectors WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "connector",
                name: id.to_owned(),
            }
            .into());
        };
        let revoked: Option<i64> = row.get(0);
        if revoked.is_some() {
            return Err(StoreError::Conflict(format!("connector {id} was revoked")).into());
        }
        let current: Option<String> = row.get(1);
        let previous: Option<String> = row.get(2);
        if current.as_deref() != Some(presented) && previous.as_deref() != Some(presented) {
            return Err(StoreError::Conflict(format!(
                "the certificate of connector {id} that asked for renewal is no longer current"
            ))
            .into());
        }
        insert_cert(&mut tx, id, &cert, now()).await?;
        sqlx::query("UPDATE connectors SET previous_cert_serial = ?, cert_serial = ? WHERE id = ?")
            .bind(presented)
            .bind(&cert.serial_hex)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let detail = format!("serial {}, expires {}", cert.serial_hex, cert.not_after);
        self.commit_naming(tx, None, Some(detail)).await?;
        let connector = self.connector(id).await?;
        Ok((connector, cert))
    }

    /// The live connector a client certificate stands for: `id` from its subject, `serial` its
    /// serial number. Only the connector's current certificate is accepted, and the one it
    /// replaced until the current one is first used; that first use retires the previous one.
    pub async fn authenticate_connector(
        &self,
        id: &str,
        serial: &str,
    ) -> Result<Connector, CertRefusal> {
        let connector = match self.connector(id).await {
            Ok(c) => c,
            Err(StoreError::NotFound { .. }) => return Err(CertRefusal::Unknown(id.to_owned())),
            Err(e) => return Err(e.into()),
        };
        if connector.revoked_at.is_some() {
            return Err(CertRefusal::Revoked(id.to_owned()));
        }
        let row =
            sqlx::query("SELECT cert_serial, previous_cert_serial FROM connectors WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from)?;
        let (current, previous): (Option<String>, Option<String>) = match row {
            Some(r) => (r.get(0), r.get(1)),
            None => return Err(CertRefusal::Unknown(id.to_owned())),
        };
        if current.as_deref() == Some(serial) {
            if previous.is_some() {
                // Guarded by the serial: a renewal committed since the read above keeps its
                // previous certificate.
                sqlx::query(
                    "UPDATE connectors SET previous_cert_serial = NULL
                     WHERE id = ? AND cert_serial = ? AND previous_cert_serial IS NOT NULL",
                )
                .bind(id)
                .bind(serial)
                .execute(&self.pool)
                .await
                .map_err(StoreError::from)?;
            }
            return Ok(connector);
        }
        if previous.as_deref() == Some(serial) {
            return Ok(connector);
        }
        Err(CertRefusal::NotCurrent(id.to_owned()))
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

/// Why a client certificate does not stand for a connector.
#[derive(Debug, thiserror::Error)]
pub enum CertRefusal {
    #[error("connector {0} is not registered with this edge")]
    Unknown(String),
    #[error("connector {0} was revoked; register it again with a new token")]
    Revoked(String),
    #[error("this certificate of connector {0} was replaced by a renewal; run the connector from its state directory, which holds the current certificate")]
    NotCurrent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("state.db"))
            .await
            .unwrap();
        store.create_group("g").await.unwrap();
        (dir, store)
    }

    fn cert(serial: &str) -> CertRecord {
        CertRecord {
            serial_hex: serial.into(),
            pem: "pem".into(),
            not_before: 0,
            not_after: 100,
        }
    }

    async fn registered(store: &Store, serial: &str) -> String {
        let token = store
            .create_registration_token("g", Duration::from_secs(60))
            .await
            .unwrap();
        let (c, _) = store
            .register_connector::<()>(&token, "h", "1", |_| Ok(cert(serial)))
            .await
            .unwrap();
        c.id
    }

    async fn renew(store: &Store, id: &str, presented: &str, new: &str) -> Result<(), String> {
        store
            .renew_connector::<()>(id, presented, |_| Ok(cert(new)))
            .await
            .map(|_| ())
            .map_err(|e| match e {
                RegisterError::Store(e) => e.to_string(),
                other => format!("{other:?}"),
            })
    }

    /// What each serial gets, in order: `Ok` or the refusal's kind.
    async fn check(store: &Store, id: &str, steps: &[(&str, Result<(), &str>)]) {
        for (serial, expected) in steps {
            let got = store
                .authenticate_connector(id, serial)
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    CertRefusal::Unknown(_) => "unknown",
                    CertRefusal::Revoked(_) => "revoked",
                    CertRefusal::NotCurrent(_) => "not current",
                    CertRefusal::Store(_) => "store",
                });
            assert_eq!(got, *expected, "serial {serial}");
        }
    }

    #[tokio::test]
    async fn only_the_current_certificate_stands_for_a_connector_once_it_was_used() {
        let (_d, store) = store().await;
        let id = registered(&store, "a1").await;
        check(&store, &id, &[("a1", Ok(())), ("b2", Err("not current"))]).await;

        // Renewed: the old one still works (any number of times) until the new one is used.
        renew(&store, &id, "a1", "b2").await.unwrap();
        check(
            &store,
            &id,
            &[
                ("a1", Ok(())),
                ("a1", Ok(())),
                ("b2", Ok(())),
                ("a1", Err("not current")),
                ("b2", Ok(())),
            ],
        )
        .await;
        // A retired certificate cannot renew either.
        assert!(renew(&store, &id, "a1", "x9")
            .await
            .unwrap_err()
            .contains("no longer current"));

        // A renewal whose answer was lost: the connector renews again with the certificate it
        // still has; the certificate it never received is never valid.
        renew(&store, &id, "b2", "c3").await.unwrap();
        renew(&store, &id, "b2", "d4").await.unwrap();
        check(
            &store,
            &id,
            &[
                ("c3", Err("not current")),
                ("b2", Ok(())),
                ("d4", Ok(())),
                ("b2", Err("not current")),
                ("c3", Err("not current")),
            ],
        )
        .await;

        // A certificate issued to another connector never stands for this one.
        let other = registered(&store, "e5").await;
        check(&store, &id, &[("e5", Err("not current"))]).await;
        check(
            &store,
            &other,
            &[("d4", Err("not current")), ("e5", Ok(()))],
        )
        .await;

        store.revoke_connector(&id).await.unwrap();
        check(&store, &id, &[("d4", Err("revoked"))]).await;
        check(&store, "c_nobody", &[("d4", Err("unknown"))]).await;
    }

    /// Connectors registered before serials were recorded take their newest certificate as
    /// current and the one before as previous.
    #[tokio::test]
    async fn existing_connectors_get_their_serials_from_their_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        store.create_group("g").await.unwrap();
        let id = registered(&store, "a1").await;
        renew(&store, &id, "a1", "b2").await.unwrap();
        renew(&store, &id, "b2", "c3").await.unwrap();
        // Back to the schema before version 7, certificates as they were.
        sqlx::raw_sql(
            "ALTER TABLE connectors DROP COLUMN cert_serial;
             ALTER TABLE connectors DROP COLUMN previous_cert_serial;
             DELETE FROM schema_migrations WHERE version = 7;
             UPDATE certificates SET issued_at = CASE serial
                 WHEN 'a1' THEN 1 WHEN 'b2' THEN 2 ELSE 3 END;",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        drop(store);
        let store = Store::open_sqlite(&path).await.unwrap();
        check(
            &store,
            &id,
            &[
                ("a1", Err("not current")),
                ("b2", Ok(())),
                ("c3", Ok(())),
                ("b2", Err("not current")),
            ],
        )
        .await;
    }
}
