//! The cookie key ring: the AEAD keys that seal and open Postern's cookies.
//!
//! The newest key (the *primary*) seals; every key in the ring opens. Rotation is therefore two
//! steps that never sign anyone out: [`KeyRing::rotate`] adds a new primary, and once every cookie
//! sealed with the old key has expired, [`KeyRing::retire`] drops it. Several edges that share one
//! ring (through a file or the store, see [`KeyRing::to_json`]) can open each other's cookies.
//!
//! # Wire format, version 1
//!
//! ```text
//! base64url-no-pad( version: u8 = 1 | key id: u8 | nonce: [u8; 24] | ciphertext | tag: [u8; 16] )
//! ```
//!
//! The cipher is XChaCha20-Poly1305 with a random 24-byte nonce: at 192 bits, random nonces cannot
//! collide in any realistic number of cookies, so no counter has to be shared between edges. The
//! associated data binds the cookie's *purpose* (session or sign-in state), the [`AppId`] it was
//! issued for, and the header bytes, so a cookie moved to another app, a state cookie presented as a
//! session, or a header edited to name another key all fail authentication.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::app::AppId;
use crate::unix_time::UnixTime;

/// Length of a cookie key in bytes (XChaCha20-Poly1305 takes 256-bit keys).
pub const KEY_LEN: usize = 32;
/// The most keys a ring holds. Key ids are one byte; a small cap keeps the ring's file readable
/// and makes a rotation loop that never retires anything fail loudly instead of growing forever.
pub const MAX_KEYS: usize = 16;
/// The longest cookie value `open` looks at. Browsers cap a cookie near 4096 bytes; anything longer
/// did not come from us, and refusing it before decoding bounds the work an attacker can cause.
pub const MAX_COOKIE_VALUE_LEN: usize = 4096;

/// The wire format version this build writes and reads.
pub(crate) const WIRE_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 2;
const AAD_PREFIX: &[u8] = b"postern-cookie/";
const RING_FORMAT: &str = "postern-cookie-keys";
const RING_VERSION: u32 = 1;

/// The small identifier a cookie carries to say which key sealed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(u8);

impl KeyId {
    /// The id's byte.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a sealed value is for. It is part of the associated data, so a value sealed for one purpose
/// never opens as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The signed-in session.
    Session,
    /// The short-lived state of one sign-in round trip.
    State,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"session",
            Purpose::State => b"state",
        }
    }
}

/// Why a cookie value did not open. Each is a reason to treat the request as not signed in; they
/// differ only in what the edge logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not something this crate sealed: too long, not base64url, too short, or a payload that does
    /// not decode.
    #[error("malformed cookie: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Sealed by a build that writes another wire format version.
    #[error("cookie uses wire format version {version}; this build reads version {WIRE_VERSION}")]
    UnsupportedVersion {
        /// The version byte it carries.
        version: u8,
    },
    /// Sealed with a key that is not in the ring: retired, or from another deployment.
    #[error("cookie was sealed with key {id}, which is not in the key ring (retired, or from another deployment)")]
    UnknownKey {
        /// The key id it names.
        id: KeyId,
    },
    /// Authentication failed. The associated data binds the app and the purpose, so this is also
    /// what a cookie issued for another app, or a state cookie presented as a session, yields: the
    /// two cannot be told apart from a forged cookie, by design.
    #[error("cookie failed authentication: altered, issued for another app, or sealed for another purpose")]
    Tampered,
    /// Opened and authentic, but past its expiry.
    #[error("cookie expired at {expired_at}")]
    Expired {
        /// When it stopped being valid.
        expired_at: UnixTime,
    },
}

