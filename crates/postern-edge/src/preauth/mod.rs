//! Pre-authentication: with `preauth: oidc`, only requests of signed-in, authorised users reach
//! the tunnel. A request without a valid session is sent to the app's identity provider (code
//! flow with PKCE, `state` bound to an encrypted state cookie, `nonce`); the callback at
//! `/.postern/callback` on the app's own host checks the ID token, the app's assignment and MFA
//! rules, sets the encrypted session cookie and returns the user to where they were going. API
//! clients may present a bearer token from the same issuer instead, and get 401 JSON otherwise.
//!
//! **Invariant:** the session cookie, the state cookies and the bearer token never reach the app;
//! the identity does, as `X-Postern-User`, `X-Postern-Email`, `X-Postern-Groups` and the signed
//! `X-Postern-Jwt-Assertion`, which only the edge sets (client-sent variants are stripped by
//! `hygiene` before these are added).
//! **Invariant:** `/.postern/*` on an app that requires sign-in is answered by the edge, never
//! forwarded.

pub mod access;
use access::Demand;
pub mod cookies;
mod issuer;
mod signout;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::Full;
use postern_auth::{
    AppId, AppOrigin, AssertionSigner, CookieError, Expectations, IssuerUrl, KeyRing, ReturnTo,
    Session, StateCookie, UnixTime, VerifyError,
};
use postern_policy::risk::Detection;
use postern_policy::RiskLevel;
use postern_store::{App, Assignee, CookieOptions, Store, StoreError};

use crate::state::Shared;

use crate::config::Secret;
use crate::rescue::Refusal;
use crate::state::Routes;

pub use issuer::Issuers;

/// Where the issuer sends the browser back, on the app's own host.
pub const CALLBACK_PATH: &str = "/.postern/callback";
/// Asks to confirm, and on the confirmation form's POST ends the session (and the issuer's, when
/// it offers RP-initiated logout): see `signout`.
pub const SIGNOUT_PATH: &str = "/.postern/signout";
/// Where the issuer returns the browser after signing out.
pub const SIGNED_OUT_PATH: &str = "/.postern/signed-out";
/// The edge's keys for `X-Postern-Jwt-Assertion`, on every app's host.
pub const JWKS_PATH: &str = "/.well-known/postern/jwks.json";
/// The longest a session lasts, whatever the token says.
const MAX_SESSION: Duration = Duration::from_secs(24 * 3600);
/// A state cookie lives as long as a sign-in may take.
const STATE_COOKIE_SECS: u64 = postern_auth::state_cookie::STATE_LIFETIME.as_secs();
/// Assertions are reused until this close to their expiry.
const ASSERTION_REUSE_MARGIN: Duration = Duration::from_secs(15);
/// Opened session cookies kept; past it the cache starts over.
const MAX_CACHED_SESSIONS: usize = 10_000;

/// How one app signs users in, and who may use it: part of the routing snapshot.
#[derive(Debug)]
pub struct SignIn {
    pub app_name: String,
    pub app_id: AppId,
    pub origin: AppOrigin,
    /// The app's issuer, or the built-in identity provider's.
    pub issuer: IssuerUrl,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub cookie: CookieOptions,
    /// A token without `email_verified` counts as verified (the admin vouches for the issuer).
    pub issuer_verifies_email: bool,
    users: HashSet<String>,
    groups: HashSet<String>,
}

