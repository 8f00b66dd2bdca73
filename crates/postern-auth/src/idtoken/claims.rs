//! Typed claims, read strictly from a verified token's payload.
//!
//! A claim of the wrong JSON type is an error, never "absent": an `exp` sent as a string must not
//! turn into a token without expiry (the flaw behind CVE-2026-25537 in jsonwebtoken's own checks,
//! which this crate therefore leaves switched off). A JSON `null` counts as absent, since several
//! issuers send `"email": null`.

use serde_json::{Map, Value};

use super::error::TokenError;
use crate::unix_time::UnixTime;

/// The claims of a verified ID token or JWT access token.
#[derive(Clone, Debug, PartialEq)]
pub struct IdTokenClaims {
    /// `iss`: equal to the configured issuer.
    pub issuer: String,
    /// `sub`: the user's stable id at the issuer.
    pub subject: String,
    /// `aud`: always contains the expected client id.
    pub audience: Vec<String>,
    /// `azp`: the client the token was issued to, if the issuer said.
    pub authorized_party: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `email_verified` (a boolean, or the strings "true"/"false" some issuers send).
    pub email_verified: Option<bool>,
    /// `name`.
    pub name: Option<String>,
    /// `groups` (an array of strings, or a single string).
    pub groups: Vec<String>,
    /// `amr`: the authentication methods used.
    pub amr: Vec<String>,
    /// `acr`: the authentication context class.
    pub acr: Option<String>,
    /// `auth_time`: when the user last authenticated at the issuer.
    pub auth_time: Option<UnixTime>,
    /// `exp`.
    pub expires_at: UnixTime,
    /// `iat`.
    pub issued_at: Option<UnixTime>,
    /// `nbf`.
    pub not_before: Option<UnixTime>,
    /// `sid`: the issuer's session id, for front- and back-channel logout.
    pub sid: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// Every claim as sent, for policies on claims this struct does not name.
    pub raw: Map<String, Value>,
}

impl IdTokenClaims {
    /// Reads the typed claims out of a verified payload. Presence rules beyond `iss`, `sub`, `aud`
    /// and `exp` are the caller's (see `super::check_claims`).
    pub(crate) fn from_payload(raw: Map<String, Value>) -> Result<Self, TokenError> {
        let claims = Self {
            issuer: required(string(&raw, "iss")?, "iss")?,
            subject: required(string(&raw, "sub")?, "sub")?,
            audience: required(
                Some(string_list(&raw, "aud")?).filter(|a| !a.is_empty()),
                "aud",
            )?,
            authorized_party: string(&raw, "azp")?,
            email: string(&raw, "email")?,
            email_verified: boolean(&raw, "email_verified")?,
            name: string(&raw, "name")?,
            groups: string_list(&raw, "groups")?,
            amr: string_list(&raw, "amr")?,
            acr: string(&raw, "acr")?,
            auth_time: numeric_date(&raw, "auth_time")?,
            expires_at: required(numeric_date(&raw, "exp")?, "exp")?,
            issued_at: numeric_date(&raw, "iat")?,
            not_before: numeric_date(&raw, "nbf")?,
            sid: string(&raw, "sid")?,
            nonce: string(&raw, "nonce")?,
            raw: Map::new(),
        };
        Ok(Self { raw, ..claims })
    }

    /// The email, if it may be trusted as the user's: the token says `email_verified: true`, or
    /// says nothing and the administrator vouches that `issuer_verifies_email`. An explicit
    /// `false` is never overridden. Assignment by email and the email passed to apps use only
    /// this.
    pub fn verified_email(&self, issuer_verifies_email: bool) -> Option<&str> {
        let verified = self.email_verified.unwrap_or(issuer_verifies_email);
        self.email.as_deref().filter(|_| verified)
    }
}

fn present<'a>(raw: &'a Map<String, Value>, claim: &str) -> Option<&'a Value> {
    raw.get(claim).filter(|v| !v.is_null())
}

fn required<T>(value: Option<T>, claim: &'static str) -> Result<T, TokenError> {
    value.ok_or(TokenError::MissingClaim { claim })
}

fn string(raw: &Map<String, Value>, claim: &'static str) -> Result<Option<String>, TokenError> {
    match present(raw, claim) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::InvalidClaim {
            claim,
            reason: "expected a string",
        }),
    }
}

fn string_list(raw: &Map<String, Value>, claim: &'static str) -> Result<Vec<String>, TokenError> {
    let invalid = TokenError::InvalidClaim {
        claim,
        reason: "expected a string or an array of strings",
    };
    match present(raw, claim) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(invalid.clone()))
            .collect(),
        Some(_) => Err(invalid),
    }
}

