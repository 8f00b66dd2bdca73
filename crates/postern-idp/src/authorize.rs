//! The authorization endpoint and the sign-ins it starts.
//!
//! A request is checked in the order RFC 6749 section 4.1.2.1 asks: the client and the redirect
//! URI first (a bad one gets an error page, never a redirect), then everything else, whose
//! errors go back to the client's redirect URI. A request that needs the user becomes a
//! [`Pending`] sign-in, which the sign-in pages carry by its ID until it completes at
//! `/continue`.
//!
//! Every parameter is limited in size ([`crate::limits`]) before anything else is done with it,
//! and the pending sign-ins are a [`crate::bounded::Table`]: per address and per client, the
//! oldest goes when a cap is reached.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use postern_store::{AuthContext, Client, IdpSession, NewCode, User};
use url::Url;

use crate::cookies;
use crate::html::error_page;
use crate::limits::{
    MAX_AUTHORIZE_QUERY_BYTES, MAX_CLIENT_ID_BYTES, MAX_CODE_CHALLENGE_BYTES, MAX_EMAIL_BYTES,
    MAX_KEYWORD_PARAM_BYTES, MAX_NONCE_BYTES, MAX_REDIRECT_URI_BYTES, MAX_SCOPE_BYTES,
    MAX_STATE_BYTES,
};
use crate::{now, pkce, Caller, Idp, CODE_LIFETIME};

/// What the client asked for, once checked.
#[derive(Clone, Debug)]
pub struct AuthRequest {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub scope: String,
    pub code_challenge: Option<String>,
}

/// What a sign-in will complete.
#[derive(Clone, Debug)]
pub enum Purpose {
    Authorize(AuthRequest),
    /// Approving a device authorization (RFC 8628) by its user code.
    Device {
        user_code: String,
    },
    /// Reaching the user's own account page (`/account`).
    Account,
}

/// A sign-in in progress.
#[derive(Clone, Debug)]
pub struct Pending {
    pub client_id: String,
    pub client_name: String,
    pub purpose: Purpose,
    /// The client asked for a second factor (`acr_values=mfa`).
    pub require_mfa: bool,
    /// Only a sign-in made for this request counts (`prompt=login`, or `max_age` passed).
    pub fresh_login: bool,
    /// The session the user signed in to for this request, by its hash.
    pub signed_in: Option<String>,
    /// The highest risk identity protection found in this sign-in's password step.
    pub risk: postern_policy::RiskLevel,
    /// Asked with `prompt=none`: a refusal goes back to the client as an error, never a page.
    pub silent: bool,
    pub created_at: i64,
}

impl Pending {
    /// The client the sign-in is for (none for the account page).
    pub fn client(&self) -> Option<&str> {
        Some(self.client_id.as_str()).filter(|c| !c.is_empty())
    }

    /// What the sign-in holds, in bytes, for the table's bounds (the session hash it may get
    /// later included).
    fn bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let purpose = match &self.purpose {
            Purpose::Authorize(r) => {
                r.redirect_uri.len()
                    + opt(&r.state)
                    + opt(&r.nonce)
                    + r.scope.len()
                    + opt(&r.code_challenge)
            }
            Purpose::Device { user_code } => user_code.len(),
            Purpose::Account => 0,
        };
        std::mem::size_of::<Pending>()
            + self.client_id.len()
            + self.client_name.len()
            + 64
            + purpose
    }
}

/// The next thing the user must do for a pending sign-in.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    SignIn,
    SecondFactor,
    Done,
}

/// Decides the next step from the session (if any), its user and the request.
pub fn next_step(session: Option<&IdpSession>, user: Option<&User>, p: &Pending) -> Step {
    let (Some(s), Some(u)) = (session, user) else {
        return Step::SignIn;
    };
    if p.fresh_login && p.signed_in.as_deref() != Some(s.hash.as_str()) {
        return Step::SignIn;
    }
    if (u.require_mfa || p.require_mfa) && !postern_policy::Strength::of(&s.amr, None).multi_factor
    {
        return Step::SecondFactor;
    }
    Step::Done
}

/// The `acr` for a set of methods.
pub fn acr(amr: &[String]) -> String {
    if postern_policy::Strength::of(amr, None).multi_factor {
        "mfa".to_owned()
    } else {
        "pwd".to_owned()
    }
}

