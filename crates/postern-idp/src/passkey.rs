//! Passkeys (WebAuthn, verified by `webauthn-rs`): enrolment from the account page, and
//! username-less sign-in from the sign-in and second-factor pages.
//!
//! A passkey sign-in is multi-factor by itself: the authenticator proves possession of the key
//! and, because user verification is required, a PIN or biometric check. Its `amr` is `hwk` (a
//! device-bound key) or `swk` (a key that may be synced between devices, as its backup-eligible
//! flag says), with `mfa`.
//!
//! The ceremony state (the challenge) is kept in memory for [`CEREMONY_LIFETIME`] and used once,
//! in a [`crate::bounded::Table`] capped per address and per client ([`CEREMONY_CAPS`]).
//! The pages work without JavaScript for passwords; the passkey button appears only where the
//! browser has WebAuthn and scripts run (`/static/passkey.js`).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use url::Url;
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Webauthn, WebauthnBuilder,
};

use crate::bounded::{Caps, Table};
use crate::{cookies, now, Caller, Idp};

/// How long a started ceremony (a challenge shown to the authenticator) may be finished.
pub const CEREMONY_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Ceremonies kept, so a flood of starts cannot grow memory unbounded: an address may have 32
/// under way (a person presses the button a few times at most), a client 5,000, all together
/// 20,000. Past a cap the oldest goes.
pub const CEREMONY_CAPS: Caps = Caps {
    max_entries: 20_000,
    max_bytes: 16 * 1024 * 1024,
    per_address: 32,
    per_client: 5_000,
    lifetime_secs: CEREMONY_LIFETIME.as_secs() as i64,
};
/// What one ceremony's state holds, for the table's byte bound: a 32-byte challenge, the
/// verifier's policy and, for an enrolment, the user's credentials to exclude.
const CEREMONY_BYTES: usize = 1024;
/// Longest name a user may give a passkey.
const MAX_NAME_CHARS: usize = 60;

/// The relying party and the ceremonies in progress.
pub struct Passkeys {
    webauthn: Webauthn,
    registrations: Ceremonies<(String, PasskeyRegistration)>,
    authentications: Ceremonies<DiscoverableAuthentication>,
}

struct Ceremonies<T>(Mutex<Table<T>>);

impl<T> Ceremonies<T> {
    fn new() -> Self {
        Ceremonies(Mutex::new(Table::new(CEREMONY_CAPS)))
    }

    /// Keeps a ceremony's state for the caller at `address`, counted against `client` (the
    /// client of the sign-in, or the account page).
    fn insert(&self, state: T, address: IpAddr, client: &str) -> String {
        let id = crate::authorize_id();
        crate::lock(&self.0).insert(id.clone(), state, address, client, CEREMONY_BYTES, now());
        id
    }

    /// Takes a ceremony's state out: each challenge is answered at most once.
    fn take(&self, id: &str) -> Option<T> {
        crate::lock(&self.0).take(id, now())
    }

    fn sweep(&self, now: i64) {
        crate::lock(&self.0).sweep(now);
    }
}

impl Passkeys {
    /// Forgets the ceremonies that have expired.
    pub(crate) fn sweep(&self, now: i64) {
        self.registrations.sweep(now);
        self.authentications.sweep(now);
    }

    /// The relying party for the provider at `issuer`: its ID is the issuer's host name, and only
    /// the issuer's own origin may answer. `None` (passkeys off) when the host cannot be an RP ID
    /// (an IP address).
    pub fn new(issuer: &str) -> Option<Passkeys> {
        let origin = Url::parse(issuer).ok()?;
        let host = match origin.host()? {
            url::Host::Domain(d) => d.to_owned(),
            _ => {
                tracing::warn!(
                    issuer,
                    "passkeys are off: the sign-in host is an IP address"
                );
                return None;
            }
        };
        let built = WebauthnBuilder::new(&host, &origin).and_then(|b| b.rp_name("Postern").build());
        match built {
            Ok(webauthn) => Some(Passkeys {
                webauthn,
                registrations: Ceremonies::new(),
                authentications: Ceremonies::new(),
            }),
            Err(e) => {
                tracing::warn!(issuer, error = %e, "passkeys are off");
                None
            }
        }
    }
}