/// Why a key ring could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// The persisted ring is not the expected JSON document.
    #[error("cookie key ring is not a valid key ring document: {0}")]
    Json(#[from] serde_json::Error),
    /// The persisted ring has another format name or version.
    #[error("cookie key ring has format {format:?} version {version}; this build reads {RING_FORMAT:?} version {RING_VERSION}")]
    UnsupportedFormat {
        /// The document's `format`.
        format: String,
        /// The document's `version`.
        version: u32,
    },
    /// The persisted ring holds no key.
    #[error("cookie key ring holds no key; generate one")]
    Empty,
    /// The persisted ring holds more than [`MAX_KEYS`] keys, or a rotation would exceed it.
    #[error("cookie key ring would hold more than {MAX_KEYS} keys; retire old keys first")]
    Full,
    /// A key's secret is not base64url.
    #[error("cookie key {id}: secret is not base64url without padding")]
    BadEncoding {
        /// The key's id.
        id: KeyId,
    },
    /// A key's secret has the wrong length.
    #[error("cookie key {id}: secret is {len} bytes; keys are {KEY_LEN} bytes")]
    BadLength {
        /// The key's id.
        id: KeyId,
        /// The decoded length.
        len: usize,
    },
    /// Two keys share an id.
    #[error("cookie key id {id} appears more than once")]
    DuplicateId {
        /// The repeated id.
        id: KeyId,
    },
    /// The key to retire is the primary.
    #[error(
        "cookie key {id} is the primary key, which seals new cookies; rotate before retiring it"
    )]
    RetirePrimary {
        /// The primary's id.
        id: KeyId,
    },
    /// The key to retire is not in the ring.
    #[error("no cookie key {id} in the ring")]
    NoSuchKey {
        /// The id asked for.
        id: KeyId,
    },
}

struct CookieKey {
    id: KeyId,
    secret: Zeroizing<[u8; KEY_LEN]>,
}

impl CookieKey {
    fn generate(id: KeyId) -> Self {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        Self { id, secret }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.secret.as_ref().into())
    }
}

/// The ring of cookie keys. `Debug` shows the key ids only, never the secrets.
pub struct KeyRing {
    /// Newest first: `keys[0]` is the primary. Never empty.
    keys: Vec<CookieKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("primary", &self.primary())
            .field("ids", &self.ids().collect::<Vec<_>>())
            .field("secrets", &"<masked>")
            .finish()
    }
}

/// The persisted form: newest key first. It mirrors the file; [`KeyRing`] is what it validates to.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingDocument {
    format: String,
    version: u32,
    keys: Vec<KeyDocument>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyDocument {
    id: KeyId,
    secret: Zeroizing<String>,
}

impl KeyRing {
    /// A new ring with one fresh random key.
    pub fn generate() -> Self {
        Self {
            keys: vec![CookieKey::generate(KeyId(1))],
        }
    }

    /// The id of the key that seals new cookies.
    pub fn primary(&self) -> KeyId {
        self.keys[0].id
    }

