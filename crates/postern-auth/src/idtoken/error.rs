//! Why a token was refused: one variant per reason, each message naming what to look at.

use crate::unix_time::UnixTime;

/// Why a JWT (an ID token or a bearer access token) was refused.
///
/// Only [`TokenError::UnknownKey`] can be cured by the caller, by fetching the issuer's JWKS again
/// (see [`TokenError::may_be_cured_by_jwks_refresh`]); every other variant is final for the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than any token an issuer sends; refused before any parsing.
    #[error("token is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a compact JWS: wrong number of parts, bad base64url, or a header or payload that is not
    /// a JSON object.
    #[error("token is malformed: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// Signed with an algorithm that is never accepted: `none`, any HMAC (`HS*`), or one this
    /// crate does not know.
    #[error("token algorithm {alg:?} is not accepted (allowed: ES256, ES384, RS256-512, PS256-512, EdDSA)")]
    AlgorithmNotAllowed {
        /// The header's `alg`.
        alg: String,
    },
    /// The header lists critical extensions (`crit`), none of which this crate implements.
    #[error("token header marks extensions {names:?} as critical; none are supported")]
    CriticalHeader {
        /// The header's `crit` entries.
        names: Vec<String>,
    },
    /// No key in the JWKS has the header's `kid`. The issuer may have rotated its keys: fetch the
    /// JWKS again (rate-limited) and retry once.
    #[error("token was signed with key {kid:?}, which is not in the issuer's JWKS")]
    UnknownKey {
        /// The header's `kid`.
        kid: String,
    },
    /// The header names no `kid`, and the JWKS does not hold exactly one key for its algorithm.
    #[error("token names no key id, and the JWKS holds {candidates} keys usable with {alg}; exactly one is needed")]
    NoKeyForUnnamedToken {
        /// The header's `alg`.
        alg: String,
        /// How many keys would fit.
        candidates: usize,
    },
    /// The key the `kid` names does not allow the header's algorithm (by its type, or by the
    /// `alg` the JWK itself declares).
    #[error("token uses {alg} but key {kid:?} is {key} and allows only {allowed}")]
    AlgorithmMismatch {
        /// The header's `alg`.
        alg: String,
        /// The key's id.
        kid: String,
        /// The key's type, e.g. "an EC P-256 key".
        key: &'static str,
        /// What it allows.
        allowed: String,
    },
    /// The signature does not verify with the key.
    #[error("token signature does not verify with {}", match kid { Some(k) => format!("key {k:?}"), None => "the issuer's key (the token names none)".to_owned() })]
    BadSignature {
        /// The key tried (`None` when the token names none).
        kid: Option<String>,
    },
    /// The key in the JWKS could not be used for verification (a broken key at the issuer).
    #[error("issuer's key {kid:?} cannot verify signatures: {reason}")]
    UnusableKey {
        /// The key tried.
        kid: Option<String>,
        /// What the crypto library said.
        reason: String,
    },
    /// `iss` is not the configured issuer.
    #[error("token was issued by {found:?}, not the configured issuer {expected:?}")]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss`.
        found: String,
    },
    /// `aud` does not contain this app's client id.
    #[error("token was issued for audience {found:?}, not this app's client id {expected:?}")]
    WrongAudience {
        /// This app's client id.
        expected: String,
        /// The token's audiences.
        found: Vec<String>,
    },
    /// `azp` names another client.
    #[error("token's authorized party (azp) is {found:?}, not this app's client id {expected:?}")]
    WrongAuthorizedParty {
        /// This app's client id.
        expected: String,
        /// The token's `azp`.
        found: String,
    },
    /// `exp` has passed (beyond the leeway).
    #[error("token expired at {exp}; it is now {now}")]
    Expired {
        /// The token's `exp`.
        exp: UnixTime,
        /// The time checked against.
        now: UnixTime,
    },
    /// `nbf` is still ahead (beyond the leeway).
    #[error("token is not valid before {nbf}; it is now {now} (check the clocks)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: UnixTime,
        /// The time checked against.
        now: UnixTime,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error(
        "token claims to be issued at {iat}, in the future; it is now {now} (check the clocks)"
    )]
    IssuedInFuture {
        /// The token's `iat`.
        iat: UnixTime,
        /// The time checked against.
        now: UnixTime,
    },
    /// A nonce was expected (an ID token from our own sign-in) and the token carries none.
    #[error("ID token carries no nonce, but this sign-in sent one")]
    MissingNonce,
    /// The nonce is not the one this sign-in sent: a replayed or injected token.
    #[error("ID token's nonce is not the one this sign-in sent")]
    WrongNonce,
    /// A required claim is absent.
    #[error("token lacks the required claim {claim:?}")]
    MissingClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// A claim has the wrong JSON type, such as an `exp` given as a string.
    #[error("token claim {claim:?} is invalid: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl TokenError {
    /// Whether fetching the issuer's JWKS again might make the token verify: only when it names a
    /// key the cached JWKS does not hold.
    pub fn may_be_cured_by_jwks_refresh(&self) -> bool {
        matches!(self, TokenError::UnknownKey { .. })
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        TokenError::Malformed {
            reason: reason.into(),
        }
    }
}