/// The most sessions whose sign-in risk is remembered.
pub const MAX_RISKY_SESSIONS: usize = 10_000;

/// What the provider asks conditional access before it lets a signed-in user through to one of
/// its clients.
pub struct AccessAsk<'a> {
    pub client_id: &'a str,
    pub user: &'a User,
    /// Whether the administrator vouches for the user's email (only then may a policy match it).
    pub email_verified: bool,
    /// The risk found in this sign-in itself (a leaked password, a spray from its address): it
    /// counts as sign-in and user risk at once, before the stored detections reach the edge.
    pub found_risk: postern_policy::RiskLevel,
    /// The user's risk as the store holds it now (what earlier sign-ins found).
    pub user_risk: postern_policy::RiskLevel,
    /// How the session was signed in, and when (Unix seconds).
    pub amr: &'a [String],
    pub auth_time: i64,
    pub caller: &'a Caller,
}

/// Why tokens are not issued: a policy refuses the user (for good), or the decision cannot be
/// made now (try again).
pub(crate) enum TokenRefusal {
    Refused(String),
    Unavailable(String),
}

/// Conditional access as the edge decides it (the same policies, risk and locations).
pub trait ConditionalAccess: Send + Sync {
    /// `None` when the client is not decided here: an edge app's client, whose sign-ins the
    /// edge decides at its callback. `Err` names why the policies cannot be used.
    fn decide(&self, ask: &AccessAsk<'_>) -> Option<Result<postern_policy::Decision, String>>;
}

impl Idp {
    /// Keeps a sign-in in progress for the caller at `ip`; returns its ID. Always taken: when
    /// a cap is reached, the oldest of that address (or client, or of all) goes.
    pub(crate) fn add_pending(&self, p: Pending, ip: &Caller) -> String {
        let id = base64_id();
        let (client, bytes) = (p.client_id.clone(), p.bytes());
        let evicted =
            crate::lock(&self.pending).insert(id.clone(), p, ip.key(), &client, bytes, now());
        if evicted > 0 {
            tracing::debug!(client = %ip.ip, evicted, "pending sign-ins evicted at their cap");
        }
        id
    }

    pub(crate) fn pending(&self, id: &str) -> Option<Pending> {
        crate::lock(&self.pending).get(id, now()).cloned()
    }

    /// Records the risk found in the pending sign-in `id`'s password step, on it and on the
    /// session it signed in to (at most [`MAX_RISKY_SESSIONS`] kept, the oldest going first).
    pub(crate) fn mark_risk(&self, id: &str, risk: postern_policy::RiskLevel) {
        let session = match crate::lock(&self.pending).get_mut(id, now()) {
            Some(p) => {
                p.risk = p.risk.max(risk);
                p.signed_in.clone()
            }
            None => None,
        };
        if let Some(hash) = session {
            self.remember_session_risk(hash, risk);
        }
    }

    pub(crate) fn remember_session_risk(&self, hash: String, risk: postern_policy::RiskLevel) {
        if risk == postern_policy::RiskLevel::None {
            return;
        }
        let mut risky = crate::lock(&self.session_risk);
        let now = now();
        // Pruned only when full: sessions that have ended first, then the oldest.
        if risky.len() >= MAX_RISKY_SESSIONS {
            risky.retain(|_, (_, at)| now - *at < crate::SESSION_LIFETIME.as_secs() as i64);
        }
        if risky.len() >= MAX_RISKY_SESSIONS {
            if let Some(oldest) = risky
                .iter()
                .min_by_key(|(_, v)| v.1)
                .map(|(k, _)| k.clone())
            {
                risky.remove(&oldest);
            }
        }
        let entry = risky.entry(hash).or_insert((risk, now));
        entry.0 = entry.0.max(risk);
    }

    /// The risk found when `session_hash` was signed in.
    pub(crate) fn session_risk(&self, session_hash: &str) -> postern_policy::RiskLevel {
        crate::lock(&self.session_risk)
            .get(session_hash)
            .map_or(postern_policy::RiskLevel::None, |v| v.0)
    }

    /// Records that the user signed in to `session_hash` for the pending sign-in `id`.
    pub(crate) fn mark_signed_in(&self, id: &str, session_hash: &str) {
        let risk = crate::lock(&self.pending).get_mut(id, now()).map(|p| {
            p.signed_in = Some(session_hash.to_owned());
            p.risk
        });
        // A session that replaces a risky one (its second factor) keeps its risk.
        if let Some(risk) = risk {
            self.remember_session_risk(session_hash.to_owned(), risk);
        }
    }

