//! Talking to identity providers: discovery, the authorization request, and redeeming the code at
//! the token endpoint.
//!
//! Discovery is per issuer and never behind a lock another issuer's sign-ins wait on: the first
//! request for an issuer starts one fetch (a task of its own, so a user who gives up does not
//! cancel it) and every concurrent request for the same issuer joins it. A failed discovery is
//! remembered for [`FAILURE_HOLD_MIN`], doubling with each consecutive failure up to
//! [`FAILURE_HOLD_MAX`]; meanwhile the issuer's sign-ins are refused at once, naming the issuer,
//! instead of each waiting out a dead issuer's timeout. The bookkeeping is the pure
//! [`Discovery`], which takes the clock as a parameter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use postern_auth::{FetchError, IssuerUrl, Provider, StateCookie};
use serde::Deserialize;
use url::Url;

use super::SignIn;
use crate::rescue::Refusal;

/// How long the edge waits for an issuer's answer.
const ISSUER_TIMEOUT: Duration = Duration::from_secs(10);
/// The scopes asked for: the ID token's identity claims.
const SCOPES: &str = "openid email profile";
/// The `acr_values` of a step-up: a second factor. The built-in provider understands it; other
/// issuers read `max_age=0` and `prompt=login` as "authenticate again".
pub const MFA_ACR: &str = "mfa";
/// How long a failed discovery is remembered after the first failure: long enough that a dead
/// issuer costs its users a fast error page rather than a timeout each, short enough that an
/// issuer that was only restarting is used again almost at once.
pub const FAILURE_HOLD_MIN: Duration = Duration::from_secs(5);
/// The longest a failed discovery is remembered, however often it failed in a row: an issuer
/// that comes back is tried again within a minute.
pub const FAILURE_HOLD_MAX: Duration = Duration::from_secs(60);
/// Issuers whose discovery state is kept. Issuers come from the admin's app settings, not from
/// users, so this only bounds what repeated reconfiguration leaves behind; past it, every entry
/// not being fetched right now is forgotten (and discovered again when next used).
const MAX_ISSUERS: usize = 1024;

/// How long a discovery that failed `failures` times in a row is remembered.
pub fn failure_hold(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FAILURE_HOLD_MIN
        .saturating_mul(1 << doublings)
        .min(FAILURE_HOLD_MAX)
}

/// Why a discovery failed, as kept in the failure cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryFailure {
    pub reason: Arc<str>,
    /// Network trouble or a server error (the issuer may come back), as opposed to a document
    /// that is wrong until someone fixes the configuration.
    pub unreachable: bool,
}

/// What a request should do about an issuer's discovery.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<P, F> {
    /// Discovered: use it.
    Ready(P),
    /// A fetch is under way (perhaps just started for this request): wait for it.
    Join(F),
    /// Failed recently: refuse at once, and say when trying again may help.
    Failed {
        failure: DiscoveryFailure,
        retry_in: Duration,
    },
}

enum Slot<P, F> {
    Ready(P),
    Fetching {
        fetch: F,
        /// Consecutive failures before this fetch.
        failures: u32,
    },
    Failed {
        failure: DiscoveryFailure,
        until: Instant,
        failures: u32,
    },
}

/// The discovery state of every issuer in use: pure, with the clock a parameter. `P` is the
/// discovered provider and `F` a handle on a fetch in progress; both are cheap to clone.
pub struct Discovery<P, F> {
    slots: HashMap<String, Slot<P, F>>,
}

impl<P: Clone, F: Clone> Default for Discovery<P, F> {
    fn default() -> Self {
        Discovery {
            slots: HashMap::new(),
        }
    }
}

impl<P: Clone, F: Clone> Discovery<P, F> {
    /// What to do for `issuer` at `now`; `start` begins a fetch when one is needed (no entry
    /// yet, or the last failure's hold has passed).
    pub fn lookup(&mut self, issuer: &str, now: Instant, start: impl FnOnce() -> F) -> Step<P, F> {
        let failures = match self.slots.get(issuer) {
            Some(Slot::Ready(p)) => return Step::Ready(p.clone()),
            Some(Slot::Fetching { fetch, .. }) => return Step::Join(fetch.clone()),
            Some(Slot::Failed {
                failure,
                until,
                failures,
            }) => {
                if now < *until {
                    return Step::Failed {
                        failure: failure.clone(),
                        retry_in: until.saturating_duration_since(now),
                    };
                }
                *failures
            }
            None => 0,
        };
        if !self.slots.contains_key(issuer) && self.slots.len() >= MAX_ISSUERS {
            self.slots.retain(|_, s| matches!(s, Slot::Fetching { .. }));
        }
        let fetch = start();
        self.slots.insert(
            issuer.to_owned(),
            Slot::Fetching {
                fetch: fetch.clone(),
                failures,
            },
        );
        Step::Join(fetch)
    }