impl SignIn {
    /// The sign-in settings of an app, or `None` (logged) when they cannot be used.
    pub fn new(app: &App, assigned: Vec<Assignee>, built_in_issuer: &str) -> Option<SignIn> {
        let oidc = app.oidc.as_ref()?;
        let built = (|| -> Result<SignIn, String> {
            let issuer = IssuerUrl::parse(oidc.issuer.as_deref().unwrap_or(built_in_issuer))
                .map_err(|e| e.to_string())?;
            let mut users = HashSet::new();
            let mut groups = HashSet::new();
            for who in assigned {
                match who {
                    Assignee::User(u) => users.insert(u.to_lowercase()),
                    Assignee::Group(g) => groups.insert(g),
                };
            }
            Ok(SignIn {
                app_name: app.name.clone(),
                app_id: AppId::new(app.id.to_string()).map_err(|e| e.to_string())?,
                origin: AppOrigin::parse(&app.external_url).map_err(|e| e.to_string())?,
                issuer,
                client_id: oidc.client_id.clone(),
                client_secret: oidc.client_secret.clone().map(Secret::new),
                cookie: app.cookie,
                issuer_verifies_email: oidc.issuer_verifies_email,
                users,
                groups,
            })
        })();
        match built {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(app = %app.name, error = %e, "the app's sign-in settings cannot be used");
                None
            }
        }
    }

    /// The callback URL registered with the issuer: `https://<app host>/.postern/callback`.
    pub fn callback_url(&self) -> url::Url {
        let mut url = self.origin.root().clone();
        url.set_path(CALLBACK_PATH);
        url
    }

    /// The session for verified `claims`: the email is kept only when verified (see
    /// [`postern_auth::IdTokenClaims::verified_email`]), so an unverified one is neither matched
    /// by assignment nor passed to the app.
    fn session(
        &self,
        claims: &postern_auth::IdTokenClaims,
        issued: UnixTime,
        expires_at: UnixTime,
    ) -> Session {
        let mut session = Session::from_claims(claims, self.app_id.clone(), issued, expires_at);
        session.email = claims
            .verified_email(self.issuer_verifies_email)
            .map(str::to_owned);
        if session.email.is_none() && claims.email.is_some() {
            tracing::debug!(app = %self.app_name, user = %claims.subject, "the token's email is not verified; it is not used");
        }
        session
    }

    /// Whether the user (by subject or email) or one of their groups is assigned to the app.
    pub fn assigned(&self, session: &Session) -> bool {
        // Decided for every request: an app with no assignments pays nothing for it.
        if self.users.is_empty() && self.groups.is_empty() {
            return false;
        }
        self.users.contains(&session.subject.to_lowercase())
            || session
                .email
                .as_ref()
                .is_some_and(|e| self.users.contains(&e.to_lowercase()))
            || session.groups.iter().any(|g| self.groups.contains(g))
    }
}

/// Whether a sign-in used more than one factor, by its `amr` (RFC 8176) and `acr`: the one
/// definition the built-in provider uses too.
pub fn used_mfa(amr: &[String], acr: Option<&str>) -> bool {
    postern_policy::Strength::of(amr, acr).multi_factor
}

/// The edge's keys and issuers for pre-authentication.
pub struct Auth {
    ring: ArcSwap<KeyRing>,
    signer: AssertionSigner,
    pub issuers: Issuers,
    /// Sessions already opened, by the exact cookie value (or `bearer:` and the exact token): a
    /// valid cookie is decrypted and a bearer token verified once, not on every request. A changed
    /// byte is another key, opened (and refused) afresh; expiry, revocation and the app's rules
    /// are still checked on every request.
    opened: Mutex<HashMap<Box<str>, Arc<Opened>>>,
    /// Records sign-ins, failures within a budget.
    pub signins: crate::signins::Recorder,
}

/// Store key-ring purposes.
const RING_SESSION: &str = "session-cookie";
const RING_ASSERTION: &str = "assertion";

impl Auth {
    /// Loads the key rings from the store, creating them on first start.
    pub async fn load(store: &Store, http: reqwest::Client) -> anyhow::Result<Auth> {
        let ring = store
            .key_ring(RING_SESSION, || KeyRing::generate().to_json().to_string())
            .await?;
        let ring = KeyRing::from_json(&ring)
            .map_err(|e| anyhow::anyhow!("the stored session cookie keys are unusable: {e}"))?;
        let signer = store
            .key_ring(RING_ASSERTION, || {
                AssertionSigner::generate().to_json().to_string()
            })
            .await?;
        let signer = AssertionSigner::from_json(&signer)
            .map_err(|e| anyhow::anyhow!("the stored assertion keys are unusable: {e}"))?;
        Ok(Auth {
            ring: ArcSwap::from_pointee(ring),
            signer,
            issuers: Issuers::new(http),
            opened: Mutex::new(HashMap::new()),
            signins: crate::signins::Recorder::default(),
        })
    }

