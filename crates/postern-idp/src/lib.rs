//! Postern's built-in OpenID Connect provider, for running with no outside identity service.
//!
//! It is an ordinary issuer: discovery, JWKS, the authorization code flow with PKCE, the token
//! endpoint (code, refresh token with rotation, device code), userinfo, RP-initiated logout and
//! the device authorization grant (RFC 8628). Sign-in pages are server-rendered forms; the second
//! factor is TOTP with recovery codes, and a passkey ([`passkey`], WebAuthn) signs a user in with
//! both factors at once. State lives in `postern-store`.
//!
//! Pure cores take time as a parameter: [`password`] (policy, Argon2id), [`pkce`], [`throttle`],
//! [`keys`] (rotation plan), [`mfa`] (TOTP codes), [`bounded`] (the tables of sign-ins in
//! progress), [`rate`] (token buckets). [`router`] is the thin HTTP shell around them.
//!
//! Everything an unauthenticated caller can make the provider keep or do is bounded: field
//! sizes ([`limits`]), sign-ins in progress and passkey challenges per address and per client
//! (the oldest evicted), password checks by the throttles (reserved before the hash) and by a
//! bounded pool of Argon2id jobs ([`hashing`]), and what it writes to the store by rate and by
//! retention ([`Idp::housekeeping`]).
//!
//! **Invariant:** a redirect URI is used only when it exactly matches one registered for the
//! client; otherwise the user gets an error page and is never redirected.
//! **Invariant:** the answer to a sign-in with an unknown email is the same as with a wrong
//! password, after the same amount of hashing.

pub use risk::LeakedPasswords;

mod account;
mod authorize;
pub mod bounded;
pub mod cookies;
mod device;
pub mod directory;
pub mod hashing;
pub mod html;
pub mod keys;
pub mod limits;
mod logout;
pub mod mfa;
pub mod passkey;
pub mod password;
pub mod pkce;
pub mod rate;
mod risk;
mod signin;
pub mod throttle;
mod token;
pub mod tokens;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use postern_store::Store;

pub use authorize::{AccessAsk, ConditionalAccess, Pending};
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
/// Sign-ins in progress (the app's request while the user types). One entry holds at most the
/// limited fields of an authorization request (a few KiB). An address gets 256: an office
/// behind one NAT address starts far fewer in a quarter of an hour that are not finished yet,
/// and a flood from one address then pushes out only its own oldest. A client gets 10,000, so a
/// flood from many addresses at one client leaves the others alone.
pub const PENDING_CAPS: bounded::Caps = bounded::Caps {
    max_entries: 50_000,
    max_bytes: 32 * 1024 * 1024,
    per_address: 256,
    per_client: 10_000,
    lifetime_secs: PENDING_LIFETIME.as_secs() as i64,
};
/// Sign-in events for attempts refused without any work (throttled, oversized, busy): an
/// address may cause 10 at once and then one every 6 s, everyone together 50 at once and then
/// 10 a second. Attempts that check a password are always recorded; the throttles and the
/// hashing pool bound those.
pub const REFUSAL_EVENTS_PER_ADDRESS: rate::Rate = rate::Rate {
    burst: 10,
    every: Duration::from_secs(6),
};
pub const REFUSAL_EVENTS: rate::Rate = rate::Rate {
    burst: 50,
    every: Duration::from_millis(100),
};
/// Device authorizations an address may start (each is a row in the store until it expires):
/// a device asks once per sign-in, so 10 at once and then one a minute is plenty.
pub const DEVICE_STARTS_PER_ADDRESS: rate::Rate = rate::Rate {
    burst: 10,
    every: Duration::from_secs(60),
};

/// A random identifier (144 bits, URL-safe).
pub(crate) fn authorize_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

/// Who is calling, set by the edge before calling the router: the address the request came
/// from, and what the sign-in log records of the request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub ip: IpAddr,
    /// The edge's request ID (the sign-in log's `correlationId`).
    pub request_id: String,
    /// The operating system and browser its `User-Agent` names.
    pub device: (Option<String>, Option<String>),
    /// Where the address is, when the edge has a location database.
    pub location: Option<postern_store::Location>,
}

impl Caller {
    /// A caller known only by its address.
    pub fn at(ip: IpAddr) -> Caller {
        Caller {
            ip,
            request_id: String::new(),
            device: (None, None),
            location: None,
        }
    }

