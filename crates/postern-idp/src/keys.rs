//! Token signing keys and their rotation.
//!
//! **Invariant:** a key is published in the JWKS before it signs anything (for
//! [`Rotation::publish_ahead`]), and a retired key stays published until every token it signed
//! has expired. [`plan`] decides this from the keys and the time alone; [`KeyRing`] applies it.

use std::sync::RwLock;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use postern_store::{IdTokenAlg, SigningKey, Store, StoreError};
use serde::Serialize;

/// When keys are made, switched to and dropped.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// How long a new key is published before it signs: longer than relying parties cache a
    /// JWKS, so none meets an unknown `kid`.
    pub publish_ahead: Duration,
    /// How long a key signs before the next one is prepared.
    pub key_lifetime: Duration,
    /// The longest life of a token signed by a key: how long a retired key stays published.
    pub token_lifetime: Duration,
}

pub const DEFAULT_ROTATION: Rotation = Rotation {
    publish_ahead: Duration::from_secs(24 * 3600),
    key_lifetime: Duration::from_secs(30 * 24 * 3600),
    token_lifetime: crate::tokens::TOKEN_LIFETIME,
};

/// One change to the stored keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// Make a new key, published now, signing from `activates_at`.
    Create { activates_at: i64 },
    /// Stop a key signing at `at` (when its successor activates).
    Retire { kid: String, at: i64 },
    /// Unpublish a key whose tokens have all expired.
    Delete { kid: String },
}

/// The key that signs at `now`: the most recently activated one that is not retired.
pub fn signing_key(keys: &[SigningKey], now: i64) -> Option<&SigningKey> {
    keys.iter()
        .filter(|k| k.activates_at <= now && k.retires_at.is_none_or(|r| r > now))
        .max_by_key(|k| (k.activates_at, k.created_at))
}

/// What to change at `now` so that exactly one key signs, the next is published ahead of time,
/// and expired keys go. `rotate_now` prepares a successor whatever the current key's age (the
/// admin trigger).
pub fn plan(keys: &[SigningKey], now: i64, r: &Rotation, rotate_now: bool) -> Vec<KeyChange> {
    let secs = |d: Duration| d.as_secs() as i64;
    let mut changes = Vec::new();
    let current = signing_key(keys, now);
    let pending = keys.iter().any(|k| k.activates_at > now);
    match current {
        None if !pending => changes.push(KeyChange::Create { activates_at: now }),
        Some(cur) if !pending && (rotate_now || now - cur.activates_at >= secs(r.key_lifetime)) => {
            changes.push(KeyChange::Create {
                activates_at: now + secs(r.publish_ahead),
            })
        }
        _ => {}
    }
    if let Some(cur) = current {
        for k in keys {
            if k.kid != cur.kid && k.activates_at <= cur.activates_at && k.retires_at.is_none() {
                changes.push(KeyChange::Retire {
                    kid: k.kid.clone(),
                    at: cur.activates_at,
                });
            }
        }
    }
    for k in keys {
        if let Some(retired) = k.retires_at {
            if retired + secs(r.token_lifetime) <= now {
                changes.push(KeyChange::Delete { kid: k.kid.clone() });
            }
        }
    }
    changes
}

/// Why a key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a signing key: {0}")]
    Generate(String),
    #[error("stored signing key {kid} is unusable: {reason}")]
    Unusable { kid: String, reason: String },
    #[error("no signing key is active")]
    NoActiveKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A public key as published in the JWKS (RFC 7517, RFC 7518 section 6.2).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub alg: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// A loaded key: its stored record, the JWT keys and its JWK.
