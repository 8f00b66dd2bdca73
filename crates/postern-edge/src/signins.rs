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

/// How much of a `User-Agent` is read to name the browser and system: the product tokens that
/// matter come first, and what follows is not parsed.
pub const USER_AGENT_BYTES: usize = 512;
/// The most characters of a version kept (`120.0.6099.109` fits).
const VERSION_CHARS: usize = 16;
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
    let (operating_system, browser) = ua.as_deref().map(device_detail).unwrap_or_default();
    let (amr, acr) = who.map_or((&[][..], None), |s| (&s.amr[..], s.acr.as_deref()));
    let sign_in = attempt.sign_in;
    NewSignin {
        at_ms,
        user_id: who.map(|s| s.subject.clone()),
        user_principal_name: who.and_then(|s| s.email.clone()).unwrap_or_default(),
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
    }
}

/// The operating system and browser a `User-Agent` names, from its first [`USER_AGENT_BYTES`].
/// Only well-known product tokens are recognised; anything else is `None`, never guessed.
pub fn device_detail(ua: &str) -> (Option<String>, Option<String>) {
    let mut end = ua.len().min(USER_AGENT_BYTES);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    let ua = &ua[..end];
    let os = [
        ("Windows", "Windows"),
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iOS"),
        ("CrOS", "ChromeOS"),
        ("Mac OS X", "macOS"),
        ("Macintosh", "macOS"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(token, _)| ua.contains(token))
    .map(|(_, name)| name.to_owned());
    // Order matters: Edge and Opera also say Chrome, Chrome also says Safari.
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("HeadlessChrome/", "Chrome"),
        ("Chrome/", "Chrome"),
        ("Version/", "Safari"),
        ("curl/", "curl"),
    ]
    .into_iter()
    .find_map(|(token, name)| {
        let at = ua.find(token)?;
        let version: String = ua[at + token.len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .take(VERSION_CHARS)
            .collect();
        Some(match version.split('.').next().filter(|v| !v.is_empty()) {
            Some(major) => format!("{name} {major}"),
            None => name.to_owned(),
        })
    });
    (os, browser)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ua: &str, os: Option<&str>, browser: Option<&str>) {
        let (o, b) = device_detail(ua);
        assert_eq!((o.as_deref(), b.as_deref()), (os, browser), "{ua}");
    }

    #[test]
    fn user_agents_name_their_system_and_browser() {
        check(
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            Some("Linux"),
            Some("Firefox 120"),
        );
        check(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.61",
            Some("Windows"),
            Some("Edge 120"),
        );
        check(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
            Some("macOS"),
            Some("Safari 17"),
        );
        check(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Version/17.1 Mobile/15E148 Safari/604.1",
            Some("iOS"),
            Some("Safari 17"),
        );
        check(
            "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/119.0.6045.163 Mobile Safari/537.36",
            Some("Android"),
            Some("Chrome 119"),
        );
        check(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/131.0.0.0 Safari/537.36",
            Some("Linux"),
            Some("Chrome 131"),
        );
        check("curl/8.5.0", None, Some("curl 8"));
        check("reqwest", None, None);
        check("", None, None);
        check("Chrome/", None, Some("Chrome"));
    }

    #[test]
    fn only_the_first_bytes_are_read_and_versions_are_bounded() {
        let late = format!("{}Firefox/120.0", "x".repeat(USER_AGENT_BYTES));
        check(&late, None, None);
        let long = format!("Firefox/{}", "9".repeat(10_000));
        let (_, b) = device_detail(&long);
        assert_eq!(b.unwrap().len(), "Firefox ".len() + VERSION_CHARS);
        // A multi-byte character across the limit is not split.
        let wide = format!("{}é Linux", "x".repeat(USER_AGENT_BYTES - 1));
        check(&wide, None, None);
    }
}
