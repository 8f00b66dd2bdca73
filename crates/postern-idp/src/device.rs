//! The device authorization grant (RFC 8628): the device asks for a code pair, the user enters
//! the user code at `/device`, signs in and approves; the device polls the token endpoint.
//!
//! Anyone may start one for a public client, and each is a row in the store until it expires,
//! so starts are limited per address ([`crate::DEVICE_STARTS_PER_ADDRESS`]), the scope is
//! limited in size, and the store keeps a bounded number per client and per address (the
//! oldest pending one goes).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use postern_store::{AuthContext, DeviceStatus, NewDevice};
use serde::Deserialize;

use crate::authorize::{acr, expired_request, internal, Pending, Purpose};
use crate::html::{alert, error_page, escape, hidden, page, with_retry_after};
use crate::limits::MAX_SCOPE_BYTES;
use crate::signin::csrf_refused;
use crate::token::{authenticate_client, oauth_error};
use crate::{cookies, now, Idp, DEVICE_CODE_LIFETIME, DEVICE_POLL_INTERVAL};

/// User codes use consonants only (RFC 8628 section 6.1: no vowels, so no words, and no
/// look-alike digits); 8 of 20 letters is about 34 bits, enough with throttled entry and a
/// ten-minute life.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn new_user_code() -> String {
    let c: Vec<u8> = (0..8)
        .map(|_| USER_CODE_ALPHABET[rand::random::<usize>() % USER_CODE_ALPHABET.len()])
        .collect();
    let s = String::from_utf8_lossy(&c);
    format!("{}-{}", &s[..4], &s[4..])
}

/// Normalises what a user typed: case and separators do not matter.
pub fn normalise_user_code(input: &str) -> String {
    let c: String = input
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if c.len() == 8 {
        format!("{}-{}", &c[..4], &c[4..])
    } else {
        c
    }
}

/// `POST /device_authorization`.
pub async fn start(
    State(idp): State<Arc<Idp>>,
    axum::Extension(ip): axum::Extension<crate::Caller>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => return crate::token::form_refusal(&e).into_response(),
    };
    let scope = form
        .get("scope")
        .cloned()
        .unwrap_or_else(|| "openid".to_owned());
    if scope.len() > MAX_SCOPE_BYTES {
        return oauth_error(
            "invalid_request",
            format!("scope is longer than the {MAX_SCOPE_BYTES} bytes allowed"),
        )
        .into_response();
    }
    if let Err(wait) = idp.device_start_allowed(&ip) {
        let mut resp = oauth_error(
            "slow_down",
            format!(
                "too many device authorizations from this address; try again in {} s",
                wait.as_secs().max(1)
            ),
        )
        .into_response();
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return with_retry_after(resp, wait);
    }
    let client = match authenticate_client(&idp, &headers, &form).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let expires_in = DEVICE_CODE_LIFETIME.as_secs() as i64;
    for _ in 0..5 {
        let now = now();
        let new = NewDevice {
            client_id: client.client_id.clone(),
            scope: scope.clone(),
            user_code: new_user_code(),
            requester: ip.key().to_string(),
            expires_at: now + expires_in,
            interval_secs: DEVICE_POLL_INTERVAL.as_secs() as i64,
        };
        let user_code = new.user_code.clone();
        match idp.store.create_device(&new, now).await {
            Ok(device_code) => {
                let verification_uri = idp.url("/device");
                return Json(serde_json::json!({
                    "device_code": device_code,
                    "user_code": user_code,
                    "verification_uri": verification_uri,
                    "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
                    "expires_in": expires_in,
                    "interval": DEVICE_POLL_INTERVAL.as_secs(),
                }))
                .into_response();
            }
            Err(postern_store::StoreError::Conflict(_)) => continue,
            Err(e) => return internal(e),
        }
    }
    internal("could not draw a free user code")
}

fn code_entry_page(status: StatusCode, csrf: &str, code: &str, error: Option<&str>) -> Response {
    page(
        status,
        "Connect a device",
        &format!(
            "<h1>Connect a device</h1><p>Enter the code the device shows.</p>{alert}\
             <form method=\"post\" action=\"/device\">{hidden}\
             <label for=\"user_code\">Code</label>\
             <input id=\"user_code\" name=\"user_code\" type=\"text\" autocomplete=\"off\" autocapitalize=\"characters\" required autofocus value=\"{code}\">\
             <button type=\"submit\">Continue</button></form>",
            alert = alert(error),
            hidden = hidden(csrf, ""),
            code = escape(code),
        ),
    )
}

#[derive(Deserialize)]
pub struct CodeQuery {
    #[serde(default)]
    user_code: String,
}

/// The most of a typed user code that is read or shown back: a code is 9 characters, and a
/// person may add spaces.
const MAX_USER_CODE_BYTES: usize = 32;

/// `GET /device[?user_code=…]`.
pub async fn form(headers: HeaderMap, Query(q): Query<CodeQuery>) -> Response {
    let (csrf, cookie) = cookies::csrf_token(&headers);
    let typed = crate::limits::truncate(&q.user_code, MAX_USER_CODE_BYTES);
    let mut resp = code_entry_page(StatusCode::OK, &csrf, typed, None);
    if let Some(c) = cookie {
        resp.headers_mut().append(http::header::SET_COOKIE, c);
    }
    resp
}

#[derive(Deserialize)]
pub struct EntryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_code: String,
}