    /// The address as the provider's limits count it: an IPv6 client by its /64 (one
    /// subscriber's network, where it can pick any address), an IPv4-mapped one as IPv4.
    pub fn key(&self) -> IpAddr {
        match self.ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        }
    }
}

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
    pending: Mutex<bounded::Table<Pending>>,
    /// The risk found when each risky session was signed in (by session hash, with when): a
    /// later request on the same session is decided with it too.
    session_risk: Mutex<std::collections::HashMap<String, (postern_policy::RiskLevel, i64)>>,
    account_throttle: Mutex<throttle::Throttle<String>>,
    ip_throttle: Mutex<throttle::Throttle<IpAddr>>,
    hasher: hashing::Hasher,
    refusal_events: Mutex<(rate::Budget<IpAddr>, rate::Budget<()>)>,
    device_starts: Mutex<rate::Budget<IpAddr>>,
    /// The operator's leaked-passwords list (`--leaked-passwords`), if any.
    leaked: Option<LeakedPasswords>,
    /// Conditional access for the provider's own clients, once the edge has set it.
    access: std::sync::OnceLock<Box<dyn ConditionalAccess>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Idp {
    /// Decides this provider's sign-ins to its own clients with `access` from now on (once).
    pub fn set_access(&self, access: Box<dyn ConditionalAccess>) {
        if self.access.set(access).is_err() {
            tracing::warn!("conditional access for the built-in provider was already set");
        }
    }
}

impl Idp {
    /// Loads (or makes) the signing keys. `issuer` is `https://HOST[:PORT]`, without a path;
    /// `leaked`, the list a matched password is looked up in.
    pub async fn new(
        store: Store,
        issuer: String,
        leaked: Option<LeakedPasswords>,
    ) -> Result<Arc<Idp>, keys::KeyError> {
        let keys = KeyRing::new(DEFAULT_ROTATION);
        keys.maintain(&store, now(), false).await?;
        let issuer = issuer.trim_end_matches('/').to_owned();
        Ok(Arc::new(Idp {
            passkeys: passkey::Passkeys::new(&issuer),
            issuer,
            store,
            keys,
            pending: Mutex::new(bounded::Table::new(PENDING_CAPS)),
            session_risk: Mutex::default(),
            account_throttle: Mutex::new(throttle::Throttle::new(throttle::PER_ACCOUNT)),
            ip_throttle: Mutex::new(throttle::Throttle::new(throttle::PER_IP)),
            hasher: hashing::Hasher::default(),
            refusal_events: Mutex::new((
                rate::Budget::new(REFUSAL_EVENTS_PER_ADDRESS),
                rate::Budget::new(REFUSAL_EVENTS),
            )),
            device_starts: Mutex::new(rate::Budget::new(DEVICE_STARTS_PER_ADDRESS)),
            leaked,
            access: std::sync::OnceLock::new(),
        }))
    }

    /// Rotates keys that are due (and, with `rotate_now`, prepares a successor at once).
    pub async fn maintain_keys(&self, rotate_now: bool) -> Result<(), keys::KeyError> {
        self.keys.maintain(&self.store, now(), rotate_now).await
    }