    pub(crate) fn finish_pending(&self, id: &str) {
        crate::lock(&self.pending).remove_entry(id);
    }

    /// The live session named by the request's cookie, and its user.
    pub(crate) async fn session(&self, headers: &HeaderMap) -> Option<(IdpSession, User)> {
        let token = cookies::get(headers, cookies::SESSION_COOKIE)?;
        let session = self.store.session(&token, now()).await.ok()??;
        let user = self.store.user_by_id(&session.user_id).await.ok()?;
        Some((session, user))
    }

    /// Sends the user to the page for the next step of a pending sign-in, or completes it.
    pub(crate) async fn advance(
        &self,
        headers: &HeaderMap,
        caller: &Caller,
        req_id: &str,
    ) -> Response {
        let Some(p) = self.pending(req_id) else {
            return expired_request();
        };
        let session = self.session(headers).await;
        match next_step(
            session.as_ref().map(|s| &s.0),
            session.as_ref().map(|s| &s.1),
            &p,
        ) {
            Step::SignIn => Redirect::to(&format!("/signin?req={req_id}")).into_response(),
            Step::SecondFactor => {
                Redirect::to(&format!("/signin/mfa?req={req_id}")).into_response()
            }
            Step::Done => {
                let Some((session, user)) = session else {
                    return expired_request();
                };
                if matches!(p.purpose, Purpose::Authorize(_) | Purpose::Device { .. }) {
                    if let Some(refused) =
                        self.conditional(req_id, &p, &session, &user, caller).await
                    {
                        return refused;
                    }
                }
                let auth = AuthContext {
                    user_id: session.user_id.clone(),
                    auth_time: session.auth_time,
                    acr: acr(&session.amr),
                    amr: session.amr.clone(),
                };
                match &p.purpose {
                    Purpose::Authorize(r) => {
                        self.finish_pending(req_id);
                        self.issue_code(&p.client_id, r, auth).await
                    }
                    Purpose::Device { user_code } => {
                        crate::device::approval_page(headers, req_id, &p, user_code)
                    }
                    Purpose::Account => {
                        self.finish_pending(req_id);
                        Redirect::to("/account").into_response()
                    }
                }
            }
        }
    }

