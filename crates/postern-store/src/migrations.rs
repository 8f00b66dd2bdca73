//! Versioned schema migrations, applied in order at open, each in its own transaction.

use sqlx::SqlitePool;

/// Each entry is one schema version; never edit a released entry, append a new one. An empty
/// entry is a reserved version: skipped and not recorded, so the migration that later fills it
/// is still applied to a database that already has the versions after it.
const MIGRATIONS: &[&str] = &[
    // 1: groups, apps, connectors, certificates, registration tokens, the config version.
    // IDs are never reused: a connector with a stale config must not take a new app's stream for
    // a deleted one that had the same ID.
    "CREATE TABLE groups (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE apps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        external_url TEXT NOT NULL,
        external_host TEXT NOT NULL UNIQUE,
        internal_url TEXT NOT NULL,
        group_id INTEGER NOT NULL REFERENCES groups(id),
        preauth TEXT NOT NULL,
        preserve_host INTEGER NOT NULL,
        insecure_skip_backend_tls_verify INTEGER NOT NULL,
        backend_timeout_ms INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE connectors (
        id TEXT PRIMARY KEY,
        group_id INTEGER NOT NULL REFERENCES groups(id),
        hostname TEXT NOT NULL,
        version TEXT NOT NULL,
        registered_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        connector_id TEXT NOT NULL REFERENCES connectors(id),
        pem TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        issued_at INTEGER NOT NULL
    );
    CREATE TABLE registration_tokens (
        hash TEXT PRIMARY KEY,
        group_id INTEGER NOT NULL REFERENCES groups(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        used_by TEXT
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters (name, value) VALUES ('config_version', 1);",
    // 2: maintenance mode, connector health, admin API tokens and the audit log.
    "ALTER TABLE apps ADD COLUMN maintenance INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE connectors ADD COLUMN address TEXT;
    ALTER TABLE connectors ADD COLUMN last_seen_at INTEGER;
    CREATE TABLE admin_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        last_used_at INTEGER,
        revoked_at INTEGER
    );
    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL,
        request_id TEXT NOT NULL
    );
    CREATE INDEX audit_events_at ON audit_events (at_ms);",
    // 3: pre-authentication with OpenID Connect: per-app relying-party settings, assignments,
    // session revocations, and the edge's key rings (session cookie, identity assertion), kept
    // in the store so several edges can share them.
    "ALTER TABLE apps ADD COLUMN oidc_issuer TEXT;
    ALTER TABLE apps ADD COLUMN oidc_client_id TEXT;
    ALTER TABLE apps ADD COLUMN oidc_client_secret TEXT;
    ALTER TABLE apps ADD COLUMN assignment_required INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE apps ADD COLUMN require_mfa INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE apps ADD COLUMN cookie_http_only INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE apps ADD COLUMN cookie_persistent INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE app_assignments (
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('user', 'group')),
        value TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (app_id, kind, value)
    );
    CREATE TABLE session_revocations (
        principal TEXT PRIMARY KEY,
        revoked_at INTEGER NOT NULL
    );
    CREATE TABLE edge_keys (
        purpose TEXT NOT NULL,
        id TEXT NOT NULL,
        material TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        retired_at INTEGER,
        PRIMARY KEY (purpose, id)
    );",
    // 4: the built-in identity provider: the directory (users, directory groups, MFA), OIDC
    // clients, sign-in sessions, authorization codes, grants and their refresh tokens, device
    // codes, signing keys and sign-in events. Secrets (passwords, client secrets, codes, tokens,
    // recovery codes) are stored as hashes only.
    "CREATE TABLE idp_users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        admin INTEGER NOT NULL DEFAULT 0,
        require_mfa INTEGER NOT NULL DEFAULT 0,
        totp_secret TEXT,
        totp_confirmed_at INTEGER,
        totp_last_step INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE idp_groups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE idp_group_members (
        group_id INTEGER NOT NULL REFERENCES idp_groups(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES idp_users(id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, user_id)
    );
    CREATE TABLE idp_recovery_codes (
        user_id TEXT NOT NULL REFERENCES idp_users(id) ON DELETE CASCADE,
        hash TEXT NOT NULL,
        used_at INTEGER,
        PRIMARY KEY (user_id, hash)
    );
    CREATE TABLE idp_clients (
        client_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        secret_hash TEXT,
        redirect_uris TEXT NOT NULL,
        post_logout_redirect_uris TEXT NOT NULL,
        id_token_alg TEXT NOT NULL,
        app_name TEXT UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE idp_sessions (
        hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES idp_users(id) ON DELETE CASCADE,
        auth_time INTEGER NOT NULL,
        amr TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE idp_grants (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL REFERENCES idp_clients(client_id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES idp_users(id) ON DELETE CASCADE,
        scope TEXT NOT NULL,
        auth_time INTEGER NOT NULL,
        amr TEXT NOT NULL,
        acr TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE idp_codes (
        hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL REFERENCES idp_clients(client_id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES idp_users(id) ON DELETE CASCADE,
        redirect_uri TEXT NOT NULL,
        code_challenge TEXT,
        nonce TEXT,
        scope TEXT NOT NULL,
        auth_time INTEGER NOT NULL,
        amr TEXT NOT NULL,
        acr TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        grant_id TEXT
    );
    CREATE TABLE idp_refresh_tokens (
        hash TEXT PRIMARY KEY,
        grant_id TEXT NOT NULL REFERENCES idp_grants(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        used_at INTEGER
    );
    CREATE TABLE idp_device_codes (
        hash TEXT PRIMARY KEY,
        user_code TEXT NOT NULL UNIQUE,
        client_id TEXT NOT NULL REFERENCES idp_clients(client_id) ON DELETE CASCADE,
        scope TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        interval_secs INTEGER NOT NULL,
        last_poll_at INTEGER,
        status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'consumed')),
        user_id TEXT REFERENCES idp_users(id) ON DELETE CASCADE,
        auth_time INTEGER,
        amr TEXT,
        acr TEXT
    );
    CREATE TABLE idp_signing_keys (
        kid TEXT PRIMARY KEY,
        alg TEXT NOT NULL,
        private_pem TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        activates_at INTEGER NOT NULL,
        retires_at INTEGER
    );
    CREATE TABLE idp_signin_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        email TEXT NOT NULL,
        user_id TEXT,
        ip TEXT NOT NULL,
        client_id TEXT,
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX idp_signin_events_at ON idp_signin_events (at_ms);",
    // 5: passkeys (WebAuthn credentials) of directory users. `data` is the verifier's serialised
    // credential: its public key, algorithm and signature counter; no secret.
    "CREATE TABLE idp_passkeys (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES idp_users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER
    );
    CREATE INDEX idp_passkeys_user ON idp_passkeys (user_id);",
    // 6: what unauthenticated callers make the provider store is bounded and pruned: device
    // codes record who asked (so each address and each client keeps a bounded number), and the
    // expiry columns that retention deletes by are indexed.
    "ALTER TABLE idp_device_codes ADD COLUMN requester TEXT NOT NULL DEFAULT '';
    ALTER TABLE idp_device_codes ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX idp_device_codes_client ON idp_device_codes (client_id, status, created_at);
    CREATE INDEX idp_device_codes_requester ON idp_device_codes (requester, status, created_at);
    CREATE INDEX idp_device_codes_expiry ON idp_device_codes (expires_at);
    CREATE INDEX idp_codes_expiry ON idp_codes (expires_at);
    CREATE INDEX idp_sessions_expiry ON idp_sessions (expires_at);
    CREATE INDEX idp_sessions_user ON idp_sessions (user_id);",
    // 7: each connector's current certificate serial, and the one it replaced while the new one
    // has not been used yet: a connector is authenticated by serial, not by name. Existing
    // connectors take their newest certificate as current and the one before as previous.
    "ALTER TABLE connectors ADD COLUMN cert_serial TEXT;
    ALTER TABLE connectors ADD COLUMN previous_cert_serial TEXT;
    UPDATE connectors SET
        cert_serial = (SELECT serial FROM certificates WHERE connector_id = connectors.id
            ORDER BY issued_at DESC, rowid DESC LIMIT 1),
        previous_cert_serial = (SELECT serial FROM certificates WHERE connector_id = connectors.id
            ORDER BY issued_at DESC, rowid DESC LIMIT 1 OFFSET 1);",
    // 8: whose emails count as verified. Per app: the admin vouches that its issuer verifies
    // every email it sends (for issuers without `email_verified`). Per directory user: whether an
    // administrator vouched for the address; nobody had, so existing users start unverified.
    "ALTER TABLE apps ADD COLUMN issuer_verifies_email INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE idp_users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;",
    // 9: tamper-evident logs. Each audit event gets a stable ID (for a SIEM to de-duplicate) and
    // its place in a hash chain; sign-ins at the edge and at the built-in provider get one table
    // shaped like Entra's `signIn` resource, chained the same way. `log_heads` holds each log's
    // newest sequence number and hash and the anchor where its oldest kept record starts.
    // `export_cursors` is how far each SIEM sink has had each log acknowledged. Existing audit
    // events are chained when the store opens (SQL has no SHA-256).
    "ALTER TABLE audit_events ADD COLUMN uid TEXT;
    ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
    ALTER TABLE audit_events ADD COLUMN hash TEXT;
    CREATE TABLE signins (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        at_ms INTEGER NOT NULL,
        user_id TEXT,
        user_principal_name TEXT NOT NULL,
        app_id TEXT,
        app_display_name TEXT,
        ip_address TEXT NOT NULL,
        client_app_used TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        is_interactive INTEGER NOT NULL,
        result TEXT NOT NULL,
        error_code TEXT NOT NULL,
        failure_reason TEXT NOT NULL,
        operating_system TEXT,
        browser TEXT,
        authentication_requirement TEXT NOT NULL,
        authentication_methods TEXT NOT NULL,
        issuer TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX signins_at ON signins (at_ms);
    CREATE INDEX signins_user ON signins (user_principal_name, at_ms);
    CREATE INDEX signins_app ON signins (app_display_name, at_ms);
    CREATE TABLE log_heads (
        log TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        anchor_seq INTEGER NOT NULL,
        anchor_hash TEXT NOT NULL
    );
    INSERT INTO log_heads (log, seq, hash, anchor_seq, anchor_hash) VALUES
        ('audit', 0, '0000000000000000000000000000000000000000000000000000000000000000',
         1, '0000000000000000000000000000000000000000000000000000000000000000'),
        ('signins', 0, '0000000000000000000000000000000000000000000000000000000000000000',
         1, '0000000000000000000000000000000000000000000000000000000000000000');
    CREATE TABLE export_cursors (
        sink TEXT NOT NULL,
        log TEXT NOT NULL,
        last_id INTEGER NOT NULL,
        PRIMARY KEY (sink, log)
    );",
    // 10: where each sign-in came from, when a location database is configured (`located` tells
    // a record with an unknown place from one made without a database).
    "ALTER TABLE signins ADD COLUMN location_city TEXT;
    ALTER TABLE signins ADD COLUMN location_state TEXT;
    ALTER TABLE signins ADD COLUMN location_country TEXT;
    ALTER TABLE signins ADD COLUMN location_latitude REAL;
    ALTER TABLE signins ADD COLUMN location_longitude REAL;
    ALTER TABLE signins ADD COLUMN located INTEGER NOT NULL DEFAULT 0;",
    // 11: conditional access: policies and named locations, as the JSON documents the admin API
    // checked.
    "CREATE TABLE access_docs (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        doc TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (kind, name)
    );",
    // 12: identity protection: what was detected about sign-ins and accounts, and each risky
    // user's state (at risk, confirmed compromised, dismissed). Failures by address are looked
    // up to tell a password spray.
    "CREATE TABLE risk_detections (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        at_ms INTEGER NOT NULL,
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        user_principal_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        level TEXT NOT NULL,
        ip_address TEXT NOT NULL,
        detail TEXT NOT NULL,
        source TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX risk_detections_user ON risk_detections (issuer, subject, kind, at_ms);
    CREATE INDEX risk_detections_at ON risk_detections (at_ms);
    CREATE TABLE risky_users (
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        user_principal_name TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (issuer, subject)
    );
    CREATE INDEX signins_ip ON signins (ip_address, at_ms);
    CREATE INDEX signins_subject ON signins (user_id, at_ms);",
    // 13: what conditional access and identity protection made of each sign-in.
    "ALTER TABLE signins ADD COLUMN ca_status TEXT NOT NULL DEFAULT 'notApplied';
    ALTER TABLE signins ADD COLUMN ca_policies TEXT NOT NULL DEFAULT '';
    ALTER TABLE signins ADD COLUMN risk_level TEXT NOT NULL DEFAULT 'none';
    ALTER TABLE signins ADD COLUMN risk_events TEXT NOT NULL DEFAULT '';
    ALTER TABLE signins ADD COLUMN decided INTEGER NOT NULL DEFAULT 0;",
];

/// The schema version this build writes: a database that recorded a later one was written by a
/// newer Postern and is refused.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub async fn run(pool: &SqlitePool) -> Result<(), Migration> {
    apply(pool, MIGRATIONS).await
}

/// Why the schema could not be brought up to date.
#[derive(Debug)]
pub enum Migration {
    /// The database records a version this build does not know.
    TooNew {
        found: i64,
        supported: i64,
    },
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Migration {
    fn from(e: sqlx::Error) -> Self {
        Migration::Db(e)
    }
}

/// The highest schema version the database at `pool` records (0 for a new one).
pub async fn recorded(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        .execute(pool)
        .await?;
    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(pool)
        .await
}

/// Applies every version of `migrations` the database has not recorded, in order; refuses a
/// database that records a version past the last of them, before changing anything.
async fn apply(pool: &SqlitePool, migrations: &[&str]) -> Result<(), Migration> {
    let found = recorded(pool).await?;
    let supported = migrations.len() as i64;
    if found > supported {
        return Err(Migration::TooNew { found, supported });
    }
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?;
    for (i, sql) in migrations.iter().enumerate() {
        let version = i as i64 + 1;
        if sql.is_empty() || applied.contains(&version) {
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("m.db"))
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        (dir, pool)
    }

    async fn versions(pool: &SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// A reserved (empty) version is not recorded, and the migration that fills it is applied
    /// later although a higher version already was; applied versions never run twice (each
    /// would fail: its table exists).
    #[tokio::test]
    async fn a_reserved_version_is_applied_when_it_is_filled() {
        let (_dir, pool) = pool().await;
        apply(&pool, &["CREATE TABLE a (x)", "", "CREATE TABLE c (x)"])
            .await
            .unwrap();
        assert_eq!(versions(&pool).await, vec![1, 3]);
        apply(
            &pool,
            &[
                "CREATE TABLE a (x)",
                "CREATE TABLE b (x)",
                "CREATE TABLE c (x)",
            ],
        )
        .await
        .unwrap();
        assert_eq!(versions(&pool).await, vec![1, 2, 3]);
        sqlx::query("SELECT x FROM b")
            .fetch_all(&pool)
            .await
            .unwrap();
        // An older build (two versions) refuses the database and leaves it as it was.
        match apply(&pool, &["CREATE TABLE a (x)", "CREATE TABLE b (x)"]).await {
            Err(Migration::TooNew { found, supported }) => assert_eq!((found, supported), (3, 2)),
            other => panic!("an older build opened a newer database: {other:?}"),
        }
        assert_eq!(versions(&pool).await, vec![1, 2, 3]);
    }
}