    /// Records how the fetch for `issuer` ended, at `now`; returns how long a failure is held.
    pub fn finish(
        &mut self,
        issuer: &str,
        outcome: Result<P, DiscoveryFailure>,
        now: Instant,
    ) -> Duration {
        let failures = match self.slots.get(issuer) {
            Some(Slot::Fetching { failures, .. }) | Some(Slot::Failed { failures, .. }) => {
                *failures
            }
            Some(Slot::Ready(_)) | None => 0,
        };
        match outcome {
            Ok(p) => {
                self.slots.insert(issuer.to_owned(), Slot::Ready(p));
                Duration::ZERO
            }
            Err(failure) => {
                let failures = failures.saturating_add(1);
                let hold = failure_hold(failures);
                self.slots.insert(
                    issuer.to_owned(),
                    Slot::Failed {
                        failure,
                        until: now + hold,
                        failures,
                    },
                );
                hold
            }
        }
    }
}

/// One discovery in progress, shared by every request that waits for it.
type Fetch = Shared<BoxFuture<'static, Result<Arc<Provider>, (DiscoveryFailure, Duration)>>>;

/// Issuers in use, discovered once and kept (their JWKS refresh on an unknown key).
pub struct Issuers {
    http: reqwest::Client,
    /// Held only to look up or record a state, never across a fetch.
    discovery: Arc<Mutex<Discovery<Arc<Provider>, Fetch>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update of the map is a single insert or retain, so a panic elsewhere cannot leave it
    // half-changed: a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Issuers {
    pub fn new(http: reqwest::Client) -> Issuers {
        Issuers {
            http,
            discovery: Default::default(),
        }
    }

    /// The provider for `issuer`: discovered already, or after the one fetch in progress for it,
    /// or refused at once while a recent failure is held.
    pub async fn provider(&self, issuer: &IssuerUrl, app: &str) -> Result<Arc<Provider>, Refusal> {
        let step = lock(&self.discovery).lookup(issuer.as_str(), Instant::now(), || {
            self.start(issuer.clone())
        });
        let outcome = match step {
            Step::Ready(p) => return Ok(p),
            Step::Join(fetch) => fetch.await,
            Step::Failed { failure, retry_in } => Err((failure, retry_in)),
        };
        outcome.map_err(|(failure, retry_in)| refusal(app, issuer, &failure, retry_in))
    }

    /// Starts discovering `issuer` in a task of its own, which records the outcome.
    fn start(&self, issuer: IssuerUrl) -> Fetch {
        let http = self.http.clone();
        let discovery = self.discovery.clone();
        let task = tokio::spawn(async move {
            let outcome = Provider::discover(http, issuer.clone())
                .await
                .map(Arc::new)
                .map_err(|e| failure_of(&e));
            let hold = lock(&discovery).finish(issuer.as_str(), outcome.clone(), Instant::now());
            match &outcome {
                Ok(_) => tracing::info!(issuer = %issuer, "identity provider discovered"),
                Err(f) => tracing::warn!(
                    issuer = %issuer, reason = %f.reason, hold_secs = hold.as_secs(),
                    "identity provider discovery failed; its sign-ins are refused until the hold passes"
                ),
            }
            outcome.map_err(|f| (f, hold))
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err((
                    DiscoveryFailure {
                        reason: format!("the discovery task ended abnormally ({e})").into(),
                        unreachable: true,
                    },
                    FAILURE_HOLD_MIN,
                ))
            })
        }
        .boxed()
        .shared()
    }

    /// Redeems an authorization code; returns the ID token.
    pub async fn redeem(
        &self,
        provider: &Provider,
        sign_in: &SignIn,
        code: &str,
        pending: &StateCookie,
    ) -> Result<String, Refusal> {
        let app = sign_in.app_name.clone();
        let unavailable = |reason: String| Refusal::IssuerUnavailable {
            app: app.clone(),
            issuer: provider.issuer().as_str().to_owned(),
            reason,
        };
        let redirect_uri = sign_in.callback_url();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", pending.code_verifier.as_str()),
        ];
        let mut req = self
            .http
            .post(provider.metadata().token_endpoint.clone())
            .timeout(ISSUER_TIMEOUT);
        match &sign_in.client_secret {
            // RFC 6749, section 2.3.1: both parts form-encoded before Basic.
            Some(secret) => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req = req.basic_auth(enc(&sign_in.client_id), Some(enc(secret.expose())));
            }
            None => form.push(("client_id", sign_in.client_id.as_str())),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(format!("the token endpoint did not answer ({e})")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| unavailable(format!("the token endpoint's answer broke off ({e})")))?;
        if !status.is_success() {
            let reason = match serde_json::from_slice::<TokenError>(&body) {
                Ok(e) => match e.error_description {
                    Some(d) => format!("{} ({d})", e.error),
                    None => e.error,
                },
                Err(_) => format!("the token endpoint answered {status}"),
            };
            return Err(if status.is_client_error() {
                Refusal::IssuerRefused { app, reason }
            } else {
                unavailable(reason)
            });
        }
        let tokens: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            unavailable(format!(
                "the token endpoint's answer is not a token response ({e})"
            ))
        })?;
        tokens.id_token.ok_or_else(|| {
            unavailable(
                "the token endpoint sent no ID token (is `openid` allowed for this client?)".into(),
            )
        })
    }
}