    /// Adds a new cookie key that seals from now on; cookies sealed with older keys still open.
    pub async fn rotate_cookie_key(&self, store: &Store) -> Result<(), StoreError> {
        let mut ring = KeyRing::from_json(&self.ring.load().to_json())
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        if let Err(e) = ring.rotate() {
            return Err(StoreError::Conflict(e.to_string()));
        }
        store.save_key_ring(RING_SESSION, &ring.to_json()).await?;
        self.ring.store(Arc::new(ring));
        if let Ok(mut opened) = self.opened.lock() {
            opened.clear();
        }
        Ok(())
    }

    /// The edge's JWKS for assertions.
    pub fn jwks(&self) -> serde_json::Value {
        self.signer.jwks()
    }

    /// The session in cookie `value`, from the cache or opened now.
    fn open(&self, value: &str, app: &AppId, now: UnixTime) -> Result<Arc<Opened>, CookieError> {
        if let Some(opened) = self.cached(value, app) {
            if now >= opened.session.expires_at {
                return Err(CookieError::Expired {
                    expired_at: opened.session.expires_at,
                });
            }
            return Ok(opened);
        }
        let session = Session::open(&self.ring.load(), value, app, now)?;
        Ok(self.remember(value, Opened::new(session)))
    }

    /// A session opened earlier from exactly `key`, if it was opened for this app (the key is
    /// unique, so a session opened for another app is not this one's).
    fn cached(&self, key: &str, app: &AppId) -> Option<Arc<Opened>> {
        let cache = self.opened.lock().ok()?;
        cache.get(key).filter(|o| o.session.app == *app).cloned()
    }

    fn remember(&self, key: &str, opened: Opened) -> Arc<Opened> {
        let opened = Arc::new(opened);
        if let Ok(mut cache) = self.opened.lock() {
            if cache.len() >= MAX_CACHED_SESSIONS {
                cache.clear();
            }
            cache.insert(key.into(), opened.clone());
        }
        opened
    }

    /// The session's identity assertion: the one signed for it earlier while it has more than
    /// [`ASSERTION_REUSE_MARGIN`] to live, else a new one.
    fn assertion(&self, sign_in: &SignIn, opened: &Opened, now: UnixTime) -> Option<HeaderValue> {
        let mut cached = opened.assertion.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((exp, value)) = &*cached {
            if now.saturating_add(ASSERTION_REUSE_MARGIN) < *exp {
                return Some(value.clone());
            }
        }
        let token = match self.signer.sign(
            sign_in.origin.as_str(),
            &sign_in.origin,
            &opened.session,
            now,
        ) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an identity assertion");
                return None;
            }
        };
        let value = HeaderValue::from_str(&token).ok()?;
        let exp = now.saturating_add(postern_auth::assertion::ASSERTION_LIFETIME);
        *cached = Some((exp, value.clone()));
        Some(value)
    }
}

/// What the guard decided.
pub enum Guarded {
    /// Forward, with this identity.
    Forward(Identity),
    /// The edge answers (a redirect to sign in, the callback's redirect, sign-out).
    Answer(Response<Full<Bytes>>),
}

/// A session made ready for the request path once: the session, the keys its revocation is
/// looked up by, and the identity header values the app receives.
pub struct Opened {
    session: Session,
    /// `session:<id>`: the key a sign-out of this very session is recorded under.
    session_key: String,
    /// The email, lower-cased, as revocations by email are recorded.
    email_key: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The last assertion signed for the session, and when it expires.
    assertion: Mutex<Option<(UnixTime, HeaderValue)>>,
}

impl Opened {
    fn new(session: Session) -> Opened {
        let mut headers = Vec::with_capacity(3);
        let mut set = |name: &'static str, value: &str| match HeaderValue::from_str(value) {
            Ok(v) => headers.push((HeaderName::from_static(name), v)),
            Err(_) => tracing::warn!(
                header = name,
                "identity value is not a valid header value; left out"
            ),
        };
        set("x-postern-user", &session.subject);
        if let Some(email) = &session.email {
            set("x-postern-email", email);
        }
        if !session.groups.is_empty() {
            set("x-postern-groups", &session.groups.join(","));
        }
        Opened {
            session_key: format!("session:{}", session.id),
            email_key: session.email.as_deref().map(str::to_lowercase),
            headers,
            session,
            assertion: Mutex::new(None),
        }
    }
}

