//! Sign-out at `/.postern/signout`, safe against cross-site requests.
//!
//! Opening the address (a link, a typed URL, a prefetch) only shows a confirmation page; the
//! session ends only when that page's form is submitted: a form POST from the app's own origin
//! carrying the page's confirmation token. The token is derived from the session cookie, which
//! another site can neither read nor send along with a cross-site POST (`SameSite=Lax`), and the
//! browser's own `Sec-Fetch-Site` and `Origin` must not name another site. A submission that fails
//! these checks is refused and changes nothing.
//!
//! The guard sees the request's URI and headers, not its method or body, so the submission is
//! recognised by what a browser's form POST carries: a form content type, and the token in the
//! form's action URL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use postern_auth::{AppId, AppOrigin, Session, UnixTime};
use sha2::{Digest, Sha256};

use super::{cookies, redirect, signed_out_page, Guarded, Request, SignIn, MAX_SESSION};
use super::{SIGNED_OUT_PATH, SIGNOUT_PATH};
use crate::rescue::{escape, Refusal};
use crate::state::Shared;

/// The query parameter of the form's action URL that carries the confirmation token.
const CONFIRM_PARAM: &str = "confirm";
/// The token's length: SHA-256, base64url without padding. Anything longer is refused unread.
const TOKEN_CHARS: usize = 43;

/// The confirmation token of the session in cookie `cookie` on `app`: only someone holding the
/// cookie can compute it.
fn token(cookie: &str, app: &AppId) -> String {
    let mut h = Sha256::new();
    h.update(b"postern-signout\0");
    h.update(app.as_str().as_bytes());
    h.update(b"\0");
    h.update(cookie.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Compares without stopping at the first difference, so timing tells nothing about the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What a request to the sign-out address is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Anything but a form submission: show the confirmation page.
    Ask,
    /// A form submission from the app's own origin, with this token (not yet checked; `None`
    /// when missing or longer than a token).
    Submit { token: Option<String> },
    /// A form submission another site caused: refused.
    CrossSite(&'static str),
}

/// Reads the request's intent from its method, headers and query (pure: no session, no I/O).
/// Only a POST of a form signs out: a link, an image or a prefetch never does.
pub(crate) fn intent(
    method: &Method,
    headers: &HeaderMap,
    query: &str,
    origin: &AppOrigin,
) -> Intent {
    if method != Method::POST {
        return Intent::Ask;
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/x-www-form-urlencoded" || t == "multipart/form-data");
    if !form {
        return Intent::Ask;
    }
    // Fetch metadata, where the browser sends it: only the app's own pages may sign out.
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Intent::CrossSite("the browser says another site sent the sign-out form");
        }
    }
    if let Some(from) = headers.get(header::ORIGIN) {
        if from.as_bytes() != origin.as_str().as_bytes() {
            return Intent::CrossSite("the sign-out form was sent from another origin");
        }
    }
    let token = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == CONFIRM_PARAM)
        .map(|(_, v)| v)
        .filter(|v| v.len() <= TOKEN_CHARS)
        .map(|v| v.into_owned());
    Intent::Submit { token }
}

/// Answers `/.postern/signout`: the confirmation page, the sign-out itself, or a refusal.
pub(super) async fn signout(
    shared: &Shared,
    sign_in: &SignIn,
    req: &Request<'_>,
    now: UnixTime,
) -> Result<Guarded, Refusal> {
    let refused = |reason: &str| Refusal::SignOutRefused {
        app: sign_in.app_name.clone(),
        reason: reason.to_owned(),
    };
    let cookie = cookies::get(req.headers, cookies::SESSION);
    let ring = shared.auth.ring.load();
    let session = cookie.and_then(|c| Session::open(&ring, c, &sign_in.app_id, now).ok());
    let query = req.uri.query().unwrap_or("");
    let session = match intent(req.method, req.headers, query, &sign_in.origin) {
        Intent::CrossSite(reason) => return Err(refused(reason)),
        Intent::Ask => {
            return Ok(Guarded::Answer(match (cookie, &session) {
                (Some(c), Some(_)) => confirm_page(sign_in, &token(c, &sign_in.app_id)),
                // Nothing to end here.
                _ => signed_out_page(sign_in),
            }));
        }
        Intent::Submit { token: given } => match (cookie, session) {
            (Some(c), Some(s)) => {
                let Some(given) = given else {
                    return Err(refused("the sign-out form carries no confirmation token"));
                };
                if !same(&given, &token(c, &sign_in.app_id)) {
                    return Err(refused(
                        "the confirmation token does not belong to this session",
                    ));
                }
                s
            }
            // Already signed out (or the session ended meanwhile): nothing to end here.
            _ => return Ok(Guarded::Answer(signed_out_page(sign_in))),
        },
    };
    // A copy of the cookie kept elsewhere stops working too.
    let signed_out = shared
        .store
        .sign_out_session(&session.id.to_string(), MAX_SESSION.as_secs() as i64)
        .await;
    if let Err(e) = signed_out {
        tracing::error!(error = %e, "cannot record a sign-out");
    } else if let Err(e) = shared.reload().await {
        tracing::error!(error = %e, "cannot reload after a sign-out");
    }
    tracing::info!(app = %sign_in.app_name, user = %session.subject, "signed out");
    let end_session = shared
        .auth
        .issuers
        .provider(&sign_in.issuer, &sign_in.app_name)
        .await
        .ok()
        .and_then(|p| p.metadata().end_session_endpoint.clone());
    let mut resp = match end_session {
        Some(mut url) => {
            let mut back = sign_in.origin.root().clone();
            back.set_path(SIGNED_OUT_PATH);
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &sign_in.client_id);
            // An external issuer has the app's post-logout URI registered by its admin; the
            // built-in provider shows its own signed-out page instead.
            if sign_in.issuer.as_str() != shared.idp.issuer {
                q.append_pair("post_logout_redirect_uri", back.as_str());
            }
            drop(q);
            redirect(url.as_str())
        }
        None => signed_out_page(sign_in),
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, cookies::clear(cookies::SESSION));
    Ok(Guarded::Answer(resp))
}

