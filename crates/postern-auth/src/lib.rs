//! `postern-auth`: the pure core of pre-authentication at the edge.
//!
//! Postern's edge signs users in with OpenID Connect before any request reaches a published app.
//! This crate holds everything about that which can be decided from values alone: checking
//! tokens, sealing and opening cookies, the PKCE round trip, the signed identity assertion for the
//! app, and where to send the user afterwards. Clocks are parameters ([`UnixTime`]); the only I/O
//! is fetching the issuer's discovery document and JWKS ([`Provider`]), with the caller's HTTP
//! client. HTTP handlers, cookies' attributes and error pages belong to the edge.
//!
//! **Invariant:** only this crate knows OpenID Connect, JWTs and the cookie formats.
//!
//! # Modules
//!
//! | module | what |
//! |---|---|
//! | [`keyring`] | [`KeyRing`]: XChaCha20-Poly1305 keys with ids; the newest seals, all open; persisted as JSON |
//! | [`session`] | [`Session`]: the session cookie's payload, sealed per app |
//! | [`state_cookie`] | [`StateCookie`]: state, nonce, PKCE verifier and return target of one sign-in |
//! | [`pkce`] | [`State`], [`Nonce`], [`CodeVerifier`] and its S256 [`CodeChallenge`] |
//! | [`idtoken`] | [`verify`](idtoken::verify) of ID tokens and JWT access tokens against a [`Jwks`] |
//! | [`discovery`] | [`IssuerUrl`] (https, or http on loopback) and the [`ProviderMetadata`] document |
//! | [`jwks`] | [`Provider`]: discovery, cached JWKS, rate-limited refresh on an unknown `kid` |
//! | [`assertion`] | [`AssertionSigner`]: ES256 keys, `X-Postern-Jwt-Assertion` tokens, the edge's JWKS |
//! | [`redirect`] | [`AppOrigin`] and [`ReturnTo`]: return targets that never leave the app's origin |
//!
//! # How the edge uses it
//!
//! At startup, per identity provider and per app:
//!
//! ```text
//! let provider = Provider::discover(http_client, IssuerUrl::parse(&cfg.issuer)?).await?;
//! let ring     = KeyRing::from_json(&read_file(cookie_keys)?)?;     // or KeyRing::generate()
//! let signer   = AssertionSigner::from_json(&read_file(assertion_keys)?)?;
//! let origin   = AppOrigin::parse("https://wiki.example.com")?;
//! let app      = AppId::new(app_id_from_store)?;
//! // serve signer.jwks() at the edge's /.well-known/jwks.json
//! ```
//!
//! On each request to an app that requires pre-authentication:
//!
//! ```text
//! match Session::open(&ring, cookie_value, &app, UnixTime::now()) {
//!     Ok(session) => {
//!         // check revocation (session.id, session.issued_before(..)), then policy
//!         let assertion = signer.sign(edge_url, &origin, &session, now)?;   // set as header
//!         // strip the session cookie, forward
//!     }
//!     Err(_) => {
//!         // start a sign-in
//!         let return_to = ReturnTo::from_request(&origin, uri.path_and_query());
//!         let state = StateCookie::start(app.clone(), return_to, now);
//!         // Set-Cookie: state.seal(&ring) (HttpOnly; Secure; SameSite=Lax; short Max-Age)
//!         // 302 to provider.metadata().authorization_endpoint with response_type=code,
//!         //   client_id, redirect_uri, scope=openid…, state=state.state.as_str(),
//!         //   nonce=state.nonce.as_str(), code_challenge=state.code_verifier.challenge().as_str(),
//!         //   code_challenge_method=CodeChallenge::METHOD
//!     }
//! }
//! ```
//!
//! On the callback (`?code=…&state=…`):
//!
//! ```text
//! let pending = StateCookie::open(&ring, state_cookie, &app, now)?;
//! if !pending.state.matches(query_state) { refuse }
//! // POST code + pending.code_verifier.as_str() to metadata().token_endpoint (edge's job)
//! let claims = provider
//!     .verify(&id_token, &Expectations::id_token(provider.issuer().as_str(), client_id,
//!             pending.nonce.as_str()), now)
//!     .await?;
//! let session = Session::from_claims(&claims, app, now, claims.expires_at.min(now + max_session));
//! // Set-Cookie: session.seal(&ring); clear the state cookie;
//! // 302 to pending.return_to.location(&origin)
//! ```
//!
//! A bearer JWT access token (an API client instead of a browser) goes through
//! `provider.verify(token, &Expectations::bearer(issuer, audience), now)`.
//!
//! Errors are typed per reason ([`CookieError`], [`TokenError`], [`VerifyError`], [`FetchError`]),
//! so the edge can log precisely and tell a bad token from an unreachable issuer
//! ([`FetchError::is_retryable`]).

pub mod app;
pub mod assertion;
pub mod discovery;
pub mod idtoken;
pub mod jwks;
pub mod keyring;
pub mod pkce;
pub mod redirect;
pub mod session;
pub mod state_cookie;
pub mod unix_time;

pub use app::{AppId, AppIdError};
pub use assertion::{AssertionClaims, AssertionKeyError, AssertionSigner};
pub use discovery::{DiscoveryError, IssuerUrl, IssuerUrlError, ProviderMetadata};
pub use idtoken::{Expectations, IdTokenClaims, Jwks, JwksError, TokenError};
pub use jwks::{FetchError, Provider, ProviderSettings, Refresh, VerifyError};
pub use keyring::{CookieError, KeyId, KeyRing, KeyRingError};
pub use pkce::{CodeChallenge, CodeVerifier, Nonce, PkceError, State};
pub use redirect::{AppOrigin, OriginError, ReturnTo};
pub use session::{Session, SessionId};
pub use state_cookie::StateCookie;
pub use unix_time::UnixTime;