    /// Conditional access for a sign-in to one of the provider's own clients: `None` lets it
    /// through; otherwise the page or step the policies ask for.
    pub(crate) async fn conditional(
        &self,
        req_id: &str,
        p: &Pending,
        session: &IdpSession,
        user: &User,
        caller: &Caller,
    ) -> Option<Response> {
        use postern_policy::Verdict;
        let access = self.access.get()?;
        let email_verified = self.store.email_verified(&user.id).await.unwrap_or(false);
        let user_risk = self.stored_user_risk(&user.id).await;
        let decided = access.decide(&AccessAsk {
            client_id: &p.client_id,
            user,
            email_verified,
            found_risk: p.risk.max(self.session_risk(&session.hash)),
            user_risk,
            amr: &session.amr,
            auth_time: session.auth_time,
            caller,
        })?;
        // OpenID Connect Core 3.1.2.6: a silent request is answered at the client.
        let silent = |error: &str, description: &str| match &p.purpose {
            Purpose::Authorize(r) if p.silent => Some(redirect_with(
                &r.redirect_uri,
                &[
                    ("error", Some(error)),
                    ("error_description", Some(description)),
                    ("state", r.state.as_deref()),
                    ("iss", Some(self.issuer.as_str())),
                ],
            )),
            _ => None,
        };
        let decision = match decided {
            Ok(d) => d,
            Err(reason) => {
                let why = format!("the access policies cannot be used: {reason}");
                return Some(silent("temporarily_unavailable", &why).unwrap_or_else(|| {
                    error_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Sign-in is unavailable",
                        &format!("{why}. An administrator must fix them."),
                    )
                }));
            }
        };
        let (Verdict::Block { policy }
        | Verdict::RequireMfa { policy }
        | Verdict::RequirePasskey { policy }
        | Verdict::RequireSignIn { policy }) = &decision.verdict
        else {
            return None;
        };
        let blocked = matches!(decision.verdict, Verdict::Block { .. });
        // A block, however it is answered, is recorded and ends the sign-in: its session (it
        // cannot be used for another request; its risk is judged again at the next sign-in),
        // the pending request, and a device waiting for this approval (RFC 8628 access_denied).
        if blocked {
            self.event(
                &user.email,
                Some(&user.id),
                caller,
                Some(&p.client_id),
                "blocked_by_policy",
            )
            .await;
            if let Err(e) = self.store.revoke_session(&session.hash).await {
                tracing::error!(error = %e, "cannot end a blocked sign-in's session");
            }
            if let Purpose::Device { user_code } = &p.purpose {
                if let Err(e) = self.store.decide_device(user_code, None).await {
                    tracing::error!(error = %e, "cannot deny a device a policy blocked");
                }
            }
        }
        let answered_silently = if blocked {
            silent(
                "access_denied",
                &format!("the access policy {policy:?} blocks this sign-in"),
            )
        } else {
            silent(
                "interaction_required",
                &format!("the access policy {policy:?} asks for more of this sign-in"),
            )
        };
        let mut resp = match (answered_silently, &decision.verdict) {
            (Some(r), _) => {
                self.finish_pending(req_id);
                r
            }
            (None, Verdict::Block { .. }) => {
                self.finish_pending(req_id);
                error_page(
                StatusCode::FORBIDDEN,
                "Access is blocked by a policy",
                &format!(
                    "The access policy \"{policy}\" blocks signing in to {} (who you are, where you are, your device or the time). Ask an administrator if you need access.",
                    p.client_name
                ),
            )
            }
            (None, Verdict::RequireMfa { .. }) => {
                return Some(Redirect::to(&format!("/signin/mfa?req={req_id}")).into_response())
            }
            (None, Verdict::RequireSignIn { .. }) => {
                self.require_fresh_sign_in(req_id);
                return Some(Redirect::to(&format!("/signin?req={req_id}")).into_response());
            }
            (None, _) => {
                self.event(
                    &user.email,
                    Some(&user.id),
                    caller,
                    Some(&p.client_id),
                    "passkey_required_by_policy",
                )
                .await;
                self.require_fresh_sign_in(req_id);
                let request = crate::request_id()
                    .map(|id| {
                        format!(
                            "<p>Request ID: <code>{}</code></p>",
                            crate::html::escape(&id)
                        )
                    })
                    .unwrap_or_default();
                crate::html::page(
                    StatusCode::FORBIDDEN,
                    "A passkey is required",
                    &format!(
                        "<h1>A passkey is required</h1><p class=\"error\" role=\"alert\">The access policy \"{named}\" requires a passkey to sign in to {client}, and this sign-in did not use one.</p>\
                         <p><a href=\"/signin?req={req_id}\">Sign in with a passkey</a></p>{request}",
                        named = crate::html::escape(policy),
                        client = crate::html::escape(&p.client_name),
                    ),
                )
            }
        };
        if blocked {
            resp.headers_mut().append(
                axum::http::header::SET_COOKIE,
                cookies::set(cookies::SESSION_COOKIE, None),
            );
        }
        Some(resp)
    }

