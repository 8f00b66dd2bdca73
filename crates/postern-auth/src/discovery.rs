//! The issuer's URL and its OpenID Connect discovery document, checked without any I/O.
//!
//! **Invariant:** every URL the edge fetches keys from or sends users to is `https`, except on a
//! loopback issuer (`http://127.0.0.1:…`, `http://localhost:…`, `http://[::1]:…`) for tests and
//! the quickstart. A JWKS fetched over plain HTTP from elsewhere would let anyone on the path
//! choose the keys the edge trusts.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use url::{Host, Url};

/// Why a configured issuer URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerUrlError {
    /// Not an absolute URL.
    #[error("issuer {input:?} is not an absolute URL: {reason}")]
    NotAUrl {
        /// The configured string.
        input: String,
        /// The parser's complaint.
        reason: url::ParseError,
    },
    /// Neither `https` nor `http` on a loopback host.
    #[error("issuer {input:?} must use https (plain http is allowed only for 127.0.0.1, localhost and [::1])")]
    Insecure {
        /// The configured string.
        input: String,
    },
    /// OpenID Connect Discovery §3: an issuer has no query or fragment (and Postern wants no
    /// credentials in it either).
    #[error("issuer {input:?} must not contain a query, a fragment or credentials")]
    NotAnIssuer {
        /// The configured string.
        input: String,
    },
}

/// A validated issuer identifier. Its string is kept exactly as configured, because `iss` and the
/// discovery document's `issuer` are compared to it character for character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerUrl {
    text: String,
    url: Url,
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Whether `url` may be fetched from or redirected to for an issuer at `issuer`.
fn is_secure_enough(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => is_loopback(url),
        _ => false,
    }
}

impl IssuerUrl {
    /// Validates a configured issuer.
    pub fn parse(input: &str) -> Result<Self, IssuerUrlError> {
        let url = Url::parse(input).map_err(|reason| IssuerUrlError::NotAUrl {
            input: input.to_owned(),
            reason,
        })?;
        if !is_secure_enough(&url) {
            return Err(IssuerUrlError::Insecure {
                input: input.to_owned(),
            });
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(IssuerUrlError::NotAnIssuer {
                input: input.to_owned(),
            });
        }
        Ok(Self {
            text: input.to_owned(),
            url,
        })
    }

    /// The issuer exactly as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery §4.1: any trailing
    /// slash of the issuer is removed before appending).
    pub fn discovery_url(&self) -> Url {
        let mut url = self.url.clone();
        let path = format!(
            "{}/.well-known/openid-configuration",
            url.path().trim_end_matches('/')
        );
        url.set_path(&path);
        url
    }
}

impl fmt::Display for IssuerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a discovery document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// Not a JSON object with string fields where expected.
    #[error("discovery document is not valid: {reason}")]
    Invalid {
        /// The parser's complaint.
        reason: String,
    },
    /// The document's `issuer` is not the configured issuer (OpenID Connect Discovery §4.3: it
    /// must be identical, or tokens would be checked against the wrong `iss`).
    #[error("discovery document names issuer {found:?}, not the configured {configured:?}; configure the issuer exactly as the provider spells it")]
    IssuerMismatch {
        /// The configured issuer.
        configured: String,
        /// The document's `issuer`.
        found: String,
    },
    /// An endpoint is not a URL, or is plain HTTP on a non-loopback host.
    #[error("discovery document's {field} {value:?} is not an https URL")]
    BadEndpoint {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

/// The parts of the discovery document the edge uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// `issuer`, equal to the configured issuer.
    pub issuer: String,
    /// Where to send the browser to sign in.
    pub authorization_endpoint: Url,
    /// Where to redeem the code.
    pub token_endpoint: Url,
    /// Where the signing keys are.
    pub jwks_uri: Url,
    /// Where to fetch more claims with an access token, if offered.
    pub userinfo_endpoint: Option<Url>,
    /// Where to send the browser to sign out at the issuer (RP-initiated logout), if offered.
    pub end_session_endpoint: Option<Url>,
}

/// The document as served; unknown fields are expected (providers publish dozens) and ignored.
#[derive(Deserialize)]
struct MetadataDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
}

fn endpoint(field: &'static str, value: &str) -> Result<Url, DiscoveryError> {
    Url::parse(value)
        .ok()
        .filter(is_secure_enough)
        .ok_or_else(|| DiscoveryError::BadEndpoint {
            field,
            value: value.to_owned(),
        })
}

