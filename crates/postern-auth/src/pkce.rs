//! The random values of one sign-in round trip: `state`, `nonce` and the PKCE code verifier.
//!
//! `state` ties the authorization response to the browser that started the sign-in (CSRF), `nonce`
//! ties the ID token to it (replay), and PKCE (RFC 7636, method `S256`) ties the authorization code
//! to it (code interception). All three are 256 bits from the operating system's CSPRNG, encoded
//! as base64url without padding: 43 characters, all in the RFC 7636 unreserved set.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Random bytes behind each value: 256 bits, which base64url-encodes to 43 characters, the
/// shortest code verifier RFC 7636 §4.1 allows.
const RANDOM_BYTES: usize = 32;
/// RFC 7636 §4.1: a code verifier is 43 to 128 characters long.
const VERIFIER_LEN: std::ops::RangeInclusive<usize> = 43..=128;

fn random_token() -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The OAuth `state` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State(String);

impl State {
    /// A fresh random state.
    pub fn generate() -> Self {
        Self(random_token())
    }

    /// Wraps a state read back from a sealed cookie.
    pub(crate) fn from_sealed(s: String) -> Self {
        Self(s)
    }

    /// The value to put in the authorization request.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the `state` the issuer sent back is this one (compared in constant time).
    pub fn matches(&self, returned: &str) -> bool {
        constant_time_eq(&self.0, returned)
    }
}

/// The OpenID Connect `nonce` parameter, echoed back inside the ID token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nonce(String);

impl Nonce {
    /// A fresh random nonce.
    pub fn generate() -> Self {
        Self(random_token())
    }

    /// Wraps a nonce read back from a sealed cookie.
    pub(crate) fn from_sealed(s: String) -> Self {
        Self(s)
    }

    /// The value to put in the authorization request and to expect in the ID token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a PKCE code verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    /// Outside RFC 7636's 43 to 128 characters.
    #[error("code verifier is {len} characters; RFC 7636 requires 43 to 128")]
    BadLength {
        /// Its length.
        len: usize,
    },
    /// A character outside `A-Z a-z 0-9 - . _ ~`.
    #[error(
        "code verifier contains {found:?}, outside the RFC 7636 unreserved set A-Z a-z 0-9 - . _ ~"
    )]
    BadCharacter {
        /// The first offending character.
        found: char,
    },
}

/// The PKCE code verifier: a secret until the token request, so `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeVerifier(String);

impl fmt::Debug for CodeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeVerifier(<masked>)")
    }
}

impl CodeVerifier {
    /// A fresh random verifier (43 characters).
    pub fn generate() -> Self {
        Self(random_token())
    }

    /// Checks a verifier against RFC 7636 §4.1.
    pub fn new(verifier: impl Into<String>) -> Result<Self, PkceError> {
        let verifier = verifier.into();
        let len = verifier.chars().count();
        if !VERIFIER_LEN.contains(&len) {
            return Err(PkceError::BadLength { len });
        }
        if let Some(found) = verifier
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return Err(PkceError::BadCharacter { found });
        }
        Ok(Self(verifier))
    }

    /// The value for the token request's `code_verifier`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `S256` challenge for the authorization request: base64url(SHA-256(verifier)).
    pub fn challenge(&self) -> CodeChallenge {
        CodeChallenge(URL_SAFE_NO_PAD.encode(Sha256::digest(self.0.as_bytes())))
    }
}

/// The PKCE code challenge, sent with `code_challenge_method=S256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// The value for `code_challenge_method`; Postern never sends `plain`.
    pub const METHOD: &'static str = "S256";

    /// The value for `code_challenge`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = CodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        assert_eq!(
            verifier.challenge().as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifier_rules() {
        let check = |input: String, expected: Result<(), PkceError>| {
            assert_eq!(
                CodeVerifier::new(input.clone()).map(|_| ()),
                expected,
                "{input}"
            );
        };
        check("a".repeat(43), Ok(()));
        check("a".repeat(128), Ok(()));
        check(format!("{}-._~Z9", "a".repeat(40)), Ok(()));
        check("a".repeat(42), Err(PkceError::BadLength { len: 42 }));
        check("a".repeat(129), Err(PkceError::BadLength { len: 129 }));
        check(
            format!("{}+", "a".repeat(42)),
            Err(PkceError::BadCharacter { found: '+' }),
        );
        check(
            format!("{}é", "a".repeat(42)),
            Err(PkceError::BadCharacter { found: 'é' }),
        );
    }

    #[test]
    fn generated_values_are_valid_distinct_and_masked() {
        let v = CodeVerifier::generate();
        assert!(CodeVerifier::new(v.as_str()).is_ok());
        assert_ne!(v, CodeVerifier::generate());
        assert_ne!(State::generate(), State::generate());
        assert_ne!(Nonce::generate(), Nonce::generate());
        assert!(!format!("{v:?}").contains(v.as_str()));
        let s = State::generate();
        assert!(s.matches(s.as_str()));
        assert!(!s.matches(State::generate().as_str()));
        assert!(!s.matches(""));
    }
}