fn boolean(raw: &Map<String, Value>, claim: &'static str) -> Result<Option<bool>, TokenError> {
    match present(raw, claim) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(TokenError::InvalidClaim {
            claim,
            reason: "expected a boolean",
        }),
    }
}

/// RFC 7519 NumericDate: seconds since the epoch, possibly fractional (rounded down here).
fn numeric_date(
    raw: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<UnixTime>, TokenError> {
    let invalid = TokenError::InvalidClaim {
        claim,
        reason: "expected a non-negative number of seconds since the epoch",
    };
    match present(raw, claim) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                Ok(Some(UnixTime::from_secs(secs)))
            } else {
                match n.as_f64() {
                    // `as` saturates for finite floats beyond u64, which is the intent.
                    Some(f) if f.is_finite() && f >= 0.0 => {
                        Ok(Some(UnixTime::from_secs(f.floor() as u64)))
                    }
                    _ => Err(invalid),
                }
            }
        }
        Some(_) => Err(invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"iss": "https://issuer", "sub": "u1", "aud": "client", "exp": 100})
    }

    fn check(patch: Value, expected: Result<fn(&IdTokenClaims) -> bool, &str>) {
        let mut payload = base();
        for (k, v) in patch.as_object().unwrap() {
            payload[k] = v.clone();
        }
        let got = IdTokenClaims::from_payload(payload.as_object().unwrap().clone());
        match expected {
            Ok(test) => assert!(test(&got.unwrap()), "{patch}"),
            Err(msg) => assert!(
                got.as_ref().err().unwrap().to_string().contains(msg),
                "{patch}: {got:?}"
            ),
        }
    }

    #[test]
    fn an_email_counts_only_when_verified() {
        // (email_verified claim, the admin vouches for the issuer, trusted)
        for (claim, vouched, trusted) in [
            (json!(true), false, true),
            (json!("true"), false, true),
            (json!(true), true, true),
            (json!(false), false, false),
            (json!(false), true, false),
            (json!("false"), true, false),
            (json!(null), false, false),
            (json!(null), true, true),
        ] {
            let mut payload = base();
            payload["email"] = json!("ann@example.com");
            payload["email_verified"] = claim.clone();
            let claims = IdTokenClaims::from_payload(payload.as_object().unwrap().clone()).unwrap();
            assert_eq!(
                claims.verified_email(vouched),
                trusted.then_some("ann@example.com"),
                "{claim} vouched={vouched}"
            );
        }
        let mut payload = base();
        payload["email_verified"] = json!(true);
        let no_email = IdTokenClaims::from_payload(payload.as_object().unwrap().clone()).unwrap();
        assert_eq!(no_email.verified_email(true), None);
    }

    #[test]
    fn types_are_strict() {
        check(
            json!({}),
            Ok(|c| c.audience == ["client"] && c.groups.is_empty()),
        );
        check(
            json!({"aud": ["a", "client"]}),
            Ok(|c| c.audience.len() == 2),
        );
        check(json!({"groups": "admins"}), Ok(|c| c.groups == ["admins"]));
        check(
            json!({"groups": ["a", "b"]}),
            Ok(|c| c.groups == ["a", "b"]),
        );
        check(json!({"email": null}), Ok(|c| c.email.is_none()));
        check(
            json!({"email_verified": "true"}),
            Ok(|c| c.email_verified == Some(true)),
        );
        check(json!({"exp": 100.9}), Ok(|c| c.expires_at.secs() == 100));
        check(
            json!({"auth_time": 5}),
            Ok(|c| c.auth_time == Some(UnixTime::from_secs(5))),
        );
        check(
            json!({"exp": "999999999999"}),
            Err("claim \"exp\" is invalid"),
        );
        check(json!({"nbf": "0"}), Err("claim \"nbf\" is invalid"));
        check(json!({"iat": -1}), Err("claim \"iat\" is invalid"));
        check(
            json!({"exp": null}),
            Err("lacks the required claim \"exp\""),
        );
        check(json!({"sub": 7}), Err("claim \"sub\" is invalid"));
        check(json!({"aud": []}), Err("lacks the required claim \"aud\""));
        check(json!({"aud": [1]}), Err("claim \"aud\" is invalid"));
        check(json!({"groups": [1]}), Err("claim \"groups\" is invalid"));
        check(
            json!({"groups": {"a": 1}}),
            Err("claim \"groups\" is invalid"),
        );
        check(
            json!({"email_verified": "yes"}),
            Err("claim \"email_verified\""),
        );
        check(
            json!({"iss": null}),
            Err("lacks the required claim \"iss\""),
        );
    }
}
