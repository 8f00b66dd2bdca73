//! Postern's built-in OpenID Connect provider, for running with no outside identity service.
//!
//! It is an ordinary issuer: discovery, JWKS, the authorization code flow with PKCE, the token
//! endpoint (code, refresh token with rotation, device code), userinfo, RP-initiated logout and
//! the device authorization grant (RFC 8628). Sign-in pages are server-rendered forms; the second
//! factor is TOTP with recovery codes, and a passkey ([`passkey`], WebAuthn) signs a user in with
//! both factors at once. State lives in `postern-store`.
//!
//! Pure cores take time as a parameter: [`password`] (policy, Argon2id), [`pkce`], [`throttle`],
//! [`keys`] (rotation plan), [`mfa`] (TOTP codes). [`router`] is the thin HTTP shell around them.
//!
//! **Invariant:** a redirect URI is used only when it exactly matches one registered for the
//! client; otherwise the user gets an error page and is never redirected.
//! **Invariant:** the answer to a sign-in with an unknown email is the same as with a wrong
//! password, after the same amount of hashing.

mod account;
mod authorize;
pub mod cookies;
mod device;
pub mod directory;
pub mod html;
pub mod keys;
mod logout;
pub mod mfa;
pub mod passkey;
pub mod password;
pub mod pkce;
mod signin;
pub mod throttle;
mod token;
pub mod tokens;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use postern_store::Store;

pub use authorize::Pending;
pub use keys::{KeyRing, DEFAULT_ROTATION};
pub use tokens::{AccessClaims, BadToken};

/// How long a sign-in session at the provider lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long an authorization code may wait to be redeemed (RFC 6749 section 4.1.2 recommends at
/// most 10 minutes; a minute is plenty for a relying party on the same edge).
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a started sign-in (the app's request, waiting for the user) is kept.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// RFC 8628: how long a device code is valid and how often the device may poll.
pub const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(10 * 60);
pub const DEVICE_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Largest form or request body the provider reads.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Pending sign-ins kept at most, so a flood of authorize requests cannot grow memory unbounded.
const MAX_PENDING: usize = 50_000;

/// A random identifier (144 bits, URL-safe).
pub(crate) fn authorize_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

/// The address the request came from, set by the edge before calling the router.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    postern_store::now()
}

/// The provider: its issuer URL, keys, store and the in-memory state of sign-ins in progress.
pub struct Idp {
    pub issuer: String,
    pub store: Store,
    pub keys: KeyRing,
    /// The WebAuthn relying party; `None` when the issuer's host is an IP address.
    passkeys: Option<passkey::Passkeys>,
    pending: Mutex<HashMap<String, Pending>>,
    account_throttle: Mutex<throttle::Throttle<String>>,
    ip_throttle: Mutex<throttle::Throttle<IpAddr>>,
}

impl Idp {
    /// Loads (or makes) the signing keys. `issuer` is `https://HOST[:PORT]`, without a path.
    pub async fn new(store: Store, issuer: String) -> Result<Arc<Idp>, keys::KeyError> {
        let keys = KeyRing::new(DEFAULT_ROTATION);
        keys.maintain(&store, now(), false).await?;
        let issuer = issuer.trim_end_matches('/').to_owned();
        Ok(Arc::new(Idp {
            passkeys: passkey::Passkeys::new(&issuer),
            issuer,
            store,
            keys,
            pending: Mutex::new(HashMap::new()),
            account_throttle: Mutex::new(throttle::Throttle::new(throttle::PER_ACCOUNT)),
            ip_throttle: Mutex::new(throttle::Throttle::new(throttle::PER_IP)),
        }))
    }

    /// Rotates keys that are due (and, with `rotate_now`, prepares a successor at once).
    pub async fn maintain_keys(&self, rotate_now: bool) -> Result<(), keys::KeyError> {
        self.keys.maintain(&self.store, now(), rotate_now).await
    }

    /// Verifies an access token this provider issued and that its grant is still live; returns
    /// its claims (the edge uses this to let an administrator register a connector).
    pub async fn check_access_token(&self, token: &str) -> Result<AccessClaims, BadToken> {
        let claims = tokens::verify_access_token(&self.keys, &self.issuer, token, now())?;
        match self.store.grant(&claims.grant).await {
            Ok(Some(g)) if !g.revoked => Ok(claims),
            _ => Err(BadToken::Invalid),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    fn throttle_check(&self, email: &str, ip: IpAddr) -> Result<(), throttle::Refused> {
        let t = Instant::now();
        self.account_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(&email.to_owned(), t)?;
        self.ip_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(&ip, t)
    }

    fn throttle_failure(&self, email: &str, ip: IpAddr) {
        let t = Instant::now();
        self.account_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failure(&email.to_owned(), t);
        self.ip_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failure(&ip, t);
    }

    fn throttle_check_ip(&self, ip: IpAddr) -> Result<(), throttle::Refused> {
        self.ip_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(&ip, Instant::now())
    }

    fn throttle_failure_ip(&self, ip: IpAddr) {
        self.ip_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failure(&ip, Instant::now());
    }

    fn throttle_success(&self, email: &str) {
        self.account_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .success(&email.to_owned());
    }
}

/// The provider's routes, to serve on its host.
pub fn router(idp: Arc<Idp>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize::authorize))
        .route("/continue", get(authorize::resume))
        .route("/signin", get(signin::form).post(signin::submit))
        .route(
            "/signin/mfa",
            get(signin::mfa_form).post(signin::mfa_submit),
        )
        .route("/signin/passkey/start", post(passkey::signin_start))
        .route("/signin/passkey/finish", post(passkey::signin_finish))
        .route("/account", get(account::show))
        .route("/account/passkeys/start", post(passkey::enrol_start))
        .route("/account/passkeys/finish", post(passkey::enrol_finish))
        .route("/account/passkeys/delete", post(account::delete))
        .route("/static/passkey.js", get(account::script))
        .route("/token", post(token::token))
        .route("/userinfo", get(token::userinfo).post(token::userinfo))
        .route("/device_authorization", post(device::start))
        .route("/device", get(device::form).post(device::submit))
        .route("/device/decide", post(device::decide))
        .route("/logout", get(logout::logout).post(logout::confirm))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(idp)
}

async fn not_found() -> axum::response::Response {
    html::error_page(
        http::StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page at the sign-in service.",
    )
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "issuer": idp.issuer,
        "authorization_endpoint": idp.url("/authorize"),
        "token_endpoint": idp.url("/token"),
        "userinfo_endpoint": idp.url("/userinfo"),
        "jwks_uri": idp.url("/jwks"),
        "end_session_endpoint": idp.url("/logout"),
        "device_authorization_endpoint": idp.url("/device_authorization"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code"
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "email", "email_verified",
            "name", "groups", "roles", "amr", "acr", "sid"
        ],
        "acr_values_supported": ["pwd", "mfa"],
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": true,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false
    }))
}

async fn jwks(State(idp): State<Arc<Idp>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = Json(idp.keys.jwks()).into_response();
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    resp
}
