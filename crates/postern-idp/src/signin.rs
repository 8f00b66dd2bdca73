//! The sign-in pages: email and password, then the second factor (TOTP, or enrolment at first
//! use, or a recovery code).
//!
//! An attempt is reserved in the throttles before its password or code is checked, so a burst
//! of attempts gets no more checks than the same attempts one by one; the Argon2id work runs in
//! the bounded [`crate::hashing::Hasher`]. Refusals that cost nothing (throttled, oversized,
//! busy) answer 429, 400 or 503 with `Retry-After` where waiting helps.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use postern_store::{SigninEvent, Totp};
use serde::Deserialize;

use crate::authorize::{expired_request, internal, ReqQuery};
use crate::html::{alert, escape, hidden, page, page_with_script, with_retry_after};
use crate::limits::{truncate, MAX_EMAIL_BYTES, MAX_PASSWORD_BYTES};
use crate::{cookies, mfa, now, Caller, Idp, Pending, SESSION_LIFETIME};

/// The one answer to a wrong password, an unknown email and a disabled account alike.
const BAD_CREDENTIALS: &str = "The email or password is not right. Check them and try again.";

impl Idp {
    pub(crate) async fn event(
        &self,
        email: &str,
        user_id: Option<&str>,
        ip: &Caller,
        client_id: Option<&str>,
        reason: &str,
    ) {
        let success = reason.starts_with("ok");
        postern_obs::metrics::sign_in_step_failed(client_id, success);
        // Recorded, not acted on: an overlong value is cut (the store cuts every field too).
        let email = truncate(email, MAX_EMAIL_BYTES);
        let e = SigninEvent {
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            email: email.to_owned(),
            user_id: user_id.map(str::to_owned),
            ip: ip.ip.to_string(),
            client_id: client_id.map(str::to_owned),
            outcome: if success { "success" } else { "failure" }.to_owned(),
            reason: reason.to_owned(),
            request_id: ip.request_id.clone(),
            operating_system: ip.device.0.clone(),
            browser: ip.device.1.clone(),
            location: ip.location.clone(),
        };
        if let Err(err) =
            postern_obs::metrics::timed_store("record_signin", self.store.record_signin(&e)).await
        {
            tracing::error!(error = %err, "cannot record a sign-in event");
        }
        if success {
            tracing::info!(email, reason, client = %ip.ip, "sign-in step succeeded");
        } else {
            tracing::warn!(email, reason, client = %ip.ip, "sign-in step failed");
        }
    }

    /// Records an attempt refused before any work, within the refusal budgets (see
    /// [`crate::REFUSAL_EVENTS_PER_ADDRESS`]): past them it is neither stored nor logged.
    pub(crate) async fn refusal_event(
        &self,
        email: &str,
        user_id: Option<&str>,
        ip: &Caller,
        client_id: Option<&str>,
        reason: &str,
    ) {
        if self.refusal_recordable(ip) {
            self.event(email, user_id, ip, client_id, reason).await;
        }
    }
}

impl Idp {
    /// Replaces the request's session (if any) with a new one for `user_id`, made by `amr`, and
    /// ties it to the pending sign-in `req`; returns the `Set-Cookie` that carries it.
    pub(crate) async fn start_session(
        &self,
        headers: &HeaderMap,
        req: &str,
        user_id: &str,
        amr: &[String],
    ) -> Result<HeaderValue, postern_store::StoreError> {
        if let Some((old, _)) = self.session(headers).await {
            self.store.revoke_session(&old.hash).await?;
        }
        let now = now();
        let (token, hash) = self
            .store
            .create_session(user_id, now, amr, now + SESSION_LIFETIME.as_secs() as i64)
            .await?;
        self.mark_signed_in(req, &hash);
        Ok(cookies::set(cookies::SESSION_COOKIE, Some(&token)))
    }
}