    /// The ids of every key, newest first.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|k| k.id)
    }

    /// Adds a fresh key and makes it the primary; the others keep opening their cookies.
    pub fn rotate(&mut self) -> Result<KeyId, KeyRingError> {
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyRingError::Full);
        }
        // Ids count up from the primary's and wrap, skipping ids still in use, so a retired id is
        // reused only after 255 others: a cookie sealed with a long-retired key then fails with
        // `Tampered` under the new key, which is as safe as `UnknownKey`, only less precise in logs.
        let mut next = self.primary().0;
        loop {
            next = next.wrapping_add(1);
            if self.keys.iter().all(|k| k.id.0 != next) {
                break;
            }
        }
        let id = KeyId(next);
        self.keys.insert(0, CookieKey::generate(id));
        Ok(id)
    }

    /// Drops a key: cookies it sealed stop opening. The primary cannot be retired.
    pub fn retire(&mut self, id: KeyId) -> Result<(), KeyRingError> {
        if id == self.primary() {
            return Err(KeyRingError::RetirePrimary { id });
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.id != id);
        if self.keys.len() == before {
            return Err(KeyRingError::NoSuchKey { id });
        }
        Ok(())
    }

    /// The ring as a JSON document to persist (newest key first). It holds the secrets: store it
    /// as the edge stores private keys (mode 0600, or an encrypted store column).
    pub fn to_json(&self) -> Zeroizing<String> {
        let doc = RingDocument {
            format: RING_FORMAT.to_owned(),
            version: RING_VERSION,
            keys: self
                .keys
                .iter()
                .map(|k| KeyDocument {
                    id: k.id,
                    secret: Zeroizing::new(URL_SAFE_NO_PAD.encode(k.secret.as_ref())),
                })
                .collect(),
        };
        // Not outside input: a struct of strings and integers always serialises.
        Zeroizing::new(serde_json::to_string_pretty(&doc).expect("key ring document serialises"))
    }

    /// Loads a ring written by [`KeyRing::to_json`].
    pub fn from_json(json: &str) -> Result<Self, KeyRingError> {
        let doc: RingDocument = serde_json::from_str(json)?;
        if doc.format != RING_FORMAT || doc.version != RING_VERSION {
            return Err(KeyRingError::UnsupportedFormat {
                format: doc.format,
                version: doc.version,
            });
        }
        if doc.keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        if doc.keys.len() > MAX_KEYS {
            return Err(KeyRingError::Full);
        }
        let mut keys = Vec::with_capacity(doc.keys.len());
        for k in &doc.keys {
            if keys.iter().any(|seen: &CookieKey| seen.id == k.id) {
                return Err(KeyRingError::DuplicateId { id: k.id });
            }
            let bytes = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(k.secret.as_bytes())
                    .map_err(|_| KeyRingError::BadEncoding { id: k.id })?,
            );
            let secret: [u8; KEY_LEN] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyRingError::BadLength {
                        id: k.id,
                        len: bytes.len(),
                    })?;
            keys.push(CookieKey {
                id: k.id,
                secret: Zeroizing::new(secret),
            });
        }
        Ok(Self { keys })
    }

    /// Seals `plaintext` with the primary key for `purpose` on `app`.
    pub(crate) fn seal(&self, purpose: Purpose, app: &AppId, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        let header = [WIRE_VERSION, key.id.0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = associated_data(purpose, app, header);
        let mut wire = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        wire.extend_from_slice(&header);
        wire.extend_from_slice(&nonce);
        let ciphertext = key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Not outside input: encryption fails only for plaintexts near 2^38 bytes, and this
            // crate seals a few hundred bytes it encoded itself.
            .expect("XChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        wire.extend_from_slice(&ciphertext);
        URL_SAFE_NO_PAD.encode(wire)
    }

    /// Opens a value sealed by [`KeyRing::seal`] for the same purpose and app.
    pub(crate) fn open(
        &self,
        purpose: Purpose,
        app: &AppId,
        value: &str,
    ) -> Result<Vec<u8>, CookieError> {
        if value.len() > MAX_COOKIE_VALUE_LEN {
            return Err(CookieError::Malformed {
                reason: "longer than any cookie Postern seals",
            });
        }
        let wire =
            URL_SAFE_NO_PAD
                .decode(value.as_bytes())
                .map_err(|_| CookieError::Malformed {
                    reason: "not base64url without padding",
                })?;
        let Some(&version) = wire.first() else {
            return Err(CookieError::Malformed { reason: "empty" });
        };
        if version != WIRE_VERSION {
            return Err(CookieError::UnsupportedVersion { version });
        }
        if wire.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(CookieError::Malformed {
                reason: "shorter than header, nonce and tag",
            });
        }
        let id = KeyId(wire[1]);
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(CookieError::UnknownKey { id })?;
        let (nonce, ciphertext) = wire[HEADER_LEN..].split_at(NONCE_LEN);
        let aad = associated_data(purpose, app, [version, id.0]);
        key.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CookieError::Tampered)
    }
}