/// A signed-in user, as the app will see them.
pub struct Identity {
    opened: Arc<Opened>,
    assertion: Option<HeaderValue>,
    /// The user came with a bearer token, which is then the edge's to remove; otherwise an
    /// `Authorization` header is the app's own business and passes.
    by_bearer: bool,
}

impl Identity {
    /// The user's subject at their issuer.
    pub fn subject(&self) -> &str {
        &self.opened.session.subject
    }

    /// The user's email, when their issuer vouched for it.
    pub fn email(&self) -> Option<&str> {
        self.opened.session.email.as_deref()
    }

    /// Removes the edge's cookies and the bearer token, and sets the identity headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        cookies::strip(headers);
        if self.by_bearer {
            headers.remove(header::AUTHORIZATION);
        }
        for (name, value) in &self.opened.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(a) = &self.assertion {
            headers.insert(postern_auth::assertion::ASSERTION_HEADER, a.clone());
        }
    }
}

/// Everything the guard needs about the request.
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub json: bool,
    pub request_id: &'a str,
    pub client_ip: std::net::IpAddr,
}

/// Decides what happens to a request for an app that requires sign-in.
pub async fn guard(
    shared: &Shared,
    routes: &Routes,
    sign_in: &SignIn,
    req: &Request<'_>,
) -> Result<Guarded, Refusal> {
    let auth = &shared.auth;
    let now = UnixTime::now();
    match req.uri.path() {
        CALLBACK_PATH => {
            let mut who = None;
            let mut decided = None;
            let result = callback(shared, routes, sign_in, req, now, &mut who, &mut decided).await;
            if result.is_err() {
                postern_obs::metrics::sign_in(
                    &sign_in.app_name,
                    postern_obs::metrics::SignIn::Failure,
                );
            }
            // A callback that sent the browser back for a second factor has not ended yet.
            if who.is_some() || result.is_err() {
                record_signin(
                    shared,
                    sign_in,
                    req,
                    true,
                    who.as_ref(),
                    result.as_ref().err(),
                    decided,
                )
                .await;
            }
            return result;
        }
        SIGNOUT_PATH => return signout::signout(shared, sign_in, req, now).await,
        SIGNED_OUT_PATH => return Ok(Guarded::Answer(signed_out_page(sign_in))),
        _ => {}
    }
    if let Some(value) = cookies::get(req.headers, cookies::SESSION) {
        match auth.open(value, &sign_in.app_id, now) {
            Ok(opened) if !revoked(routes, &opened) => {
                let decision = decide(shared, routes, sign_in, req, &opened.session, now, None)?;
                match access::demand(&sign_in.app_name, &opened.session, &decision.verdict) {
                    Demand::Nothing => {}
                    Demand::Refuse(refusal) => return Err(refusal),
                    Demand::SignInAgain(refusal) if req.json => return Err(refusal),
                    Demand::SignInAgain(_) => {
                        let return_to = ReturnTo::from_request(
                            &sign_in.origin,
                            req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                        );
                        return step_up(auth, sign_in, return_to, now, None).await;
                    }
                }
                let assertion = auth.assertion(sign_in, &opened, now);
                return Ok(Guarded::Forward(Identity {
                    opened,
                    assertion,
                    by_bearer: false,
                }));
            }
            // Revoked or expired: sign in again.
            Ok(_) | Err(CookieError::Expired { .. }) => {}
            Err(e) => {
                let refusal = Refusal::SessionCookieInvalid {
                    app: sign_in.app_name.clone(),
                    reason: e.to_string(),
                };
                let mut resp = refusal.into_response(req.json, req.request_id);
                resp.headers_mut()
                    .append(header::SET_COOKIE, cookies::clear(cookies::SESSION));
                return Ok(Guarded::Answer(resp));
            }
        }
    }
    if let Some(token) = bearer(req.headers) {
        let mut fresh = None;
        let mut result = bearer_identity(auth, sign_in, token, routes, now, &mut fresh).await;
        // A token verified afresh is a sign-in: identity protection judges it once.
        let judged = match (&fresh, &result) {
            (Some(session), Ok(_)) => Some(judge(shared, req, session, now).await),
            _ => None,
        };
        let mut decided = None;
        result = result.and_then(|guarded| match &guarded {
            // A program cannot be sent to sign in again: what a policy demands is refused.
            Guarded::Forward(identity) => {
                let session = &identity.opened.session;
                let risk = judged.as_ref().map(|j| (j.sign_in, j.user));
                let decision = decide(shared, routes, sign_in, req, session, now, risk)?;
                if let Some(j) = &judged {
                    decided = Some(access::decided(&decision, j.sign_in, &j.found));
                }
                match access::demand(&sign_in.app_name, session, &decision.verdict) {
                    Demand::Nothing => Ok(guarded),
                    Demand::Refuse(refusal) | Demand::SignInAgain(refusal) => Err(refusal),
                }
            }
            Guarded::Answer(_) => Ok(guarded),
        });
        // A token is a sign-in when it is verified, not on each request it is used for.
        if fresh.is_some() || result.is_err() {
            record_signin(
                shared,
                sign_in,
                req,
                false,
                fresh.as_ref(),
                result.as_ref().err(),
                decided,
            )
            .await;
        }
        return result;
    }
    if req.json {
        return Err(Refusal::SignInRequired {
            app: sign_in.app_name.clone(),
        });
    }
    let return_to = ReturnTo::from_request(
        &sign_in.origin,
        req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
    );
    start(
        auth,
        sign_in,
        StateCookie::start(sign_in.app_id.clone(), return_to, now),
    )
    .await
}