struct Loaded {
    record: SigningKey,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

fn load(record: SigningKey) -> Result<Loaded, KeyError> {
    match record.alg {
        IdTokenAlg::Es256 => load_es256(record),
        IdTokenAlg::Rs256 => load_rs256(record),
    }
}

fn load_rs256(record: SigningKey) -> Result<Loaded, KeyError> {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let unusable = |reason: String| KeyError::Unusable {
        kid: record.kid.clone(),
        reason,
    };
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(&record.private_pem)
        .map_err(|e| unusable(e.to_string()))?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (n, e) = (
        b64(&private.n().to_bytes_be()),
        b64(&private.e().to_bytes_be()),
    );
    let encoding = EncodingKey::from_rsa_pem(record.private_pem.as_bytes())
        .map_err(|e| unusable(e.to_string()))?;
    let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(|e| unusable(e.to_string()))?;
    let jwk = Jwk {
        kty: "RSA",
        crv: None,
        x: None,
        y: None,
        n: Some(n),
        e: Some(e),
        kid: record.kid.clone(),
        use_: "sig",
        alg: "RS256",
    };
    Ok(Loaded {
        record,
        encoding,
        decoding,
        jwk,
    })
}

fn load_es256(record: SigningKey) -> Result<Loaded, KeyError> {
    let unusable = |reason: String| KeyError::Unusable {
        kid: record.kid.clone(),
        reason,
    };
    if record.alg != IdTokenAlg::Es256 {
        return Err(unusable(format!(
            "algorithm {} is not supported",
            record.alg.as_str()
        )));
    }
    let pair =
        rcgen::KeyPair::from_pem(&record.private_pem).map_err(|e| unusable(e.to_string()))?;
    let raw = pair.public_key_raw();
    if raw.len() != 65 || raw[0] != 4 {
        return Err(unusable("not an uncompressed P-256 point".to_owned()));
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (x, y) = (b64(&raw[1..33]), b64(&raw[33..65]));
    let encoding = EncodingKey::from_ec_pem(record.private_pem.as_bytes())
        .map_err(|e| unusable(e.to_string()))?;
    let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| unusable(e.to_string()))?;
    let jwk = Jwk {
        kty: "EC",
        crv: Some("P-256"),
        x: Some(x),
        y: Some(y),
        n: None,
        e: None,
        kid: record.kid.clone(),
        use_: "sig",
        alg: "ES256",
    };
    Ok(Loaded {
        record,
        encoding,
        decoding,
        jwk,
    })
}

/// RSA keys are 2048 bits (RFC 7518 section 3.3's minimum).
const RSA_BITS: usize = 2048;

fn generate(alg: IdTokenAlg, now: i64, activates_at: i64) -> Result<SigningKey, KeyError> {
    let private_pem = match alg {
        IdTokenAlg::Es256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| KeyError::Generate(e.to_string()))?
            .serialize_pem(),
        IdTokenAlg::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| KeyError::Generate(e.to_string()))?
                .to_string()
        }
    };
    Ok(SigningKey {
        kid: format!("k_{}", hex(&rand::random::<[u8; 8]>())),
        alg,
        private_pem,
        created_at: now,
        activates_at,
        retires_at: None,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The provider's keys, loaded from the store and kept in step with it by [`KeyRing::maintain`].
pub struct KeyRing {
    rotation: Rotation,
    keys: RwLock<Vec<std::sync::Arc<Loaded>>>,
}

/// The key to sign with now.
pub struct Signer {
    loaded: std::sync::Arc<Loaded>,
}

impl Signer {
    pub fn kid(&self) -> &str {
        &self.loaded.record.kid
    }

    pub fn encoding(&self) -> &EncodingKey {
        &self.loaded.encoding
    }
}

impl KeyRing {
    pub fn new(rotation: Rotation) -> KeyRing {
        KeyRing {
            rotation,
            keys: RwLock::new(Vec::new()),
        }
    }

    /// Applies [`plan`] at `now` to the stored keys and reloads them.
    pub async fn maintain(
        &self,
        store: &Store,
        now: i64,
        rotate_now: bool,
    ) -> Result<(), KeyError> {
        let stored = store.signing_keys().await?;
        // ES256 always; RS256 once a client asks for it (an RSA key is slow to make).
        let mut algs = vec![IdTokenAlg::Es256];
        let rsa_wanted = store
            .clients()
            .await?
            .iter()
            .any(|c| c.id_token_alg == IdTokenAlg::Rs256)
            || stored.iter().any(|k| k.alg == IdTokenAlg::Rs256);
        if rsa_wanted {
            algs.push(IdTokenAlg::Rs256);
        }
        let mut changes = Vec::new();
        for alg in algs {
            let of_alg: Vec<SigningKey> = stored.iter().filter(|k| k.alg == alg).cloned().collect();
            changes.extend(
                plan(&of_alg, now, &self.rotation, rotate_now)
                    .into_iter()
                    .map(|c| (alg, c)),
            );
        }
        for (alg, change) in changes {
            match change {
                KeyChange::Create { activates_at } => {
                    let key = tokio::task::spawn_blocking(move || generate(alg, now, activates_at))
                        .await
                        .map_err(|e| KeyError::Generate(e.to_string()))??;
                    tracing::info!(kid = %key.kid, activates_at, "new token signing key published");
                    store.add_signing_key(&key).await?;
                }
                KeyChange::Retire { kid, at } => {
                    tracing::info!(%kid, at, "token signing key retired");
                    store.retire_signing_key(&kid, at).await?;
                }
                KeyChange::Delete { kid } => {
                    tracing::info!(%kid, "token signing key unpublished");
                    store.delete_signing_key(&kid).await?;
                }
            }
        }
        let loaded = store
            .signing_keys()
            .await?
            .into_iter()
            .map(|k| load(k).map(std::sync::Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// Every published key.
    pub fn jwks(&self) -> Jwks {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        Jwks {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        }
    }

    /// The key that signs with `alg` at `now`.
    pub fn signer(&self, now: i64, alg: IdTokenAlg) -> Result<Signer, KeyError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let records: Vec<SigningKey> = keys
            .iter()
            .filter(|k| k.record.alg == alg)
            .map(|k| k.record.clone())
            .collect();
        let kid = signing_key(&records, now)
            .ok_or(KeyError::NoActiveKey)?
            .kid
            .clone();
        let loaded = keys
            .iter()
            .find(|k| k.record.kid == kid)
            .ok_or(KeyError::NoActiveKey)?
            .clone();
        Ok(Signer { loaded })
    }

    /// The published key `kid`, to verify a token.
    pub fn decoding(&self, kid: &str) -> Option<(IdTokenAlg, DecodingKey)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .find(|k| k.record.kid == kid)
            .map(|k| (k.record.alg, k.decoding.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    fn key(kid: &str, activates_at: i64, retires_at: Option<i64>) -> SigningKey {
        SigningKey {
            kid: kid.to_owned(),
            alg: IdTokenAlg::Es256,
            private_pem: String::new(),
            created_at: activates_at - DEFAULT_ROTATION.publish_ahead.as_secs() as i64,
            activates_at,
            retires_at,
        }
    }

    fn check(keys: &[SigningKey], now: i64, rotate_now: bool, expected: &[KeyChange]) {
        assert_eq!(
            plan(keys, now, &DEFAULT_ROTATION, rotate_now),
            expected,
            "at {now}"
        );
    }

    #[test]
    fn rotation_publishes_ahead_switches_and_unpublishes_after_tokens_expire() {
        let t = 1_000 * DAY;
        let token = DEFAULT_ROTATION.token_lifetime.as_secs() as i64;
        // No key: one that signs at once.
        check(&[], t, false, &[KeyChange::Create { activates_at: t }]);
        // A young key: nothing to do; an old one gets a successor published a day ahead.
        check(&[key("a", t, None)], t + DAY, false, &[]);
        check(
            &[key("a", t, None)],
            t + 30 * DAY,
            false,
            &[KeyChange::Create {
                activates_at: t + 31 * DAY,
            }],
        );
        // The admin trigger: a successor at once, still published a day ahead.
        check(
            &[key("a", t, None)],
            t + DAY,
            true,
            &[KeyChange::Create {
                activates_at: t + 2 * DAY,
            }],
        );
        // While the successor waits, the old key signs and nothing else happens.
        let waiting = [key("a", t, None), key("b", t + 2 * DAY, None)];
        assert_eq!(
            signing_key(&waiting, t + DAY).map(|k| k.kid.as_str()),
            Some("a")
        );
        check(&waiting, t + DAY, true, &[]);
        // Once it activates, it signs and the old key is retired as of that moment.
        assert_eq!(
            signing_key(&waiting, t + 2 * DAY).map(|k| k.kid.as_str()),
            Some("b")
        );
        check(
            &waiting,
            t + 2 * DAY,
            false,
            &[KeyChange::Retire {
                kid: "a".into(),
                at: t + 2 * DAY,
            }],
        );
        // The retired key stays published until its last token expired.
        let retired = [key("a", t, Some(t + 2 * DAY)), key("b", t + 2 * DAY, None)];
        check(&retired, t + 2 * DAY + token - 1, false, &[]);
        check(
            &retired,
            t + 2 * DAY + token,
            false,
            &[KeyChange::Delete { kid: "a".into() }],
        );
    }

    #[tokio::test]
    async fn a_ring_signs_with_the_active_key_and_publishes_both() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
        let ring = KeyRing::new(DEFAULT_ROTATION);
        let t = 1_000 * DAY;
        ring.maintain(&store, t, false).await.unwrap();
        let first = ring.signer(t, IdTokenAlg::Es256).unwrap().kid().to_owned();
        ring.maintain(&store, t + 1, true).await.unwrap();
        assert_eq!(ring.jwks().keys.len(), 2);
        assert_eq!(ring.signer(t + 1, IdTokenAlg::Es256).unwrap().kid(), first);
        let later = t + 1 + DAY;
        ring.maintain(&store, later, false).await.unwrap();
        assert_ne!(ring.signer(later, IdTokenAlg::Es256).unwrap().kid(), first);
        assert_eq!(ring.jwks().keys.len(), 2);
        ring.maintain(&store, later + 24 * 3600, false)
            .await
            .unwrap();
        assert_eq!(ring.jwks().keys.len(), 1);
    }
}
