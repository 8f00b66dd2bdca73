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

mod access;
mod access_policies;
mod admin;
mod apps;
mod backup;
mod chain;
mod connectors;
mod idp;
mod idp_model;
mod logs;
mod migrations;
mod model;
mod risk;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use access_policies::AccessDoc;
pub use admin::MAX_AUDIT_PAGE;
pub use backup::{restore, DataFile};
pub use chain::{Broken, Log, GENESIS_HASH};
pub use connectors::CertRefusal;
pub use idp::{DEVICE_CODES_PER_CLIENT, DEVICE_CODES_PER_REQUESTER, SIGNIN_EVENT_FIELD_BYTES};
pub use idp_model::{
    AuthContext, Client, ClientSecret, Code, Device, DeviceStatus, DirectoryGroup, Grant,
    IdTokenAlg, IdpSession, NewClient, NewCode, NewDevice, NewUser, Pruned, RedeemProblem,
    Retention, SigninEvent, SigningKey, StoredPasskey, Totp, TotpSecret, User,
};
pub use logs::{
    Audit, Decided, Location, NewSignin, Signin, SigninQuery, SigninResult, Verified, BROWSER,
    BUILT_IN_ISSUER, MAX_SIGNIN_PAGE, MULTI_FACTOR, SIGNIN_TEXT_BYTES, SINGLE_FACTOR, TOKEN_CLIENT,
};
pub use migrations::SCHEMA_VERSION;
pub use model::{
    AccessRules, AdminToken, App, Assignee, AuditEvent, AuditQuery, CertRecord, Connector,
    ConnectorReport, CookieOptions, Group, NewApp, NewAuditEvent, OidcClient, Outcome, Preauth,
    TokenProblem,
};
pub use risk::{
    NewDetection, RecentFailure, RiskyUser, StoredDetection, DETECTION_DEDUP_MS,
    DETECTION_RETENTION_MS, MAX_DETECTION_PAGE,
};

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
    #[error("the database at {path} has schema version {found}, newer than this Postern's {supported}: run the newer Postern that wrote it, or restore a backup made by this version")]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("{path} is not a Postern backup ({why}); give a file made by `postern admin backup`")]
    NotABackup { path: String, why: String },
    #[error("cannot create {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
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
    /// The audit record of the change this handle is making, written by the first transaction
    /// that commits through [`Store::commit`] (see [`Store::audited`]).
    pending_audit: Option<std::sync::Arc<std::sync::Mutex<Vec<Audit>>>>,
}

impl Store {
    /// A transaction that takes SQLite's write lock at once (`BEGIN IMMEDIATE`), waiting for it up
    /// to the busy timeout. A deferred transaction that reads and then writes fails at once with
    /// "database is locked" when another writer committed in between, which no wait can fix:
    /// under a flood of sign-in records, a user's code redemption would fail that way.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Opens (creating if needed, owner-only) the SQLite database at `path` and brings its
    /// schema up to date; refuses a database written by a newer Postern. Its `-wal` and `-shm`
    /// files take the database file's permissions.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            backup::create_private(path)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_err)?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        migrations::run(&pool).await.map_err(|e| match e {
            migrations::Migration::TooNew { found, supported } => StoreError::TooNew {
                path: path.display().to_string(),
                found,
                supported,
            },
            migrations::Migration::Db(e) => StoreError::Db(e),
        })?;
        logs::chain_unchained(&pool).await?;
        Ok(Store {
            pool,
            pending_audit: None,
        })
    }

    /// The current config version: bumped by every change that routing or a connector must see.
    pub async fn config_version(&self) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'config_version'")
            .fetch_one(&self.pool)
            .await?;
        Ok(v as u64)
    }
}

pub(crate) async fn bump_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'config_version'")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub(crate) fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
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
mod logs_tests;
#[cfg(test)]
mod risk_tests;
#[cfg(test)]
mod tests;
