//! The one place where a refused or failed user request becomes an HTTP status and an error page.
//!
//! Every reason has its own variant; the page names the cause, says whose side it is on and
//! whether retrying can help, and carries the request ID that is also in the edge's log line.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;

/// Why the edge answered a user's request itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No app is published at the requested host.
    UnknownApp { host: String },
    /// The request had no usable `Host`.
    MissingHost,
    /// `CONNECT` (a proxy request): the edge publishes apps, it is not a forward proxy.
    ConnectNotAllowed,
    /// No connector of the app's group was online within the queue timeout.
    NoConnectorOnline { app: String, group: String },
    /// Too many requests are already waiting for a connector.
    QueueFull { app: String },
    /// Every tunnel of the app's group carried as many requests as its connector accepts, for
    /// the whole queue timeout (open WebSockets count).
    ConnectorsBusy { app: String, group: String },
    /// The connector's config does not (yet) include the app.
    ConnectorLacksApp { app: String },
    /// The connector could not reach the app's internal URL.
    BackendUnreachable { app: String },
    /// The connector's destination policy refused the app's internal address (link-local, cloud
    /// metadata, or outside its `--allow-destination`). The page names the cause, not the
    /// address: that is for the connector's log.
    DestinationRefused { app: String },
    /// The app did not answer within its timeout.
    BackendTimeout { app: String, timeout: Duration },
    /// The tunnel carrying the request broke before the response began.
    TunnelLost { app: String },
    /// The edge is shutting down.
    ShuttingDown,
    /// The path has dot segments that would leave the app's internal base path.
    PathOutsideApp { app: String },
    /// The app did not accept a WebSocket upgrade.
    UpgradeRefused { app: String },
    /// An administrator put the app in maintenance mode.
    Maintenance { app: String },
    /// An API client (it asked for JSON) has no session and no bearer token.
    SignInRequired { app: String },
    /// A bearer token was presented and refused.
    BearerRefused { app: String, reason: String },
    /// The identity provider could not be reached or answered nonsense.
    IssuerUnavailable {
        app: String,
        issuer: String,
        reason: String,
    },
    /// The identity provider's discovery failed with network trouble or a server error, just now
    /// or within the failure hold; trying again after `retry_after` may help.
    IssuerUnreachable {
        app: String,
        issuer: String,
        reason: String,
        retry_after: Duration,
    },
    /// The identity provider said no (the `error` of the callback, or the code exchange).
    IssuerRefused { app: String, reason: String },
    /// The ID token from the sign-in failed a check.
    TokenInvalid { app: String, reason: String },
    /// The callback came without a matching, unexpired sign-in state.
    SignInStateInvalid { app: String, reason: String },
    /// The session cookie was tampered with, or is for another app.
    SessionCookieInvalid { app: String, reason: String },
    /// The user is signed in but not assigned to the app.
    NotAssigned { app: String, user: String },
    /// The app needs a second factor the sign-in did not use, even after asking for it.
    MfaRequired { app: String },
    /// A conditional-access policy blocks this user, app, place, device or time.
    PolicyBlocked { app: String, policy: String },
    /// A conditional-access policy demands what the sign-in did not prove, even after asking
    /// for it (`what`: "a second factor", "a passkey", "a fresh sign-in").
    PolicyUnmet {
        app: String,
        policy: String,
        what: &'static str,
    },
    /// The stored policies cannot be evaluated (they failed to load): nothing is let through.
    PoliciesUnusable { reason: String },
    /// A sign-out form was submitted from another site, or without this session's token.
    SignOutRefused { app: String, reason: String },
    /// The app's sign-in is not set up in a way the edge can use.
    SignInMisconfigured { app: String, reason: String },
    /// The client sent requests faster than its share.
    RateLimited {
        scope: RateScope,
        retry_after: Duration,
    },
    /// The request's head (headers, cookies, URL) is larger than the edge forwards.
    HeadTooLarge,
    /// The request body was malformed (bad chunked framing) or ended early.
    BadRequestBody,
    /// The request body stopped arriving for longer than the stall timeout.
    RequestBodyStalled { timeout: Duration },
    /// The app answered with a head (or trailers) larger than a tunnel carries.
    ResponseHeadTooLarge { app: String },
}

