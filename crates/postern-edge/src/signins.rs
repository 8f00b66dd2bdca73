//! Sign-in records for the edge's own sign-ins, with any issuer: the interactive callback
//! (`/.postern/callback`) and bearer tokens verified afresh (non-interactive). Records go to the
//! store's sign-in log (see `postern_store::NewSignin`), shaped like Entra's `signIn` resource.
//!
//! **Invariant:** a failed sign-in is recorded within a per-address and an overall budget (the
//! built-in provider's [`postern_idp::REFUSAL_EVENTS_PER_ADDRESS`] and
//! [`postern_idp::REFUSAL_EVENTS`]); past them it is not stored, so a flood of bad tokens or
//! forged callbacks cannot fill the store. Successful sign-ins are bounded by the issuer, which
//! had to sign each one.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use http::{header, HeaderMap};
use postern_auth::session::Session;
use postern_idp::rate::Budget;
use postern_store::{NewSignin, SigninResult, BROWSER, MULTI_FACTOR, SINGLE_FACTOR, TOKEN_CLIENT};

use crate::preauth::{used_mfa, SignIn};
use crate::rescue::Refusal;

/// The most authentication methods (`amr` values) recorded per sign-in.
const MAX_METHODS: usize = 8;

/// What an edge sign-in recorder keeps: the failure budgets.
pub struct Recorder {
    budgets: Mutex<(Budget<IpAddr>, Budget<()>)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            budgets: Mutex::new((
                Budget::new(postern_idp::REFUSAL_EVENTS_PER_ADDRESS),
                Budget::new(postern_idp::REFUSAL_EVENTS),
            )),
        }
    }
}

impl Recorder {
    fn failure_recordable(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        b.0.sweep(now);
        b.0.take(&ip, now).is_ok() && b.1.take(&(), now).is_ok()
    }
}

/// One attempt to record.
pub struct Attempt<'a> {
    pub sign_in: &'a SignIn,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    /// The callback (a person in a browser), or a bearer token (a program).
    pub interactive: bool,
    /// Where the client is (see [`crate::geoip::GeoIp::sign_in_location`]).
    pub location: Option<postern_store::Location>,
    /// What conditional access and identity protection made of it, when they judged it.
    pub decided: Option<postern_store::Decided>,
}

/// Records how `attempt` ended: signed in as `who`, or refused (with `who` when the issuer had
/// already vouched for the user). Failures past the budget are dropped.
pub async fn record(
    store: &postern_store::Store,
    recorder: &Recorder,
    attempt: &Attempt<'_>,
    who: Option<&Session>,
    refusal: Option<&Refusal>,
) {
    if refusal.is_some() && !recorder.failure_recordable(attempt.client_ip) {
        return;
    }
    let record = signin_record(attempt, who, refusal, now_ms());
    if let Err(e) = store.record_sign_in(&record).await {
        tracing::error!(error = %e, app = %attempt.sign_in.app_name, "cannot record a sign-in");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The record (pure): who, which app, how, and how it ended.
pub fn signin_record(
    attempt: &Attempt<'_>,
    who: Option<&Session>,
    refusal: Option<&Refusal>,
    at_ms: i64,
) -> NewSignin {
    let ua = attempt
        .headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let (operating_system, browser) = ua
        .as_deref()
        .map(postern_policy::device_detail)
        .unwrap_or_default();
    let (amr, acr) = who.map_or((&[][..], None), |s| (&s.amr[..], s.acr.as_deref()));
    let sign_in = attempt.sign_in;
    NewSignin {
        at_ms,
        user_id: who.map(|s| s.subject.clone()),
        // The verified email, else the subject (an unverified email never names anyone).
        user_principal_name: who
            .map(|s| s.email.clone().unwrap_or_else(|| s.subject.clone()))
            .unwrap_or_default(),
        app_id: Some(sign_in.app_id.as_str().to_owned()),
        app_display_name: Some(sign_in.app_name.clone()),
        ip_address: attempt.client_ip.to_string(),
        client_app_used: if attempt.interactive {
            BROWSER
        } else {
            TOKEN_CLIENT
        }
        .to_owned(),
        correlation_id: attempt.request_id.to_owned(),
        is_interactive: attempt.interactive,
        result: if refusal.is_some() {
            SigninResult::Failure
        } else {
            SigninResult::Success
        },
        error_code: refusal.map_or("ok", Refusal::code).to_owned(),
        failure_reason: refusal.map(Refusal::message).unwrap_or_default(),
        operating_system,
        browser,
        authentication_requirement: if who.is_some() && used_mfa(amr, acr) {
            MULTI_FACTOR
        } else {
            SINGLE_FACTOR
        }
        .to_owned(),
        authentication_methods: amr.iter().take(MAX_METHODS).cloned().collect(),
        issuer: sign_in.issuer.as_str().to_owned(),
        location: attempt.location.clone(),
        decided: attempt.decided.clone(),
    }
}
