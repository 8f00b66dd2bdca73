//! The edge's signed identity assertion, sent to apps as `X-Postern-Jwt-Assertion`.
//!
//! Like Pomerium's, IAP's or Cloudflare Access's, it is a short-lived ES256 JWT that says who the
//! user is, for exactly one app (`aud` is the app's external origin), so an app can trust the
//! identity without trusting the network path. Apps verify it against the edge's JWKS, which
//! [`AssertionSigner::jwks`] produces for the edge to publish.
//!
//! Keys rotate like the cookie keys: the newest signs, and older keys stay published until they
//! are retired, so an app's cached JWKS keeps working across a rotation. A key's `kid` is its RFC
//! 7638 thumbprint, so it is stable across restarts and edges without being stored.
//!
//! Signing costs an ECDSA signature per call; the edge may cache an assertion per session and app
//! for most of [`ASSERTION_LIFETIME`] rather than sign on every request.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::redirect::AppOrigin;
use crate::session::Session;
use crate::unix_time::UnixTime;

/// How long an assertion is valid: long enough for clock skew and a slow request, short enough
/// that a leaked header is soon useless.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);
/// The header apps read the assertion from.
pub const ASSERTION_HEADER: &str = "x-postern-jwt-assertion";
/// The most keys a signer holds (see `keyring::MAX_KEYS` for the reasoning).
pub const MAX_ASSERTION_KEYS: usize = 16;
const FORMAT: &str = "postern-assertion-keys";
const VERSION: u32 = 1;

/// The claims of an assertion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The edge's own URL.
    pub iss: String,
    /// The app's external origin, e.g. `https://wiki.example.com`.
    pub aud: String,
    /// The user's id at the identity provider (`sub` of the ID token).
    pub sub: String,
    /// The identity provider that vouched for `sub`, since `sub` is unique only within it.
    pub idp: String,
    /// The user's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expires at (unix seconds).
    pub exp: u64,
    /// A random id, so an app can refuse a replayed assertion if it cares to.
    pub jti: String,
}

/// Why a persisted signer could not be loaded or changed, or a signature failed.
#[derive(Debug, thiserror::Error)]
pub enum AssertionKeyError {
    /// Not the expected JSON document.
    #[error("assertion key file is not a valid key document: {0}")]
    Json(#[from] serde_json::Error),
    /// Another format name or version.
    #[error("assertion key file has format {format:?} version {version}; this build reads {FORMAT:?} version {VERSION}")]
    UnsupportedFormat {
        /// The document's `format`.
        format: String,
        /// The document's `version`.
        version: u32,
    },
    /// No key, or too many.
    #[error("assertion key file must hold 1 to {MAX_ASSERTION_KEYS} keys, not {count}")]
    KeyCount {
        /// How many it holds (or would hold).
        count: usize,
    },
    /// A key is not a base64url PKCS#8 P-256 private key.
    #[error("assertion key #{index} is not a base64url PKCS#8 P-256 private key")]
    BadKey {
        /// Its position in the file, from 0.
        index: usize,
    },
    /// The key to retire is the one that signs.
    #[error("assertion key {kid} signs new assertions; rotate before retiring it")]
    RetirePrimary {
        /// Its kid.
        kid: String,
    },
    /// No key has this kid.
    #[error("no assertion key {kid}")]
    NoSuchKey {
        /// The kid asked for.
        kid: String,
    },
    /// The signature itself failed (a bug, or a broken key).
    #[error("signing the assertion failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

struct SigningKey {
    kid: String,
    pkcs8: Zeroizing<Vec<u8>>,
    encoding: EncodingKey,
    x: String,
    y: String,
}

impl SigningKey {
    fn from_secret(secret: &p256::SecretKey) -> Self {
        // Not outside input: a valid secret key always has a PKCS#8 encoding.
        let der = secret.to_pkcs8_der().expect("P-256 key encodes as PKCS#8");
        let point = secret.public_key().to_encoded_point(false);
        let coordinate = |c: Option<&p256::FieldBytes>| {
            URL_SAFE_NO_PAD.encode(c.map_or(&[][..], |c| c.as_slice()))
        };
        let (x, y) = (coordinate(point.x()), coordinate(point.y()));
        // RFC 7638: the thumbprint hashes the required members in lexicographic order.
        let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        Self {
            kid: URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes())),
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
            x,
            y,
        }
    }
}

