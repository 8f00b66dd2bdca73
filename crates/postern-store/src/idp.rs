//! The built-in identity provider's state: directory, clients, sessions, codes, grants, refresh
//! tokens, device codes, signing keys and sign-in events.
//!
//! **Invariant:** passwords are stored as Argon2id hashes (made by the caller), and every other
//! secret the provider hands out (client secrets, session cookies, codes, refresh tokens, device
//! codes, recovery codes) as a SHA-256 hash only.
//! **Invariant:** disabling a user, resetting their MFA or password revokes their sessions and
//! grants, and records a session revocation of their subject for the edge (which ends their app
//! sessions), in the same transaction.
//! **Invariant:** what unauthenticated callers cause to be written is bounded: sign-in event
//! fields are truncated ([`SIGNIN_EVENT_FIELD_BYTES`]), pending device codes are capped per
//! client and per requester (the oldest goes), and [`Store::prune_idp`] deletes what has expired
//! or passed its retention.

use base64::Engine;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::access::record_revocation;
use crate::idp_model::*;
use crate::{hex, is_unique_violation, now, token_hash, Store, StoreError};

/// Pending device codes one client keeps at most (each waits up to ten minutes for a person to
/// approve it; a thousand devices being set up at once is far beyond any real deployment).
pub const DEVICE_CODES_PER_CLIENT: i64 = 1000;
/// Pending device codes one requesting address keeps at most: a few devices set up from one
/// network at a time.
pub const DEVICE_CODES_PER_REQUESTER: i64 = 20;
/// Longest value of any field of a sign-in event: an email is at most 254 bytes, an address 45;
/// what an attacker typed beyond that is cut, not stored.
pub const SIGNIN_EVENT_FIELD_BYTES: usize = 320;