/// The WebAuthn user handle of a directory user: derived from their stable ID, so it needs no
/// column of its own and never reveals the email.
pub fn user_handle(user_id: &str) -> Uuid {
    let digest = Sha256::digest(format!("postern-webauthn-user:{user_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The methods a passkey sign-in proves, for the session's `amr`.
pub fn amr(backup_eligible: bool) -> Vec<String> {
    let key = if backup_eligible { "swk" } else { "hwk" };
    vec![key.to_owned(), "mfa".to_owned()]
}

/// A JSON error for the page's script to show: a stable code and a sentence for the user.
pub(crate) fn refused(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = (status, Json(json!({ "error": code, "message": message }))).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn no_passkeys() -> Response {
    refused(
        StatusCode::NOT_FOUND,
        "passkeys_unavailable",
        "Passkeys are not available on this sign-in service (its host name is an IP address).",
    )
}

fn csrf_refused() -> Response {
    refused(
        StatusCode::FORBIDDEN,
        "csrf",
        "This page could not be verified (its security token is missing or wrong, or cookies are blocked). Reload the page and try again.",
    )
}

/// The relying party, once the request's CSRF token is checked: every ceremony call starts here.
fn checked<'a>(
    idp: &'a Idp,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<&'a Passkeys, Box<Response>> {
    let Some(pk) = &idp.passkeys else {
        return Err(Box::new(no_passkeys()));
    };
    if !cookies::csrf_ok(headers, csrf) {
        return Err(Box::new(csrf_refused()));
    }
    Ok(pk)
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "identity provider error (passkeys)");
    refused(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "The sign-in service could not complete the request; try again. The edge's log has the details.",
    )
}

// Sign-in ----------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct SigninStart {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    req: String,
}

/// `POST /signin/passkey/start`: a challenge for any passkey of this site.
pub async fn signin_start(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
    Json(f): Json<SigninStart>,
) -> Response {
    let pk = match checked(&idp, &headers, &f.csrf) {
        Ok(pk) => pk,
        Err(resp) => return *resp,
    };
    let Some(p) = idp.pending(&f.req) else {
        return expired();
    };
    match pk.webauthn.start_discoverable_authentication() {
        Ok((rcr, state)) => {
            let ceremony = pk.authentications.insert(state, ip.key(), &p.client_id);
            // Only the options: the page asks when the user presses the button, not through
            // the browser's autofill (the `mediation` the library sets).
            Json(json!({ "ceremony": ceremony, "publicKey": rcr.public_key })).into_response()
        }
        Err(e) => internal(e),
    }
}

fn ceremony_expired() -> Response {
    refused(
        StatusCode::BAD_REQUEST,
        "ceremony_expired",
        "This passkey request expired or was already used. Press the button again.",
    )
}

fn expired() -> Response {
    refused(
        StatusCode::BAD_REQUEST,
        "expired",
        "This sign-in was started too long ago or is unknown. Go back to the application and start again.",
    )
}

#[derive(Deserialize)]
pub struct SigninFinish {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    req: String,
    #[serde(default)]
    ceremony: String,
    credential: serde_json::Value,
}

const NOT_ACCEPTED: &str = "This passkey was not accepted. It may have been removed from your account: sign in with your password instead.";

/// `POST /signin/passkey/finish`: verifies the authenticator's answer and signs the user in.
pub async fn signin_finish(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
    Json(f): Json<SigninFinish>,
) -> Response {
    let pk = match checked(&idp, &headers, &f.csrf) {
        Ok(pk) => pk,
        Err(resp) => return *resp,
    };
    let Some(p) = idp.pending(&f.req) else {
        return expired();
    };
    let client_id = p.client();
    // Reserved in the address's throttle before any verification, like a password attempt.
    if let Err(r) = idp.reserve_attempt(None, &ip) {
        idp.refusal_event("", None, &ip, client_id, "throttled")
            .await;
        let message = format!(
            "Too many failed attempts from your network. Wait {} seconds, then try again.",
            r.retry_after.as_secs().max(1)
        );
        return crate::html::with_retry_after(
            refused(StatusCode::TOO_MANY_REQUESTS, "throttled", &message),
            r.retry_after,
        );
    }
    let Some(state) = pk.authentications.take(&f.ceremony) else {
        idp.attempt_not_made(None, &ip);
        return ceremony_expired();
    };
    // A failure of the provider itself is no failed attempt.
    let not_made = |e: String| {
        idp.attempt_not_made(None, &ip);
        internal(e)
    };
    let fail = |email: String, user_id: Option<String>, reason: &'static str| {
        let idp = idp.clone();
        let client_id = client_id.map(str::to_owned);
        let ip = ip.clone();
        async move {
            // The reservation stands as the failure.
            idp.event(
                &email,
                user_id.as_deref(),
                &ip,
                client_id.as_deref(),
                reason,
            )
            .await;
            refused(StatusCode::UNAUTHORIZED, reason, NOT_ACCEPTED)
        }
    };
    let Ok(credential) = serde_json::from_value::<PublicKeyCredential>(f.credential) else {
        return fail(String::new(), None, "malformed_passkey").await;
    };
    let Ok((handle, cred_id)) = pk
        .webauthn
        .identify_discoverable_authentication(&credential)
    else {
        return fail(String::new(), None, "malformed_passkey").await;
    };
    let stored = match idp.store.passkey(&b64(cred_id)).await {
        Ok(Some(s)) => s,
        Ok(None) => return fail(String::new(), None, "unknown_passkey").await,
        Err(e) => return not_made(e.to_string()),
    };
    let user = match idp.store.user_by_id(&stored.user_id).await {
        Ok(u) => u,
        Err(e) => return not_made(e.to_string()),
    };
    if user_handle(&user.id) != handle {
        return fail(user.email, Some(user.id), "passkey_user_mismatch").await;
    }
    let mut passkey: Passkey = match serde_json::from_str(&stored.data) {
        Ok(p) => p,
        Err(e) => return not_made(format!("stored passkey {} does not parse: {e}", stored.id)),
    };
    let result = match pk.webauthn.finish_discoverable_authentication(
        &credential,
        state,
        &[DiscoverableKey::from(&passkey)],
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, passkey = %stored.id, "passkey assertion refused");
            return fail(user.email, Some(user.id), "bad_passkey").await;
        }
    };
    if !user.enabled {
        return fail(user.email, Some(user.id), "disabled").await;
    }
    passkey.update_credential(&result);
    idp.attempt_succeeded(None, &ip);
    let data = match serde_json::to_string(&passkey) {
        Ok(d) => d,
        Err(e) => return internal(e),
    };
    let now = now();
    if let Err(e) = idp.store.passkey_used(&stored.id, &data, now).await {
        return internal(e);
    }
    idp.event(&user.email, Some(&user.id), &ip, client_id, "ok_passkey")
        .await;
    let cookie = match idp
        .start_session(&headers, &f.req, &user.id, &amr(result.backup_eligible()))
        .await
    {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let mut resp = Json(json!({ "redirect": format!("/continue?req={}", f.req) })).into_response();
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    resp
}