fn failure_of(e: &FetchError) -> DiscoveryFailure {
    DiscoveryFailure {
        reason: e.to_string().into(),
        unreachable: e.is_retryable(),
    }
}

/// The user's answer while `issuer` cannot be discovered: unreachable (503, try again after the
/// hold), or unusable until an administrator fixes it.
fn refusal(
    app: &str,
    issuer: &IssuerUrl,
    failure: &DiscoveryFailure,
    retry_in: Duration,
) -> Refusal {
    if failure.unreachable {
        Refusal::IssuerUnreachable {
            app: app.to_owned(),
            issuer: issuer.as_str().to_owned(),
            reason: failure.reason.to_string(),
            retry_after: retry_in,
        }
    } else {
        Refusal::IssuerUnavailable {
            app: app.to_owned(),
            issuer: issuer.as_str().to_owned(),
            reason: failure.reason.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    error_description: Option<String>,
}

/// Where to send the browser to sign in.
pub fn authorize_url(provider: &Provider, sign_in: &SignIn, pending: &StateCookie) -> Url {
    let mut url = provider.metadata().authorization_endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &sign_in.client_id)
            .append_pair("redirect_uri", sign_in.callback_url().as_str())
            .append_pair("scope", SCOPES)
            .append_pair("state", pending.state.as_str())
            .append_pair("nonce", pending.nonce.as_str())
            .append_pair("code_challenge", pending.code_verifier.challenge().as_str())
            .append_pair("code_challenge_method", postern_auth::CodeChallenge::METHOD);
        if pending.step_up {
            q.append_pair("acr_values", MFA_ACR)
                .append_pair("prompt", "login")
                .append_pair("max_age", "0");
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(reason: &str) -> DiscoveryFailure {
        DiscoveryFailure {
            reason: reason.into(),
            unreachable: true,
        }
    }

    #[test]
    fn the_hold_doubles_from_the_minimum_up_to_the_maximum() {
        for (failures, secs) in [
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (5, 60),
            (6, 60),
            (40, 60),
        ] {
            assert_eq!(
                failure_hold(failures),
                Duration::from_secs(secs),
                "after {failures} failures"
            );
        }
    }

    #[test]
    fn one_fetch_per_issuer_is_shared_and_a_failure_is_held_then_retried() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut d: Discovery<&str, u32> = Discovery::default();
        let mut started = 0;
        let next = |n: &mut u32| {
            *n += 1;
            *n
        };
        // The first request starts a fetch; a concurrent one joins it; another issuer gets its own.
        assert_eq!(d.lookup("a", at(0), || next(&mut started)), Step::Join(1));
        assert_eq!(d.lookup("a", at(0), || next(&mut started)), Step::Join(1));
        assert_eq!(d.lookup("b", at(0), || next(&mut started)), Step::Join(2));
        // A failure is held: requests are refused at once, with the time left, and start nothing.
        assert_eq!(
            d.finish("a", Err(dead("timed out")), at(1)),
            failure_hold(1)
        );
        assert_eq!(
            d.lookup("a", at(3), || next(&mut started)),
            Step::Failed {
                failure: dead("timed out"),
                retry_in: Duration::from_secs(3)
            }
        );
        // The other issuer is not affected.
        assert_eq!(d.finish("b", Ok("provider b"), at(1)), Duration::ZERO);
        assert_eq!(
            d.lookup("b", at(2), || next(&mut started)),
            Step::Ready("provider b")
        );
        // Once the hold passes, one request tries again; the next failure is held longer.
        assert_eq!(d.lookup("a", at(6), || next(&mut started)), Step::Join(3));
        assert_eq!(d.lookup("a", at(6), || next(&mut started)), Step::Join(3));
        assert_eq!(d.finish("a", Err(dead("refused")), at(7)), failure_hold(2));
        assert!(matches!(
            d.lookup("a", at(16), || next(&mut started)),
            Step::Failed { .. }
        ));
        assert_eq!(d.lookup("a", at(17), || next(&mut started)), Step::Join(4));
        // Success ends the failure streak: a later failure is held for the minimum again.
        d.finish("a", Ok("provider a"), at(18));
        assert_eq!(
            d.lookup("a", at(19), || next(&mut started)),
            Step::Ready("provider a")
        );
        assert_eq!(started, 4);
    }

    #[test]
    fn past_the_bound_settled_entries_are_forgotten_and_fetches_kept() {
        let t0 = Instant::now();
        let mut d: Discovery<u32, u32> = Discovery::default();
        d.lookup("fetching", t0, || 0);
        for i in 1..MAX_ISSUERS as u32 {
            let name = format!("i{i}");
            d.lookup(&name, t0, || i);
            d.finish(&name, Ok(i), t0);
        }
        assert_eq!(d.slots.len(), MAX_ISSUERS);
        d.lookup("new", t0, || 7);
        assert_eq!(d.slots.len(), 2, "only the fetches in progress are kept");
        assert_eq!(d.lookup("fetching", t0, || 9), Step::Join(0));
    }
}
