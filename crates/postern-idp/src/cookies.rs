//! The provider's cookies and CSRF protection.
//!
//! Both cookies use the `__Host-` prefix, which browsers accept only with `Secure`, `Path=/` and
//! no `Domain`: they are host-only and never sent over plain HTTP. Every form carries the CSRF
//! cookie's value in a hidden field (double submit); a cross-site page can neither read the
//! cookie nor, with `SameSite=Lax`, make the browser send it on a cross-site POST.

use axum::http::{header, HeaderMap, HeaderValue};
use base64::Engine;
use sha2::{Digest, Sha256};

pub const SESSION_COOKIE: &str = "__Host-postern-idp";
pub const CSRF_COOKIE: &str = "__Host-postern-csrf";

/// The value of cookie `name` in the request, if any.
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value for a session-lifetime cookie (`None` deletes it).
pub fn set(name: &str, value: Option<&str>) -> HeaderValue {
    let s = match value {
        Some(v) => format!("{name}={v}; Path=/; Secure; HttpOnly; SameSite=Lax"),
        None => format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"),
    };
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The request's CSRF token, or a new one with the `Set-Cookie` that stores it.
pub fn csrf_token(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match get(headers, CSRF_COOKIE) {
        Some(t) => (t, None),
        None => {
            let t =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
            let cookie = set(CSRF_COOKIE, Some(&t));
            (t, Some(cookie))
        }
    }
}

/// Whether a form's CSRF field matches the cookie (compared as digests, in constant time with
/// respect to the secret's content).
pub fn csrf_ok(headers: &HeaderMap, field: &str) -> bool {
    match get(headers, CSRF_COOKIE) {
        Some(cookie) if !field.is_empty() => {
            Sha256::digest(cookie.as_bytes()) == Sha256::digest(field.as_bytes())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_needs_the_cookie_and_the_same_field() {
        let mut h = HeaderMap::new();
        assert!(!csrf_ok(&h, "abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; __Host-postern-csrf=abc"),
        );
        assert!(csrf_ok(&h, "abc"));
        assert!(!csrf_ok(&h, "abd"));
        assert!(!csrf_ok(&h, ""));
        let set = set(SESSION_COOKIE, Some("v"));
        let set = set.to_str().unwrap();
        assert!(set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Lax"));
        assert!(!set.to_ascii_lowercase().contains("domain"));
    }
}