// Enrolment --------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct EnrolStart {
    #[serde(default)]
    csrf: String,
}

/// `POST /account/passkeys/start`: a registration challenge for the signed-in user.
pub async fn enrol_start(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
    Json(f): Json<EnrolStart>,
) -> Response {
    let pk = match checked(&idp, &headers, &f.csrf) {
        Ok(pk) => pk,
        Err(resp) => return *resp,
    };
    let Some((session, user)) = idp.recent_session(&headers).await else {
        return sign_in_again();
    };
    let existing = match idp.store.passkeys(&user.id).await {
        Ok(list) => list,
        Err(e) => return internal(e),
    };
    let exclude = existing
        .iter()
        .filter_map(|p| serde_json::from_str::<Passkey>(&p.data).ok())
        .map(|p| p.cred_id().clone())
        .collect::<Vec<_>>();
    let started = pk.webauthn.start_passkey_registration(
        user_handle(&user.id),
        &user.email,
        &user.display_name,
        Some(exclude),
    );
    match started {
        Ok((ccr, state)) => {
            let mut options = match serde_json::to_value(&ccr.public_key) {
                Ok(o) => o,
                Err(e) => return internal(e),
            };
            // A discoverable credential, so the user can sign in without typing their email.
            // (The library leaves this to the authenticator; the options travel as JSON, so it
            // is set there.)
            options["authenticatorSelection"]["residentKey"] = json!("required");
            options["authenticatorSelection"]["requireResidentKey"] = json!(true);
            let ceremony = pk
                .registrations
                .insert((session.hash, state), ip.key(), "account");
            Json(json!({ "ceremony": ceremony, "publicKey": options })).into_response()
        }
        Err(e) => internal(e),
    }
}