/// `s` cut to at most `max` bytes at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A random URL-safe secret with 256 bits of entropy.
fn random_secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn split(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn no_user(email: &str) -> StoreError {
    StoreError::NotFound {
        what: "user",
        name: email.to_owned(),
    }
}

const USER_SELECT: &str = "SELECT u.id, u.email, u.display_name, u.enabled, u.admin, u.require_mfa,
        u.totp_confirmed_at IS NOT NULL, u.created_at,
        COALESCE((SELECT group_concat(g.name, ' ') FROM idp_group_members m
                  JOIN idp_groups g ON g.id = m.group_id WHERE m.user_id = u.id), ''),
        (SELECT COUNT(*) FROM idp_passkeys p WHERE p.user_id = u.id)
    FROM idp_users u";

fn user_from_row(r: &SqliteRow) -> User {
    let mut groups = split(&r.get::<String, _>(8));
    groups.sort();
    User {
        id: r.get(0),
        email: r.get(1),
        display_name: r.get(2),
        enabled: r.get(3),
        admin: r.get(4),
        require_mfa: r.get(5),
        mfa_enrolled: r.get(6),
        created_at: r.get(7),
        groups,
        passkeys: r.get(9),
    }
}

const PASSKEY_SELECT: &str =
    "SELECT id, user_id, name, data, created_at, last_used_at FROM idp_passkeys";

fn passkey_from_row(r: &SqliteRow) -> StoredPasskey {
    StoredPasskey {
        id: r.get(0),
        user_id: r.get(1),
        name: r.get(2),
        data: r.get(3),
        created_at: r.get(4),
        last_used_at: r.get(5),
    }
}

const CLIENT_SELECT: &str = "SELECT client_id, name, secret_hash IS NULL, redirect_uris,
        post_logout_redirect_uris, id_token_alg, app_name, created_at FROM idp_clients";

fn client_from_row(r: &SqliteRow) -> Client {
    Client {
        client_id: r.get(0),
        name: r.get(1),
        public: r.get(2),
        redirect_uris: split(&r.get::<String, _>(3)),
        post_logout_redirect_uris: split(&r.get::<String, _>(4)),
        id_token_alg: IdTokenAlg::parse(&r.get::<String, _>(5)).unwrap_or(IdTokenAlg::Es256),
        app_name: r.get(6),
        created_at: r.get(7),
    }
}

fn auth_from(user_id: String, auth_time: i64, amr: &str, acr: String) -> AuthContext {
    AuthContext {
        user_id,
        auth_time,
        amr: split(amr),
        acr,
    }
}

impl Store {
    // Users ----------------------------------------------------------------------------------

    /// Creates a user (and any directory group named that does not exist yet).
    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let id = format!("u_{}", hex(&rand::random::<[u8; 12]>()));
        let now = now();
        let mut tx = self.write().await?;
        let res = sqlx::query(
            "INSERT INTO idp_users (id, email, display_name, password_hash, admin, require_mfa,
                 email_verified, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(new.email.to_ascii_lowercase())
        .bind(&new.display_name)
        .bind(&new.password_hash)
        .bind(new.admin)
        .bind(new.require_mfa)
        .bind(new.email_verified)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a user with email {:?} already exists",
                    new.email
                )))
            }
            Err(e) => return Err(e.into()),
        }
        for group in &new.groups {
            add_member(&mut tx, group, &id).await?;
        }
        self.commit(tx).await?;
        self.user(&new.email).await
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!("{USER_SELECT} ORDER BY u.email"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    /// The user whose email is `email` (emails are stored lower-case).
    pub async fn user(&self, email: &str) -> Result<User, StoreError> {
        let row = sqlx::query(&format!("{USER_SELECT} WHERE u.email = ?"))
            .bind(email.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).ok_or_else(|| no_user(email))
    }

    pub async fn user_by_id(&self, id: &str) -> Result<User, StoreError> {
        let row = sqlx::query(&format!("{USER_SELECT} WHERE u.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).ok_or_else(|| no_user(id))
    }

    /// The user and their password hash, for signing in; `None` for an unknown email.
    pub async fn user_credentials(
        &self,
        email: &str,
    ) -> Result<Option<(User, String)>, StoreError> {
        let user = match self.user(email).await {
            Ok(u) => u,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let hash: String = sqlx::query_scalar("SELECT password_hash FROM idp_users WHERE id = ?")
            .bind(&user.id)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some((user, hash)))
    }

    /// Whether an administrator vouched for the email of the user with subject `id`: what the
    /// provider's tokens say as `email_verified`.
    pub async fn email_verified(&self, id: &str) -> Result<bool, StoreError> {
        let verified: Option<bool> =
            sqlx::query_scalar("SELECT email_verified FROM idp_users WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        verified.ok_or_else(|| no_user(id))
    }

    /// The subjects of the users whose emails are verified.
    pub async fn verified_emails(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM idp_users WHERE email_verified = 1")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect(),
        )
    }

    /// Records whether an administrator vouches for a user's email. Tokens issued from now on
    /// say so; sessions and grants are left alone.
    pub async fn set_email_verified(
        &self,
        email: &str,
        verified: bool,
    ) -> Result<User, StoreError> {
        let mut tx = self.write().await?;
        let done =
            sqlx::query("UPDATE idp_users SET email_verified = ?, updated_at = ? WHERE email = ?")
                .bind(verified)
                .bind(now())
                .bind(email.to_ascii_lowercase())
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(no_user(email));
        }
        self.commit(tx).await?;
        self.user(email).await
    }

    /// Enables or disables a user. Disabling ends their sessions and revokes their grants at once.
    pub async fn set_user_enabled(&self, email: &str, enabled: bool) -> Result<User, StoreError> {
        let user = self.user(email).await?;
        let mut tx = self.write().await?;
        sqlx::query("UPDATE idp_users SET enabled = ?, updated_at = ? WHERE id = ?")
            .bind(enabled)
            .bind(now())
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        if !enabled {
            revoke_everything(&mut tx, &user.id).await?;
        }
        self.commit(tx).await?;
        self.user(email).await
    }

    /// Replaces a user's password hash and ends their sessions and grants.
    pub async fn set_password(&self, email: &str, password_hash: &str) -> Result<User, StoreError> {
        let user = self.user(email).await?;
        let mut tx = self.write().await?;
        sqlx::query("UPDATE idp_users SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(password_hash)
            .bind(now())
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        revoke_everything(&mut tx, &user.id).await?;
        self.commit(tx).await?;
        Ok(user)
    }

    /// Removes a user's authenticator, recovery codes and passkeys and ends their sessions: they
    /// enrol again at their next sign-in.
    pub async fn reset_mfa(&self, email: &str) -> Result<User, StoreError> {
        let user = self.user(email).await?;
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE idp_users SET totp_secret = NULL, totp_confirmed_at = NULL,
                 totp_last_step = NULL, updated_at = ? WHERE id = ?",
        )
        .bind(now())
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
        for table in ["idp_recovery_codes", "idp_passkeys"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = ?"))
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
        }
        revoke_everything(&mut tx, &user.id).await?;
        self.commit(tx).await?;
        self.user(email).await
    }

    pub async fn totp(&self, user_id: &str) -> Result<Totp, StoreError> {
        let row = sqlx::query(
            "SELECT totp_secret, totp_confirmed_at IS NOT NULL FROM idp_users WHERE id = ?",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(no_user(user_id));
        };
        let secret: Option<String> = row.get(0);
        let confirmed: bool = row.get(1);
        Ok(match secret {
            None => Totp::None,
            Some(s) if confirmed => Totp::Confirmed(TotpSecret(s)),
            Some(s) => Totp::Pending(TotpSecret(s)),
        })
    }

    /// Stores a new, unconfirmed TOTP secret, unless one is confirmed already.
    pub async fn begin_totp(&self, user_id: &str, secret: &TotpSecret) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE idp_users SET totp_secret = ?, updated_at = ?
             WHERE id = ? AND totp_confirmed_at IS NULL",
        )
        .bind(&secret.0)
        .bind(now())
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "an authenticator is enrolled already; an admin can reset it".to_owned(),
            ));
        }
        Ok(())
    }

    /// Confirms the pending TOTP secret and stores the recovery codes' hashes.
    pub async fn confirm_totp(
        &self,
        user_id: &str,
        recovery_code_hashes: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE idp_users SET totp_confirmed_at = ?, updated_at = ?
             WHERE id = ? AND totp_secret IS NOT NULL AND totp_confirmed_at IS NULL",
        )
        .bind(now())
        .bind(now())
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "no authenticator enrolment is in progress".to_owned(),
            ));
        }
        sqlx::query("DELETE FROM idp_recovery_codes WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for hash in recovery_code_hashes {
            sqlx::query("INSERT INTO idp_recovery_codes (user_id, hash) VALUES (?, ?)")
                .bind(user_id)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Records that the TOTP code of time step `step` was used; `false` if that step or a later
    /// one was used before (RFC 6238 section 5.2: a code is accepted once).
    pub async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE idp_users SET totp_last_step = ?
             WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
        )
        .bind(step)
        .bind(user_id)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Uses up one recovery code given as its hash; `false` if it is unknown or used.
    pub async fn use_recovery_code(&self, user_id: &str, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE idp_recovery_codes SET used_at = ?
             WHERE user_id = ? AND hash = ? AND used_at IS NULL",
        )
        .bind(now())
        .bind(user_id)
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // Directory groups -----------------------------------------------------------------------

    // Passkeys -------------------------------------------------------------------------------

    /// Adds a passkey; a credential ID already registered (to anyone) is a conflict.
    pub async fn add_passkey(
        &self,
        user_id: &str,
        id: &str,
        name: &str,
        data: &str,
    ) -> Result<StoredPasskey, StoreError> {
        let created_at = now();
        sqlx::query(
            "INSERT INTO idp_passkeys (id, user_id, name, data, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(user_id)
        .bind(name)
        .bind(data)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict("this passkey is registered already".into())
            } else {
                e.into()
            }
        })?;
        Ok(StoredPasskey {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            data: data.to_owned(),
            created_at,
            last_used_at: None,
        })
    }

    /// A user's passkeys, oldest first.
    pub async fn passkeys(&self, user_id: &str) -> Result<Vec<StoredPasskey>, StoreError> {
        let rows = sqlx::query(&format!(
            "{PASSKEY_SELECT} WHERE user_id = ? ORDER BY created_at, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(passkey_from_row).collect())
    }

    /// The passkey with this credential ID, whoever owns it.
    pub async fn passkey(&self, id: &str) -> Result<Option<StoredPasskey>, StoreError> {
        let row = sqlx::query(&format!("{PASSKEY_SELECT} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(passkey_from_row))
    }

    /// Records a use of a passkey, with its updated verifier state (the signature counter).
    pub async fn passkey_used(&self, id: &str, data: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE idp_passkeys SET data = ?, last_used_at = ? WHERE id = ?")
            .bind(data)
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes one of a user's passkeys; false if the user has no passkey with this ID.
    pub async fn delete_passkey(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM idp_passkeys WHERE id = ? AND user_id = ?")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds a user to a directory group, creating the group if needed.
    pub async fn add_group_member(&self, group: &str, email: &str) -> Result<User, StoreError> {
        let user = self.user(email).await?;
        let mut tx = self.write().await?;
        add_member(&mut tx, group, &user.id).await?;
        self.commit(tx).await?;
        self.user(email).await
    }

    pub async fn remove_group_member(&self, group: &str, email: &str) -> Result<User, StoreError> {
        let mut tx = self.write().await?;
        let user = self.user(email).await?;
        let done = sqlx::query(
            "DELETE FROM idp_group_members WHERE user_id = ?
             AND group_id = (SELECT id FROM idp_groups WHERE name = ?)",
        )
        .bind(&user.id)
        .bind(group)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "membership of group",
                name: group.to_owned(),
            });
        }
        self.commit(tx).await?;
        self.user(email).await
    }

    pub async fn directory_groups(&self) -> Result<Vec<DirectoryGroup>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.name, COALESCE((SELECT group_concat(u.email, ' ') FROM idp_group_members m
                 JOIN idp_users u ON u.id = m.user_id WHERE m.group_id = g.id), '')
             FROM idp_groups g ORDER BY g.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut members = split(&r.get::<String, _>(1));
                members.sort();
                DirectoryGroup {
                    name: r.get(0),
                    members,
                }
            })
            .collect())
    }

    // Clients --------------------------------------------------------------------------------

    /// Registers a client; returns it and its secret (`None` for a public client), which is
    /// stored only as a hash.
    pub async fn create_client(
        &self,
        new: &NewClient,
    ) -> Result<(Client, Option<ClientSecret>), StoreError> {
        self.insert_client(new, None).await
    }

    async fn insert_client(
        &self,
        new: &NewClient,
        app_name: Option<&str>,
    ) -> Result<(Client, Option<ClientSecret>), StoreError> {
        let mut tx = self.write().await?;
        let client_id = format!("c_{}", hex(&rand::random::<[u8; 12]>()));
        let secret = (!new.public).then(|| ClientSecret(format!("cs_{}", random_secret())));
        let res = sqlx::query(
            "INSERT INTO idp_clients (client_id, name, secret_hash, redirect_uris,
                 post_logout_redirect_uris, id_token_alg, app_name, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&client_id)
        .bind(&new.name)
        .bind(secret.as_ref().map(|s| token_hash(&s.0)))
        .bind(new.redirect_uris.join(" "))
        .bind(new.post_logout_redirect_uris.join(" "))
        .bind(new.id_token_alg.as_str())
        .bind(app_name)
        .bind(now())
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a client named {:?} already exists",
                    new.name
                )))
            }
            Err(e) => return Err(e.into()),
        }
        self.commit(tx).await?;
        Ok((self.client(&client_id).await?, secret))
    }

    /// The client of a published app, made if it does not exist (confidential, ES256, named
    /// `app:NAME`), with `redirect_uri` added to its redirect URIs. The secret is stored only as
    /// a hash, so an existing client gets a new secret: call this when the app is published or
    /// its settings change, and keep what it returns.
    pub async fn ensure_app_client(
        &self,
        app_name: &str,
        redirect_uri: &str,
    ) -> Result<(String, ClientSecret), StoreError> {
        let existing = sqlx::query(&format!("{CLIENT_SELECT} WHERE app_name = ?"))
            .bind(app_name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| client_from_row(&r));
        let Some(client) = existing else {
            let new = NewClient {
                name: format!("app:{app_name}"),
                public: false,
                redirect_uris: vec![redirect_uri.to_owned()],
                post_logout_redirect_uris: vec![],
                id_token_alg: IdTokenAlg::Es256,
            };
            let (client, secret) = self.insert_client(&new, Some(app_name)).await?;
            let secret = secret.ok_or_else(|| {
                StoreError::Conflict("an app's client must be confidential".to_owned())
            })?;
            return Ok((client.client_id, secret));
        };
        let mut uris = client.redirect_uris.clone();
        if !uris.iter().any(|u| u == redirect_uri) {
            uris.push(redirect_uri.to_owned());
        }
        let secret = ClientSecret(format!("cs_{}", random_secret()));
        sqlx::query(
            "UPDATE idp_clients SET secret_hash = ?, redirect_uris = ? WHERE client_id = ?",
        )
        .bind(token_hash(&secret.0))
        .bind(uris.join(" "))
        .bind(&client.client_id)
        .execute(&self.pool)
        .await?;
        Ok((client.client_id, secret))
    }

    pub async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query(&format!("{CLIENT_SELECT} ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(client_from_row).collect())
    }

    pub async fn client(&self, client_id: &str) -> Result<Client, StoreError> {
        let row = sqlx::query(&format!("{CLIENT_SELECT} WHERE client_id = ?"))
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| client_from_row(&r))
            .ok_or_else(|| StoreError::NotFound {
                what: "client",
                name: client_id.to_owned(),
            })
    }

    pub async fn delete_client(&self, client_id: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM idp_clients WHERE client_id = ?")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "client",
                name: client_id.to_owned(),
            });
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Whether `secret` is the confidential client's secret (compared as SHA-256 digests).
    pub async fn check_client_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<bool, StoreError> {
        let stored: Option<Option<String>> =
            sqlx::query_scalar("SELECT secret_hash FROM idp_clients WHERE client_id = ?")
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(matches!(stored, Some(Some(h)) if h == token_hash(secret)))
    }

    // Sessions -------------------------------------------------------------------------------

    /// Starts a session; returns the cookie value and its hash, which is all that is stored
    /// (and names the session, as in [`IdpSession::hash`]).
    pub async fn create_session(
        &self,
        user_id: &str,
        auth_time: i64,
        amr: &[String],
        expires_at: i64,
    ) -> Result<(String, String), StoreError> {
        let token = random_secret();
        let hash = token_hash(&token);
        sqlx::query(
            "INSERT INTO idp_sessions (hash, user_id, auth_time, amr, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&hash)
        .bind(user_id)
        .bind(auth_time)
        .bind(amr.join(" "))
        .bind(now())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok((token, hash))
    }

    /// The live session whose cookie value is `token`: not revoked, not expired at `now`, and
    /// its user enabled.
    pub async fn session(&self, token: &str, now: i64) -> Result<Option<IdpSession>, StoreError> {
        let row = sqlx::query(
            "SELECT s.hash, s.user_id, s.auth_time, s.amr, s.expires_at FROM idp_sessions s
             JOIN idp_users u ON u.id = s.user_id
             WHERE s.hash = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND u.enabled = 1",
        )
        .bind(token_hash(token))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| IdpSession {
            hash: r.get(0),
            user_id: r.get(1),
            auth_time: r.get(2),
            amr: split(&r.get::<String, _>(3)),
            expires_at: r.get(4),
        }))
    }

    /// Records a further authentication (a second factor) in a session.
    pub async fn update_session_auth(
        &self,
        hash: &str,
        auth_time: i64,
        amr: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE idp_sessions SET auth_time = ?, amr = ? WHERE hash = ?")
            .bind(auth_time)
            .bind(amr.join(" "))
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn revoke_session(&self, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE idp_sessions SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL")
            .bind(now())
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // Codes, grants and refresh tokens -------------------------------------------------------

    /// Stores an authorization code; returns the code, stored only as a hash.
    pub async fn create_code(&self, new: &NewCode) -> Result<String, StoreError> {
        let code = random_secret();
        sqlx::query(
            "INSERT INTO idp_codes (hash, client_id, user_id, redirect_uri, code_challenge, nonce,
                 scope, auth_time, amr, acr, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token_hash(&code))
        .bind(&new.client_id)
        .bind(&new.auth.user_id)
        .bind(&new.redirect_uri)
        .bind(&new.code_challenge)
        .bind(&new.nonce)
        .bind(&new.scope)
        .bind(new.auth.auth_time)
        .bind(new.auth.amr.join(" "))
        .bind(&new.auth.acr)
        .bind(new.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(code)
    }

    /// Redeems a code for `client_id` at `now`: marks it used and opens a grant, in one
    /// transaction. A second redemption is refused and revokes the grant opened by the first
    /// (RFC 6749, section 4.1.2). The caller checks the redirect URI and PKCE afterwards and
    /// revokes the grant if they fail.
    pub async fn redeem_code(
        &self,
        code: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Result<(Code, Grant), RedeemProblem>, StoreError> {
        let hash = token_hash(code);
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "SELECT client_id, user_id, redirect_uri, code_challenge, nonce, scope, auth_time, amr,
                 acr, expires_at, used_at, grant_id FROM idp_codes WHERE hash = ?",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Err(RedeemProblem::Unknown));
        };
        let code_client: String = row.get(0);
        if code_client != client_id {
            return Ok(Err(RedeemProblem::Unknown));
        }
        let used_at: Option<i64> = row.get(10);
        if used_at.is_some() {
            let grant: Option<String> = row.get(11);
            if let Some(grant) = grant {
                revoke_grant(&mut tx, &grant).await?;
            }
            self.commit(tx).await?;
            return Ok(Err(RedeemProblem::Reused));
        }
        let code = Code {
            client_id: code_client,
            redirect_uri: row.get(2),
            code_challenge: row.get(3),
            nonce: row.get(4),
            scope: row.get(5),
            auth: auth_from(row.get(1), row.get(6), &row.get::<String, _>(7), row.get(8)),
            expires_at: row.get(9),
        };
        if code.expires_at <= now {
            return Ok(Err(RedeemProblem::Expired));
        }
        let grant = insert_grant(&mut tx, &code.client_id, &code.scope, &code.auth).await?;
        sqlx::query("UPDATE idp_codes SET used_at = ?, grant_id = ? WHERE hash = ?")
            .bind(now)
            .bind(&grant.id)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(Ok((code, grant)))
    }

    /// The grant `id`; `revoked` is also true when its user is disabled.
    pub async fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let row = sqlx::query(
            "SELECT g.id, g.client_id, g.scope, g.user_id, g.auth_time, g.amr, g.acr,
                 g.revoked_at IS NOT NULL OR u.enabled = 0
             FROM idp_grants g JOIN idp_users u ON u.id = g.user_id WHERE g.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Grant {
            id: r.get(0),
            client_id: r.get(1),
            scope: r.get(2),
            auth: auth_from(r.get(3), r.get(4), &r.get::<String, _>(5), r.get(6)),
            revoked: r.get(7),
        }))
    }

    pub async fn revoke_grant(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        revoke_grant(&mut tx, id).await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Issues a new refresh token of a grant; returns it, stored only as a hash.
    pub async fn issue_refresh_token(&self, grant_id: &str) -> Result<String, StoreError> {
        let token = random_secret();
        sqlx::query("INSERT INTO idp_refresh_tokens (hash, grant_id, created_at) VALUES (?, ?, ?)")
            .bind(token_hash(&token))
            .bind(grant_id)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    /// The live grant a refresh token would renew, without using the token up: `None` when the
    /// token is unknown, another client's, used or its grant revoked (using it says which).
    pub async fn refresh_token_grant(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<Option<Grant>, StoreError> {
        let row = sqlx::query(
            "SELECT r.grant_id FROM idp_refresh_tokens r JOIN idp_grants g ON g.id = r.grant_id
             WHERE r.hash = ? AND r.used_at IS NULL AND g.client_id = ?",
        )
        .bind(token_hash(token))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(self
            .grant(&row.get::<String, _>(0))
            .await?
            .filter(|g| !g.revoked))
    }

    /// Uses a refresh token of `client_id`: marks it used and returns its grant, to which the
    /// caller issues a new one. A token used before revokes its whole grant (the family), so a
    /// stolen token and its rightful holder both lose access.
    pub async fn use_refresh_token(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<Result<Grant, RedeemProblem>, StoreError> {
        let hash = token_hash(token);
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "SELECT r.grant_id, r.used_at, g.client_id FROM idp_refresh_tokens r
             JOIN idp_grants g ON g.id = r.grant_id WHERE r.hash = ?",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Err(RedeemProblem::Unknown));
        };
        let grant_id: String = row.get(0);
        let used_at: Option<i64> = row.get(1);
        let owner: String = row.get(2);
        if owner != client_id {
            return Ok(Err(RedeemProblem::Unknown));
        }
        if used_at.is_some() {
            revoke_grant(&mut tx, &grant_id).await?;
            self.commit(tx).await?;
            return Ok(Err(RedeemProblem::Reused));
        }
        sqlx::query("UPDATE idp_refresh_tokens SET used_at = ? WHERE hash = ?")
            .bind(now())
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        match self.grant(&grant_id).await? {
            Some(g) if !g.revoked => Ok(Ok(g)),
            _ => Ok(Err(RedeemProblem::Revoked)),
        }
    }

    // Device authorization (RFC 8628) --------------------------------------------------------

    /// Starts a device authorization at `now`; returns the device code (stored only as a hash).
    /// The client and the requester each keep at most [`DEVICE_CODES_PER_CLIENT`] and
    /// [`DEVICE_CODES_PER_REQUESTER`] pending codes: their expired ones and then their oldest
    /// pending ones are deleted first, in the same transaction, so a new start always succeeds.
    pub async fn create_device(&self, new: &NewDevice, now: i64) -> Result<String, StoreError> {
        let device_code = random_secret();
        let mut tx = self.write().await?;
        sqlx::query(
            "DELETE FROM idp_device_codes WHERE expires_at <= ? AND (client_id = ? OR requester = ?)",
        )
        .bind(now)
        .bind(&new.client_id)
        .bind(&new.requester)
        .execute(&mut *tx)
        .await?;
        for (column, cap) in [
            ("client_id", DEVICE_CODES_PER_CLIENT),
            ("requester", DEVICE_CODES_PER_REQUESTER),
        ] {
            let value = if column == "client_id" {
                &new.client_id
            } else {
                &new.requester
            };
            sqlx::query(&format!(
                "DELETE FROM idp_device_codes WHERE rowid IN (
                     SELECT rowid FROM idp_device_codes WHERE {column} = ? AND status = 'pending'
                     ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?)"
            ))
            .bind(value)
            .bind(cap - 1)
            .execute(&mut *tx)
            .await?;
        }
        let res = sqlx::query(
            "INSERT INTO idp_device_codes (hash, user_code, client_id, scope, expires_at,
                 interval_secs, status, requester, created_at)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        )
        .bind(token_hash(&device_code))
        .bind(&new.user_code)
        .bind(&new.client_id)
        .bind(&new.scope)
        .bind(new.expires_at)
        .bind(new.interval_secs)
        .bind(&new.requester)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {
                self.commit(tx).await?;
                Ok(device_code)
            }
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
                "that user code is taken; draw another".to_owned(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn device_by_user_code(&self, user_code: &str) -> Result<Option<Device>, StoreError> {
        let row = sqlx::query(&format!("{DEVICE_SELECT} WHERE user_code = ?"))
            .bind(user_code)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| device_from_row(&r)))
    }

    pub async fn device_by_code(&self, device_code: &str) -> Result<Option<Device>, StoreError> {
        let row = sqlx::query(&format!("{DEVICE_SELECT} WHERE hash = ?"))
            .bind(token_hash(device_code))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| device_from_row(&r)))
    }

    /// Approves (with the approver's authentication) or denies a pending device authorization;
    /// `false` if it is no longer pending.
    pub async fn decide_device(
        &self,
        user_code: &str,
        approval: Option<&AuthContext>,
    ) -> Result<bool, StoreError> {
        let done =
            match approval {
                Some(a) => sqlx::query(
                    "UPDATE idp_device_codes SET status = 'approved', user_id = ?, auth_time = ?,
                     amr = ?, acr = ? WHERE user_code = ? AND status = 'pending'",
                )
                .bind(&a.user_id)
                .bind(a.auth_time)
                .bind(a.amr.join(" "))
                .bind(&a.acr)
                .bind(user_code)
                .execute(&self.pool)
                .await?,
                None => {
                    sqlx::query(
                        "UPDATE idp_device_codes SET status = 'denied'
                     WHERE user_code = ? AND status = 'pending'",
                    )
                    .bind(user_code)
                    .execute(&self.pool)
                    .await?
                }
            };
        Ok(done.rows_affected() == 1)
    }

    /// Records a poll at `now` with the interval the client must keep from now on.
    pub async fn device_polled(
        &self,
        hash: &str,
        now: i64,
        interval_secs: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idp_device_codes SET last_poll_at = ?, interval_secs = ? WHERE hash = ?",
        )
        .bind(now)
        .bind(interval_secs)
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes an approved device authorization and opens its grant; `None` if it was not
    /// approved or was consumed already.
    pub async fn consume_device(&self, hash: &str) -> Result<Option<Grant>, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!(
            "{DEVICE_SELECT} WHERE hash = ? AND status = 'approved'"
        ))
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(device) = row.map(|r| device_from_row(&r)) else {
            return Ok(None);
        };
        let DeviceStatus::Approved(auth) = &device.status else {
            return Ok(None);
        };
        sqlx::query("UPDATE idp_device_codes SET status = 'consumed' WHERE hash = ?")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        let grant = insert_grant(&mut tx, &device.client_id, &device.scope, auth).await?;
        self.commit(tx).await?;
        Ok(Some(grant))
    }

    // Signing keys ---------------------------------------------------------------------------

    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, private_pem, created_at, activates_at, retires_at
             FROM idp_signing_keys ORDER BY activates_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SigningKey {
                kid: r.get(0),
                alg: IdTokenAlg::parse(&r.get::<String, _>(1)).unwrap_or(IdTokenAlg::Es256),
                private_pem: r.get(2),
                created_at: r.get(3),
                activates_at: r.get(4),
                retires_at: r.get(5),
            })
            .collect())
    }

    pub async fn add_signing_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO idp_signing_keys (kid, alg, private_pem, created_at, activates_at,
                 retires_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(key.alg.as_str())
        .bind(&key.private_pem)
        .bind(key.created_at)
        .bind(key.activates_at)
        .bind(key.retires_at)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn retire_signing_key(&self, kid: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idp_signing_keys SET retires_at = ? WHERE kid = ? AND retires_at IS NULL",
        )
        .bind(at)
        .bind(kid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idp_signing_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // Sign-in events -------------------------------------------------------------------------

    /// Records a sign-in event, each field cut to [`SIGNIN_EVENT_FIELD_BYTES`].
    pub async fn record_signin(&self, e: &SigninEvent) -> Result<(), StoreError> {
        let cut = |s: &str| truncated(s, SIGNIN_EVENT_FIELD_BYTES).to_owned();
        sqlx::query(
            "INSERT INTO idp_signin_events (at_ms, email, user_id, ip, client_id, outcome, reason)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at_ms)
        .bind(cut(&e.email))
        .bind(e.user_id.as_deref().map(cut))
        .bind(cut(&e.ip))
        .bind(e.client_id.as_deref().map(cut))
        .bind(cut(&e.outcome))
        .bind(cut(&e.reason))
        .execute(&self.pool)
        .await?;
        // The same attempt in the sign-in log, named by the app its client belongs to.
        let app = match &e.client_id {
            Some(c) => sqlx::query(
                "SELECT c.client_id, c.name, a.id, a.name FROM idp_clients c
                     LEFT JOIN apps a ON a.name = c.app_name WHERE c.client_id = ?",
            )
            .bind(c)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| match r.get::<Option<i64>, _>(2) {
                Some(app_id) => (app_id.to_string(), r.get::<String, _>(3)),
                None => (r.get(0), r.get(1)),
            }),
            None => None,
        };
        self.record_sign_in(&crate::logs::from_idp_event(e, app))
            .await?;
        Ok(())
    }

    /// Deletes, as of `now` (Unix seconds), what the provider no longer needs: codes, device
    /// codes and sessions that have expired (and sessions that were ended), and sign-in events
    /// past `retention`, by age and by count.
    pub async fn prune_idp(&self, now: i64, retention: &Retention) -> Result<Pruned, StoreError> {
        let mut tx = self.write().await?;
        let mut run = async |sql: &str, value: i64| -> Result<u64, sqlx::Error> {
            Ok(sqlx::query(sql)
                .bind(value)
                .execute(&mut *tx)
                .await?
                .rows_affected())
        };
        let by_age = run(
            "DELETE FROM idp_signin_events WHERE at_ms < ?",
            now.saturating_sub(retention.signin_events_secs)
                .saturating_mul(1000),
        )
        .await?;
        let by_count = run(
            "DELETE FROM idp_signin_events WHERE id <= (
                 SELECT id FROM idp_signin_events ORDER BY id DESC LIMIT 1 OFFSET ?)",
            retention.max_signin_events,
        )
        .await?;
        let codes = run("DELETE FROM idp_codes WHERE expires_at <= ?", now).await?;
        let device_codes = run("DELETE FROM idp_device_codes WHERE expires_at <= ?", now).await?;
        let sessions = run(
            "DELETE FROM idp_sessions WHERE expires_at <= ? OR revoked_at IS NOT NULL",
            now,
        )
        .await?;
        self.commit(tx).await?;
        let signins = self
            .prune_signins(
                now.saturating_sub(retention.signin_events_secs)
                    .saturating_mul(1000),
                retention.max_signin_events,
            )
            .await?;
        Ok(Pruned {
            signin_events: by_age + by_count,
            signins,
            codes,
            device_codes,
            sessions,
        })
    }

    /// Sign-in events, newest first, optionally of one email.
    pub async fn signin_events(
        &self,
        email: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SigninEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, email, user_id, ip, client_id, outcome, reason FROM idp_signin_events
             WHERE (? IS NULL OR email = ?) ORDER BY id DESC LIMIT ?",
        )
        .bind(email)
        .bind(email)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SigninEvent {
                at_ms: r.get(0),
                email: r.get(1),
                user_id: r.get(2),
                ip: r.get(3),
                client_id: r.get(4),
                outcome: r.get(5),
                reason: r.get(6),
                ..SigninEvent::default()
            })
            .collect())
    }
}