    /// Whether tokens for `auth` may be issued to `client` now (a refresh or a device poll), as
    /// conditional access decides it. The network facts are the caller's for a public client
    /// (the user's own device); for a confidential one (a server) they are those of the user's
    /// latest sign-in here, so a policy on places or platforms judges the user, not the server.
    pub(crate) async fn tokens_allowed(
        &self,
        client: &postern_store::Client,
        auth: &postern_store::AuthContext,
        caller: &Caller,
    ) -> Result<(), TokenRefusal> {
        use postern_policy::Verdict;
        let Some(access) = self.access.get() else {
            return Ok(());
        };
        let unavailable = |e: String| TokenRefusal::Unavailable(e);
        let user = match self.store.user_by_id(&auth.user_id).await {
            Ok(u) => u,
            Err(postern_store::StoreError::NotFound { .. }) => {
                return Err(TokenRefusal::Refused(
                    "the user no longer exists".to_owned(),
                ))
            }
            Err(e) => return Err(unavailable(e.to_string())),
        };
        let email_verified = self
            .store
            .email_verified(&user.id)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let user_risk = self.stored_user_risk(&user.id).await;
        let latest = if client.public {
            None
        } else {
            self.store
                .sign_in_history(postern_store::BUILT_IN_ISSUER, &user.id, 1)
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .into_iter()
                .next()
        };
        let signed_in_from = latest.and_then(|s| {
            Some(Caller {
                ip: s.record.ip_address.parse().ok()?,
                request_id: caller.request_id.clone(),
                device: (s.record.operating_system, s.record.browser),
                location: s.record.location,
            })
        });
        let decided = access.decide(&AccessAsk {
            client_id: &client.client_id,
            user: &user,
            email_verified,
            found_risk: postern_policy::RiskLevel::None,
            user_risk,
            amr: &auth.amr,
            auth_time: auth.auth_time,
            caller: signed_in_from.as_ref().unwrap_or(caller),
        });
        match decided.map(|d| d.map(|d| d.verdict)) {
            None | Some(Ok(Verdict::Allow)) => Ok(()),
            Some(Err(reason)) => Err(unavailable(format!(
                "the access policies cannot be used: {reason}"
            ))),
            Some(Ok(Verdict::Block { policy })) => Err(TokenRefusal::Refused(format!(
                "the access policy {policy:?} blocks this user; no tokens are issued"
            ))),
            Some(Ok(
                Verdict::RequireMfa { policy }
                | Verdict::RequirePasskey { policy }
                | Verdict::RequireSignIn { policy },
            )) => Err(TokenRefusal::Refused(format!(
                "the access policy {policy:?} asks for a new sign-in; no tokens are issued"
            ))),
        }
    }

    /// The built-in user `user_id`'s risk as the store holds it now; none (logged) when the
    /// store cannot answer.
    async fn stored_user_risk(&self, user_id: &str) -> postern_policy::RiskLevel {
        match self
            .store
            .risky_user(postern_store::BUILT_IN_ISSUER, user_id, now() * 1000)
            .await
        {
            Ok(u) => u.map_or(postern_policy::RiskLevel::None, |u| {
                postern_policy::risk::stored_user_risk(&u.state, &u.standing)
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the user's risk");
                postern_policy::RiskLevel::None
            }
        }
    }

    /// The pending sign-in `id` now needs a new sign-in, whatever session the browser has.
    fn require_fresh_sign_in(&self, id: &str) {
        if let Some(p) = crate::lock(&self.pending).get_mut(id, now()) {
            p.fresh_login = true;
            p.signed_in = None;
        }
    }

    async fn issue_code(&self, client_id: &str, r: &AuthRequest, auth: AuthContext) -> Response {
        let new = NewCode {
            client_id: client_id.to_owned(),
            redirect_uri: r.redirect_uri.clone(),
            code_challenge: r.code_challenge.clone(),
            nonce: r.nonce.clone(),
            scope: r.scope.clone(),
            auth,
            expires_at: now() + CODE_LIFETIME.as_secs() as i64,
        };
        match postern_obs::metrics::timed_store("create_code", self.store.create_code(&new)).await {
            Ok(code) => {
                postern_obs::metrics::sign_in(client_id, postern_obs::metrics::SignIn::Success);
                redirect_with(
                    &r.redirect_uri,
                    &[
                        ("code", Some(code.as_str())),
                        ("state", r.state.as_deref()),
                        ("iss", Some(self.issuer.as_str())),
                    ],
                )
            }
            Err(e) => internal(e),
        }
    }
}

fn base64_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

pub(crate) fn expired_request() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "Sign-in expired",
        "This sign-in was started too long ago or is unknown. Go back to the application and start again.",
    )
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "identity provider error");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The sign-in service could not complete the request; try again. The edge's log has the details.",
    )
}

/// A 303 to `uri` with the given query parameters added.
pub(crate) fn redirect_with(uri: &str, params: &[(&str, Option<&str>)]) -> Response {
    let Ok(mut url) = Url::parse(uri) else {
        return internal(format!("registered redirect URI {uri:?} does not parse"));
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    Redirect::to(url.as_str()).into_response()
}

/// Checks the client and redirect URI; an error here is shown, never redirected.
pub(crate) async fn checked_client(
    idp: &Idp,
    q: &HashMap<String, String>,
) -> Result<(Client, String), Response> {
    let Some(client_id) = q.get("client_id") else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in request",
            "The application's request has no client_id (invalid_request).",
        ));
    };
    let client = match idp.store.client(client_id).await {
        Ok(c) => c,
        Err(postern_store::StoreError::NotFound { .. }) => {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                &format!(
                    "No application is registered with client_id {client_id:?} (invalid_client)."
                ),
            ))
        }
        Err(e) => return Err(internal(e)),
    };
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    if !client.redirect_uris.contains(&redirect_uri) {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect URI",
            &format!(
                "The application {:?} asked to return to {redirect_uri:?}, which is not one of its registered redirect URIs (invalid_request). Nothing was sent to it.",
                client.name
            ),
        ));
    }
    Ok((client, redirect_uri))
}