/// Conditional access for `session` on this request: where it comes from, on what device, now,
/// and with what risk. `judged` is the (sign-in, user) risk identity protection found when the
/// sign-in was verified in this request; any other request's sign-in risk is what its address
/// shows, its user risk the snapshot's.
fn decide(
    shared: &Shared,
    routes: &Routes,
    sign_in: &SignIn,
    req: &Request<'_>,
    session: &Session,
    now: UnixTime,
    judged: Option<(RiskLevel, RiskLevel)>,
) -> Result<postern_policy::Decision, Refusal> {
    let country = shared
        .geoip
        .locate(req.client_ip)
        .and_then(|l| l.country_or_region);
    let platform = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map_or(postern_policy::Platform::Other, access::platform_of);
    let sign_in_risk = judged.map_or_else(|| shared.risk.request_risk(req.client_ip), |j| j.0);
    let user_risk = routes
        .access
        .user_risk(session)
        .max(judged.map_or(RiskLevel::None, |j| j.1));
    routes.access.decide(
        session,
        (&sign_in.app_name, sign_in.assigned(session)),
        req.client_ip,
        country.as_deref(),
        platform,
        (sign_in_risk, user_risk),
        now,
    )
}

/// Identity protection's judgement of a sign-in verified in this request.
struct Judgement {
    /// The highest level found in this sign-in.
    sign_in: RiskLevel,
    /// The user's risk as the store holds it now, with this sign-in's: what the built-in
    /// provider found at its password step moments ago counts at once, before the next reload.
    user: RiskLevel,
    found: Vec<Detection>,
}