/// The passkey button of a sign-in step, shown by the page's script where WebAuthn works.
fn passkey_button(idp: &Idp, csrf: &str, req: &str, label: &str) -> String {
    if idp.passkeys.is_none() {
        return String::new();
    }
    format!(
        "<div id=\"passkey-signin\" data-csrf=\"{csrf}\" data-req=\"{req}\" hidden>\
         <p class=\"or\">or</p><button type=\"button\" id=\"passkey-button\">{label}</button>\
         <p class=\"error\" role=\"alert\" id=\"passkey-error\" hidden></p></div>",
        csrf = escape(csrf),
        req = escape(req),
        label = escape(label),
    )
}

fn with_cookie(mut resp: Response, cookie: Option<http::HeaderValue>) -> Response {
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

fn password_page(
    idp: &Idp,
    status: StatusCode,
    csrf: &str,
    req: &str,
    p: &Pending,
    email: &str,
    error: Option<&str>,
) -> Response {
    let autofocus_email = if email.is_empty() { " autofocus" } else { "" };
    let autofocus_pw = if email.is_empty() { "" } else { " autofocus" };
    let described = if error.is_some() {
        " aria-describedby=\"error\""
    } else {
        ""
    };
    page_with_script(
        status,
        "Sign in",
        &format!(
            "<h1>Sign in</h1><p>to continue to <strong>{app}</strong></p>{alert}\
             <form method=\"post\" action=\"/signin\">{hidden}\
             <label for=\"email\">Email</label>\
             <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{email}\"{autofocus_email}{described}>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{autofocus_pw}{described}>\
             <button type=\"submit\">Sign in</button></form>{passkey}",
            app = escape(&p.client_name),
            alert = alert(error),
            hidden = hidden(csrf, req),
            email = escape(email),
            passkey = passkey_button(idp, csrf, req, "Sign in with a passkey"),
        ),
        idp.passkeys.is_some(),
    )
}

/// `GET /signin?req=ID`.
pub async fn form(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Query(q): Query<ReqQuery>,
) -> Response {
    let Some(p) = idp.pending(&q.req) else {
        return expired_request();
    };
    let (csrf, cookie) = cookies::csrf_token(&headers);
    let email = idp
        .session(&headers)
        .await
        .map(|(_, u)| u.email)
        .unwrap_or_default();
    with_cookie(
        password_page(&idp, StatusCode::OK, &csrf, &q.req, &p, &email, None),
        cookie,
    )
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    req: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub(crate) fn csrf_refused() -> Response {
    crate::html::error_page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form could not be verified (its security token is missing or wrong, or cookies are blocked). Go back, reload the page and try again.",
    )
}

fn wait_message(r: &crate::throttle::Refused) -> String {
    let secs = r.retry_after.as_secs().max(1);
    if r.locked_out {
        format!("Too many failed attempts: sign-in is locked for {secs} seconds. Try again later.")
    } else {
        format!("Too many failed attempts. Wait {secs} seconds, then try again.")
    }
}

fn busy_message(b: &crate::hashing::Busy) -> String {
    format!(
        "The sign-in service is busy. Wait {} seconds, then try again.",
        b.retry_after.as_secs().max(1)
    )
}

/// `POST /signin`.
pub async fn submit(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    if !cookies::csrf_ok(&headers, &f.csrf) {
        return csrf_refused();
    }
    let Some(p) = idp.pending(&f.req) else {
        return expired_request();
    };
    let email = f.email.trim().to_ascii_lowercase();
    let client_id = p.client();
    let page = |status, email: &str, message: &str| {
        password_page(&idp, status, &f.csrf, &f.req, &p, email, Some(message))
    };
    // No account has a longer email, and no password is longer: refused before any work, and
    // the answer says nothing about any account.
    let oversized = if email.len() > MAX_EMAIL_BYTES {
        Some(("email", MAX_EMAIL_BYTES))
    } else if f.password.len() > MAX_PASSWORD_BYTES {
        Some(("password", MAX_PASSWORD_BYTES))
    } else {
        None
    };
    if let Some((field, max)) = oversized {
        idp.refusal_event(&email, None, &ip, client_id, "oversized_input")
            .await;
        let shown = if field == "email" { "" } else { email.as_str() };
        return page(
            StatusCode::BAD_REQUEST,
            shown,
            &format!("The {field} is longer than {max} bytes. Check it and try again."),
        );
    }
    // The attempt counts as a failure from here on, before the hash: attempts arriving
    // together see each other.
    if let Err(refused) = idp.reserve_attempt(Some(&email), &ip) {
        idp.refusal_event(&email, None, &ip, client_id, "throttled")
            .await;
        return with_retry_after(
            page(
                StatusCode::TOO_MANY_REQUESTS,
                &email,
                &wait_message(&refused),
            ),
            refused.retry_after,
        );
    }
    let creds = match idp.store.user_credentials(&email).await {
        Ok(c) => c,
        Err(e) => {
            idp.attempt_not_made(Some(&email), &ip);
            return internal(e);
        }
    };
    let hash = creds.as_ref().map(|(_, h)| h.clone());
    let matched = match idp.hasher.verify(f.password.clone(), hash).await {
        Ok(m) => m,
        Err(busy) => {
            idp.attempt_not_made(Some(&email), &ip);
            idp.refusal_event(&email, None, &ip, client_id, "busy")
                .await;
            return with_retry_after(
                page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &email,
                    &busy_message(&busy),
                ),
                busy.retry_after,
            );
        }
    };
    let failure = match &creds {
        None => Some("unknown_user"),
        Some(_) if !matched => Some("bad_password"),
        Some((u, _)) if !u.enabled => Some("disabled"),
        Some(_) => None,
    };
    let user_id = creds.as_ref().map(|(u, _)| u.id.as_str());
    if let Some(reason) = failure {
        // The reservation stands as the failure.
        idp.event(&email, user_id, &ip, client_id, reason).await;
        idp.judge_password(&email, user_id, &ip, None).await;
        return page(StatusCode::UNAUTHORIZED, &email, BAD_CREDENTIALS);
    }
    let Some((user, _)) = creds else {
        return internal("a user vanished during sign-in");
    };
    idp.attempt_succeeded(Some(&email), &ip);
    idp.event(&email, Some(&user.id), &ip, client_id, "ok_password")
        .await;
    let found = idp
        .judge_password(&email, Some(&user.id), &ip, Some(&f.password))
        .await;
    let cookie = match idp
        .start_session(&headers, &f.req, &user.id, &["pwd".to_owned()])
        .await
    {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    // After the session exists: its risk stays with it, for every request it makes.
    idp.mark_risk(&f.req, postern_policy::risk::level_of(&found));
    with_cookie(
        Redirect::to(&format!("/continue?req={}", f.req)).into_response(),
        Some(cookie),
    )
}

fn code_page(idp: &Idp, csrf: &str, req: &str, p: &Pending, error: Option<&str>) -> Response {
    let described = if error.is_some() {
        " aria-describedby=\"error\""
    } else {
        ""
    };
    page_with_script(
        if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK },
        "Verification code",
        &format!(
            "<h1>Verification code</h1><p>to continue to <strong>{app}</strong></p>{alert}\
             <form method=\"post\" action=\"/signin/mfa\">{hidden}\
             <label for=\"code\">6-digit code from your authenticator app, or a recovery code</label>\
             <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus{described}>\
             <button type=\"submit\">Verify</button></form>{passkey}",
            app = escape(&p.client_name),
            alert = alert(error),
            hidden = hidden(csrf, req),
            passkey = passkey_button(idp, csrf, req, "Use a passkey instead"),
        ),
        idp.passkeys.is_some(),
    )
}