impl ProviderMetadata {
    /// Reads and checks a discovery document fetched for `issuer`.
    pub fn from_json(json: &[u8], issuer: &IssuerUrl) -> Result<Self, DiscoveryError> {
        let doc: MetadataDocument =
            serde_json::from_slice(json).map_err(|e| DiscoveryError::Invalid {
                reason: e.to_string(),
            })?;
        if doc.issuer != issuer.as_str() {
            return Err(DiscoveryError::IssuerMismatch {
                configured: issuer.as_str().to_owned(),
                found: doc.issuer,
            });
        }
        Ok(Self {
            authorization_endpoint: endpoint(
                "authorization_endpoint",
                &doc.authorization_endpoint,
            )?,
            token_endpoint: endpoint("token_endpoint", &doc.token_endpoint)?,
            jwks_uri: endpoint("jwks_uri", &doc.jwks_uri)?,
            userinfo_endpoint: doc
                .userinfo_endpoint
                .map(|v| endpoint("userinfo_endpoint", &v))
                .transpose()?,
            end_session_endpoint: doc
                .end_session_endpoint
                .map(|v| endpoint("end_session_endpoint", &v))
                .transpose()?,
            issuer: doc.issuer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_urls() {
        let check = |input: &str, expected: Result<&str, &str>| {
            let got = IssuerUrl::parse(input);
            match expected {
                Ok(discovery) => assert_eq!(got.unwrap().discovery_url().as_str(), discovery),
                Err(msg) => assert!(got.unwrap_err().to_string().contains(msg), "{input}"),
            }
        };
        check(
            "https://login.example.com",
            Ok("https://login.example.com/.well-known/openid-configuration"),
        );
        check(
            "https://login.example.com/tenant/v2.0/",
            Ok("https://login.example.com/tenant/v2.0/.well-known/openid-configuration"),
        );
        check(
            "http://127.0.0.1:8080/realms/x",
            Ok("http://127.0.0.1:8080/realms/x/.well-known/openid-configuration"),
        );
        check(
            "http://localhost:9000",
            Ok("http://localhost:9000/.well-known/openid-configuration"),
        );
        check(
            "http://[::1]:9000",
            Ok("http://[::1]:9000/.well-known/openid-configuration"),
        );
        check("http://login.example.com", Err("must use https"));
        check("http://127.0.0.1.example.com", Err("must use https"));
        check("http://localhost.example.com", Err("must use https"));
        check("http://10.0.0.1", Err("must use https"));
        check("ftp://login.example.com", Err("must use https"));
        check("https://login.example.com/?tenant=x", Err("query"));
        check("https://login.example.com/#x", Err("fragment"));
        check("https://user:pw@login.example.com/", Err("credentials"));
        check("login.example.com", Err("not an absolute URL"));
        // The string is kept as configured, not normalised, for exact `iss` comparison.
        assert_eq!(
            IssuerUrl::parse("https://Login.example.com")
                .unwrap()
                .as_str(),
            "https://Login.example.com"
        );
    }

    #[test]
    fn metadata() {
        let issuer = IssuerUrl::parse("https://login.example.com").unwrap();
        let doc = |iss: &str, jwks: &str, extra: &str| {
            format!(
                r#"{{"issuer":"{iss}","authorization_endpoint":"https://login.example.com/auth",
                "token_endpoint":"https://login.example.com/token","jwks_uri":"{jwks}",
                "response_types_supported":["code"]{extra}}}"#
            )
        };
        let check = |json: String, expected: Result<(), &str>| {
            let got = ProviderMetadata::from_json(json.as_bytes(), &issuer);
            match expected {
                Ok(()) => {
                    got.unwrap();
                }
                Err(msg) => assert!(got.unwrap_err().to_string().contains(msg), "{json}"),
            }
        };
        let ok_jwks = "https://login.example.com/keys";
        check(doc("https://login.example.com", ok_jwks, ""), Ok(()));
        check(
            doc(
                "https://login.example.com",
                ok_jwks,
                r#","end_session_endpoint":"https://login.example.com/logout""#,
            ),
            Ok(()),
        );
        check(
            doc("https://login.example.com/", ok_jwks, ""),
            Err("names issuer \"https://login.example.com/\""),
        );
        check(
            doc("https://evil.example", ok_jwks, ""),
            Err("not the configured"),
        );
        check(
            doc(
                "https://login.example.com",
                "http://login.example.com/keys",
                "",
            ),
            Err("jwks_uri"),
        );
        check(
            doc(
                "https://login.example.com",
                ok_jwks,
                r#","userinfo_endpoint":"javascript:alert(1)""#,
            ),
            Err("userinfo_endpoint"),
        );
        check(
            r#"{"issuer":"https://login.example.com"}"#.to_owned(),
            Err("missing field"),
        );
    }
}
