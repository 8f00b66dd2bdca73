//! Where a user goes after sign-in: always somewhere on the app they asked for.
//!
//! **Invariant:** every URL this module produces has exactly the app's origin (scheme, host, port).
//! A target that would leave it falls back to the app's root, `/`.
//!
//! Two sources feed it. [`ReturnTo::from_request`] takes the path and query of the request that
//! needed a sign-in; it cannot name another host, but its path may start with `//` or `/\`, which
//! browsers read as a scheme-relative URL if it is ever written as a relative `Location`, so leading
//! slashes are collapsed to one. [`ReturnTo::from_untrusted`] takes a string from a query parameter
//! (`?rd=`, a sign-out `post_logout_redirect`), resolves it the way a browser would (the `url` crate
//! implements the WHATWG URL standard: backslashes as slashes, tabs and newlines dropped, `//host`
//! as a host) against the app's origin, and keeps it only if the origin is unchanged.
//!
//! The edge should send [`ReturnTo::location`], an absolute URL that starts with the app's origin
//! and a `/`, so a browser cannot find a host in what follows.

use std::fmt;

use url::{Position, Url};

/// Why a string is not an app origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Not an absolute URL.
    #[error("app origin {input:?} is not an absolute URL: {reason}")]
    NotAUrl {
        /// The string given.
        input: String,
        /// The parser's complaint.
        reason: url::ParseError,
    },
    /// A scheme other than `https` or `http`.
    #[error("app origin {input:?} must use https or http")]
    BadScheme {
        /// The string given.
        input: String,
    },
    /// Carries more than scheme, host and port.
    #[error("app origin {input:?} must be scheme://host[:port] alone, without user, path, query or fragment")]
    NotAnOrigin {
        /// The string given.
        input: String,
    },
}

/// A published app's external origin, such as `https://wiki.example.com` or
/// `https://apps.example.com:8443`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppOrigin {
    /// The origin with path `/`: the base every target is resolved against.
    root: Url,
}

impl AppOrigin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed).
    pub fn parse(input: &str) -> Result<Self, OriginError> {
        let root = Url::parse(input).map_err(|reason| OriginError::NotAUrl {
            input: input.to_owned(),
            reason,
        })?;
        if !matches!(root.scheme(), "https" | "http") {
            return Err(OriginError::BadScheme {
                input: input.to_owned(),
            });
        }
        if root.host().is_none()
            || !root.username().is_empty()
            || root.password().is_some()
            || root.path() != "/"
            || root.query().is_some()
            || root.fragment().is_some()
        {
            return Err(OriginError::NotAnOrigin {
                input: input.to_owned(),
            });
        }
        Ok(Self { root })
    }

    /// The origin's serialisation, `scheme://host[:port]` without a trailing slash, as used in an
    /// `Origin` header or an assertion's audience.
    pub fn as_str(&self) -> &str {
        &self.root[..Position::BeforePath]
    }

    /// The app's root URL, `scheme://host[:port]/`.
    pub fn root(&self) -> &Url {
        &self.root
    }

    fn is_same_origin(&self, url: &Url) -> bool {
        url.origin() == self.root.origin()
    }
}

impl fmt::Display for AppOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place on an app to return to: a path starting with exactly one `/`, then the query and
/// fragment, in the `url` crate's normalised, percent-encoded form. It names no host, and never
/// starts with `//` or `/\`, so it stays on the app even as a relative reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnTo(String);