fn enrol_page(
    idp: &Idp,
    csrf: &str,
    req: &str,
    p: &Pending,
    secret: &postern_store::TotpSecret,
    email: &str,
    error: Option<&str>,
) -> Response {
    let uri = mfa::provisioning_uri(secret, email).unwrap_or_default();
    let svg = mfa::qr_svg(&uri).unwrap_or_default();
    // The XML declaration is not allowed inside HTML.
    let svg = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => "",
    };
    let described = if error.is_some() {
        " aria-describedby=\"error\""
    } else {
        ""
    };
    page_with_script(
        if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK },
        "Set up two-step verification",
        &format!(
            "<h1>Set up two-step verification</h1>\
             <p><strong>{app}</strong> asks for a second step when you sign in. Scan this QR code with an authenticator app, or type the key below into it.</p>\
             <figure role=\"img\" aria-label=\"QR code of the authenticator key\">{svg}</figure>\
             <p>Key: <code class=\"secret\" id=\"secret\">{key}</code></p>{alert}\
             <form method=\"post\" action=\"/signin/mfa\">{hidden}\
             <label for=\"code\">6-digit code the app now shows</label>\
             <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus{described}>\
             <button type=\"submit\">Confirm</button></form>{passkey}",
            app = escape(&p.client_name),
            key = escape(&secret.0),
            alert = alert(error),
            hidden = hidden(csrf, req),
            passkey = passkey_button(idp, csrf, req, "Use a passkey instead"),
        ),
        idp.passkeys.is_some(),
    )
}

