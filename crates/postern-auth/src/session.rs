//! The session cookie: who the user is, sealed with the [`KeyRing`] for one app.
//!
//! The payload is postcard (a compact, stable serde format), sealed under purpose "session" for the
//! app's [`AppId`]. Group names that are canonical lowercase UUIDs (Entra ID emits group object
//! ids) travel as 16 bytes instead of 36 characters, which keeps a user with 50 such groups near
//! 1.5 KB, well under the browsers' 4096-byte limit for a cookie.
//!
//! Revocation: a session carries a random [`SessionId`] (to revoke one sign-in) and its
//! `issued_at` (to revoke everything a user was issued before an instant, see
//! [`Session::issued_before`]). The cookie itself cannot be recalled, so the edge checks both
//! against its revocation list after [`Session::open`].

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use crate::app::AppId;
use crate::idtoken::IdTokenClaims;
use crate::keyring::{CookieError, KeyRing, Purpose};
use crate::unix_time::UnixTime;

/// A random identifier of one sign-in, for revoking it alone.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        Self(id)
    }

    /// The id's bytes, for a revocation list.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

/// A signed-in user on one app: what policy needs, and when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// This sign-in's id.
    pub id: SessionId,
    /// The app the session was issued for. It is not stored in the cookie: it is bound through
    /// the associated data, and [`Session::open`] fills it from its `app` argument.
    pub app: AppId,
    /// The issuer that signed the user in (`iss`); `subject` is unique only within it.
    pub issuer: String,
    /// The user's stable identifier at the issuer (`sub`).
    pub subject: String,
    /// The user's email, if the issuer sent one.
    pub email: Option<String>,
    /// The user's display name, if the issuer sent one.
    pub name: Option<String>,
    /// Group names or ids, as the issuer sent them.
    pub groups: Vec<String>,
    /// Authentication methods (`amr`), for policies that demand MFA.
    pub amr: Vec<String>,
    /// Authentication context class (`acr`).
    pub acr: Option<String>,
    /// When the user last authenticated at the issuer (`auth_time`), for sign-in frequency.
    pub auth_time: Option<UnixTime>,
    /// When the edge issued this session.
    pub issued_at: UnixTime,
    /// When the session ends; the caller derives it from the token's `exp` and its own limits.
    pub expires_at: UnixTime,
}

/// A group name on the wire: a canonical lowercase UUID as its 16 bytes, anything else as text.
#[derive(Serialize, Deserialize)]
enum WireName {
    Uuid([u8; 16]),
    Text(String),
}

impl WireName {
    fn encode(name: &str) -> Self {
        // Only the canonical lowercase hyphenated form is compacted, so that decoding gives back
        // exactly the string that went in.
        match uuid::Uuid::try_parse(name) {
            Ok(u) if u.hyphenated().to_string() == name => WireName::Uuid(u.into_bytes()),
            _ => WireName::Text(name.to_owned()),
        }
    }

    fn decode(self) -> String {
        match self {
            WireName::Uuid(bytes) => {
                // `encode_lower` writes into a stack buffer, skipping the formatting machinery
                // of `to_string` on the per-request path.
                let mut buf = uuid::Uuid::encode_buffer();
                uuid::Uuid::from_bytes(bytes)
                    .hyphenated()
                    .encode_lower(&mut buf)
                    .to_owned()
            }
            WireName::Text(s) => s,
        }
    }
}

/// The sealed payload. Field order is the wire order: a change here is a new wire version.
#[derive(Serialize, Deserialize)]
struct SessionWire {
    id: [u8; 16],
    issuer: String,
    subject: String,
    email: Option<String>,
    name: Option<String>,
    groups: Vec<WireName>,
    amr: Vec<String>,
    acr: Option<String>,
    auth_time: Option<UnixTime>,
    issued_at: UnixTime,
    expires_at: UnixTime,
}