/// "Sign out of APP?": a form that posts back here with the session's confirmation token.
fn confirm_page(sign_in: &SignIn, token: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Sign out</title></head>\
<body><main><h1>Sign out?</h1><p>Sign out of {app} on this browser?</p>\
<form method=\"post\" action=\"{path}?{param}={token}\">\
<button type=\"submit\" autofocus>Sign out</button></form>\
<p><a href=\"/\">Stay signed in</a></p></main></body></html>\n",
        app = escape(&sign_in.app_name),
        path = SIGNOUT_PATH,
        param = CONFIRM_PARAM,
        token = escape(token),
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // No other site may frame the button, nor learn the token from a Referer. (Not
    // `no-referrer`: with it the form's POST would carry `Origin: null`.)
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    *resp.status_mut() = StatusCode::OK;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_a_same_origin_form_submission_is_a_sign_out() {
        let origin = AppOrigin::parse("https://wiki.example.com:8443").unwrap();
        const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
        type Headers = &'static [(&'static str, &'static str)];
        let cases: Vec<(Headers, &str, Intent)> = vec![
            // Not a POST, whatever it carries: the confirmation page.
            (&[FORM, ("x-method", "GET")], "confirm=abc", Intent::Ask),
            // A link, a typed address, a prefetch, even with the token: the confirmation page.
            (&[], "", Intent::Ask),
            (
                &[("sec-fetch-site", "cross-site")],
                "confirm=x",
                Intent::Ask,
            ),
            (&[("content-type", "text/plain")], "confirm=x", Intent::Ask),
            // The page's own form.
            (
                &[
                    FORM,
                    ("origin", "https://wiki.example.com:8443"),
                    ("sec-fetch-site", "same-origin"),
                ],
                "confirm=abc",
                Intent::Submit {
                    token: Some("abc".into()),
                },
            ),
            // Without fetch metadata or Origin (an older browser, a script with the cookie).
            (
                &[FORM],
                "confirm=abc",
                Intent::Submit {
                    token: Some("abc".into()),
                },
            ),
            (&[FORM], "", Intent::Submit { token: None }),
            (
                &[FORM],
                "confirm=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                Intent::Submit { token: None },
            ),
            (
                &[("content-type", "multipart/form-data; boundary=x")],
                "a=1&confirm=abc",
                Intent::Submit {
                    token: Some("abc".into()),
                },
            ),
            // Another site's form.
            (
                &[FORM, ("sec-fetch-site", "cross-site")],
                "confirm=abc",
                Intent::CrossSite("the browser says another site sent the sign-out form"),
            ),
            (
                &[FORM, ("sec-fetch-site", "same-site")],
                "confirm=abc",
                Intent::CrossSite("the browser says another site sent the sign-out form"),
            ),
            (
                &[FORM, ("origin", "https://evil.example")],
                "confirm=abc",
                Intent::CrossSite("the sign-out form was sent from another origin"),
            ),
            (
                &[FORM, ("origin", "null")],
                "confirm=abc",
                Intent::CrossSite("the sign-out form was sent from another origin"),
            ),
            (
                &[FORM, ("origin", "https://wiki.example.com")],
                "confirm=abc",
                Intent::CrossSite("the sign-out form was sent from another origin"),
            ),
        ];
        for (h, query, expected) in &cases {
            let get = h.iter().any(|(k, _)| *k == "x-method");
            let method = if get { Method::GET } else { Method::POST };
            assert_eq!(
                &intent(&method, &headers(h), query, &origin),
                expected,
                "{h:?} {query:?}"
            );
        }
    }

    #[test]
    fn the_token_is_bound_to_the_cookie_and_the_app() {
        let wiki = AppId::new("1").unwrap();
        let crm = AppId::new("2").unwrap();
        let t = token("cookie-a", &wiki);
        assert_eq!(t.len(), TOKEN_CHARS);
        assert_eq!(t, token("cookie-a", &wiki));
        assert_ne!(t, token("cookie-b", &wiki));
        assert_ne!(t, token("cookie-a", &crm));
        assert!(same(&t, &token("cookie-a", &wiki)));
        assert!(!same(&t, &t[1..]));
    }
}
