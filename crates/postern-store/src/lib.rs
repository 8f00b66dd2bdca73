//! Postern's state: groups, published apps, connectors, the certificates issued to them and
//! one-time registration tokens.
//!
//! SQLite is the embedded default. Every change that a connector or the router must see bumps one
//! config version in the same transaction, so a reader that saw version N has seen every change up
//! to N.
//!
//! **Invariant:** registration tokens are stored only as SHA-256 hashes; a token is consumed in the
//! same transaction that stores the connector and its certificate, so a refused CSR leaves the
//! token usable and a crash never leaves a half-registered connector.

mod migrations;
mod model;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

pub use model::{App, CertRecord, Connector, Group, NewApp, Preauth, TokenProblem};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {name:?} does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InUse(String),
    #[error("the database at {path} cannot be opened: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Why registering a connector failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError<E> {
    #[error("{0}")]
    Token(TokenProblem),
    #[error(transparent)]
    Sign(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> From<sqlx::Error> for RegisterError<E> {
    fn from(e: sqlx::Error) -> Self {
        RegisterError::Store(StoreError::Db(e))
    }
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        migrations::run(&pool).await?;
        Ok(Store { pool })
    }

    /// The current config version: bumped by every change that routing or a connector must see.
    pub async fn config_version(&self) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'config_version'")
            .fetch_one(&self.pool)
            .await?;
        Ok(v as u64)
    }

    // Groups ---------------------------------------------------------------------------------

    pub async fn create_group(&self, name: &str) -> Result<Group, StoreError> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query("INSERT INTO groups (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(now())
            .execute(&mut *tx)
            .await;
        let id = match res {
            Ok(r) => r.last_insert_rowid(),
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a connector group named {name:?} already exists"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        bump_version(&mut tx).await?;
        tx.commit().await?;
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
        .ok_or_else(|| StoreError::NotFound {
            what: "connector group",
            name: name.to_owned(),
        })
    }

    // Apps -----------------------------------------------------------------------------------

    pub async fn publish_app(&self, app: &NewApp) -> Result<App, StoreError> {
        let group = self.group(&app.group).await?;
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "INSERT INTO apps (name, external_url, external_host, internal_url, group_id, preauth,
                               preserve_host, insecure_skip_backend_tls_verify, backend_timeout_ms,
                               created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&app.name)
        .bind(&app.external_url)
        .bind(&app.external_host)
        .bind(&app.internal_url)
        .bind(group.id)
        .bind(app.preauth.as_str())
        .bind(app.preserve_host)
        .bind(app.insecure_skip_backend_tls_verify)
        .bind(app.backend_timeout.as_millis() as i64)
        .bind(now())
        .execute(&mut *tx)
        .await;
        if let Err(e) = &res {
            if is_unique_violation(e) {
                let msg = if e.to_string().contains("apps.name") {
                    format!("an app named {:?} is already published", app.name)
                } else {
                    format!(
                        "another app is already published at {}; each external host serves one app",
                        app.external_host
                    )
                };
                return Err(StoreError::Conflict(msg));
            }
        }
        res?;
        bump_version(&mut tx).await?;
        tx.commit().await?;
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
            None => Err(StoreError::NotFound {
                what: "app",
                name: name.to_owned(),
            }),
        }
    }

    pub async fn delete_app(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query("DELETE FROM apps WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "app",
                name: name.to_owned(),
            });
        }
        bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

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
}

const TOKEN_PREFIX: &str = "pst_";

const APP_SELECT: &str = "SELECT a.id, a.name, a.external_url, a.external_host, a.internal_url,
    g.name, a.preauth, a.preserve_host, a.insecure_skip_backend_tls_verify, a.backend_timeout_ms
    FROM apps a JOIN groups g ON g.id = a.group_id";

const CONNECTOR_SELECT: &str = "SELECT c.id, g.name, c.hostname, c.version, c.registered_at,
    c.revoked_at, (SELECT MAX(not_after) FROM certificates WHERE connector_id = c.id)
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

async fn bump_version(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'config_version'")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