impl Session {
    /// A new session from verified ID token claims, issued `now` and ending at `expires_at`
    /// (typically the earlier of the token's `exp` and the app's maximum session length).
    pub fn from_claims(
        claims: &IdTokenClaims,
        app: AppId,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Self {
        Self {
            id: SessionId::generate(),
            app,
            issuer: claims.issuer.clone(),
            subject: claims.subject.clone(),
            email: claims.email.clone(),
            name: claims.name.clone(),
            groups: claims.groups.clone(),
            amr: claims.amr.clone(),
            acr: claims.acr.clone(),
            auth_time: claims.auth_time,
            issued_at: now,
            expires_at,
        }
    }

    /// Whether the session was issued before `t`: the check behind "sign out user X everywhere".
    pub fn issued_before(&self, t: UnixTime) -> bool {
        self.issued_at < t
    }

    /// The cookie value: this session sealed with the ring's primary key for `self.app`.
    pub fn seal(&self, ring: &KeyRing) -> String {
        let wire = SessionWire {
            id: self.id.0,
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            groups: self.groups.iter().map(|g| WireName::encode(g)).collect(),
            amr: self.amr.clone(),
            acr: self.acr.clone(),
            auth_time: self.auth_time,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
        };
        // Not outside input: postcard serialises owned strings and integers into a Vec infallibly.
        let plaintext = postcard::to_allocvec(&wire).expect("session payload serialises");
        ring.seal(Purpose::Session, &self.app, &plaintext)
    }

    /// Opens a session cookie presented on `app` at `now`.
    pub fn open(
        ring: &KeyRing,
        value: &str,
        app: &AppId,
        now: UnixTime,
    ) -> Result<Self, CookieError> {
        let plaintext = ring.open(Purpose::Session, app, value)?;
        let wire: SessionWire =
            postcard::from_bytes(&plaintext).map_err(|_| CookieError::Malformed {
                reason: "session payload does not decode",
            })?;
        if now >= wire.expires_at {
            return Err(CookieError::Expired {
                expired_at: wire.expires_at,
            });
        }
        Ok(Self {
            id: SessionId(wire.id),
            app: app.clone(),
            issuer: wire.issuer,
            subject: wire.subject,
            email: wire.email,
            name: wire.name,
            groups: wire.groups.into_iter().map(WireName::decode).collect(),
            amr: wire.amr,
            acr: wire.acr,
            auth_time: wire.auth_time,
            issued_at: wire.issued_at,
            expires_at: wire.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixTime = UnixTime::from_secs(1_700_000_000);

    fn app(s: &str) -> AppId {
        AppId::new(s).unwrap()
    }

    fn session(groups: Vec<String>) -> Session {
        Session {
            id: SessionId::generate(),
            app: app("wiki"),
            issuer: "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
                .to_owned(),
            subject: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ".to_owned(),
            email: Some("alexandra.pemberton-smythe@contoso.example".to_owned()),
            name: Some("Alexandra Pemberton-Smythe".to_owned()),
            groups,
            amr: vec!["pwd".to_owned(), "mfa".to_owned()],
            acr: Some("urn:mace:incommon:iap:silver".to_owned()),
            auth_time: Some(T0),
            issued_at: T0,
            expires_at: T0.saturating_add(std::time::Duration::from_secs(3600)),
        }
    }

    fn guid(i: usize) -> String {
        format!("{i:08x}-6c67-4c5b-b112-36a304b66dad")
    }

    #[test]
    fn round_trip_keeps_every_field_and_group_spelling() {
        let groups = vec![
            guid(1),
            guid(2).to_uppercase(),
            "{00000003-6c67-4c5b-b112-36a304b66dad}".to_owned(),
            "engineering".to_owned(),
            String::new(),
        ];
        let s = session(groups);
        let ring = KeyRing::generate();
        let cookie = s.seal(&ring);
        assert_eq!(
            Session::open(&ring, &cookie, &app("wiki"), T0),
            Ok(s.clone())
        );
        // Another deployment's ring uses the same first key id, but not the same key.
        assert_eq!(
            Session::open(&KeyRing::generate(), &cookie, &app("wiki"), T0),
            Err(CookieError::Tampered)
        );
    }

    #[test]
    fn refusals() {
        let ring = KeyRing::generate();
        let s = session(vec![guid(1)]);
        let cookie = s.seal(&ring);
        let check = |value: &str, app_name: &str, now: UnixTime, expected: CookieError| {
            assert_eq!(
                Session::open(&ring, value, &app(app_name), now),
                Err(expected)
            );
        };
        check(&cookie, "other-app", T0, CookieError::Tampered);
        check(
            &cookie,
            "wiki",
            s.expires_at,
            CookieError::Expired {
                expired_at: s.expires_at,
            },
        );
        let state = ring.seal(Purpose::State, &app("wiki"), b"x");
        check(&state, "wiki", T0, CookieError::Tampered);
        // Authentic but not a session payload: only reachable with the key, but must not panic.
        let junk = ring.seal(Purpose::Session, &app("wiki"), &[0xff; 3]);
        check(
            &junk,
            "wiki",
            T0,
            CookieError::Malformed {
                reason: "session payload does not decode",
            },
        );
    }

    #[test]
    fn cookie_for_fifty_groups_stays_well_under_4096_bytes() {
        let ring = KeyRing::generate();
        let check = |groups: Vec<String>, limit: usize| {
            let cookie = session(groups).seal(&ring);
            assert!(cookie.len() <= limit, "{} > {limit}", cookie.len());
        };
        check((0..50).map(guid).collect(), 1600);
        check(
            (0..50)
                .map(|i| format!("engineering-platform-team-{i:02}"))
                .collect(),
            2500,
        );
    }

    #[test]
    fn revocation_by_issue_time() {
        let s = session(vec![]);
        assert!(s.issued_before(T0.saturating_add(std::time::Duration::from_secs(1))));
        assert!(!s.issued_before(T0));
    }
}
