//! The records the store hands out.

use std::time::Duration;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::StoreError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
}

/// How the edge treats a request before forwarding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preauth {
    /// Forward without signing the user in (the app does its own authentication).
    Passthrough,
    /// Sign the user in with OpenID Connect at the edge before anything is forwarded.
    Oidc,
}

impl Preauth {
    pub fn as_str(self) -> &'static str {
        match self {
            Preauth::Passthrough => "passthrough",
            Preauth::Oidc => "oidc",
        }
    }

    pub fn parse(s: &str) -> Option<Preauth> {
        match s {
            "passthrough" => Some(Preauth::Passthrough),
            "oidc" => Some(Preauth::Oidc),
            _ => None,
        }
    }
}

/// The OpenID Connect client an app signs users in with.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcClient {
    /// The issuer; `None` for the edge's built-in identity provider.
    pub issuer: Option<String>,
    pub client_id: String,
    /// `None` for a public client.
    pub client_secret: Option<String>,
    /// The admin vouches that the issuer verifies every email it puts in a token, for issuers
    /// that do not send `email_verified` (an explicit `false` still counts as unverified).
    pub issuer_verifies_email: bool,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "********"),
            )
            .field("issuer_verifies_email", &self.issuer_verifies_email)
            .finish()
    }
}

/// Who may use an app with pre-authentication, beyond being signed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// Only users assigned to the app (themselves or through a group) get in.
    pub assignment_required: bool,
    /// The sign-in must have used a second factor.
    pub require_mfa: bool,
}

/// The session cookie's per-app options (those of Entra application proxy). It is always
/// `Secure`, host-only and `SameSite=Lax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieOptions {
    /// Scripts in the page cannot read it (on by default).
    pub http_only: bool,
    /// Kept across browser restarts until it expires, instead of a browser-session cookie.
    pub persistent: bool,
}

impl Default for CookieOptions {
    fn default() -> Self {
        CookieOptions {
            http_only: true,
            persistent: false,
        }
    }
}

/// An app to publish, already validated by the caller.
#[derive(Clone, Debug)]
pub struct NewApp {
    pub name: String,
    pub external_url: String,
    pub external_host: String,
    pub internal_url: String,
    pub group: String,
    pub preauth: Preauth,
    pub preserve_host: bool,
    pub insecure_skip_backend_tls_verify: bool,
    pub backend_timeout: Duration,
    /// Every user gets a maintenance page; nothing is forwarded.
    pub maintenance: bool,
    /// Set when `preauth` is `Oidc`.
    pub oidc: Option<OidcClient>,
    pub access: AccessRules,
    pub cookie: CookieOptions,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    pub id: i64,
    pub name: String,
    pub external_url: String,
    pub external_host: String,
    pub internal_url: String,
    pub group: String,
    pub preauth: Preauth,
    pub preserve_host: bool,
    pub insecure_skip_backend_tls_verify: bool,
    pub backend_timeout: Duration,
    pub maintenance: bool,
    pub oidc: Option<OidcClient>,
    pub access: AccessRules,
    pub cookie: CookieOptions,
}

impl App {
    /// The app's settings, as an update starts from them.
    pub fn settings(&self) -> NewApp {
        NewApp {
            name: self.name.clone(),
            external_url: self.external_url.clone(),
            external_host: self.external_host.clone(),
            internal_url: self.internal_url.clone(),
            group: self.group.clone(),
            preauth: self.preauth,
            preserve_host: self.preserve_host,
            insecure_skip_backend_tls_verify: self.insecure_skip_backend_tls_verify,
            backend_timeout: self.backend_timeout,
            maintenance: self.maintenance,
            oidc: self.oidc.clone(),
            access: self.access,
            cookie: self.cookie,
        }
    }
}