/// `prefix | purpose | 0x00 | app | header`. The purpose labels contain no zero byte and the header
/// has a fixed length, so no two (purpose, app, header) triples share an encoding.
fn associated_data(purpose: Purpose, app: &AppId, header: [u8; HEADER_LEN]) -> Vec<u8> {
    let label = purpose.label();
    let mut aad =
        Vec::with_capacity(AAD_PREFIX.len() + label.len() + 1 + app.as_str().len() + HEADER_LEN);
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(label);
    aad.push(0);
    aad.extend_from_slice(app.as_str().as_bytes());
    aad.extend_from_slice(&header);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> AppId {
        AppId::new(s).unwrap()
    }

    #[test]
    fn opens_what_it_seals_and_nothing_else() {
        let ring = KeyRing::generate();
        let sealed = ring.seal(Purpose::Session, &app("a"), b"hello");
        let check = |purpose, app_name: &str, value: &str, expected: Result<&[u8], CookieError>| {
            let got = ring.open(purpose, &app(app_name), value);
            assert_eq!(got.as_deref().map_err(Clone::clone), expected, "{value}");
        };
        check(Purpose::Session, "a", &sealed, Ok(b"hello"));
        check(Purpose::Session, "b", &sealed, Err(CookieError::Tampered));
        check(Purpose::State, "a", &sealed, Err(CookieError::Tampered));
        check(
            Purpose::Session,
            "a",
            "",
            Err(CookieError::Malformed { reason: "empty" }),
        );
        check(
            Purpose::Session,
            "a",
            "AQ=",
            Err(CookieError::Malformed {
                reason: "not base64url without padding",
            }),
        );
        check(
            Purpose::Session,
            "a",
            "AgE",
            Err(CookieError::UnsupportedVersion { version: 2 }),
        );
        check(
            Purpose::Session,
            "a",
            "AQE",
            Err(CookieError::Malformed {
                reason: "shorter than header, nonce and tag",
            }),
        );
        let mut wire = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        wire[1] = 9;
        check(
            Purpose::Session,
            "a",
            &URL_SAFE_NO_PAD.encode(&wire),
            Err(CookieError::UnknownKey { id: KeyId(9) }),
        );
        let mut wire = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        check(
            Purpose::Session,
            "a",
            &URL_SAFE_NO_PAD.encode(&wire),
            Err(CookieError::Tampered),
        );
        check(
            Purpose::Session,
            "a",
            &"A".repeat(MAX_COOKIE_VALUE_LEN + 1),
            Err(CookieError::Malformed {
                reason: "longer than any cookie Postern seals",
            }),
        );
    }

    #[test]
    fn rotation_keeps_old_cookies_open_until_the_key_is_retired() {
        let mut ring = KeyRing::generate();
        let a = app("a");
        let old = ring.seal(Purpose::Session, &a, b"old");
        let old_id = ring.primary();
        let new_id = ring.rotate().unwrap();
        assert_ne!(old_id, new_id);
        assert_eq!(ring.primary(), new_id);
        let new = ring.seal(Purpose::Session, &a, b"new");
        assert_eq!(ring.open(Purpose::Session, &a, &old).unwrap(), b"old");
        assert_eq!(ring.open(Purpose::Session, &a, &new).unwrap(), b"new");
        assert!(matches!(
            ring.retire(new_id),
            Err(KeyRingError::RetirePrimary { .. })
        ));
        ring.retire(old_id).unwrap();
        assert_eq!(
            ring.open(Purpose::Session, &a, &old),
            Err(CookieError::UnknownKey { id: old_id })
        );
        assert!(matches!(
            ring.retire(old_id),
            Err(KeyRingError::NoSuchKey { .. })
        ));
    }

    #[test]
    fn rotation_stops_at_the_cap() {
        let mut ring = KeyRing::generate();
        for _ in 1..MAX_KEYS {
            ring.rotate().unwrap();
        }
        assert!(matches!(ring.rotate(), Err(KeyRingError::Full)));
    }

    #[test]
    fn persisted_ring_round_trips_and_debug_masks_secrets() {
        let mut ring = KeyRing::generate();
        ring.rotate().unwrap();
        let a = app("a");
        let sealed = ring.seal(Purpose::Session, &a, b"x");
        let json = ring.to_json();
        let loaded = KeyRing::from_json(&json).unwrap();
        assert_eq!(loaded.primary(), ring.primary());
        assert_eq!(loaded.open(Purpose::Session, &a, &sealed).unwrap(), b"x");
        let secret = URL_SAFE_NO_PAD.encode(ring.keys[0].secret.as_ref());
        assert!(json.contains(&secret));
        assert!(!format!("{ring:?}").contains(&secret));
        assert!(format!("{ring:?}").contains("masked"));
    }

    #[test]
    fn refuses_bad_persisted_rings() {
        let key = URL_SAFE_NO_PAD.encode([7u8; KEY_LEN]);
        let doc = |keys: &str| {
            format!(r#"{{"format":"postern-cookie-keys","version":1,"keys":[{keys}]}}"#)
        };
        let check = |json: &str, expected: &str| {
            let err = KeyRing::from_json(json).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        };
        check("{}", "not a valid key ring");
        check(
            r#"{"format":"other","version":1,"keys":[]}"#,
            "format \"other\"",
        );
        check(&doc(""), "holds no key");
        check(&doc(r#"{"id":1,"secret":"***"}"#), "not base64url");
        check(&doc(r#"{"id":1,"secret":"AAAA"}"#), "secret is 3 bytes");
        check(
            &doc(&format!(
                r#"{{"id":1,"secret":"{key}"}},{{"id":1,"secret":"{key}"}}"#
            )),
            "appears more than once",
        );
        check(
            &doc(&format!(r#"{{"id":1,"secret":"{key}","extra":1}}"#)),
            "unknown field",
        );
    }
}
