//! The tokens the provider issues: ID tokens (OpenID Connect Core, section 2) and access tokens
//! (JWTs per RFC 9068), signed with the key ring's active key, and their verification.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Header, Validation};
use postern_store::IdTokenAlg;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, KeyRing};

/// How long ID and access tokens are valid. Short, because a refresh token gets new ones and a
/// disabled user's access tokens are also refused at userinfo at once.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The claims of an ID token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub amr: Vec<String>,
    pub acr: String,
    /// The grant the token was issued from (ties logout and revocation to it).
    pub sid: String,
}

/// The claims of an access token (RFC 9068).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    /// The grant the token was issued from; a revoked grant makes the token useless at once.
    pub grant: String,
}

/// Why a presented token was refused.
#[derive(Debug, thiserror::Error)]
pub enum BadToken {
    #[error("the token is malformed or its signature does not verify")]
    Invalid,
    #[error("the token names a signing key this provider does not publish")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
}

fn jwt_alg(alg: IdTokenAlg) -> Algorithm {
    match alg {
        IdTokenAlg::Es256 => Algorithm::ES256,
        IdTokenAlg::Rs256 => Algorithm::RS256,
    }
}

fn sign<T: Serialize>(
    keys: &KeyRing,
    now: i64,
    alg: IdTokenAlg,
    typ: &str,
    claims: &T,
) -> Result<String, KeyError> {
    let signer = keys.signer(now, alg)?;
    let mut header = Header::new(jwt_alg(alg));
    header.kid = Some(signer.kid().to_owned());
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&header, claims, signer.encoding()).map_err(|e| KeyError::Unusable {
        kid: signer.kid().to_owned(),
        reason: e.to_string(),
    })
}

/// Signs an ID token with the client's algorithm (ES256 unless it asked for RS256).
pub fn sign_id_token(
    keys: &KeyRing,
    now: i64,
    alg: IdTokenAlg,
    claims: &IdClaims,
) -> Result<String, KeyError> {
    sign(keys, now, alg, "JWT", claims)
}

pub fn sign_access_token(
    keys: &KeyRing,
    now: i64,
    claims: &AccessClaims,
) -> Result<String, KeyError> {
    sign(keys, now, IdTokenAlg::Es256, "at+jwt", claims)
}

/// Verifies a token's signature (ES256 only), issuer and expiry at `now`, and its type.
fn verify<T: for<'de> Deserialize<'de>>(
    keys: &KeyRing,
    issuer: &str,
    token: &str,
    typ: &str,
    algs: &[IdTokenAlg],
    now: i64,
    check_expiry: bool,
) -> Result<T, BadToken> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| BadToken::Invalid)?;
    if header.typ.as_deref() != Some(typ) {
        return Err(BadToken::Invalid);
    }
    let kid = header.kid.ok_or(BadToken::Invalid)?;
    let (alg, key) = keys.decoding(&kid).ok_or(BadToken::UnknownKey)?;
    // The key decides the algorithm; the header must agree (no algorithm confusion).
    if !algs.contains(&alg) || header.alg != jwt_alg(alg) {
        return Err(BadToken::Invalid);
    }
    let mut v = Validation::new(jwt_alg(alg));
    v.set_issuer(&[issuer]);
    v.validate_aud = false;
    // Expiry is checked below against the caller's clock, not the system's.
    v.validate_exp = false;
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map_err(|_| BadToken::Invalid)?;
    let exp = data
        .claims
        .get("exp")
        .and_then(|e| e.as_i64())
        .ok_or(BadToken::Invalid)?;
    if check_expiry && exp <= now {
        return Err(BadToken::Expired);
    }
    serde_json::from_value(data.claims).map_err(|_| BadToken::Invalid)
}

pub fn verify_access_token(
    keys: &KeyRing,
    issuer: &str,
    token: &str,
    now: i64,
) -> Result<AccessClaims, BadToken> {
    verify(
        keys,
        issuer,
        token,
        "at+jwt",
        &[IdTokenAlg::Es256],
        now,
        true,
    )
}

/// Verifies an ID token the provider issued, ignoring expiry (as `id_token_hint` at logout may
/// be expired; OpenID Connect RP-Initiated Logout, section 2).
pub fn verify_id_token_hint(
    keys: &KeyRing,
    issuer: &str,
    token: &str,
) -> Result<IdClaims, BadToken> {
    let algs = [IdTokenAlg::Es256, IdTokenAlg::Rs256];
    verify(keys, issuer, token, "JWT", &algs, 0, false)
}