/// An authorization request refused on the error page, because its redirect URI cannot be
/// trusted yet (or cannot carry the answer back): what was too large, how large, the limit.
#[derive(Debug, PartialEq, Eq)]
struct TooLarge {
    what: String,
    len: usize,
    max: usize,
}

impl TooLarge {
    fn page(&self) -> Response {
        error_page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in request",
            &format!(
                "The application's request is too large: its {} is {} bytes, more than the {} allowed (invalid_request). Nothing was sent to it.",
                self.what, self.len, self.max
            ),
        )
    }
}

/// The parameters of an authorization request the provider reads, each within its limit.
#[derive(Debug)]
struct AuthorizeQuery {
    params: HashMap<String, String>,
    /// The first parameter over its limit that can be reported to the client, and the limit.
    over_limit: Option<(String, usize)>,
}

/// The longest a parameter of the authorization request may be; `None` for one the provider
/// does not read (bounded by the whole query's limit, and dropped).
fn param_limit(name: &str) -> Option<usize> {
    Some(match name {
        "client_id" => MAX_CLIENT_ID_BYTES,
        "redirect_uri" => MAX_REDIRECT_URI_BYTES,
        "state" => MAX_STATE_BYTES,
        "nonce" => MAX_NONCE_BYTES,
        "scope" => MAX_SCOPE_BYTES,
        "code_challenge" => MAX_CODE_CHALLENGE_BYTES,
        "login_hint" => MAX_EMAIL_BYTES,
        "response_type"
        | "response_mode"
        | "code_challenge_method"
        | "prompt"
        | "max_age"
        | "acr_values" => MAX_KEYWORD_PARAM_BYTES,
        // Only their presence is read (to refuse them).
        "request" | "request_uri" => MAX_AUTHORIZE_QUERY_BYTES,
        _ => return None,
    })
}

/// Parses the query of an authorization request within its limits. An error is for the error
/// page: the whole query too large, or a parameter that must be trusted (or sent back) before an
/// error can go to the client (`client_id`, `redirect_uri`, `state`).
fn parse_authorize_query(raw: Option<&str>) -> Result<AuthorizeQuery, TooLarge> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_AUTHORIZE_QUERY_BYTES {
        // Name the parameter that made it too large, without decoding anything.
        let longest = raw.split('&').max_by_key(|p| p.len()).unwrap_or_default();
        let name = crate::limits::truncate(longest.split('=').next().unwrap_or_default(), 40);
        return Err(TooLarge {
            what: format!(
                "query (its {name:?} parameter alone is {} bytes)",
                longest.len()
            ),
            len: raw.len(),
            max: MAX_AUTHORIZE_QUERY_BYTES,
        });
    }
    let mut q = HashMap::new();
    let mut over = None;
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        let Some(max) = param_limit(&k) else {
            continue;
        };
        if v.len() > max {
            if matches!(k.as_ref(), "client_id" | "redirect_uri" | "state") {
                return Err(TooLarge {
                    what: format!("{k} parameter"),
                    len: v.len(),
                    max,
                });
            }
            if over.is_none() {
                over = Some((k.into_owned(), max));
            }
            continue;
        }
        q.insert(k.into_owned(), v.into_owned());
    }
    Ok(AuthorizeQuery {
        params: q,
        over_limit: over,
    })
}