const DEVICE_SELECT: &str = "SELECT hash, user_code, client_id, scope, expires_at, interval_secs,
        last_poll_at, status, user_id, auth_time, amr, acr FROM idp_device_codes";

fn device_from_row(r: &SqliteRow) -> Device {
    let status: String = r.get(7);
    let status = match status.as_str() {
        "approved" => DeviceStatus::Approved(auth_from(
            r.get::<Option<String>, _>(8).unwrap_or_default(),
            r.get::<Option<i64>, _>(9).unwrap_or_default(),
            &r.get::<Option<String>, _>(10).unwrap_or_default(),
            r.get::<Option<String>, _>(11).unwrap_or_default(),
        )),
        "denied" => DeviceStatus::Denied,
        "consumed" => DeviceStatus::Consumed,
        _ => DeviceStatus::Pending,
    };
    Device {
        hash: r.get(0),
        user_code: r.get(1),
        client_id: r.get(2),
        scope: r.get(3),
        expires_at: r.get(4),
        interval_secs: r.get(5),
        last_poll_at: r.get(6),
        status,
    }
}

async fn add_member(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    group: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR IGNORE INTO idp_groups (name, created_at) VALUES (?, ?)")
        .bind(group)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO idp_group_members (group_id, user_id)
         SELECT id, ? FROM idp_groups WHERE name = ?",
    )
    .bind(user_id)
    .bind(group)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_grant(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    client_id: &str,
    scope: &str,
    auth: &AuthContext,
) -> Result<Grant, sqlx::Error> {
    let id = format!("g_{}", hex(&rand::random::<[u8; 12]>()));
    sqlx::query(
        "INSERT INTO idp_grants (id, client_id, user_id, scope, auth_time, amr, acr, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(client_id)
    .bind(&auth.user_id)
    .bind(scope)
    .bind(auth.auth_time)
    .bind(auth.amr.join(" "))
    .bind(&auth.acr)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(Grant {
        id,
        client_id: client_id.to_owned(),
        scope: scope.to_owned(),
        auth: auth.clone(),
        revoked: false,
    })
}

async fn revoke_grant(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idp_grants SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Ends a user's sessions at the provider, revokes their grants, and records a revocation of
/// their subject so the edge ends their app sessions too (see `revoke_sessions`).
pub(crate) async fn revoke_everything(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    let now = now();
    record_revocation(tx, user_id, now).await?;
    sqlx::query("UPDATE idp_sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE idp_grants SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
        (dir, store)
    }

    async fn fixture(store: &Store) -> (User, Client) {
        let user = store
            .create_user(&NewUser {
                email: "Ada@Example.com".into(),
                display_name: "Ada".into(),
                password_hash: "$argon2id$x".into(),
                admin: true,
                require_mfa: false,
                groups: vec!["eng".into()],
                email_verified: false,
            })
            .await
            .unwrap();
        let (client, secret) = store
            .create_client(&NewClient {
                name: "Wiki".into(),
                public: false,
                redirect_uris: vec!["https://w/cb".into()],
                post_logout_redirect_uris: vec![],
                id_token_alg: IdTokenAlg::Es256,
            })
            .await
            .unwrap();
        let secret = secret.unwrap();
        assert!(store
            .check_client_secret(&client.client_id, &secret.0)
            .await
            .unwrap());
        assert!(!store
            .check_client_secret(&client.client_id, "cs_wrong")
            .await
            .unwrap());
        assert_eq!(format!("{secret:?}"), "ClientSecret(********)");
        (user, client)
    }

    fn code_for(user: &User, client: &Client, expires_at: i64) -> NewCode {
        NewCode {
            client_id: client.client_id.clone(),
            redirect_uri: "https://w/cb".into(),
            code_challenge: None,
            nonce: None,
            scope: "openid".into(),
            auth: AuthContext {
                user_id: user.id.clone(),
                auth_time: 1,
                amr: vec!["pwd".into()],
                acr: "pwd".into(),
            },
            expires_at,
        }
    }

    #[tokio::test]
    async fn an_email_is_verified_only_once_an_administrator_says_so() {
        let (_d, store) = store().await;
        let (user, _) = fixture(&store).await;
        assert!(!store.email_verified(&user.id).await.unwrap());
        assert!(store.verified_emails().await.unwrap().is_empty());
        store
            .set_email_verified("ADA@example.com", true)
            .await
            .unwrap();
        assert!(store.email_verified(&user.id).await.unwrap());
        assert!(store.verified_emails().await.unwrap().contains(&user.id));
        store
            .set_email_verified("ada@example.com", false)
            .await
            .unwrap();
        assert!(!store.email_verified(&user.id).await.unwrap());
        assert!(matches!(
            store.set_email_verified("nobody@example.com", true).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.email_verified("u_nobody").await,
            Err(StoreError::NotFound { .. })
        ));
        let verified = store
            .create_user(&NewUser {
                email: "bo@example.com".into(),
                display_name: "Bo".into(),
                password_hash: "$argon2id$x".into(),
                admin: false,
                require_mfa: false,
                groups: vec![],
                email_verified: true,
            })
            .await
            .unwrap();
        assert!(store.email_verified(&verified.id).await.unwrap());
    }

    #[tokio::test]
    async fn codes_are_single_use_expire_and_reuse_revokes_the_grant() {
        let (_d, store) = store().await;
        let (user, client) = fixture(&store).await;
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(user.groups, ["eng"]);
        let code = store
            .create_code(&code_for(&user, &client, 100))
            .await
            .unwrap();
        let redeem = |code: String, client: String, now: i64| {
            let store = store.clone();
            async move { store.redeem_code(&code, &client, now).await.unwrap() }
        };
        assert_eq!(
            redeem(code.clone(), "c_other".into(), 50).await.err(),
            Some(RedeemProblem::Unknown)
        );
        assert_eq!(
            redeem(code.clone(), client.client_id.clone(), 100)
                .await
                .err(),
            Some(RedeemProblem::Expired)
        );
        let (_, grant) = redeem(code.clone(), client.client_id.clone(), 99)
            .await
            .unwrap();
        assert!(!store.grant(&grant.id).await.unwrap().unwrap().revoked);
        assert_eq!(
            redeem(code, client.client_id.clone(), 99).await.err(),
            Some(RedeemProblem::Reused)
        );
        assert!(store.grant(&grant.id).await.unwrap().unwrap().revoked);
    }

    #[tokio::test]
    async fn refresh_reuse_revokes_the_family_and_disabling_ends_everything() {
        let (_d, store) = store().await;
        let (user, client) = fixture(&store).await;
        let code = store
            .create_code(&code_for(&user, &client, i64::MAX))
            .await
            .unwrap();
        let (_, grant) = store
            .redeem_code(&code, &client.client_id, 0)
            .await
            .unwrap()
            .unwrap();
        let r1 = store.issue_refresh_token(&grant.id).await.unwrap();
        assert!(store
            .use_refresh_token(&r1, &client.client_id)
            .await
            .unwrap()
            .is_ok());
        let r2 = store.issue_refresh_token(&grant.id).await.unwrap();
        assert_eq!(
            store
                .use_refresh_token(&r1, &client.client_id)
                .await
                .unwrap()
                .err(),
            Some(RedeemProblem::Reused)
        );
        assert_eq!(
            store
                .use_refresh_token(&r2, &client.client_id)
                .await
                .unwrap()
                .err(),
            Some(RedeemProblem::Revoked)
        );

        let (session, _) = store
            .create_session(&user.id, 1, &["pwd".into()], i64::MAX)
            .await
            .unwrap();
        assert!(store.session(&session, 2).await.unwrap().is_some());
        store
            .set_user_enabled("ada@example.com", false)
            .await
            .unwrap();
        assert!(store.session(&session, 2).await.unwrap().is_none());
        store
            .set_user_enabled("ada@example.com", true)
            .await
            .unwrap();
        assert!(
            store.session(&session, 2).await.unwrap().is_none(),
            "ended, not paused"
        );
    }

    fn device(client: &Client, requester: &str, n: usize, expires_at: i64) -> NewDevice {
        NewDevice {
            client_id: client.client_id.clone(),
            scope: "openid".into(),
            user_code: format!("{requester}-{n}"),
            requester: requester.into(),
            expires_at,
            interval_secs: 5,
        }
    }

    #[tokio::test]
    async fn pending_device_codes_are_capped_per_requester_and_per_client_oldest_first() {
        let (_d, store) = store().await;
        let (_, client) = fixture(&store).await;
        let now = 1_000;
        let mut codes = Vec::new();
        for i in 0..(DEVICE_CODES_PER_REQUESTER as usize + 5) {
            codes.push(
                store
                    .create_device(&device(&client, "10.0.0.1", i, now + 600), now + i as i64)
                    .await
                    .unwrap(),
            );
        }
        let live = |code: String| {
            let store = store.clone();
            async move { store.device_by_code(&code).await.unwrap().is_some() }
        };
        for (i, code) in codes.iter().enumerate() {
            assert_eq!(
                live(code.clone()).await,
                i >= 5,
                "code {i}: the oldest went"
            );
        }
        // Another address is unaffected; the client's own cap holds across addresses.
        let other = store
            .create_device(&device(&client, "10.0.0.2", 0, now + 600), now)
            .await
            .unwrap();
        assert!(live(other.clone()).await);
        for i in 0..DEVICE_CODES_PER_CLIENT as usize {
            let requester = format!("10.1.{}.{}", i / 250, i % 250);
            store
                .create_device(&device(&client, &requester, i, now + 600), now + 100)
                .await
                .unwrap();
        }
        assert!(!live(other).await, "the client's oldest went");
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM idp_device_codes WHERE client_id = ? AND status = 'pending'",
        )
        .bind(&client.client_id)
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(pending, DEVICE_CODES_PER_CLIENT);
    }

    #[tokio::test]
    async fn sign_in_event_fields_are_cut_at_a_character_boundary() {
        let (_d, store) = store().await;
        let long = format!("{}é@example.com", "a".repeat(SIGNIN_EVENT_FIELD_BYTES - 1));
        store
            .record_signin(&SigninEvent {
                at_ms: 1,
                email: long.clone(),
                user_id: None,
                ip: "10.0.0.1".into(),
                client_id: Some("c".repeat(15 * 1024)),
                outcome: "failure".into(),
                reason: "unknown_user".into(),
                ..SigninEvent::default()
            })
            .await
            .unwrap();
        let e = &store.signin_events(None, 10).await.unwrap()[0];
        assert_eq!(e.email, "a".repeat(SIGNIN_EVENT_FIELD_BYTES - 1));
        assert_eq!(
            e.client_id.as_deref().map(str::len),
            Some(SIGNIN_EVENT_FIELD_BYTES)
        );
    }

    #[tokio::test]
    async fn pruning_deletes_what_expired_and_events_past_their_retention() {
        let (_d, store) = store().await;
        let (user, client) = fixture(&store).await;
        let now = 100 * 24 * 3600;
        let retention = Retention {
            signin_events_secs: 30 * 24 * 3600,
            max_signin_events: 3,
        };
        // Events: two older than 30 days, then five recent ones of which the newest 3 stay.
        let ages_days = [40, 31, 5, 4, 3, 2, 1];
        for (i, days) in ages_days.iter().enumerate() {
            store
                .record_signin(&SigninEvent {
                    at_ms: (now - days * 24 * 3600) * 1000,
                    email: format!("e{i}"),
                    user_id: None,
                    ip: "10.0.0.1".into(),
                    client_id: None,
                    outcome: "failure".into(),
                    reason: "unknown_user".into(),
                    ..SigninEvent::default()
                })
                .await
                .unwrap();
        }
        store
            .create_code(&code_for(&user, &client, now - 1))
            .await
            .unwrap();
        let live_code = store
            .create_code(&code_for(&user, &client, now + 60))
            .await
            .unwrap();
        // (A start deletes the expired codes of its client first, so the live one comes first.)
        store
            .create_device(&device(&client, "10.0.0.1", 1, now + 600), now - 700)
            .await
            .unwrap();
        store
            .create_device(&device(&client, "10.0.0.1", 0, now - 1), now - 600)
            .await
            .unwrap();
        let (expired, _) = store
            .create_session(&user.id, 1, &["pwd".into()], now)
            .await
            .unwrap();
        let (ended, ended_hash) = store
            .create_session(&user.id, 1, &["pwd".into()], now + 3600)
            .await
            .unwrap();
        store.revoke_session(&ended_hash).await.unwrap();
        let (live, _) = store
            .create_session(&user.id, 1, &["pwd".into()], now + 3600)
            .await
            .unwrap();

        let pruned = store.prune_idp(now, &retention).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                signin_events: 4,
                signins: 4,
                codes: 1,
                device_codes: 1,
                sessions: 2,
            }
        );
        let emails: Vec<String> = store
            .signin_events(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.email)
            .collect();
        assert_eq!(emails, ["e6", "e5", "e4"]);
        assert!(store.session(&live, now).await.unwrap().is_some());
        for gone in [expired, ended] {
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idp_sessions WHERE hash = ?")
                .bind(token_hash(&gone))
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(rows, 0);
        }
        assert!(store
            .redeem_code(&live_code, &client.client_id, now)
            .await
            .unwrap()
            .is_ok());
        assert_eq!(
            store.prune_idp(now, &retention).await.unwrap(),
            Pruned::default(),
            "nothing left to prune"
        );
    }

    #[tokio::test]
    async fn disabling_resetting_a_password_or_mfa_revokes_the_subjects_app_sessions() {
        let (_d, store) = store().await;
        let (user, _) = fixture(&store).await;
        let email = user.email.as_str();
        type Change =
            fn(&Store, &str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
        let changes: [(&str, Change); 3] = [
            ("disable", |s, e| {
                let (s, e) = (s.clone(), e.to_owned());
                Box::pin(async move {
                    s.set_user_enabled(&e, false).await.unwrap();
                })
            }),
            ("password", |s, e| {
                let (s, e) = (s.clone(), e.to_owned());
                Box::pin(async move {
                    s.set_password(&e, "$argon2id$y").await.unwrap();
                })
            }),
            ("mfa", |s, e| {
                let (s, e) = (s.clone(), e.to_owned());
                Box::pin(async move {
                    s.reset_mfa(&e).await.unwrap();
                })
            }),
        ];
        for (what, change) in changes {
            sqlx::query("DELETE FROM session_revocations")
                .execute(&store.pool)
                .await
                .unwrap();
            let version = store.config_version().await.unwrap();
            change(&store, email).await;
            let revoked = store.session_revocations().await.unwrap();
            assert_eq!(revoked.len(), 1, "{what}");
            assert_eq!(revoked[0].0, user.id, "{what}: by subject");
            assert!(
                store.config_version().await.unwrap() > version,
                "{what}: edges reload"
            );
        }
    }

    #[tokio::test]
    async fn an_apps_client_is_made_once_and_its_secret_replaced_on_each_call() {
        let (_d, store) = store().await;
        let (id1, s1) = store
            .ensure_app_client("wiki", "https://wiki/cb")
            .await
            .unwrap();
        let (id2, s2) = store
            .ensure_app_client("wiki", "https://wiki2/cb")
            .await
            .unwrap();
        assert_eq!(id1, id2);
        assert_ne!(s1, s2);
        assert!(!store.check_client_secret(&id1, &s1.0).await.unwrap());
        assert!(store.check_client_secret(&id1, &s2.0).await.unwrap());
        let client = store.client(&id1).await.unwrap();
        assert_eq!(
            client.redirect_uris,
            ["https://wiki/cb", "https://wiki2/cb"]
        );
        assert_eq!(client.app_name.as_deref(), Some("wiki"));
        assert!(!client.public);
    }
}