fn sign_in_again() -> Response {
    refused(
        StatusCode::UNAUTHORIZED,
        "reauthenticate",
        "Adding a passkey needs a recent sign-in. Reload the page to sign in again.",
    )
}

#[derive(Deserialize)]
pub struct EnrolFinish {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    name: String,
    credential: serde_json::Value,
}

/// `POST /account/passkeys/finish`: verifies the new credential and stores it.
pub async fn enrol_finish(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
    Json(f): Json<EnrolFinish>,
) -> Response {
    let pk = match checked(&idp, &headers, &f.csrf) {
        Ok(pk) => pk,
        Err(resp) => return *resp,
    };
    let Some((session, user)) = idp.recent_session(&headers).await else {
        return sign_in_again();
    };
    let name = f.name.trim();
    let name = if name.is_empty() { "Passkey" } else { name };
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return refused(
            StatusCode::BAD_REQUEST,
            "bad_name",
            &format!("Name the passkey in at most {MAX_NAME_CHARS} characters, on one line."),
        );
    }
    let state = match pk.registrations.take(&f.ceremony) {
        Some((hash, state)) if hash == session.hash => state,
        _ => return ceremony_expired(),
    };
    let refused_reg = |reason: &str| {
        refused(
            StatusCode::BAD_REQUEST,
            reason,
            "Your browser's answer could not be verified, so no passkey was added. Try again.",
        )
    };
    let Ok(credential) = serde_json::from_value::<RegisterPublicKeyCredential>(f.credential) else {
        return refused_reg("malformed_passkey");
    };
    let passkey = match pk.webauthn.finish_passkey_registration(&credential, &state) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, user = %user.email, "passkey registration refused");
            return refused_reg("bad_passkey");
        }
    };
    let data = match serde_json::to_string(&passkey) {
        Ok(d) => d,
        Err(e) => return internal(e),
    };
    match idp
        .store
        .add_passkey(&user.id, &b64(passkey.cred_id()), name, &data)
        .await
    {
        Ok(stored) => {
            idp.event(
                &user.email,
                Some(&user.id),
                &ip,
                None,
                "ok_passkey_enrolled",
            )
            .await;
            Json(json!({ "id": stored.id, "name": stored.name })).into_response()
        }
        Err(postern_store::StoreError::Conflict(_)) => refused(
            StatusCode::CONFLICT,
            "passkey_exists",
            "This passkey is registered already.",
        ),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_handle_is_stable_and_distinct_per_user() {
        assert_eq!(user_handle("u_1"), user_handle("u_1"));
        assert_ne!(user_handle("u_1"), user_handle("u_2"));
    }

    #[test]
    fn amr_names_the_kind_of_key_and_counts_as_mfa() {
        assert_eq!(amr(false), ["hwk", "mfa"]);
        assert_eq!(amr(true), ["swk", "mfa"]);
    }

    #[test]
    fn the_relying_party_is_the_issuer_host_and_never_an_ip() {
        assert!(Passkeys::new("https://login.example.com").is_some());
        assert!(Passkeys::new("https://login.localhost:8443").is_some());
        assert!(Passkeys::new("https://127.0.0.1:8443").is_none());
    }

    #[test]
    fn a_ceremony_is_answered_once() {
        let c = Ceremonies::new();
        let id = c.insert(7, IpAddr::from([127, 0, 0, 1]), "c");
        assert_eq!(c.take(&id), Some(7));
        assert_eq!(c.take(&id), None);
        assert_eq!(c.take("unknown"), None);
    }
}
