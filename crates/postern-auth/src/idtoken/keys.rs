//! The issuer's signing keys, parsed once per JWKS fetch, and the rule that picks one for a token.
//!
//! **Invariant:** the algorithms a key accepts follow from the key's type alone: EC P-256 verifies
//! ES256 only, EC P-384 ES384 only, RSA the RS* and PS* family, Ed25519 EdDSA. A JWK's own `alg`
//! narrows that further, never widens it. Symmetric (`oct`) keys, encryption keys and key types
//! this crate does not know are skipped when the JWKS is read, so no HMAC key can ever be chosen,
//! whatever a token's header says.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::error::TokenError;

/// The smallest RSA modulus accepted: 2048 bits, the floor NIST SP 800-131A sets.
pub const MIN_RSA_MODULUS_BITS: usize = 2048;

/// The kinds of signing key this crate verifies with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// `kty: EC`, `crv: P-256`.
    EcP256,
    /// `kty: EC`, `crv: P-384`.
    EcP384,
    /// `kty: RSA`.
    Rsa,
    /// `kty: OKP`, `crv: Ed25519`.
    Ed25519,
}

impl KeyType {
    /// The signature algorithms a key of this type may verify.
    pub fn allowed_algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            KeyType::EcP256 => &[ES256],
            KeyType::EcP384 => &[ES384],
            KeyType::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            KeyType::Ed25519 => &[EdDSA],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            KeyType::EcP256 => "an EC P-256 key",
            KeyType::EcP384 => "an EC P-384 key",
            KeyType::Rsa => "an RSA key",
            KeyType::Ed25519 => "an Ed25519 key",
        }
    }
}

/// One usable signing key from the JWKS.
pub(crate) struct VerifierKey {
    pub(crate) kid: Option<String>,
    key_type: KeyType,
    /// The JWK's own `alg`, if it declared one.
    declared_alg: Option<Algorithm>,
    pub(crate) decoding: DecodingKey,
}

impl VerifierKey {
    fn allows(&self, alg: Algorithm) -> bool {
        self.key_type.allowed_algorithms().contains(&alg)
            && self.declared_alg.is_none_or(|declared| declared == alg)
    }

    fn allowed_description(&self) -> String {
        match self.declared_alg {
            Some(alg) => format!("{alg:?} (its declared alg)"),
            None => self
                .key_type
                .allowed_algorithms()
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// A key the JWKS held that will never verify anything, with the reason, for the edge's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its `kid`, if any.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: String,
}

/// Why a JWKS document could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array.
    #[error("JWKS is not a JSON object with a \"keys\" array: {reason}")]
    NotAKeySet {
        /// What is wrong with it.
        reason: String,
    },
    /// It parsed, but holds no key this crate can verify with.
    #[error("JWKS holds no usable signing key (skipped: {skipped:?})")]
    NoUsableKey {
        /// Every key, with why it was skipped.
        skipped: Vec<SkippedKey>,
    },
}

/// An issuer's usable signing keys.
pub struct Jwks {
    keys: Vec<VerifierKey>,
    skipped: Vec<SkippedKey>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Jwks {
    /// Reads a JWKS document (RFC 7517 §5), keeping the keys that can verify signatures.
    pub fn from_json(json: &[u8]) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_slice(json).map_err(|e| JwksError::NotAKeySet {
            reason: e.to_string(),
        })?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::NotAKeySet {
                reason: "no \"keys\" array".to_owned(),
            });
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for entry in entries {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
            match parse_key(entry) {
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(SkippedKey { kid, reason }),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped });
        }
        Ok(Self { keys, skipped })
    }

    /// How many usable keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no usable key (never true for a `Jwks` built by `from_json`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that were skipped, and why.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Whether a usable key has this `kid`.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Picks the key for a token with header `kid` and `alg`.
    pub(crate) fn select(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<&VerifierKey, TokenError> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                let Some(first) = named.peek().copied() else {
                    return Err(TokenError::UnknownKey {
                        kid: kid.to_owned(),
                    });
                };
                // Issuers may publish one key material under several `alg`s with the same kid.
                named
                    .find(|k| k.allows(alg))
                    .ok_or_else(|| TokenError::AlgorithmMismatch {
                        alg: format!("{alg:?}"),
                        kid: kid.to_owned(),
                        key: first.key_type.describe(),
                        allowed: first.allowed_description(),
                    })
            }
            None => {
                let candidates: Vec<&VerifierKey> =
                    self.keys.iter().filter(|k| k.allows(alg)).collect();
                match candidates.as_slice() {
                    [only] => Ok(only),
                    _ => Err(TokenError::NoKeyForUnnamedToken {
                        alg: format!("{alg:?}"),
                        candidates: candidates.len(),
                    }),
                }
            }
        }
    }
}

fn str_field<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str)
}

fn decoded(entry: &Value, name: &str) -> Result<Vec<u8>, String> {
    let field = str_field(entry, name).ok_or_else(|| format!("no \"{name}\""))?;
    URL_SAFE_NO_PAD
        .decode(field)
        .map_err(|_| format!("\"{name}\" is not base64url"))
}