/// Identity protection's judgement of a sign-in verified in this request (see [`crate::risk`]).
async fn judge(shared: &Shared, req: &Request<'_>, session: &Session, now: UnixTime) -> Judgement {
    let location = shared.geoip.sign_in_location(req.client_ip);
    let browser = req
        .headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .and_then(|ua| postern_policy::device_detail(&ua).1);
    let judged = crate::risk::Judged {
        session,
        issuer: if session.issuer == shared.idp.issuer {
            postern_store::BUILT_IN_ISSUER
        } else {
            &session.issuer
        },
        ip: req.client_ip,
        location: location.as_ref(),
        browser: browser.as_deref(),
        asn_of: &|ip| shared.geoip.asn(ip),
        request_id: req.request_id,
        now_ms: now.secs() as i64 * 1000,
    };
    let (mut sign_in, found) = shared.risk.judge(&shared.store, &judged).await;
    // What the built-in provider found at this sign-in's password step is this sign-in's risk
    // too (the detections it stored since the user signed in there).
    if session.issuer == shared.idp.issuer {
        // From a little before it signed in: the password step that found them came first.
        let since_ms = session.auth_time.unwrap_or(session.issued_at).secs() as i64 * 1000 - 30_000;
        match shared
            .store
            .detection_levels_since(judged.issuer, &session.subject, since_ms)
            .await
        {
            Ok(levels) => {
                for l in levels.iter().filter_map(|l| RiskLevel::parse(l)) {
                    sign_in = sign_in.max(l);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the provider's detections"),
        }
    }
    let stored = match shared
        .store
        .risky_user(judged.issuer, &session.subject, judged.now_ms)
        .await
    {
        Ok(u) => u.map_or(RiskLevel::None, |u| crate::risk::user_level(&u)),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the user's risk; the last reload's stands");
            RiskLevel::None
        }
    };
    Judgement {
        sign_in,
        user: sign_in.max(stored),
        found,
    }
}

/// Sends the browser back to the issuer, asking for a fresh sign-in with a second factor
/// (`acr_values`, `prompt=login`, `max_age=0`), once: the callback refuses what still falls short.
async fn step_up(
    auth: &Auth,
    sign_in: &SignIn,
    return_to: ReturnTo,
    now: UnixTime,
    clear_state: Option<HeaderValue>,
) -> Result<Guarded, Refusal> {
    let retry = StateCookie::start(sign_in.app_id.clone(), return_to, now).stepping_up();
    let Guarded::Answer(mut resp) = start(auth, sign_in, retry).await? else {
        unreachable!("start always answers");
    };
    if let Some(clear) = clear_state {
        resp.headers_mut().append(header::SET_COOKIE, clear);
    }
    Ok(Guarded::Answer(resp))
}

/// Whether the session was revoked: it was signed out, or its user's sessions were revoked at or
/// after the second it was issued. (A sign-in after a revocation is stamped later than it: see
/// [`issue_time`].)
fn revoked(routes: &Routes, opened: &Opened) -> bool {
    if routes.revoked.is_empty() {
        return false;
    }
    let issued = opened.session.issued_at.secs() as i64;
    let before = |principal: &str| {
        routes
            .revoked
            .get(principal)
            .is_some_and(|at| issued <= *at)
    };
    routes.revoked.contains_key(&opened.session_key)
        || before(&opened.session.subject)
        || opened.email_key.as_deref().is_some_and(before)
}

/// When a new session for `claims`' user counts as issued: now, or just after the user's last
/// revocation if that was this very second, so the new sign-in is not caught by it.
fn issue_time(routes: &Routes, subject: &str, email: Option<&str>, now: UnixTime) -> UnixTime {
    let latest = [Some(subject.to_owned()), email.map(str::to_lowercase)]
        .into_iter()
        .flatten()
        .filter_map(|p| routes.revoked.get(&p).copied())
        .max();
    match latest {
        Some(at) if at >= now.secs() as i64 => UnixTime::from_secs(at as u64 + 1),
        _ => now,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Records a sign-in at the callback (`interactive`) or by a bearer token, with what
/// conditional access and identity protection made of it when they judged it.
#[allow(clippy::too_many_arguments)]
async fn record_signin(
    shared: &Shared,
    sign_in: &SignIn,
    req: &Request<'_>,
    interactive: bool,
    who: Option<&Session>,
    refusal: Option<&Refusal>,
    decided: Option<postern_store::Decided>,
) {
    let attempt = crate::signins::Attempt {
        sign_in,
        headers: req.headers,
        client_ip: req.client_ip,
        request_id: req.request_id,
        interactive,
        location: shared.geoip.sign_in_location(req.client_ip),
        decided,
    };
    crate::signins::record(&shared.store, &shared.auth.signins, &attempt, who, refusal).await;
}

/// `fresh` is set to the token's session when it was verified in this call (not from the cache).
async fn bearer_identity(
    auth: &Auth,
    sign_in: &SignIn,
    token: &str,
    routes: &Routes,
    now: UnixTime,
    fresh: &mut Option<Session>,
) -> Result<Guarded, Refusal> {
    // A token verified earlier for this app is reused until it expires; expiry, revocation and
    // the app's rules are still checked on every request.
    let key = format!("bearer:{token}");
    let opened = match auth.cached(&key, &sign_in.app_id) {
        Some(opened) if now < opened.session.expires_at => opened,
        _ => {
            let issuer = &sign_in.issuer;
            let provider = auth.issuers.provider(issuer, &sign_in.app_name).await?;
            let expect = Expectations::bearer(issuer.as_str(), &sign_in.client_id);
            let claims = provider
                .verify(token, &expect, now)
                .await
                .map_err(|e| match e {
                    VerifyError::Token(e) => Refusal::BearerRefused {
                        app: sign_in.app_name.clone(),
                        reason: e.to_string(),
                    },
                    other => Refusal::IssuerUnavailable {
                        app: sign_in.app_name.clone(),
                        issuer: issuer.as_str().to_owned(),
                        reason: other.to_string(),
                    },
                })?;
            let mut session = sign_in.session(&claims, now, claims.expires_at);
            // A bearer token's "session" began when the token was issued.
            session.issued_at = claims.issued_at.unwrap_or(now);
            *fresh = Some(session.clone());
            auth.remember(&key, Opened::new(session))
        }
    };
    if revoked(routes, &opened) {
        return Err(Refusal::BearerRefused {
            app: sign_in.app_name.clone(),
            reason: "the user's sessions were revoked after this token was issued".into(),
        });
    }
    let assertion = auth.assertion(sign_in, &opened, now);
    Ok(Guarded::Forward(Identity {
        opened,
        assertion,
        by_bearer: true,
    }))
}

/// Sends the browser to the issuer, with a new state cookie.
async fn start(auth: &Auth, sign_in: &SignIn, pending: StateCookie) -> Result<Guarded, Refusal> {
    let issuer = &sign_in.issuer;
    let provider = auth.issuers.provider(issuer, &sign_in.app_name).await?;
    let url = issuer::authorize_url(&provider, sign_in, &pending);
    let ring = auth.ring.load();
    let mut resp = redirect(url.as_str());
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookies::state(
            &cookies::state_name(pending.state.as_str()),
            &pending.seal(&ring),
            STATE_COOKIE_SECS,
        ),
    );
    Ok(Guarded::Answer(resp))
}

/// `who` is set once the issuer has vouched for the user and no second factor is still asked;
/// `decided` once conditional access has decided the sign-in.
async fn callback(
    shared: &Shared,
    routes: &Routes,
    sign_in: &SignIn,
    req: &Request<'_>,
    now: UnixTime,
    who: &mut Option<Session>,
    decided: &mut Option<postern_store::Decided>,
) -> Result<Guarded, Refusal> {
    let auth = &shared.auth;
    let app = || sign_in.app_name.clone();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let invalid = |reason: &str| Refusal::SignInStateInvalid {
        app: app(),
        reason: reason.to_owned(),
    };
    let state = query
        .get("state")
        .ok_or_else(|| invalid("the identity provider's answer has no state"))?;
    let cookie_name = cookies::state_name(state);
    let sealed = cookies::get(req.headers, &cookie_name).ok_or_else(|| {
        invalid(
            "no sign-in was started in this browser for this answer, or it was already completed",
        )
    })?;
    let ring = auth.ring.load();
    let pending = StateCookie::open(&ring, sealed, &sign_in.app_id, now).map_err(|e| match e {
        CookieError::Expired { .. } => invalid("the sign-in took longer than 10 minutes"),
        other => invalid(&format!("the sign-in state cookie is not valid ({other})")),
    })?;
    if !pending.state.matches(state) {
        return Err(invalid(
            "the state does not match the sign-in started in this browser",
        ));
    }
    let issuer = &sign_in.issuer;
    if let Some(iss) = query.get("iss") {
        // RFC 9207: the answer names its issuer; a mix-up attack names another.
        if iss != issuer.as_str() {
            return Err(Refusal::IssuerRefused {
                app: app(),
                reason: format!("the answer came from {iss}, not {}", issuer.as_str()),
            });
        }
    }
    if let Some(error) = query.get("error") {
        let reason = match query.get("error_description") {
            Some(d) => format!("{error}: {d}"),
            None => error.clone(),
        };
        return Err(Refusal::IssuerRefused { app: app(), reason });
    }
    let code = query
        .get("code")
        .ok_or_else(|| invalid("the identity provider's answer has neither a code nor an error"))?;
    let provider = auth.issuers.provider(issuer, &sign_in.app_name).await?;
    let id_token = auth
        .issuers
        .redeem(&provider, sign_in, code, &pending)
        .await?;
    let expect =
        Expectations::id_token(issuer.as_str(), &sign_in.client_id, pending.nonce.as_str());
    let claims = provider
        .verify(&id_token, &expect, now)
        .await
        .map_err(|e| match e {
            VerifyError::Token(e) => Refusal::TokenInvalid {
                app: app(),
                reason: e.to_string(),
            },
            other => Refusal::IssuerUnavailable {
                app: app(),
                issuer: issuer.as_str().to_owned(),
                reason: other.to_string(),
            },
        })?;
    tracing::debug!(amr = ?claims.amr, acr = ?claims.acr, "ID token verified");
    let clear_state = cookies::clear(&cookie_name);
    let expires_at = claims
        .expires_at
        .min(now.saturating_add(MAX_SESSION))
        .max(now.saturating_add(Duration::from_secs(60)));
    let email = claims.verified_email(sign_in.issuer_verifies_email);
    let issued = issue_time(routes, &claims.subject, email, now);
    let session = sign_in.session(&claims, issued, expires_at);
    *who = Some(session.clone());
    let judged = judge(shared, req, &session, now).await;
    let decision = decide(
        shared,
        routes,
        sign_in,
        req,
        &session,
        now,
        Some((judged.sign_in, judged.user)),
    )?;
    *decided = Some(access::decided(&decision, judged.sign_in, &judged.found));
    match access::demand(&sign_in.app_name, &session, &decision.verdict) {
        Demand::Nothing => {}
        Demand::Refuse(refusal) => return Err(refusal),
        Demand::SignInAgain(refusal) if pending.step_up => return Err(refusal),
        Demand::SignInAgain(_) => {
            // Back to the issuer once, asking for a fresh sign-in with a second factor.
            return step_up(
                auth,
                sign_in,
                pending.return_to.clone(),
                now,
                Some(clear_state),
            )
            .await;
        }
    }
    tracing::info!(app = %sign_in.app_name, user = %session.subject, email = session.email.as_deref().unwrap_or(""), "signed in");
    postern_obs::metrics::sign_in(&sign_in.app_name, postern_obs::metrics::SignIn::Success);
    let mut resp = redirect(pending.return_to.location(&sign_in.origin).as_str());
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookies::session(
            &session.seal(&ring),
            CookieOptions {
                // A policy's "no persistent session" makes it end with the browser session.
                persistent: sign_in.cookie.persistent && !decision.session.no_persistent_session,
                ..sign_in.cookie
            },
            expires_at.secs().saturating_sub(now.secs()),
        ),
    );
    h.append(header::SET_COOKIE, clear_state);
    Ok(Guarded::Answer(resp))
}

fn signed_out_page(sign_in: &SignIn) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
<body><main><h1>You are signed out</h1><p>You signed out of {app}.</p>\
<p><a href=\"/\">Sign in again</a></p></main></body></html>\n",
        app = crate::rescue::escape(&sign_in.app_name)
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.append(header::SET_COOKIE, cookies::clear(cookies::SESSION));
    resp
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /.well-known/postern/jwks.json`: the keys that verify `X-Postern-Jwt-Assertion`.
pub fn jwks_response(auth: &Auth) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(auth.jwks().to_string())));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(amr: &[&str], acr: Option<&str>, expected: bool) {
        let amr: Vec<String> = amr.iter().map(|s| s.to_string()).collect();
        assert_eq!(used_mfa(&amr, acr), expected, "{amr:?} {acr:?}");
    }

    #[test]
    fn mfa_from_amr_and_acr() {
        check(&["pwd"], None, false);
        check(&[], None, false);
        check(&["pwd", "pwd"], None, false);
        check(&["pwd", "otp"], None, true);
        check(&["hwk", "pin"], None, true);
        check(&["mfa"], None, true);
        check(&["pwd"], Some("mfa"), true);
        check(
            &["pwd"],
            Some("http://schemas.openid.net/pape/policies/2007/06/multi-factor"),
            true,
        );
        check(&["pwd"], Some("urn:mace:incommon:iap:silver"), false);
        check(&["pwd", "unknown-method"], None, false);
    }
}