/// `GET /authorize`.
pub async fn authorize(
    State(idp): State<Arc<Idp>>,
    Extension(ip): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let AuthorizeQuery {
        params: q,
        over_limit,
    } = match parse_authorize_query(raw.as_deref()) {
        Ok(parsed) => parsed,
        Err(too_large) => return too_large.page(),
    };
    let (client, redirect_uri) = match checked_client(&idp, &q).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    let state = q.get("state").cloned();
    let fail = |error: &str, description: &str| {
        redirect_with(
            &redirect_uri,
            &[
                ("error", Some(error)),
                ("error_description", Some(description)),
                ("state", state.as_deref()),
                ("iss", Some(idp.issuer.as_str())),
            ],
        )
    };
    if let Some((name, max)) = over_limit {
        return fail(
            "invalid_request",
            &format!("{name} is longer than the {max} bytes allowed"),
        );
    }
    if q.contains_key("request") || q.contains_key("request_uri") {
        return fail("request_not_supported", "request objects are not supported");
    }
    match q.get("response_type").map(String::as_str) {
        Some("code") => {}
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        }
        None => return fail("invalid_request", "response_type is required"),
    }
    if let Some(mode) = q.get("response_mode") {
        if mode != "query" {
            return fail("invalid_request", "only response_mode=query is supported");
        }
    }
    let scope = q.get("scope").cloned().unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return fail("invalid_scope", "the scope must include openid");
    }
    let challenge = q.get("code_challenge").cloned();
    match (
        q.get("code_challenge_method").map(String::as_str),
        &challenge,
    ) {
        (Some("S256"), Some(c)) if pkce::valid_challenge(c) => {}
        (Some("S256"), _) => return fail("invalid_request", "code_challenge is malformed"),
        (Some(_), _) => {
            return fail(
                "invalid_request",
                "only code_challenge_method=S256 is supported (plain is refused)",
            )
        }
        (None, Some(_)) => {
            return fail(
                "invalid_request",
                "code_challenge_method=S256 is required with code_challenge (plain is refused)",
            )
        }
        (None, None) if client.public => {
            return fail(
                "invalid_request",
                "public clients must use PKCE with code_challenge_method=S256",
            )
        }
        (None, None) => {}
    }
    let prompt: Vec<&str> = q
        .get("prompt")
        .map(|p| p.split(' ').collect())
        .unwrap_or_default();
    let max_age = match q.get("max_age").map(|m| m.parse::<i64>()) {
        None => None,
        Some(Ok(m)) if m >= 0 => Some(m),
        Some(_) => return fail("invalid_request", "max_age must be a non-negative integer"),
    };
    let require_mfa = q
        .get("acr_values")
        .is_some_and(|a| a.split(' ').any(|v| v == "mfa"));
    let now = now();
    let session = idp.session(&headers).await;
    let fresh_login = prompt.contains(&"login")
        || max_age.is_some_and(|m| session.as_ref().is_some_and(|(s, _)| s.auth_time < now - m));
    let pending = Pending {
        client_id: client.client_id.clone(),
        client_name: client.name.clone(),
        purpose: Purpose::Authorize(AuthRequest {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            nonce: q.get("nonce").cloned(),
            scope,
            code_challenge: challenge,
        }),
        require_mfa,
        fresh_login,
        signed_in: None,
        risk: postern_policy::RiskLevel::None,
        silent: false,
        created_at: now,
    };
    if prompt.contains(&"none") {
        let pending = Pending {
            silent: true,
            ..pending
        };
        return match next_step(
            session.as_ref().map(|s| &s.0),
            session.as_ref().map(|s| &s.1),
            &pending,
        ) {
            Step::Done => {
                let req_id = idp.add_pending(pending, &ip);
                idp.advance(&headers, &ip, &req_id).await
            }
            Step::SignIn => fail("login_required", "the user is not signed in"),
            Step::SecondFactor => fail(
                "interaction_required",
                "the user must present a second factor",
            ),
        };
    }
    let req_id = idp.add_pending(pending, &ip);
    idp.advance(&headers, &ip, &req_id).await
}

#[derive(serde::Deserialize)]
pub struct ReqQuery {
    #[serde(default)]
    pub req: String,
}

