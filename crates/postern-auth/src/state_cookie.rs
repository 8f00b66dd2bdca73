//! The sign-in state cookie: what the edge must remember between sending the browser to the
//! issuer and the browser coming back with a code.
//!
//! It holds the `state`, the `nonce`, the PKCE code verifier and where to return, sealed with the
//! same [`KeyRing`] as sessions but under purpose "state", so it can never pass as a session, and
//! it lives [`STATE_LIFETIME`]. The edge should name the cookie after the state (or otherwise allow
//! one per tab) if parallel sign-ins in several tabs must all succeed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::AppId;
use crate::keyring::{CookieError, KeyRing, Purpose};
use crate::pkce::{CodeVerifier, Nonce, State};
use crate::redirect::ReturnTo;
use crate::unix_time::UnixTime;

/// How long a sign-in round trip may take: long enough to type a password and approve an MFA
/// prompt, short enough that a leaked state cookie is soon useless.
pub const STATE_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// One sign-in in flight. `Debug` masks the code verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateCookie {
    /// The app the sign-in is for; bound through the associated data, not stored.
    pub app: AppId,
    /// The `state` sent to the issuer.
    pub state: State,
    /// The `nonce` sent to the issuer, to expect in the ID token.
    pub nonce: Nonce,
    /// The PKCE verifier for the token request.
    pub code_verifier: CodeVerifier,
    /// Where to send the user once signed in.
    pub return_to: ReturnTo,
    /// When this sign-in attempt lapses.
    pub expires_at: UnixTime,
    /// This attempt already asked the issuer for a second factor (a step-up): if the token
    /// still lacks one, the sign-in is refused rather than sent back again.
    pub step_up: bool,
}

/// The sealed payload. Field order is the wire order: a change here is a new wire version.
#[derive(Serialize, Deserialize)]
struct StateWire {
    state: String,
    nonce: String,
    code_verifier: String,
    return_to: String,
    expires_at: UnixTime,
    step_up: bool,
}

impl StateCookie {
    /// Starts a sign-in for `app` at `now`, with fresh state, nonce and verifier.
    pub fn start(app: AppId, return_to: ReturnTo, now: UnixTime) -> Self {
        Self {
            app,
            state: State::generate(),
            nonce: Nonce::generate(),
            code_verifier: CodeVerifier::generate(),
            return_to,
            expires_at: now.saturating_add(STATE_LIFETIME),
            step_up: false,
        }
    }

    /// The same sign-in, marked as asking for a second factor.
    pub fn stepping_up(mut self) -> Self {
        self.step_up = true;
        self
    }

    /// The cookie value.
    pub fn seal(&self, ring: &KeyRing) -> String {
        let wire = StateWire {
            state: self.state.as_str().to_owned(),
            nonce: self.nonce.as_str().to_owned(),
            code_verifier: self.code_verifier.as_str().to_owned(),
            return_to: self.return_to.as_str().to_owned(),
            expires_at: self.expires_at,
            step_up: self.step_up,
        };
        // Not outside input: postcard serialises owned strings and integers into a Vec infallibly.
        let plaintext = postcard::to_allocvec(&wire).expect("state payload serialises");
        ring.seal(Purpose::State, &self.app, &plaintext)
    }

    /// Opens a state cookie presented on `app`'s callback at `now`. The caller then checks the
    /// returned `state` parameter with [`State::matches`].
    pub fn open(
        ring: &KeyRing,
        value: &str,
        app: &AppId,
        now: UnixTime,
    ) -> Result<Self, CookieError> {
        let plaintext = ring.open(Purpose::State, app, value)?;
        let malformed = CookieError::Malformed {
            reason: "state payload does not decode",
        };
        let wire: StateWire = postcard::from_bytes(&plaintext).map_err(|_| malformed.clone())?;
        if now >= wire.expires_at {
            return Err(CookieError::Expired {
                expired_at: wire.expires_at,
            });
        }
        Ok(Self {
            app: app.clone(),
            state: State::from_sealed(wire.state),
            nonce: Nonce::from_sealed(wire.nonce),
            code_verifier: CodeVerifier::new(wire.code_verifier).map_err(|_| malformed)?,
            return_to: ReturnTo::from_sealed(wire.return_to),
            expires_at: wire.expires_at,
            step_up: wire.step_up,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session;

    const T0: UnixTime = UnixTime::from_secs(1_700_000_000);

    fn app(s: &str) -> AppId {
        AppId::new(s).unwrap()
    }

    #[test]
    fn round_trip_and_refusals() {
        let ring = KeyRing::generate();
        let started = StateCookie::start(app("wiki"), ReturnTo::root(), T0);
        let cookie = started.seal(&ring);
        assert_eq!(
            StateCookie::open(&ring, &cookie, &app("wiki"), T0),
            Ok(started.clone())
        );
        let check = |app_name: &str, now: UnixTime, expected: CookieError| {
            assert_eq!(
                StateCookie::open(&ring, &cookie, &app(app_name), now),
                Err(expected)
            );
        };
        check("chat", T0, CookieError::Tampered);
        check(
            "wiki",
            T0.saturating_add(STATE_LIFETIME),
            CookieError::Expired {
                expired_at: started.expires_at,
            },
        );
        // A state cookie is never a session.
        assert_eq!(
            Session::open(&ring, &cookie, &app("wiki"), T0),
            Err(CookieError::Tampered)
        );
        assert!(!format!("{started:?}").contains(started.code_verifier.as_str()));
    }
}
