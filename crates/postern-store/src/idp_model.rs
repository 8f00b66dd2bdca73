//! The records of the built-in identity provider: directory users and groups, OIDC clients,
//! sign-in sessions, codes, grants, device codes, signing keys and sign-in events.

/// A person in the directory. Their `id` is the stable, random subject (`sub`) of their tokens;
/// the email is only their login and may change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub enabled: bool,
    pub admin: bool,
    pub require_mfa: bool,
    /// Whether a TOTP authenticator is enrolled and confirmed.
    pub mfa_enrolled: bool,
    /// How many passkeys the user has enrolled.
    pub passkeys: i64,
    pub groups: Vec<String>,
    pub created_at: i64,
}

/// A user to create, already validated (the password hashed) by the caller.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub admin: bool,
    pub require_mfa: bool,
    pub groups: Vec<String>,
    /// An administrator vouches that the address is the user's (`email_verified` in tokens).
    pub email_verified: bool,
}

/// A user's TOTP secret (base32), masked in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(pub String);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(********)")
    }
}

/// The state of a user's TOTP authenticator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Totp {
    /// Nothing enrolled.
    None,
    /// A secret was shown to the user but not confirmed with a code yet.
    Pending(TotpSecret),
    Confirmed(TotpSecret),
}

/// A user's passkey: a WebAuthn credential, by its credential ID (base64url). `data` is the
/// verifier's own serialisation of it, opaque to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPasskey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub data: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A directory group and its members' emails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryGroup {
    pub name: String,
    pub members: Vec<String>,
}

/// The signing algorithm of a client's ID tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdTokenAlg {
    Es256,
    Rs256,
}

impl IdTokenAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            IdTokenAlg::Es256 => "ES256",
            IdTokenAlg::Rs256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<IdTokenAlg> {
        match s {
            "ES256" => Some(IdTokenAlg::Es256),
            "RS256" => Some(IdTokenAlg::Rs256),
            _ => None,
        }
    }
}

/// An OpenID Connect client (relying party) registered with the built-in provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    /// A public client has no secret and must use PKCE with S256.
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub id_token_alg: IdTokenAlg,
    /// The published app this client was made for, if it was made automatically.
    pub app_name: Option<String>,
    pub created_at: i64,
}

/// A client to register, already validated by the caller.
#[derive(Clone, Debug)]
pub struct NewClient {
    pub name: String,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub id_token_alg: IdTokenAlg,
}

/// A client secret, shown once, masked in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(pub String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(********)")
    }
}

/// A live sign-in session at the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdpSession {
    /// The SHA-256 of the cookie value: how the store names the session.
    pub hash: String,
    pub user_id: String,
    pub auth_time: i64,
    /// Authentication methods used (`pwd`, `otp`, …), in order.
    pub amr: Vec<String>,
    pub expires_at: i64,
}

/// How a user authenticated, carried from the session into codes, grants and tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthContext {
    pub user_id: String,
    pub auth_time: i64,
    pub amr: Vec<String>,
    pub acr: String,
}

/// An authorization code to store.
#[derive(Clone, Debug)]
pub struct NewCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub scope: String,
    pub auth: AuthContext,
    pub expires_at: i64,
}

/// A stored authorization code, as redeemed.
#[derive(Clone, Debug)]
pub struct Code {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub scope: String,
    pub auth: AuthContext,
    pub expires_at: i64,
}

/// Why a code or refresh token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedeemProblem {
    Unknown,
    /// Used before: the grant issued from it has been revoked.
    Reused,
    Expired,
    /// The grant was revoked (user disabled, logout, reuse).
    Revoked,
}

/// The tokens issued from one code: one refresh-token family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub client_id: String,
    pub scope: String,
    pub auth: AuthContext,
    pub revoked: bool,
}

/// The state of a device authorization (RFC 8628).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved(AuthContext),
    Denied,
    Consumed,
}

/// A device authorization to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDevice {
    pub client_id: String,
    pub scope: String,
    pub user_code: String,
    /// Who asked (the caller's address, as the provider counts it): the store keeps a bounded
    /// number of pending device codes per requester.
    pub requester: String,
    pub expires_at: i64,
    pub interval_secs: i64,
}

/// A device authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub hash: String,
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub expires_at: i64,
    pub interval_secs: i64,
    pub last_poll_at: Option<i64>,
    pub status: DeviceStatus,
}

/// A private signing key of the provider, PEM (PKCS#8), masked in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub alg: IdTokenAlg,
    pub private_pem: String,
    pub created_at: i64,
    /// The key signs from this time on; it is published from `created_at`.
    pub activates_at: i64,
    /// The key stops signing at this time and is unpublished once its tokens have expired.
    pub retires_at: Option<i64>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .finish_non_exhaustive()
    }
}

/// One sign-in attempt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SigninEvent {
    pub at_ms: i64,
    pub email: String,
    pub user_id: Option<String>,
    pub ip: String,
    pub client_id: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// A stable reason code: `ok_password`, `bad_password`, `unknown_user`, `disabled`,
    /// `throttled`, `busy`, `oversized_input`, `bad_otp`, …
    pub reason: String,
    /// The request ID of the step (the sign-in log's `correlationId`).
    pub request_id: String,
    /// The system and browser the `User-Agent` names.
    pub operating_system: Option<String>,
    pub browser: Option<String>,
    pub location: Option<crate::Location>,
}

/// How long what the provider records is kept; [`crate::Store::prune_idp`] deletes the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Sign-in events older than this (seconds) are deleted.
    pub signin_events_secs: i64,
    /// At most this many sign-in events are kept, the newest.
    pub max_signin_events: i64,
}

/// 30 days of sign-in events answers "who tried to sign in as whom last month" (an incident is
/// usually noticed within weeks) without keeping personal data longer. A million events at a
/// few hundred bytes each is a few hundred megabytes at most, whatever an attacker sends.
impl Default for Retention {
    fn default() -> Self {
        Retention {
            signin_events_secs: 30 * 24 * 3600,
            max_signin_events: 1_000_000,
        }
    }
}

/// What one pruning deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub signin_events: u64,
    /// Records of the sign-in log (the edge's and the provider's) past the same retention.
    pub signins: u64,
    pub codes: u64,
    pub device_codes: u64,
    pub sessions: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.signin_events + self.signins + self.codes + self.device_codes + self.sessions
    }
}