/// `GET /continue?req=ID`: where every sign-in step returns to.
pub async fn resume(
    State(idp): State<Arc<Idp>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<ReqQuery>,
) -> Response {
    idp.advance(&headers, &caller, &q.req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(require_mfa: bool) -> User {
        User {
            id: "u".into(),
            email: "a@b.c".into(),
            display_name: "A".into(),
            enabled: true,
            admin: false,
            require_mfa,
            mfa_enrolled: false,
            passkeys: 0,
            groups: vec![],
            created_at: 0,
        }
    }

    fn session(auth_time: i64, amr: &[&str]) -> IdpSession {
        IdpSession {
            hash: "h".into(),
            user_id: "u".into(),
            auth_time,
            amr: amr.iter().map(|s| s.to_string()).collect(),
            expires_at: i64::MAX,
        }
    }

    fn pending(require_mfa: bool, fresh_login: Option<&str>) -> Pending {
        Pending {
            client_id: "c".into(),
            client_name: "C".into(),
            purpose: Purpose::Device {
                user_code: "X".into(),
            },
            require_mfa,
            fresh_login: fresh_login.is_some(),
            signed_in: fresh_login.filter(|h| !h.is_empty()).map(str::to_owned),
            risk: postern_policy::RiskLevel::None,
            silent: false,
            created_at: 100,
        }
    }

    fn check(s: Option<IdpSession>, u: Option<User>, p: Pending, expected: Step) {
        assert_eq!(next_step(s.as_ref(), u.as_ref(), &p), expected);
    }

    #[test]
    fn authorize_parameters_are_limited_before_use() {
        let q = |extra: &str| format!("client_id=c_1&redirect_uri=https%3A%2F%2Fa%2Fcb{extra}");
        let x = |n: usize| "x".repeat(n);
        // (query, refused on the page as, reported to the client as)
        let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
            (q("&state=ok&nonce=n"), None, None),
            (q(&format!("&state={}", x(MAX_STATE_BYTES))), None, None),
            (
                q(&format!("&state={}", x(MAX_STATE_BYTES + 1))),
                Some("state parameter"),
                None,
            ),
            (
                format!("client_id={}", x(MAX_CLIENT_ID_BYTES + 1)),
                Some("client_id parameter"),
                None,
            ),
            (
                q(&format!("&nonce={}", x(MAX_NONCE_BYTES + 1))),
                None,
                Some("nonce"),
            ),
            (
                q(&format!("&login_hint={}", x(MAX_EMAIL_BYTES + 1))),
                None,
                Some("login_hint"),
            ),
            (
                q(&format!("&prompt={}", x(MAX_KEYWORD_PARAM_BYTES + 1))),
                None,
                Some("prompt"),
            ),
            // Parameters the provider does not read are dropped, whatever their size.
            (q(&format!("&ui_locales={}", x(4000))), None, None),
            (
                q(&format!("&junk={}", x(MAX_AUTHORIZE_QUERY_BYTES))),
                Some("\"junk\" parameter"),
                None,
            ),
        ];
        for (query, page, reported) in cases {
            match parse_authorize_query(Some(&query)) {
                Ok(parsed) => {
                    assert_eq!(page, None, "{query:.60}");
                    assert_eq!(
                        parsed.over_limit.as_ref().map(|(n, _)| n.as_str()),
                        reported,
                        "{query:.60}"
                    );
                    assert!(!parsed.params.contains_key("ui_locales"));
                    assert!(parsed
                        .params
                        .values()
                        .all(|v| v.len() <= MAX_REDIRECT_URI_BYTES));
                }
                Err(too_large) => {
                    let what = page.unwrap_or_else(|| panic!("{query:.60} refused: {too_large:?}"));
                    assert!(too_large.what.contains(what), "{too_large:?}");
                }
            }
        }
    }

    #[test]
    fn steps() {
        check(None, None, pending(false, None), Step::SignIn);
        check(
            Some(session(50, &["pwd"])),
            Some(user(false)),
            pending(false, None),
            Step::Done,
        );
        check(
            Some(session(50, &["pwd"])),
            Some(user(true)),
            pending(false, None),
            Step::SecondFactor,
        );
        check(
            Some(session(50, &["pwd"])),
            Some(user(false)),
            pending(true, None),
            Step::SecondFactor,
        );
        check(
            Some(session(50, &["pwd", "otp", "mfa"])),
            Some(user(true)),
            pending(true, None),
            Step::Done,
        );
        // A fresh sign-in is needed: an older session does not count, the one made for it does.
        let fresh = |made_for: &str, expected| {
            check(
                Some(session(50, &["pwd"])),
                Some(user(false)),
                pending(false, Some(made_for)),
                expected,
            )
        };
        fresh("", Step::SignIn);
        fresh("other", Step::SignIn);
        fresh("h", Step::Done);
    }
}