/// Whose rate a request exceeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateScope {
    /// The client's own address (an IPv6 /64).
    ClientAddress,
    /// The app's, shared by everyone.
    App { app: String },
    /// Requests the client's address has in flight at once.
    InFlight { max: usize },
}

/// Where a failure comes from, as the page tells the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Client,
    Edge,
    Connector,
    App,
    /// The identity provider that signs users in.
    IdentityProvider,
    /// The app's access rules (assignment, MFA).
    Policy,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownApp { .. } => StatusCode::NOT_FOUND,
            Refusal::MissingHost => StatusCode::BAD_REQUEST,
            Refusal::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::PathOutsideApp { .. } => StatusCode::BAD_REQUEST,
            Refusal::UpgradeRefused { .. } => StatusCode::BAD_GATEWAY,
            Refusal::NoConnectorOnline { .. }
            | Refusal::ConnectorLacksApp { .. }
            | Refusal::BackendUnreachable { .. }
            | Refusal::DestinationRefused { .. }
            | Refusal::TunnelLost { .. } => StatusCode::BAD_GATEWAY,
            Refusal::QueueFull { .. }
            | Refusal::ConnectorsBusy { .. }
            | Refusal::ShuttingDown
            | Refusal::Maintenance { .. }
            | Refusal::IssuerUnreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BackendTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Refusal::SignInRequired { .. } | Refusal::BearerRefused { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Refusal::IssuerUnavailable { .. } | Refusal::SignInMisconfigured { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Refusal::IssuerRefused { .. }
            | Refusal::SignOutRefused { .. }
            | Refusal::NotAssigned { .. }
            | Refusal::MfaRequired { .. }
            | Refusal::PolicyBlocked { .. }
            | Refusal::PolicyUnmet { .. } => StatusCode::FORBIDDEN,
            Refusal::PoliciesUnusable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TokenInvalid { .. } => StatusCode::UNAUTHORIZED,
            Refusal::SignInStateInvalid { .. } | Refusal::SessionCookieInvalid { .. } => {
                StatusCode::BAD_REQUEST
            }
            Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::BadRequestBody => StatusCode::BAD_REQUEST,
            Refusal::RequestBodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            Refusal::ResponseHeadTooLarge { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownApp { .. } => "unknown_app",
            Refusal::MissingHost => "missing_host",
            Refusal::ConnectNotAllowed => "connect_not_allowed",
            Refusal::PathOutsideApp { .. } => "path_outside_app",
            Refusal::UpgradeRefused { .. } => "upgrade_refused",
            Refusal::NoConnectorOnline { .. } => "no_connector_online",
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::ConnectorsBusy { .. } => "connectors_busy",
            Refusal::ConnectorLacksApp { .. } => "connector_lacks_app",
            Refusal::BackendUnreachable { .. } => "backend_unreachable",
            Refusal::DestinationRefused { .. } => "destination_refused",
            Refusal::BackendTimeout { .. } => "backend_timeout",
            Refusal::TunnelLost { .. } => "tunnel_lost",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Maintenance { .. } => "app_in_maintenance",
            Refusal::SignInRequired { .. } => "sign_in_required",
            Refusal::BearerRefused { .. } => "bearer_token_refused",
            Refusal::IssuerUnavailable { .. } => "issuer_unavailable",
            Refusal::IssuerUnreachable { .. } => "issuer_unreachable",
            Refusal::IssuerRefused { .. } => "issuer_refused",
            Refusal::TokenInvalid { .. } => "token_invalid",
            Refusal::SignInStateInvalid { .. } => "sign_in_state_invalid",
            Refusal::SessionCookieInvalid { .. } => "session_cookie_invalid",
            Refusal::NotAssigned { .. } => "not_assigned",
            Refusal::MfaRequired { .. } => "mfa_required",
            Refusal::PolicyBlocked { .. } => "blocked_by_policy",
            Refusal::PolicyUnmet { .. } => "policy_not_satisfied",
            Refusal::PoliciesUnusable { .. } => "policies_unusable",
            Refusal::SignInMisconfigured { .. } => "sign_in_misconfigured",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::HeadTooLarge => "request_head_too_large",
            Refusal::BadRequestBody => "bad_request_body",
            Refusal::RequestBodyStalled { .. } => "request_body_stalled",
            Refusal::ResponseHeadTooLarge { .. } => "response_head_too_large",
            Refusal::SignOutRefused { .. } => "sign_out_refused",
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Refusal::UnknownApp { .. }
            | Refusal::MissingHost
            | Refusal::ConnectNotAllowed
            | Refusal::PathOutsideApp { .. } => Source::Client,
            Refusal::UpgradeRefused { .. } => Source::App,
            Refusal::NoConnectorOnline { .. }
            | Refusal::ConnectorLacksApp { .. }
            | Refusal::DestinationRefused { .. }
            | Refusal::ConnectorsBusy { .. } => Source::Connector,
            Refusal::TunnelLost { .. } => Source::Connector,
            Refusal::QueueFull { .. } | Refusal::ShuttingDown | Refusal::Maintenance { .. } => {
                Source::Edge
            }
            Refusal::BackendUnreachable { .. } | Refusal::BackendTimeout { .. } => Source::App,
            Refusal::SignInRequired { .. }
            | Refusal::BearerRefused { .. }
            | Refusal::SignInStateInvalid { .. }
            | Refusal::SessionCookieInvalid { .. }
            | Refusal::SignOutRefused { .. } => Source::Client,
            Refusal::IssuerUnavailable { .. }
            | Refusal::IssuerUnreachable { .. }
            | Refusal::IssuerRefused { .. }
            | Refusal::TokenInvalid { .. } => Source::IdentityProvider,
            Refusal::NotAssigned { .. }
            | Refusal::MfaRequired { .. }
            | Refusal::PolicyBlocked { .. }
            | Refusal::PolicyUnmet { .. } => Source::Policy,
            Refusal::PoliciesUnusable { .. } => Source::Edge,
            Refusal::SignInMisconfigured { .. } => Source::Edge,
            Refusal::RateLimited { .. }
            | Refusal::HeadTooLarge
            | Refusal::BadRequestBody
            | Refusal::RequestBodyStalled { .. } => Source::Client,
            Refusal::ResponseHeadTooLarge { .. } => Source::App,
        }
    }

    /// Whether the same request may succeed if the user tries again.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            Refusal::UnknownApp { .. }
                | Refusal::MissingHost
                | Refusal::ConnectNotAllowed
                | Refusal::PathOutsideApp { .. }
                | Refusal::NotAssigned { .. }
                | Refusal::MfaRequired { .. }
                | Refusal::PolicyUnmet { .. }
                | Refusal::TokenInvalid { .. }
                | Refusal::BearerRefused { .. }
                | Refusal::HeadTooLarge
                | Refusal::BadRequestBody
                | Refusal::ResponseHeadTooLarge { .. }
                | Refusal::DestinationRefused { .. }
                | Refusal::SignOutRefused { .. }
        )
    }

    pub fn title(&self) -> &'static str {
        match self {
            Refusal::UnknownApp { .. } => "No app is published here",
            Refusal::MissingHost => "Bad request",
            Refusal::ConnectNotAllowed => "Method not allowed",
            Refusal::PathOutsideApp { .. } => "Bad path",
            Refusal::UpgradeRefused { .. } => "The app refused the WebSocket connection",
            Refusal::NoConnectorOnline { .. } => "No connector is online for this app",
            Refusal::QueueFull { .. } => "Too many requests are waiting",
            Refusal::ConnectorsBusy { .. } => "The connectors for this app are at capacity",
            Refusal::ConnectorLacksApp { .. } => "The connector does not serve this app yet",
            Refusal::BackendUnreachable { .. } => "The app cannot be reached",
            Refusal::DestinationRefused { .. } => {
                "The connector is not allowed to connect to this app's address"
            }
            Refusal::BackendTimeout { .. } => "The app did not answer in time",
            Refusal::TunnelLost { .. } => "The connection to the connector was lost",
            Refusal::ShuttingDown => "The edge is restarting",
            Refusal::Maintenance { .. } => "Down for maintenance",
            Refusal::SignInRequired { .. } => "Sign-in required",
            Refusal::BearerRefused { .. } => "The access token was refused",
            Refusal::IssuerUnavailable { .. } => "The sign-in service cannot be used",
            Refusal::IssuerUnreachable { .. } => "The sign-in service cannot be reached",
            Refusal::IssuerRefused { .. } => "The sign-in service refused the sign-in",
            Refusal::TokenInvalid { .. } => "The sign-in could not be verified",
            Refusal::SignInStateInvalid { .. } => "The sign-in expired or was not started here",
            Refusal::SessionCookieInvalid { .. } => "Your session is not valid",
            Refusal::NotAssigned { .. } => "You are not assigned to this app",
            Refusal::MfaRequired { .. } => "A second factor is required",
            Refusal::PolicyBlocked { .. } => "Access is blocked by a policy",
            Refusal::PolicyUnmet { .. } => "A policy requires more of this sign-in",
            Refusal::PoliciesUnusable { .. } => "Access policies cannot be evaluated",
            Refusal::SignInMisconfigured { .. } => "Sign-in is not set up for this app",
            Refusal::RateLimited { .. } => "Too many requests",
            Refusal::HeadTooLarge => "Request headers too large",
            Refusal::BadRequestBody => "Malformed request body",
            Refusal::RequestBodyStalled { .. } => "The request body stopped arriving",
            Refusal::ResponseHeadTooLarge { .. } => "The app's response headers are too large",
            Refusal::SignOutRefused { .. } => "The sign-out was refused",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::UnknownApp { host } => format!(
                "No application is published at {host}. Check the address, or ask an administrator to publish it."
            ),
            Refusal::MissingHost => {
                "The request names no valid host (one Host header or :authority, without user information).".to_owned()
            }
            Refusal::ConnectNotAllowed => {
                "CONNECT is not allowed: Postern publishes apps and is not a forward proxy.".to_owned()
            }
            Refusal::NoConnectorOnline { app, group } => format!(
                "No connector of group {group:?} is online to carry requests for {app:?}. Start a connector in that group, or check that it can reach the edge."
            ),
            Refusal::QueueFull { app } => format!(
                "Too many requests for {app:?} are already waiting for a connector. Try again shortly."
            ),
            Refusal::ConnectorsBusy { app, group } => format!(
                "Every connector of group {group:?} carries as many requests for {app:?} and the group's other apps as it accepts ({} per tunnel, open WebSockets included). Try again shortly; an administrator can add connectors or tunnels (--tunnels) to the group.",
                postern_proto::limits::TUNNEL_MAX_STREAMS
            ),
            Refusal::ConnectorLacksApp { app } => format!(
                "The connector refused requests for {app:?} because its configuration does not include it yet. Try again in a moment."
            ),
            Refusal::BackendUnreachable { app } => format!(
                "The connector could not reach {app:?} at its internal URL. Check that the app is running and that the internal URL is right."
            ),
            Refusal::DestinationRefused { app } => format!(
                "The connector serving {app:?} refused to connect to the app's internal address: its destination policy does not allow it (link-local and cloud metadata addresses are always refused; other addresses must match the connector's --allow-destination). An administrator must correct the app's internal URL or the connector's --allow-destination; the connector's log names the address."
            ),
            Refusal::BackendTimeout { app, timeout } => format!(
                "{app:?} did not send a response within {} seconds.",
                timeout.as_secs()
            ),
            Refusal::TunnelLost { app } => format!(
                "The tunnel to the connector carrying this request for {app:?} closed before the app answered. Try again."
            ),
            Refusal::ShuttingDown => "The edge is shutting down. Try again in a moment.".to_owned(),
            Refusal::PathOutsideApp { app } => format!(
                "The path has '.' or '..' segments that would leave {app:?}'s own path. Remove them from the address."
            ),
            Refusal::SignInRequired { app } => format!(
                "{app:?} requires sign-in. Send a session cookie, or an `Authorization: Bearer` token issued for this app."
            ),
            Refusal::BearerRefused { app, reason } => format!(
                "The bearer token sent to {app:?} was refused: {reason}."
            ),
            Refusal::IssuerUnavailable { app, issuer, reason } => format!(
                "{app:?} signs users in with {issuer}, which could not be used: {reason}. Try again later, or ask an administrator to check the issuer."
            ),
            Refusal::IssuerUnreachable { app, issuer, reason, retry_after } => format!(
                "{app:?} signs users in with {issuer}, which is unreachable: {reason}. Try again in {} seconds; if it persists, ask an administrator to check the issuer.",
                retry_secs(*retry_after)
            ),
            Refusal::IssuerRefused { app, reason } => format!(
                "The identity provider of {app:?} refused the sign-in: {reason}."
            ),
            Refusal::TokenInvalid { app, reason } => format!(
                "The identity provider's answer for {app:?} failed a check, so you were not signed in: {reason}."
            ),
            Refusal::SignInStateInvalid { app, reason } => format!(
                "The sign-in to {app:?} cannot be completed: {reason}. Open the app again to start a new sign-in."
            ),
            Refusal::SessionCookieInvalid { app, reason } => format!(
                "The session cookie sent to {app:?} is not valid ({reason}); it has been cleared. Open the app again to sign in."
            ),
            Refusal::NotAssigned { app, user } => format!(
                "{user} is signed in, but is not assigned to {app:?}. Ask an administrator to assign you (or one of your groups) to it."
            ),
            Refusal::MfaRequired { app } => format!(
                "{app:?} requires that you sign in with a second factor (such as an authenticator app), and the sign-in did not use one."
            ),
            Refusal::PolicyBlocked { app, policy } => format!(
                "The access policy {policy:?} blocks this access to {app:?} (who you are, where you are, your device or the time). Ask an administrator if you need access."
            ),
            Refusal::PolicyUnmet { app, policy, what } => format!(
                "The access policy {policy:?} requires {what} to use {app:?}, and the sign-in did not provide it. Sign in again with it, or ask an administrator."
            ),
            Refusal::PoliciesUnusable { reason } => format!(
                "The access policies cannot be evaluated ({reason}), so nothing is let through. An administrator must fix them."
            ),
            Refusal::SignOutRefused { app, reason } => format!(
                "The request to sign out of {app:?} was refused, and you are still signed in: {reason}. To sign out, open {SIGNOUT} in {app:?} and use its button.",
                SIGNOUT = crate::preauth::SIGNOUT_PATH
            ),
            Refusal::SignInMisconfigured { app, reason } => format!(
                "{app:?} cannot sign users in: {reason}. An administrator must fix the app's settings."
            ),
            Refusal::Maintenance { app } => format!(
                "{app:?} is down for maintenance. An administrator will bring it back; try again later."
            ),
            Refusal::UpgradeRefused { app } => format!(
                "{app:?} answered the WebSocket upgrade without switching protocols. Check that the app serves WebSockets at this path."
            ),
            Refusal::RateLimited { scope: RateScope::ClientAddress, retry_after } => format!(
                "Your address sent more requests than the edge allows per second. Wait {} seconds and try again.",
                retry_after.as_secs()
            ),
            Refusal::RateLimited { scope: RateScope::App { app }, retry_after } => format!(
                "{app:?} received more requests than it accepts per second. Wait {} seconds and try again.",
                retry_after.as_secs()
            ),
            Refusal::RateLimited { scope: RateScope::InFlight { max }, retry_after } => format!(
                "Your address has {max} requests in flight, as many as the edge allows at once. Wait {} seconds, or for a download to finish, and try again.",
                retry_after.as_secs()
            ),
            Refusal::HeadTooLarge => format!(
                "The request's headers (cookies, URL and the rest) are larger than the edge forwards ({} KiB, at most {} fields). Clear this site's cookies or shorten the address.",
                postern_proto::limits::MAX_REQUEST_HEAD_BYTES / 1024,
                postern_proto::limits::MAX_HEADER_FIELDS
            ),
            Refusal::BadRequestBody => {
                "The request body was malformed (its chunked framing is invalid) or ended before its declared length.".to_owned()
            }
            Refusal::RequestBodyStalled { timeout } => format!(
                "The request body sent nothing for {secs} seconds, or not its first 64 KiB (or all of it) within {secs} seconds, so the edge stopped waiting for it.",
                secs = timeout.as_secs()
            ),
            Refusal::ResponseHeadTooLarge { app } => format!(
                "{app:?} answered with headers larger than {} KiB, which the edge does not pass on. The app's administrator must make them smaller (large cookies are the usual cause).",
                postern_proto::limits::MAX_RESPONSE_HEAD_BYTES / 1024
            ),
        }
    }

    /// The response for this refusal: JSON when the client prefers it, otherwise HTML.
    pub fn into_response(self, json: bool, request_id: &str) -> Response<Full<Bytes>> {
        let body = if json {
            serde_json::json!({
                "error": {
                    "code": self.code(),
                    "message": self.message(),
                    "source": format!("{:?}", self.source()).to_lowercase(),
                    "retryable": self.retryable(),
                    "request_id": request_id,
                }
            })
            .to_string()
        } else {
            self.html(request_id)
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(if json {
                "application/json"
            } else {
                "text/html; charset=utf-8"
            }),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(after)));
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(crate::hygiene::X_REQUEST_ID, v);
        }
        if let Refusal::RateLimited { retry_after, .. } = &self {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs()),
            );
        }
        if matches!(self, Refusal::HeadTooLarge | Refusal::BadRequestBody) {
            // The rest of what the client sent on this connection cannot be trusted to be framed
            // where it says.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// When trying again may help, for refusals that know (sent as `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::IssuerUnreachable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    fn html(&self, request_id: &str) -> String {
        let status = self.status();
        let source = match self.source() {
            Source::Client => "the request",
            Source::Edge => "the Postern edge",
            Source::Connector => "the Postern connector",
            Source::App => "the application",
            Source::IdentityProvider => "the identity provider",
            Source::Policy => "the app's access rules",
        };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{code} {title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
code{{background:#f2f2f2;padding:.1rem .3rem}}</style></head>\
<body><main><h1>{title}</h1><p>{message}</p>\
<p>Problem in: {source}. {retry}</p>\
<p>Status: {code} &middot; Error: <code>{err}</code> &middot; Request ID: <code>{rid}</code></p>\
</main></body></html>\n",
            code = status.as_u16(),
            title = self.title(),
            message = escape(&self.message()),
            retry = if self.retryable() {
                "Trying again later may help."
            } else {
                "Trying again will not help."
            },
            err = self.code(),
            rid = escape(request_id),
        )
    }
}

/// Whole seconds to wait, rounded up and at least one, as `Retry-After` counts them.
fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0 || d.is_zero())
}

/// True when the client asks for JSON rather than a page (API clients, `fetch`).
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_the_user_sent() {
        let r = Refusal::UnknownApp {
            host: "<script>x</script>".into(),
        };
        let html = r.html("rid");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn an_unreachable_issuer_is_a_retryable_503_saying_when() {
        for (after, header) in [
            (Duration::from_secs(5), "5"),
            (Duration::from_millis(4200), "5"),
            (Duration::ZERO, "1"),
        ] {
            let r = Refusal::IssuerUnreachable {
                app: "wiki".into(),
                issuer: "https://login.example.com".into(),
                reason: "timed out".into(),
                retry_after: after,
            };
            assert!(r.retryable());
            assert!(r.message().contains("https://login.example.com"));
            let resp = r.into_response(true, "rid");
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[header::RETRY_AFTER], header, "{after:?}");
        }
        let other = Refusal::ShuttingDown.into_response(false, "rid");
        assert!(!other.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn json_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(wants_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,application/json;q=0.9"),
        );
        assert!(!wants_json(&h));
    }
}