/// `POST /device`: the user entered a code; sign them in, then ask for approval.
pub async fn submit(
    State(idp): State<Arc<Idp>>,
    axum::Extension(ip): axum::Extension<crate::Caller>,
    headers: HeaderMap,
    Form(f): Form<EntryForm>,
) -> Response {
    if !cookies::csrf_ok(&headers, &f.csrf) {
        return csrf_refused();
    }
    let typed = crate::limits::truncate(&f.user_code, MAX_USER_CODE_BYTES);
    // Guessing user codes is throttled per client IP like passwords are, and reserved before
    // the lookup so a burst of guesses gets no more lookups than guesses one by one.
    if let Err(refused) = idp.reserve_attempt(None, &ip) {
        let page = code_entry_page(
            StatusCode::TOO_MANY_REQUESTS,
            &f.csrf,
            typed,
            Some(&format!(
                "Too many wrong codes. Wait {} seconds, then try again.",
                refused.retry_after.as_secs().max(1)
            )),
        );
        return with_retry_after(page, refused.retry_after);
    }
    let code = normalise_user_code(typed);
    let device = match idp.store.device_by_user_code(&code).await {
        Ok(d) => d,
        Err(e) => {
            idp.attempt_not_made(None, &ip);
            return internal(e);
        }
    };
    let Some(device) = device.filter(|d| d.status == DeviceStatus::Pending && d.expires_at > now())
    else {
        // The reservation stands as the failure.
        return code_entry_page(
            StatusCode::BAD_REQUEST,
            &f.csrf,
            typed,
            Some("That code is unknown, used or expired. Check the code on the device, or start again there."),
        );
    };
    idp.attempt_succeeded(None, &ip);
    let client = match idp.store.client(&device.client_id).await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let req = idp.add_pending(
        Pending {
            client_id: client.client_id,
            client_name: client.name,
            purpose: Purpose::Device { user_code: code },
            require_mfa: false,
            fresh_login: false,
            signed_in: None,
            risk: postern_policy::RiskLevel::None,
            silent: false,
            created_at: now(),
        },
        &ip,
    );
    Redirect::to(&format!("/continue?req={req}")).into_response()
}

/// The approval question, once the user is signed in.
pub fn approval_page(headers: &HeaderMap, req: &str, p: &Pending, user_code: &str) -> Response {
    let (csrf, cookie) = cookies::csrf_token(headers);
    let mut resp = page(
        StatusCode::OK,
        "Approve device",
        &format!(
            "<h1>Approve device</h1>\
             <p><strong>{app}</strong> on a device that shows the code <code>{code}</code> asks to act as you.</p>\
             <p>Approve only if you started this yourself and the codes match.</p>\
             <form method=\"post\" action=\"/device/decide\">{hidden}\
             <button type=\"submit\" name=\"decision\" value=\"approve\" autofocus>Approve</button> \
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            app = escape(&p.client_name),
            code = escape(user_code),
            hidden = hidden(&csrf, req),
        ),
    );
    if let Some(c) = cookie {
        resp.headers_mut().append(http::header::SET_COOKIE, c);
    }
    resp
}

#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    req: String,
    #[serde(default)]
    decision: String,
}

/// `POST /device/decide`.
pub async fn decide(
    State(idp): State<Arc<Idp>>,
    axum::Extension(caller): axum::Extension<crate::Caller>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    if !cookies::csrf_ok(&headers, &f.csrf) {
        return csrf_refused();
    }
    let Some(p) = idp.pending(&f.req) else {
        return expired_request();
    };
    let Purpose::Device { user_code } = &p.purpose else {
        return expired_request();
    };
    let Some((session, user)) = idp.session(&headers).await else {
        return Redirect::to(&format!("/signin?req={}", f.req)).into_response();
    };
    if crate::authorize::next_step(Some(&session), Some(&user), &p) != crate::authorize::Step::Done
    {
        return Redirect::to(&format!("/continue?req={}", f.req)).into_response();
    }
    let approval = AuthContext {
        user_id: user.id.clone(),
        auth_time: session.auth_time,
        acr: acr(&session.amr),
        amr: session.amr.clone(),
    };
    let approve = f.decision == "approve";
    // Decided again as the approval happens: the question may have been asked before a policy
    // came, or never (a form posted straight here).
    if approve {
        if let Some(refused) = idp.conditional(&f.req, &p, &session, &user, &caller).await {
            return refused;
        }
    }
    let decided = idp
        .store
        .decide_device(user_code, approve.then_some(&approval))
        .await;
    idp.finish_pending(&f.req);
    match decided {
        Ok(true) if approve => {
            tracing::info!(user = %user.email, client = %p.client_id, "device authorization approved");
            page(
                StatusCode::OK,
                "Device approved",
                "<h1>Device approved</h1><p>You can close this window and return to the device.</p>",
            )
        }
        Ok(true) => page(
            StatusCode::OK,
            "Device denied",
            "<h1>Device denied</h1><p>The device was refused. You can close this window.</p>",
        ),
        Ok(false) => error_page(
            StatusCode::BAD_REQUEST,
            "Code no longer valid",
            "That code was already used, denied or has expired. Start again on the device.",
        ),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes() {
        let c = new_user_code();
        assert_eq!(c.len(), 9);
        assert_eq!(normalise_user_code(&c.to_lowercase().replace('-', " ")), c);
        assert_eq!(normalise_user_code("bcdf-ghjk"), "BCDF-GHJK");
    }
}