/// `GET /signin/mfa?req=ID`: the code form, or enrolment if the user has no authenticator.
pub async fn mfa_form(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Query(q): Query<ReqQuery>,
) -> Response {
    let Some(p) = idp.pending(&q.req) else {
        return expired_request();
    };
    let Some((_, user)) = idp.session(&headers).await else {
        return Redirect::to(&format!("/signin?req={}", q.req)).into_response();
    };
    let (csrf, cookie) = cookies::csrf_token(&headers);
    let resp = match idp.store.totp(&user.id).await {
        Ok(Totp::Confirmed(_)) => code_page(&idp, &csrf, &q.req, &p, None),
        Ok(Totp::Pending(secret)) => {
            enrol_page(&idp, &csrf, &q.req, &p, &secret, &user.email, None)
        }
        Ok(Totp::None) => {
            let secret = mfa::new_secret();
            if let Err(e) = idp.store.begin_totp(&user.id, &secret).await {
                return internal(e);
            }
            enrol_page(&idp, &csrf, &q.req, &p, &secret, &user.email, None)
        }
        Err(e) => return internal(e),
    };
    with_cookie(resp, cookie)
}

/// Longest second-factor code accepted: a TOTP code is 6 digits, a recovery code 11 characters
/// with its dash; spaces a user may type fit too.
const MAX_CODE_BYTES: usize = 64;

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    req: String,
    #[serde(default)]
    code: String,
}

fn unix_secs() -> u64 {
    now().max(0) as u64
}

