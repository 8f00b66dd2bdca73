//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). The user returns to
//! `post_logout_redirect_uri` only if it is registered for the client; without a valid
//! `id_token_hint` the user is asked to confirm, so a link on another site cannot sign them out.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;

use crate::authorize::{internal, redirect_with};
use crate::html::{error_page, escape, page};
use crate::limits::{
    MAX_CLIENT_ID_BYTES, MAX_ID_TOKEN_HINT_BYTES, MAX_REDIRECT_URI_BYTES, MAX_STATE_BYTES,
};
use crate::signin::csrf_refused;
use crate::{cookies, tokens, Idp};

/// The parameters of a logout request, each within its limit; an oversized one is refused on
/// the error page (nothing is trusted yet), and parameters the provider does not read are
/// dropped.
fn logout_params(
    pairs: impl Iterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, Oversized> {
    let mut q = HashMap::new();
    for (k, v) in pairs {
        let max = match k.as_str() {
            "id_token_hint" => MAX_ID_TOKEN_HINT_BYTES,
            "post_logout_redirect_uri" => MAX_REDIRECT_URI_BYTES,
            "client_id" | "csrf" => MAX_CLIENT_ID_BYTES,
            "state" => MAX_STATE_BYTES,
            _ => continue,
        };
        if v.len() > max {
            return Err(Oversized {
                len: v.len(),
                name: k,
                max,
            });
        }
        q.insert(k, v);
    }
    Ok(q)
}

/// A logout parameter over its limit.
struct Oversized {
    name: String,
    len: usize,
    max: usize,
}

impl Oversized {
    fn page(&self) -> Response {
        error_page(
            StatusCode::BAD_REQUEST,
            "Invalid logout request",
            &format!(
                "The logout request's {} is {} bytes, more than the {} allowed (invalid_request); you were not signed out.",
                self.name, self.len, self.max
            ),
        )
    }
}

/// Where to send the user afterwards: a registered URI, checked before anything is done.
async fn return_uri(
    idp: &Idp,
    q: &HashMap<String, String>,
    hint_aud: Option<&str>,
) -> Result<Option<String>, Response> {
    let Some(uri) = q.get("post_logout_redirect_uri").filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let client_id = hint_aud.or(q.get("client_id").map(String::as_str));
    let client = match client_id {
        Some(id) => idp.store.client(id).await.ok(),
        None => None,
    };
    match client {
        Some(c) if c.post_logout_redirect_uris.iter().any(|u| u == uri) => Ok(Some(uri.clone())),
        _ => Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid logout redirect",
            &format!("{uri:?} is not a registered post-logout redirect URI of the application; you were not signed out."),
        )),
    }
}

async fn end(
    idp: &Idp,
    headers: &HeaderMap,
    uri: Option<String>,
    state: Option<&str>,
    grant: Option<&str>,
) -> Response {
    if let Some((session, user)) = idp.session(headers).await {
        if let Err(e) = idp.store.revoke_session(&session.hash).await {
            return internal(e);
        }
        tracing::info!(user = %user.email, "signed out at the identity provider");
    }
    if let Some(g) = grant {
        let _ = idp.store.revoke_grant(g).await;
    }
    let mut resp = match uri {
        Some(uri) => redirect_with(&uri, &[("state", state)]),
        None => page(
            StatusCode::OK,
            "Signed out",
            "<h1>Signed out</h1><p>You are signed out of the sign-in service.</p>",
        ),
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookies::set(cookies::SESSION_COOKIE, None),
    );
    resp
}

/// `GET /logout`.
pub async fn logout(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    let q = match logout_params(
        url::form_urlencoded::parse(raw.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())),
    ) {
        Ok(q) => q,
        Err(oversized) => return oversized.page(),
    };
    let hint =
        match q.get("id_token_hint") {
            Some(t) => match tokens::verify_id_token_hint(&idp.keys, &idp.issuer, t) {
                Ok(c) => Some(c),
                Err(_) => return error_page(
                    StatusCode::BAD_REQUEST,
                    "Invalid logout request",
                    "The id_token_hint was not issued by this provider; you were not signed out.",
                ),
            },
            None => None,
        };
    let uri = match return_uri(&idp, &q, hint.as_ref().map(|h| h.aud.as_str())).await {
        Ok(u) => u,
        Err(page) => return page,
    };
    let session = idp.session(&headers).await;
    let same_user = match (&hint, &session) {
        (Some(h), Some((_, u))) => h.sub == u.id,
        (Some(_), None) => true,
        _ => false,
    };
    if same_user {
        return end(
            &idp,
            &headers,
            uri,
            q.get("state").map(String::as_str),
            hint.as_ref().map(|h| h.sid.as_str()),
        )
        .await;
    }
    let (csrf, cookie) = cookies::csrf_token(&headers);
    let fields: String = ["post_logout_redirect_uri", "client_id", "state"]
        .iter()
        .filter_map(|k| q.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(v)
            )
        })
        .collect();
    let mut resp = page(
        StatusCode::OK,
        "Sign out",
        &format!(
            "<h1>Sign out?</h1><p>Sign out of the sign-in service on this browser?</p>\
             <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{fields}\
             <button type=\"submit\" autofocus>Sign out</button></form>",
            escape(&csrf)
        ),
    );
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// `POST /logout`: the user confirmed.
pub async fn confirm(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    let f = match logout_params(f.into_iter()) {
        Ok(f) => f,
        Err(oversized) => return oversized.page(),
    };
    if !cookies::csrf_ok(
        &headers,
        f.get("csrf").map(String::as_str).unwrap_or_default(),
    ) {
        return csrf_refused();
    }
    let uri = match return_uri(&idp, &f, None).await {
        Ok(u) => u,
        Err(page) => return page,
    };
    end(
        &idp,
        &headers,
        uri,
        f.get("state").map(String::as_str),
        None,
    )
    .await
}