fn parse_key(entry: &Value) -> Result<VerifierKey, String> {
    if let Some(usage) = str_field(entry, "use") {
        if usage != "sig" {
            return Err(format!("\"use\" is {usage:?}, not \"sig\""));
        }
    }
    let key_type = match (str_field(entry, "kty"), str_field(entry, "crv")) {
        (Some("EC"), Some("P-256")) => KeyType::EcP256,
        (Some("EC"), Some("P-384")) => KeyType::EcP384,
        (Some("RSA"), _) => KeyType::Rsa,
        (Some("OKP"), Some("Ed25519")) => KeyType::Ed25519,
        (Some("oct"), _) => return Err("symmetric keys are never accepted".to_owned()),
        (kty, crv) => return Err(format!("unsupported key type {kty:?} / curve {crv:?}")),
    };
    // Check the key material's size here, so that a broken key is reported when the JWKS is read
    // rather than as a signature failure on some later request.
    let (coordinate, names): (usize, &[&str]) = match key_type {
        KeyType::EcP256 => (32, &["x", "y"]),
        KeyType::EcP384 => (48, &["x", "y"]),
        KeyType::Ed25519 => (32, &["x"]),
        KeyType::Rsa => (0, &[]),
    };
    for name in names {
        // RFC 7518 §6.2.1.2: coordinates are full length, leading zeros included.
        let len = decoded(entry, name)?.len();
        if len != coordinate {
            return Err(format!("\"{name}\" is {len} bytes; expected {coordinate}"));
        }
    }
    if key_type == KeyType::Rsa {
        let n = decoded(entry, "n")?;
        // Leading zero bytes do not count towards the modulus' size.
        let bits = (n.len() - n.iter().take_while(|b| **b == 0).count()) * 8;
        if bits < MIN_RSA_MODULUS_BITS {
            return Err(format!(
                "RSA modulus is {bits} bits; at least {MIN_RSA_MODULUS_BITS} are required"
            ));
        }
        decoded(entry, "e")?;
    }
    let declared_alg = match str_field(entry, "alg") {
        None => None,
        Some(name) => {
            let alg: Algorithm = name
                .parse()
                .map_err(|_| format!("\"alg\" {name:?} is not a signature algorithm"))?;
            if !key_type.allowed_algorithms().contains(&alg) {
                return Err(format!(
                    "\"alg\" {name:?} does not fit {}",
                    key_type.describe()
                ));
            }
            Some(alg)
        }
    };
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| e.to_string())?;
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(VerifierKey {
        kid: str_field(entry, "kid").map(str::to_owned),
        key_type,
        declared_alg,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const P256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn ec(kid: &str, extra: &str) -> String {
        format!(
            r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"{P256_X}","y":"{P256_Y}"{extra}}}"#
        )
    }

    fn jwks(keys: &[String]) -> Result<Jwks, JwksError> {
        Jwks::from_json(format!(r#"{{"keys":[{}]}}"#, keys.join(",")).as_bytes())
    }

    #[test]
    fn skips_keys_that_cannot_verify() {
        let check = |key: String, reason: &str| {
            let set = jwks(&[ec("good", ""), key.clone()]).unwrap();
            assert_eq!(set.len(), 1, "{key}");
            assert!(
                set.skipped()[0].reason.contains(reason),
                "{key}: {:?}",
                set.skipped()
            );
        };
        check(
            r#"{"kty":"oct","k":"c2VjcmV0","kid":"h"}"#.to_owned(),
            "symmetric",
        );
        check(ec("enc", r#","use":"enc""#), "not \"sig\"");
        check(ec("hs", r#","alg":"HS256""#), "does not fit");
        check(ec("rs", r#","alg":"RS256""#), "does not fit");
        check(ec("none", r#","alg":"none""#), "not a signature algorithm");
        check(
            format!(r#"{{"kty":"EC","crv":"P-256","kid":"noy","x":"{P256_X}"}}"#),
            "no \"y\"",
        );
        check(
            r#"{"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"}"#.to_owned(),
            "unsupported key type",
        );
        check(
            r#"{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"tiny"}"#.to_owned(),
            "at least 2048",
        );
        check(
            r#"{"kty":"EC","crv":"P-256","kid":"short","x":"AA"}"#.to_owned(),
            "\"x\" is 1 bytes; expected 32",
        );
    }

    #[test]
    fn refuses_documents_without_usable_keys() {
        let check = |json: &str, expected: &str| {
            let err = Jwks::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        };
        check("[]", "no \"keys\" array");
        check("{", "not a JSON object");
        check(r#"{"keys":[]}"#, "no usable signing key");
        check(r#"{"keys":[{"kty":"oct","k":"AA"}]}"#, "symmetric");
    }

    #[test]
    fn selection() {
        let set = jwks(&[
            ec("a", ""),
            ec("b", r#","alg":"ES256""#),
            ec("b", r#","use":"sig""#),
        ])
        .unwrap();
        let check = |kid: Option<&str>, alg: Algorithm, expected: Result<Option<&str>, &str>| {
            let got = set.select(kid, alg).map(|k| k.kid.as_deref());
            match expected {
                Ok(kid) => assert_eq!(got.unwrap(), kid),
                Err(msg) => assert!(got.err().unwrap().to_string().contains(msg), "{kid:?}"),
            }
        };
        check(Some("a"), Algorithm::ES256, Ok(Some("a")));
        check(Some("b"), Algorithm::ES256, Ok(Some("b")));
        check(
            Some("zz"),
            Algorithm::ES256,
            Err("not in the issuer's JWKS"),
        );
        check(Some("a"), Algorithm::RS256, Err("allows only ES256"));
        check(
            None,
            Algorithm::ES256,
            Err("holds 3 keys usable with ES256"),
        );
        check(
            None,
            Algorithm::RS256,
            Err("holds 0 keys usable with RS256"),
        );
        let single = jwks(&[ec("only", "")]).unwrap();
        assert_eq!(
            single
                .select(None, Algorithm::ES256)
                .unwrap()
                .kid
                .as_deref(),
            Some("only")
        );
    }
}
