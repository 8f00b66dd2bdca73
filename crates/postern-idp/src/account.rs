//! The user's own account page at `/account`: their passkeys, to add (with the page's script)
//! and remove (a plain form). It needs a recent sign-in, so a session left open on a shared
//! computer cannot add a key to the account.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use postern_store::{IdpSession, StoredPasskey, User};
use serde::Deserialize;

use crate::authorize::{internal, Purpose};
use crate::html::{escape, page_with_script};
use crate::signin::csrf_refused;
use crate::{cookies, now, Caller, Idp, Pending};

/// How recent a sign-in the account page asks for.
pub const RECENT_SIGNIN: Duration = Duration::from_secs(15 * 60);

impl Idp {
    /// The request's session, if it was made within [`RECENT_SIGNIN`].
    pub(crate) async fn recent_session(&self, headers: &HeaderMap) -> Option<(IdpSession, User)> {
        let (s, u) = self.session(headers).await?;
        (s.auth_time >= now() - RECENT_SIGNIN.as_secs() as i64).then_some((s, u))
    }

    /// Sends the user through a fresh sign-in that ends at the account page.
    fn sign_in_for_account(&self, ip: &Caller) -> Response {
        let req = self.add_pending(
            Pending {
                client_id: String::new(),
                client_name: "your account".to_owned(),
                purpose: Purpose::Account,
                require_mfa: false,
                fresh_login: true,
                signed_in: None,
                risk: postern_policy::RiskLevel::None,
                silent: false,
                created_at: now(),
            },
            ip,
        );
        Redirect::to(&format!("/signin?req={req}")).into_response()
    }
}

fn day(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

fn passkey_item(p: &StoredPasskey, csrf: &str) -> String {
    let used = match p.last_used_at {
        Some(t) => format!("last used {}", day(t)),
        None => "not used yet".to_owned(),
    };
    format!(
        "<li><strong>{name}</strong> – added {added}, {used}\
         <form method=\"post\" action=\"/account/passkeys/delete\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"id\" value=\"{id}\">\
         <button type=\"submit\" aria-label=\"Remove passkey {name}\">Remove</button></form></li>",
        name = escape(&p.name),
        added = day(p.created_at),
        csrf = escape(csrf),
        id = escape(&p.id),
    )
}

/// `GET /account`.
pub async fn show(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let Some((_, user)) = idp.recent_session(&headers).await else {
        return idp.sign_in_for_account(&ip);
    };
    let passkeys = match idp.store.passkeys(&user.id).await {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let (csrf, cookie) = cookies::csrf_token(&headers);
    let list = if passkeys.is_empty() {
        "<p id=\"no-passkeys\">You have no passkeys yet.</p>".to_owned()
    } else {
        let items: String = passkeys.iter().map(|p| passkey_item(p, &csrf)).collect();
        format!("<ul class=\"passkeys\" id=\"passkeys\">{items}</ul>")
    };
    let enrol = if idp.passkeys.is_some() {
        format!(
            "<div id=\"passkey-enrol\" data-csrf=\"{csrf}\" hidden>\
             <label for=\"passkey-name\">Name for a new passkey</label>\
             <input id=\"passkey-name\" name=\"name\" type=\"text\" maxlength=\"60\" value=\"Passkey\">\
             <button type=\"button\" id=\"passkey-add\">Add a passkey</button>\
             <p class=\"error\" role=\"alert\" id=\"passkey-error\" hidden></p></div>\
             <noscript><p>Adding a passkey needs JavaScript.</p></noscript>",
            csrf = escape(&csrf),
        )
    } else {
        "<p>Passkeys are not available on this sign-in service.</p>".to_owned()
    };
    let mut resp = page_with_script(
        StatusCode::OK,
        "Your account",
        &format!(
            "<h1>Your account</h1><p>Signed in as <strong>{email}</strong>.</p>\
             <h2>Passkeys</h2>\
             <p>A passkey signs you in with this device's screen lock or a security key: no password, and no code to type.</p>\
             {list}{enrol}<p class=\"or\"><a href=\"/logout\">Sign out</a></p>",
            email = escape(&user.email),
        ),
        idp.passkeys.is_some(),
    );
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

/// `POST /account/passkeys/delete`.
pub async fn delete(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
    Form(f): Form<DeleteForm>,
) -> Response {
    if !cookies::csrf_ok(&headers, &f.csrf) {
        return csrf_refused();
    }
    let Some((_, user)) = idp.recent_session(&headers).await else {
        return idp.sign_in_for_account(&ip);
    };
    match idp.store.delete_passkey(&user.id, &f.id).await {
        Ok(true) => {
            idp.event(&user.email, Some(&user.id), &ip, None, "ok_passkey_removed")
                .await
        }
        Ok(false) => {}
        Err(e) => return internal(e),
    }
    let mut resp = Redirect::to("/account").into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /static/passkey.js`: the one script the provider's pages run.
pub async fn script() -> Response {
    let mut resp = include_str!("passkey.js").into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