    /// [`Idp::maintain_keys`] through `store` (an audited handle, so the rotation and its audit
    /// record commit together).
    pub async fn maintain_keys_in(
        &self,
        store: &Store,
        rotate_now: bool,
    ) -> Result<(), keys::KeyError> {
        self.keys.maintain(store, now(), rotate_now).await
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

    /// Reserves an attempt in the per-account throttle (`account`, if given) and the
    /// per-address one, before any work is spent on it: it counts as a failure until
    /// [`Idp::attempt_succeeded`] or [`Idp::attempt_not_made`] says otherwise. Refused (and
    /// nothing counted) when either throttle refuses.
    pub(crate) fn reserve_attempt(
        &self,
        account: Option<&str>,
        ip: &Caller,
    ) -> Result<(), throttle::Refused> {
        let t = Instant::now();
        let (key, ip) = (account.map(str::to_owned), ip.key());
        let mut accounts = lock(&self.account_throttle);
        let mut ips = lock(&self.ip_throttle);
        if let Some(k) = &key {
            accounts.check(k, t)?;
        }
        ips.attempt(&ip, t)?;
        if let Some(k) = &key {
            accounts.failure(k, t);
        }
        Ok(())
    }

    /// The reserved attempt succeeded: the account's failures are cleared, and the address
    /// (which many people may share) gets its attempt back.
    pub(crate) fn attempt_succeeded(&self, account: Option<&str>, ip: &Caller) {
        if let Some(a) = account {
            lock(&self.account_throttle).success(&a.to_owned());
        }
        lock(&self.ip_throttle).release(&ip.key());
    }

    /// The reserved attempt's work never happened (the hashing queue was full): both throttles
    /// get it back.
    pub(crate) fn attempt_not_made(&self, account: Option<&str>, ip: &Caller) {
        if let Some(a) = account {
            lock(&self.account_throttle).release(&a.to_owned());
        }
        lock(&self.ip_throttle).release(&ip.key());
    }

    /// Whether an address may start one more device authorization now.
    pub(crate) fn device_start_allowed(&self, ip: &Caller) -> Result<(), Duration> {
        lock(&self.device_starts).take(&ip.key(), Instant::now())
    }

    /// Whether a refusal from `ip` may still be recorded as a sign-in event (see
    /// [`REFUSAL_EVENTS_PER_ADDRESS`]).
    pub(crate) fn refusal_recordable(&self, ip: &Caller) -> bool {
        let t = Instant::now();
        let mut budgets = lock(&self.refusal_events);
        budgets.0.take(&ip.key(), t).is_ok() && budgets.1.take(&(), t).is_ok()
    }

    /// Forgets what has expired in memory (sign-ins in progress, passkey challenges, throttle
    /// counts, rate buckets) and deletes what has passed its retention from the store: expired
    /// codes, device codes and sessions, and old sign-in events. The edge runs it periodically.
    pub async fn housekeeping(
        &self,
        now: i64,
    ) -> Result<postern_store::Pruned, postern_store::StoreError> {
        let t = Instant::now();
        lock(&self.pending).sweep(now);
        if let Some(pk) = &self.passkeys {
            pk.sweep(now);
        }
        lock(&self.account_throttle).sweep(t);
        lock(&self.ip_throttle).sweep(t);
        {
            let mut budgets = lock(&self.refusal_events);
            budgets.0.sweep(t);
            budgets.1.sweep(t);
        }
        lock(&self.device_starts).sweep(t);
        self.store
            .prune_idp(now, &postern_store::Retention::default())
            .await
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
        .layer(axum::middleware::from_fn(framing))
        .with_state(idp)
}

tokio::task_local! {
    /// The edge's ID of the request being served, for the pages that name it.
    static REQUEST_ID: String;
}

/// The edge's ID of the request being served (see [`Caller::request_id`]), if any.
pub(crate) fn request_id() -> Option<String> {
    REQUEST_ID
        .try_with(Clone::clone)
        .ok()
        .filter(|id| !id.is_empty())
}

/// The endpoints programs call, which answer RFC 6749 JSON errors rather than pages.
fn answers_json(path: &str) -> bool {
    matches!(path, "/token" | "/device_authorization" | "/userinfo")
        || path.starts_with("/signin/passkey/")
        || path.starts_with("/account/passkeys/")
}

/// Why the body of a request was refused before its handler ran, from the extractor's status.
pub(crate) fn body_refusal(status: http::StatusCode) -> String {
    match status {
        http::StatusCode::PAYLOAD_TOO_LARGE => format!(
            "The request body is larger than {} KiB, the most the sign-in service reads.",
            MAX_BODY_BYTES / 1024
        ),
        http::StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "The request body is not of the type this address reads (a form, or JSON for passkeys)."
                .to_owned()
        }
        http::StatusCode::METHOD_NOT_ALLOWED => "This page does not answer that method.".to_owned(),
        _ => "The request body could not be read: a field is missing, repeated or malformed."
            .to_owned(),
    }
}

/// Names the request in every answer (`X-Request-Id`, and on error pages), and turns the
/// extractors' bare refusals (a body over [`MAX_BODY_BYTES`], a body that is not a form, a
/// malformed form, a wrong method) into the provider's page or JSON error naming the cause.
async fn framing(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let id = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let json = answers_json(req.uri().path());
    let resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let status = resp.status();
    // axum's extractors answer in plain text, and its method check with an empty 405; the
    // provider's own answers (pages, JSON, a bare 401 with its challenge) are left alone.
    let bare = match resp.headers().get(http::header::CONTENT_TYPE) {
        Some(t) => status.is_client_error() && t.as_bytes().starts_with(b"text/plain"),
        None => status == http::StatusCode::METHOD_NOT_ALLOWED,
    };
    let mut resp = if !bare {
        resp
    } else if json {
        let mut e = token::oauth_error("invalid_request", body_refusal(status));
        e.status = status;
        e.into_response()
    } else {
        let title = match status {
            http::StatusCode::PAYLOAD_TOO_LARGE => "Request too large",
            http::StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            _ => "Bad request",
        };
        let allow = resp.headers().get(http::header::ALLOW).cloned();
        let mut page = REQUEST_ID.sync_scope(id.clone(), || {
            html::error_page(status, title, &body_refusal(status))
        });
        if let Some(allow) = allow {
            page.headers_mut().insert(http::header::ALLOW, allow);
        }
        page
    };
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        if !id.is_empty() {
            resp.headers_mut().insert("x-request-id", v);
        }
    }
    resp
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
