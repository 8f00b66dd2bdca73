//! Verifying ID tokens and JWT bearer access tokens against an issuer's JWKS.
//!
//! Signature verification is jsonwebtoken's (with its pure-Rust `rust_crypto` backend); everything
//! around it is decided here, before and after, so that the rules are visible in one place:
//!
//! 1. The token is at most [`MAX_TOKEN_LEN`] bytes and has three parts (a five-part JWE is refused).
//! 2. The header's `alg` is an asymmetric signature algorithm: `none` and `HS*` never pass, so an
//!    issuer's public key can never be used as an HMAC secret (key confusion). `crit` is refused.
//! 3. The header's `kid` picks the key ([`Jwks`]); the key's type fixes which algorithms it may
//!    verify. A `kid` the JWKS lacks is [`TokenError::UnknownKey`], the one error a JWKS refresh may
//!    cure. Keys embedded in the header (`jwk`, `jku`, `x5u`, `x5c`) are ignored.
//! 4. Only after the signature verifies are the claims read (strictly typed, see `claims`) and
//!    checked against [`Expectations`] at the `now` the caller passes: `iss` exactly, `aud` contains
//!    the client id, `azp`, `exp`, `nbf`, `iat` with a leeway, and `nonce`.

mod claims;
mod error;
mod keys;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;

pub use claims::IdTokenClaims;
pub use error::TokenError;
pub use keys::{Jwks, JwksError, KeyType, SkippedKey, MIN_RSA_MODULUS_BITS};

use crate::unix_time::UnixTime;

/// The clock skew tolerated between the issuer and the edge for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The longest token accepted. Entra ID tokens with 200 groups stay under 10 KB; the limit bounds
/// the work an attacker can make the edge do before the signature check.
pub const MAX_TOKEN_LEN: usize = 32 * 1024;

/// The signature algorithms that can ever be accepted, whatever the keys allow.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// What a token must say to be accepted.
#[derive(Clone, Debug)]
pub struct Expectations<'a> {
    /// The configured issuer; `iss` must equal it exactly.
    pub issuer: &'a str,
    /// This app's client id (or, for access tokens, this API's audience); `aud` must contain it.
    pub audience: &'a str,
    /// The nonce this sign-in sent, for an ID token; `None` for a bearer access token.
    pub nonce: Option<&'a str>,
    /// Tolerated clock skew.
    pub leeway: Duration,
}

impl<'a> Expectations<'a> {
    /// For the ID token of a sign-in that sent `nonce`.
    pub fn id_token(issuer: &'a str, client_id: &'a str, nonce: &'a str) -> Self {
        Self {
            issuer,
            audience: client_id,
            nonce: Some(nonce),
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// For a JWT bearer access token presented to an app whose audience is `audience`.
    pub fn bearer(issuer: &'a str, audience: &'a str) -> Self {
        Self {
            issuer,
            audience,
            nonce: None,
            leeway: DEFAULT_LEEWAY,
        }
    }
}

/// Verifies `token` against `jwks` and `expect` at `now`, returning its claims.
pub fn verify(
    token: &str,
    jwks: &Jwks,
    expect: &Expectations<'_>,
    now: UnixTime,
) -> Result<IdTokenClaims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let header = read_header(token)?;
    let key = jwks.select(header.kid.as_deref(), header.alg)?;
    let mut validation = Validation::new(header.alg);
    // Claims are checked below, strictly typed and at the caller's `now`; jsonwebtoken's own
    // checks read the system clock and treat a mistyped claim as absent, so they are all off.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature {
                kid: key.kid.clone(),
            },
            ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidToken => {
                TokenError::malformed(format!("payload or signature: {e}"))
            }
            _ => TokenError::UnusableKey {
                kid: key.kid.clone(),
                reason: e.to_string(),
            },
        })?;
    let claims = IdTokenClaims::from_payload(data.claims)?;
    check_claims(&claims, expect, now)?;
    Ok(claims)
}

struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

/// Reads the protected header before any key is touched, so that refusals name their reason.
fn read_header(token: &str) -> Result<Header, TokenError> {
    let parts = token.split('.').count();
    match parts {
        3 => {}
        5 => {
            return Err(TokenError::malformed(
                "encrypted tokens (JWE) are not supported",
            ))
        }
        n => {
            return Err(TokenError::malformed(format!(
                "expected three dot-separated parts, found {n}"
            )))
        }
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::malformed("header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::malformed("header is not a JSON object"))?;
    let alg_name = match header.get("alg") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(TokenError::malformed("header has no \"alg\" string")),
    };
    let alg = alg_name
        .parse::<Algorithm>()
        .ok()
        .filter(|alg| ACCEPTED.contains(alg))
        .ok_or_else(|| TokenError::AlgorithmNotAllowed {
            alg: alg_name.to_owned(),
        })?;
    if let Some(crit) = header.get("crit") {
        let names = crit
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_else(|| vec![crit.to_string()]);
        return Err(TokenError::CriticalHeader { names });
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(TokenError::malformed("header \"kid\" is not a string")),
    };
    Ok(Header { alg, kid })
}

/// The checks on a verified token's claims, in the order OpenID Connect Core §3.1.3.7 lists them.
fn check_claims(
    claims: &IdTokenClaims,
    expect: &Expectations<'_>,
    now: UnixTime,
) -> Result<(), TokenError> {
    if claims.issuer != expect.issuer {
        return Err(TokenError::WrongIssuer {
            expected: expect.issuer.to_owned(),
            found: claims.issuer.clone(),
        });
    }
    if !claims.audience.iter().any(|a| a == expect.audience) {
        return Err(TokenError::WrongAudience {
            expected: expect.audience.to_owned(),
            found: claims.audience.clone(),
        });
    }
    // OIDC Core: with several audiences, `azp` names the client the token is for. An ID token's
    // `azp`, when present, must be us; an access token's `azp` legitimately names the calling
    // client, so it is checked only when the audience is shared.
    if let Some(azp) = &claims.authorized_party {
        let is_id_token = expect.nonce.is_some();
        if (is_id_token || claims.audience.len() > 1) && azp != expect.audience {
            return Err(TokenError::WrongAuthorizedParty {
                expected: expect.audience.to_owned(),
                found: azp.clone(),
            });
        }
    }
    if now >= claims.expires_at.saturating_add(expect.leeway) {
        return Err(TokenError::Expired {
            exp: claims.expires_at,
            now,
        });
    }
    if let Some(nbf) = claims.not_before {
        if now.saturating_add(expect.leeway) < nbf {
            return Err(TokenError::NotYetValid { nbf, now });
        }
    }
    match claims.issued_at {
        Some(iat) if iat > now.saturating_add(expect.leeway) => {
            return Err(TokenError::IssuedInFuture { iat, now });
        }
        // OIDC Core §2: an ID token always carries `iat`.
        None if expect.nonce.is_some() => return Err(TokenError::MissingClaim { claim: "iat" }),
        _ => {}
    }
    if let Some(expected) = expect.nonce {
        let Some(nonce) = &claims.nonce else {
            return Err(TokenError::MissingNonce);
        };
        if !bool::from(nonce.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(TokenError::WrongNonce);
        }
    }
    Ok(())
}