impl ReturnTo {
    /// The app's root, `/`: where every refused target falls back to.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// The return target for a request that needed a sign-in, from its path and query (the
    /// request-target in origin-form, as `http::Uri::path_and_query` gives it). Anything that is
    /// not origin-form (`*`, an absolute URL) returns to the root.
    pub fn from_request(origin: &AppOrigin, path_and_query: &str) -> Self {
        let without_fragment = path_and_query
            .split_once('#')
            .map_or(path_and_query, |(before, _)| before);
        let (path, query) = match without_fragment.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (without_fragment, None),
        };
        if !path.starts_with('/') {
            return Self::root();
        }
        // Setting the path and query on the origin's URL (rather than resolving the string against
        // it) keeps the user's own path even when it starts with `//`: it can never become a host.
        let mut url = origin.root.clone();
        url.set_path(path);
        url.set_query(query);
        Self::on_origin(origin, url)
    }

    /// The return target for an untrusted string, such as a `?rd=` query parameter: kept only if
    /// it resolves, as a browser would resolve it, to a URL on `origin`; otherwise the root.
    pub fn from_untrusted(origin: &AppOrigin, candidate: &str) -> Self {
        // Browsers silently drop tabs and newlines and trim control characters, which is how
        // payloads such as `/\t/evil.com` smuggle a host past naive checks. A genuine return target
        // has none of them, so refusing them outright is simpler than reasoning about each.
        if candidate.is_empty() || candidate.chars().any(|c| c.is_control() || c == ' ') {
            return Self::root();
        }
        match Url::options().base_url(Some(&origin.root)).parse(candidate) {
            Ok(url) if origin.is_same_origin(&url) => Self::on_origin(origin, url),
            _ => Self::root(),
        }
    }

    /// Keeps the path, query and fragment of a URL already known to be on `origin`, with leading
    /// slashes collapsed to one.
    fn on_origin(origin: &AppOrigin, mut url: Url) -> Self {
        if !origin.is_same_origin(&url) {
            return Self::root();
        }
        // The `url` crate has already turned backslashes in a special scheme's path into slashes,
        // so only `/` can lead.
        if url.path().starts_with("//") {
            let collapsed = format!("/{}", url.path().trim_start_matches('/'));
            url.set_path(&collapsed);
        }
        Self(url[Position::BeforePath..].to_owned())
    }

    /// Wraps a target read back from a sealed state cookie (which only this module's output was
    /// sealed into); [`ReturnTo::location`] checks the origin again regardless.
    pub(crate) fn from_sealed(s: String) -> Self {
        Self(s)
    }

    /// The target as a path-and-query (and fragment) string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute URL to send in the `Location` header: on `origin`, always.
    pub fn location(&self, origin: &AppOrigin) -> Url {
        match Url::options().base_url(Some(&origin.root)).parse(&self.0) {
            Ok(url) if origin.is_same_origin(&url) && self.0.starts_with('/') => url,
            _ => origin.root.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> AppOrigin {
        AppOrigin::parse("https://app.example.com").unwrap()
    }

    #[test]
    fn origins() {
        let check = |input: &str, expected: Result<&str, &str>| {
            let got = AppOrigin::parse(input);
            match expected {
                Ok(s) => assert_eq!(got.unwrap().as_str(), s, "{input}"),
                Err(msg) => assert!(got.unwrap_err().to_string().contains(msg), "{input}"),
            }
        };
        check("https://app.example.com", Ok("https://app.example.com"));
        check("https://App.Example.com/", Ok("https://app.example.com"));
        check("https://app.example.com:443", Ok("https://app.example.com"));
        check(
            "https://app.example.com:8443",
            Ok("https://app.example.com:8443"),
        );
        check("http://127.0.0.1:8080", Ok("http://127.0.0.1:8080"));
        check("app.example.com", Err("not an absolute URL"));
        check("ftp://app.example.com", Err("https or http"));
        check(
            "https://app.example.com/wiki",
            Err("scheme://host[:port] alone"),
        );
        check(
            "https://u:p@app.example.com",
            Err("scheme://host[:port] alone"),
        );
        check(
            "https://app.example.com/?q",
            Err("scheme://host[:port] alone"),
        );
    }

    #[test]
    fn from_request() {
        let check = |input: &str, expected: &str| {
            let got = ReturnTo::from_request(&origin(), input);
            assert_eq!(got.as_str(), expected, "{input}");
        };
        check("/", "/");
        check(
            "/wiki/Main_Page?action=edit&x=1",
            "/wiki/Main_Page?action=edit&x=1",
        );
        check("/a b", "/a%20b");
        check("//evil.example", "/evil.example");
        check("/\\evil.example", "/evil.example");
        check("///evil.example/x?y", "/evil.example/x?y");
        check("/%2f%2fevil.example", "/%2f%2fevil.example");
        check("/../../etc", "/etc");
        check("*", "/");
        check("https://evil.example/", "/");
        check("", "/");
    }

    #[test]
    fn from_untrusted() {
        let check = |input: &str, expected: &str| {
            let got = ReturnTo::from_untrusted(&origin(), input);
            assert_eq!(got.as_str(), expected, "{input}");
        };
        check("/docs?page=2#top", "/docs?page=2#top");
        check("docs", "/docs");
        check("https://app.example.com/x", "/x");
        check("https://app.example.com:443/x", "/x");
        check("https://app.example.com.evil.example/x", "/");
        check("https://app.example.com@evil.example/x", "/");
        check("http://app.example.com/x", "/");
        check("https://app.example.com:8443/x", "/");
        check("//evil.example", "/");
        check("/\\evil.example", "/");
        check("\\\\evil.example", "/");
        check("/\t/evil.example", "/");
        check("javascript:alert(1)", "/");
        // WHATWG: a special scheme equal to the base's without `//` is a relative path.
        check("https:evil.example", "/evil.example");
        check("", "/");
    }

    #[test]
    fn location_is_absolute_on_the_origin() {
        let o = origin();
        let check = |target: ReturnTo, expected: &str| {
            assert_eq!(target.location(&o).as_str(), expected);
        };
        check(ReturnTo::root(), "https://app.example.com/");
        check(
            ReturnTo::from_request(&o, "/a?b=c"),
            "https://app.example.com/a?b=c",
        );
        // A value that did not come from this module still cannot leave the origin.
        check(
            ReturnTo::from_sealed("//evil.example/".to_owned()),
            "https://app.example.com/",
        );
        check(
            ReturnTo::from_sealed("https://evil.example/".to_owned()),
            "https://app.example.com/",
        );
    }
}