pub(crate) fn app_from_row(r: &SqliteRow) -> Result<App, StoreError> {
    let preauth: String = r.get(6);
    let timeout_ms: i64 = r.get(9);
    Ok(App {
        id: r.get(0),
        name: r.get(1),
        external_url: r.get(2),
        external_host: r.get(3),
        internal_url: r.get(4),
        group: r.get(5),
        preauth: Preauth::parse(&preauth).ok_or_else(|| {
            StoreError::Conflict(format!(
                "stored app has an unknown preauth mode {preauth:?}"
            ))
        })?,
        preserve_host: r.get(7),
        insecure_skip_backend_tls_verify: r.get(8),
        backend_timeout: Duration::from_millis(timeout_ms.max(0) as u64),
        maintenance: r.get(10),
        oidc: r.get::<Option<String>, _>(12).map(|client_id| OidcClient {
            issuer: r.get(11),
            client_id,
            client_secret: r.get(13),
            issuer_verifies_email: r.get(18),
        }),
        access: AccessRules {
            assignment_required: r.get(14),
            require_mfa: r.get(15),
        },
        cookie: CookieOptions {
            http_only: r.get(16),
            persistent: r.get(17),
        },
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connector {
    pub id: String,
    pub group: String,
    pub hostname: String,
    pub version: String,
    /// Unix seconds.
    pub registered_at: i64,
    pub revoked_at: Option<i64>,
    /// Expiry (Unix seconds) of the newest certificate issued to it.
    pub cert_not_after: Option<i64>,
    /// The address it last connected from.
    pub address: Option<String>,
    /// When (Unix seconds) a tunnel or control call from it was last seen.
    pub last_seen_at: Option<i64>,
}

pub(crate) fn connector_from_row(r: &SqliteRow) -> Connector {
    Connector {
        id: r.get(0),
        group: r.get(1),
        hostname: r.get(2),
        version: r.get(3),
        registered_at: r.get(4),
        revoked_at: r.get(5),
        cert_not_after: r.get(6),
        address: r.get(7),
        last_seen_at: r.get(8),
    }
}

/// What a connector reports about itself when it calls the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorReport {
    pub hostname: Option<String>,
    pub version: Option<String>,
    pub address: Option<String>,
}

/// An admin API token (the token itself is shown once, at creation; only its hash is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub(crate) fn admin_token_from_row(r: &SqliteRow) -> AdminToken {
    AdminToken {
        id: r.get(0),
        name: r.get(1),
        created_at: r.get(2),
        expires_at: r.get(3),
        last_used_at: r.get(4),
        revoked_at: r.get(5),
    }
}

/// Whether an audited action succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One audit record: who did what to which object, when, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `admin:bootstrap`, `admin:tok_…` or `connector:c_…`.
    pub actor: String,
    /// Dotted verb, e.g. `app.publish`, `connector.revoke`.
    pub action: String,
    pub target: String,
    pub result: String,
    /// What changed, or why it failed.
    pub detail: String,
    pub request_id: String,
    /// Stable across exports: a SIEM de-duplicates by it.
    pub uid: String,
}

pub(crate) fn audit_from_row(r: &SqliteRow) -> AuditEvent {
    AuditEvent {
        id: r.get(0),
        at_ms: r.get(1),
        actor: r.get(2),
        action: r.get(3),
        target: r.get(4),
        result: r.get(5),
        detail: r.get(6),
        request_id: r.get(7),
        uid: r.get::<Option<String>, _>(8).unwrap_or_default(),
    }
}

/// An audit event to record.
#[derive(Clone, Debug)]
pub struct NewAuditEvent<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: Outcome,
    pub detail: &'a str,
    pub request_id: &'a str,
}

/// Filters for reading the audit log, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    /// An exact action (`app.publish`) or a prefix ending in `.` (`app.`).
    pub action: Option<String>,
    /// Only events older than this ID (the previous page's cursor).
    pub before_id: Option<i64>,
    /// Only events newer than this ID, oldest first (an exporter's cursor).
    pub after_id: Option<i64>,
    pub limit: u32,
}

/// A certificate issued to a connector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRecord {
    pub serial_hex: String,
    pub pem: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a registration token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenProblem {
    Unknown,
    Used,
    Expired,
}

impl std::fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenProblem::Unknown => {
                "the registration token is not known to this edge; create one with `postern admin connector token --group NAME`"
            }
            TokenProblem::Used => {
                "the registration token was already used; each token registers one connector, create a new one with `postern admin connector token --group NAME`"
            }
            TokenProblem::Expired => {
                "the registration token has expired; create a new one with `postern admin connector token --group NAME`"
            }
        })
    }
}

/// Who an app is assigned to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Assignee {
    /// A user, by subject or email.
    User(String),
    /// A group, by name as the issuer puts it in the `groups` claim.
    Group(String),
}

impl Assignee {
    pub fn kind(&self) -> &'static str {
        match self {
            Assignee::User(_) => "user",
            Assignee::Group(_) => "group",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Assignee::User(v) | Assignee::Group(v) => v,
        }
    }
}