/// `POST /signin/mfa`.
pub async fn mfa_submit(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    if !cookies::csrf_ok(&headers, &f.csrf) {
        return csrf_refused();
    }
    let Some(p) = idp.pending(&f.req) else {
        return expired_request();
    };
    let Some((session, user)) = idp.session(&headers).await else {
        return Redirect::to(&format!("/signin?req={}", f.req)).into_response();
    };
    let client_id = p.client();
    // Codes are throttled like passwords, under their own key, so guessing 6 digits is slow;
    // reserved before the check, so a burst of guesses gets no more checks than one by one.
    let key = format!("otp:{}", user.id);
    if f.code.len() > MAX_CODE_BYTES {
        let mut resp = code_page(&idp, &f.csrf, &f.req, &p, Some("That code is too long."));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    }
    if let Err(refused) = idp.reserve_attempt(Some(&key), &ip) {
        idp.refusal_event(&user.email, Some(&user.id), &ip, client_id, "throttled")
            .await;
        let mut resp = code_page(&idp, &f.csrf, &f.req, &p, Some(&wait_message(&refused)));
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return with_retry_after(resp, refused.retry_after);
    }
    let totp = match idp.store.totp(&user.id).await {
        Ok(t) => t,
        Err(e) => {
            idp.attempt_not_made(Some(&key), &ip);
            return internal(e);
        }
    };
    let code = f.code.trim();
    let (ok, reason, recovery_codes) = match &totp {
        Totp::Confirmed(_) if mfa::looks_like_recovery_code(code) => {
            match idp
                .store
                .use_recovery_code(&user.id, &mfa::recovery_code_hash(code))
                .await
            {
                Ok(true) => (true, "ok_recovery_code", None),
                Ok(false) => (false, "bad_recovery_code", None),
                Err(e) => return internal(e),
            }
        }
        Totp::Confirmed(secret) => match mfa::matching_step(secret, code, unix_secs()) {
            Some(step) => match idp.store.use_totp_step(&user.id, step as i64).await {
                Ok(true) => (true, "ok_otp", None),
                Ok(false) => (false, "replayed_otp", None),
                Err(e) => return internal(e),
            },
            None => (false, "bad_otp", None),
        },
        Totp::Pending(secret) => {
            let step = mfa::matching_step(secret, code, unix_secs());
            let fresh = match step {
                Some(step) => match idp.store.use_totp_step(&user.id, step as i64).await {
                    Ok(fresh) => fresh,
                    Err(e) => return internal(e),
                },
                None => false,
            };
            if fresh {
                let codes = mfa::new_recovery_codes();
                let hashes: Vec<String> =
                    codes.iter().map(|c| mfa::recovery_code_hash(c)).collect();
                if let Err(e) = idp.store.confirm_totp(&user.id, &hashes).await {
                    return internal(e);
                }
                (true, "ok_otp_enrolled", Some(codes))
            } else {
                (false, "bad_otp", None)
            }
        }
        Totp::None => {
            idp.attempt_not_made(Some(&key), &ip);
            return Redirect::to(&format!("/signin/mfa?req={}", f.req)).into_response();
        }
    };
    idp.event(&user.email, Some(&user.id), &ip, client_id, reason)
        .await;
    if !ok {
        // The reservation stands as the failure.
        let message = "That code is not right. Enter the code your authenticator app shows now.";
        return match &totp {
            Totp::Pending(secret) => enrol_page(
                &idp,
                &f.csrf,
                &f.req,
                &p,
                secret,
                &user.email,
                Some(message),
            ),
            _ => code_page(&idp, &f.csrf, &f.req, &p, Some(message)),
        };
    }
    idp.attempt_succeeded(Some(&key), &ip);
    let mut amr = session.amr.clone();
    for m in ["otp", "mfa"] {
        if !amr.iter().any(|a| a == m) {
            amr.push(m.to_owned());
        }
    }
    if let Err(e) = idp
        .store
        .update_session_auth(&session.hash, now(), &amr)
        .await
    {
        return internal(e);
    }
    match recovery_codes {
        Some(codes) => recovery_codes_page(&f.req, &codes),
        None => Redirect::to(&format!("/continue?req={}", f.req)).into_response(),
    }
}

fn recovery_codes_page(req: &str, codes: &[String]) -> Response {
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", escape(c)))
        .collect();
    page(
        StatusCode::OK,
        "Recovery codes",
        &format!(
            "<h1>Save your recovery codes</h1>\
             <p>Two-step verification is on. If you lose your authenticator, each of these codes signs you in once. They are shown only now: store them somewhere safe.</p>\
             <ul id=\"recovery-codes\">{items}</ul>\
             <p><a href=\"/continue?req={req}\" autofocus>Continue</a></p>",
            req = escape(req),
        ),
    )
}