/// The edge's assertion signing keys, newest first. `Debug` shows the kids only.
pub struct AssertionSigner {
    keys: Vec<SigningKey>,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionSigner")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("private_keys", &"<masked>")
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignerDocument {
    format: String,
    version: u32,
    /// Base64url PKCS#8 DER, newest first.
    keys: Vec<Zeroizing<String>>,
}

impl AssertionSigner {
    /// A signer with one fresh P-256 key.
    pub fn generate() -> Self {
        Self {
            keys: vec![SigningKey::from_secret(&p256::SecretKey::random(
                &mut rand::rngs::OsRng,
            ))],
        }
    }

    /// The kid of the key that signs.
    pub fn primary_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// Adds a fresh key that signs from now on; the others stay published. Returns its kid.
    pub fn rotate(&mut self) -> Result<&str, AssertionKeyError> {
        if self.keys.len() >= MAX_ASSERTION_KEYS {
            return Err(AssertionKeyError::KeyCount {
                count: self.keys.len() + 1,
            });
        }
        let key = SigningKey::from_secret(&p256::SecretKey::random(&mut rand::rngs::OsRng));
        self.keys.insert(0, key);
        Ok(self.primary_kid())
    }

    /// Stops publishing a key; assertions it signed stop verifying once apps refresh the JWKS.
    pub fn retire(&mut self, kid: &str) -> Result<(), AssertionKeyError> {
        if kid == self.primary_kid() {
            return Err(AssertionKeyError::RetirePrimary {
                kid: kid.to_owned(),
            });
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.kid != kid);
        if self.keys.len() == before {
            return Err(AssertionKeyError::NoSuchKey {
                kid: kid.to_owned(),
            });
        }
        Ok(())
    }

    /// The private keys as a JSON document to persist, like the cookie key ring.
    pub fn to_json(&self) -> Zeroizing<String> {
        let doc = SignerDocument {
            format: FORMAT.to_owned(),
            version: VERSION,
            keys: self
                .keys
                .iter()
                .map(|k| Zeroizing::new(URL_SAFE_NO_PAD.encode(k.pkcs8.as_slice())))
                .collect(),
        };
        // Not outside input: a struct of strings and integers always serialises.
        Zeroizing::new(serde_json::to_string_pretty(&doc).expect("signer document serialises"))
    }

    /// Loads a signer written by [`AssertionSigner::to_json`].
    pub fn from_json(json: &str) -> Result<Self, AssertionKeyError> {
        let doc: SignerDocument = serde_json::from_str(json)?;
        if doc.format != FORMAT || doc.version != VERSION {
            return Err(AssertionKeyError::UnsupportedFormat {
                format: doc.format,
                version: doc.version,
            });
        }
        if doc.keys.is_empty() || doc.keys.len() > MAX_ASSERTION_KEYS {
            return Err(AssertionKeyError::KeyCount {
                count: doc.keys.len(),
            });
        }
        let keys = doc
            .keys
            .iter()
            .enumerate()
            .map(|(index, encoded)| {
                let der = Zeroizing::new(
                    URL_SAFE_NO_PAD
                        .decode(encoded.as_bytes())
                        .map_err(|_| AssertionKeyError::BadKey { index })?,
                );
                let secret = p256::SecretKey::from_pkcs8_der(&der)
                    .map_err(|_| AssertionKeyError::BadKey { index })?;
                Ok(SigningKey::from_secret(&secret))
            })
            .collect::<Result<Vec<_>, AssertionKeyError>>()?;
        Ok(Self { keys })
    }

    /// Signs an assertion about `session`'s user for the app at `audience`, valid from `now` for
    /// [`ASSERTION_LIFETIME`]. `issuer` is the edge's own URL, as apps are configured to expect.
    pub fn sign(
        &self,
        issuer: &str,
        audience: &AppOrigin,
        session: &Session,
        now: UnixTime,
    ) -> Result<String, AssertionKeyError> {
        let mut jti = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut jti);
        let claims = AssertionClaims {
            iss: issuer.to_owned(),
            aud: audience.as_str().to_owned(),
            sub: session.subject.clone(),
            idp: session.issuer.clone(),
            email: session.email.clone(),
            name: session.name.clone(),
            groups: session.groups.clone(),
            iat: now.secs(),
            exp: now.saturating_add(ASSERTION_LIFETIME).secs(),
            jti: URL_SAFE_NO_PAD.encode(jti),
        };
        self.sign_claims(&claims)
    }

