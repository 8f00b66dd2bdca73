//! The edge's cookies: finding them in a request, removing them before it is forwarded, and
//! setting them. All are `__Host-` cookies: `Secure`, `Path=/`, no `Domain` (host-only), and
//! `SameSite=Lax`.

use http::header::{self, HeaderMap, HeaderValue};
use postern_store::CookieOptions;

/// The session cookie.
pub const SESSION: &str = "__Host-postern-session";
/// One sign-in's state cookie is `STATE_PREFIX` + the start of its `state`, so sign-ins started
/// in two tabs do not overwrite each other.
pub const STATE_PREFIX: &str = "__Host-postern-state-";
/// How much of the `state` names its cookie.
const STATE_NAME_CHARS: usize = 12;

/// The state cookie's name for a sign-in whose `state` parameter is `state`.
pub fn state_name(state: &str) -> String {
    let end = state
        .char_indices()
        .nth(STATE_NAME_CHARS)
        .map_or(state.len(), |(i, _)| i);
    format!("{STATE_PREFIX}{}", &state[..end])
}

/// The value of cookie `name` in the request (HTTP/2 may split `Cookie` into several headers).
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// Removes the edge's own cookies from the request; every other cookie reaches the app as sent.
pub fn strip(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), None) = (values.next(), values.next()) else {
        if headers.contains_key(header::COOKIE) {
            rebuild(headers);
        }
        return;
    };
    // The common case, one Cookie header: left as sent when it holds none of the edge's
    // cookies, removed when it holds nothing else.
    let Ok(value) = first.to_str() else {
        return rebuild(headers);
    };
    let (mut ours, mut theirs) = (false, false);
    for pair in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if is_ours(pair) {
            ours = true;
        } else {
            theirs = true;
        }
    }
    match (ours, theirs) {
        (false, _) => {}
        (true, false) => {
            headers.remove(header::COOKIE);
        }
        (true, true) => rebuild(headers),
    }
}

/// Whether a `name=value` pair is one of the edge's own cookies.
fn is_ours(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
    name == SESSION || name.starts_with(STATE_PREFIX)
}

/// Joins the app's cookies into one header, without the edge's.
fn rebuild(headers: &mut HeaderMap) {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_ours(pair))
        .collect();
    let joined = (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
        .flatten();
    headers.remove(header::COOKIE);
    if let Some(v) = joined {
        headers.insert(header::COOKIE, v);
    }
}

/// `Set-Cookie` for the session.
pub fn session(value: &str, options: CookieOptions, max_age_secs: u64) -> HeaderValue {
    let mut s = format!("{SESSION}={value}; Path=/; Secure; SameSite=Lax");
    if options.http_only {
        s.push_str("; HttpOnly");
    }
    if options.persistent {
        s.push_str(&format!("; Max-Age={max_age_secs}"));
    }
    header_value(s)
}

/// `Set-Cookie` for a sign-in's state.
pub fn state(name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    header_value(format!(
        "{name}={value}; Path=/; Secure; SameSite=Lax; HttpOnly; Max-Age={max_age_secs}"
    ))
}

/// `Set-Cookie` that deletes cookie `name`.
pub fn clear(name: &str) -> HeaderValue {
    header_value(format!(
        "{name}=; Path=/; Secure; SameSite=Lax; HttpOnly; Max-Age=0"
    ))
}

fn header_value(s: String) -> HeaderValue {
    // Cookie values are base64url and names are fixed: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn finds_and_strips_only_the_edges_cookies() {
        let mut h = headers(&[
            "theme=dark; __Host-postern-session=abc",
            "__Host-postern-state-xyz=s; lang=en",
        ]);
        assert_eq!(get(&h, SESSION), Some("abc"));
        assert_eq!(get(&h, "lang"), Some("en"));
        assert_eq!(get(&h, "__Host-postern-state-xyz"), Some("s"));
        strip(&mut h);
        let left: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark; lang=en"]);
        let mut only = headers(&["__Host-postern-session=abc"]);
        strip(&mut only);
        assert!(!only.contains_key(header::COOKIE));
        // A look-alike name is the app's, not the edge's.
        let mut alike = headers(&["x__Host-postern-session=1; __host-postern-session=2"]);
        strip(&mut alike);
        assert_eq!(
            alike.get(header::COOKIE).unwrap(),
            "x__Host-postern-session=1; __host-postern-session=2"
        );
        // One header with ours among the app's; and ours split over several headers.
        let mut mixed = headers(&["a=1; __Host-postern-session=abc ;b=2"]);
        strip(&mut mixed);
        assert_eq!(mixed.get(header::COOKIE).unwrap(), "a=1; b=2");
        let mut split = headers(&["__Host-postern-session=abc", "__Host-postern-state-x=1"]);
        strip(&mut split);
        assert!(!split.contains_key(header::COOKIE));
    }

    #[test]
    fn cookie_attributes() {
        let c = session("v", CookieOptions::default(), 60);
        assert_eq!(
            c,
            "__Host-postern-session=v; Path=/; Secure; SameSite=Lax; HttpOnly"
        );
        let c = session(
            "v",
            CookieOptions {
                http_only: false,
                persistent: true,
            },
            60,
        );
        assert_eq!(
            c,
            "__Host-postern-session=v; Path=/; Secure; SameSite=Lax; Max-Age=60"
        );
        assert_eq!(
            state_name("abcdefghijklmnopq"),
            "__Host-postern-state-abcdefghijkl"
        );
    }
}