    /// Signs arbitrary assertion claims with the newest key.
    pub fn sign_claims(&self, claims: &AssertionClaims) -> Result<String, AssertionKeyError> {
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    /// The public keys, newest first, as a JWKS document for the edge to publish.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": k.x,
                    "y": k.y,
                    "kid": k.kid,
                    "use": "sig",
                    "alg": "ES256",
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppId;
    use crate::session::SessionId;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation};

    const T0: UnixTime = UnixTime::from_secs(1_700_000_000);
    const EDGE: &str = "https://edge.example.com";

    fn session() -> Session {
        Session {
            id: SessionId::generate(),
            app: AppId::new("wiki").unwrap(),
            issuer: "https://login.example.com".to_owned(),
            subject: "user-1".to_owned(),
            email: Some("u1@example.com".to_owned()),
            name: None,
            groups: vec!["staff".to_owned()],
            amr: vec![],
            acr: None,
            auth_time: None,
            issued_at: T0,
            expires_at: T0.saturating_add(Duration::from_secs(3600)),
        }
    }

    /// Verifies as an app would: jsonwebtoken, the published JWKS, its own origin as audience.
    fn verify_as_app(
        token: &str,
        jwks: &Value,
        app_origin: &str,
    ) -> Result<AssertionClaims, jsonwebtoken::errors::Error> {
        let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let kid = jsonwebtoken::decode_header(token)?.kid.unwrap();
        let key = DecodingKey::from_jwk(set.find(&kid).unwrap())?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[app_origin]);
        validation.set_issuer(&[EDGE]);
        // The assertion is signed at T0, in the past of the wall clock jsonwebtoken reads.
        validation.validate_exp = false;
        jsonwebtoken::decode(token, &key, &validation).map(|d| d.claims)
    }

    #[test]
    fn apps_verify_assertions_for_themselves_only() {
        let signer = AssertionSigner::generate();
        let wiki = AppOrigin::parse("https://wiki.example.com").unwrap();
        let token = signer.sign(EDGE, &wiki, &session(), T0).unwrap();
        let claims = verify_as_app(&token, &signer.jwks(), "https://wiki.example.com").unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.aud, "https://wiki.example.com");
        assert_eq!(claims.groups, ["staff"]);
        assert_eq!(claims.exp - claims.iat, ASSERTION_LIFETIME.as_secs());
        let err = verify_as_app(&token, &signer.jwks(), "https://chat.example.com").unwrap_err();
        assert_eq!(
            err.kind(),
            &jsonwebtoken::errors::ErrorKind::InvalidAudience
        );
    }

    #[test]
    fn rotation_keeps_old_keys_published_until_retired() {
        let mut signer = AssertionSigner::generate();
        let wiki = AppOrigin::parse("https://wiki.example.com").unwrap();
        let old = signer.sign(EDGE, &wiki, &session(), T0).unwrap();
        let old_kid = signer.primary_kid().to_owned();
        let new_kid = signer.rotate().unwrap().to_owned();
        assert_ne!(old_kid, new_kid);
        let new = signer.sign(EDGE, &wiki, &session(), T0).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
            Some(new_kid.as_str())
        );
        let origin = "https://wiki.example.com";
        assert!(verify_as_app(&old, &signer.jwks(), origin).is_ok());
        assert!(verify_as_app(&new, &signer.jwks(), origin).is_ok());
        assert!(matches!(
            signer.retire(&new_kid),
            Err(AssertionKeyError::RetirePrimary { .. })
        ));
        signer.retire(&old_kid).unwrap();
        assert_eq!(signer.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn persisted_signer_round_trips_with_the_same_kids() {
        let mut signer = AssertionSigner::generate();
        signer.rotate().unwrap();
        let loaded = AssertionSigner::from_json(&signer.to_json()).unwrap();
        assert_eq!(loaded.jwks(), signer.jwks());
        let private = URL_SAFE_NO_PAD.encode(signer.keys[0].pkcs8.as_slice());
        assert!(signer.to_json().contains(&private));
        assert!(!format!("{signer:?}").contains(&private));
        let check = |json: &str, expected: &str| {
            let err = AssertionSigner::from_json(json).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        };
        check(
            r#"{"format":"postern-assertion-keys","version":1,"keys":[]}"#,
            "1 to 16 keys, not 0",
        );
        check(
            r#"{"format":"postern-assertion-keys","version":1,"keys":["AAAA"]}"#,
            "#0 is not a base64url PKCS#8",
        );
        check(r#"{"format":"x","version":1,"keys":[]}"#, "format \"x\"");
    }
}
