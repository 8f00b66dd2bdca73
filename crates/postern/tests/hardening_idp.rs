//! The built-in identity provider under attack, end to end through the edge's public listener:
//! bursts of sign-ins, floods of authorization requests with oversized or well-formed fields,
//! and app sessions that must end the moment an administrator disables a user or resets their
//! password or MFA. Each attack also watches the edge's resident memory.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::browser::{app_browser, app_status, query, sign_in_to_app, Browser, Page, IDP_HOST};
use common::{backends, Edge};
use postern_idp::throttle::{Policy, Throttle, PER_ACCOUNT, PER_IP};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "a long enough passphrase";
const REDIRECT: &str = "https://app.example.com/callback";
const MIB: u64 = 1024 * 1024;

/// The legitimate user's address; the attacker is 127.0.0.1 (or 127.0.1.x).
const USER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

struct Rp {
    client_id: String,
    secret: String,
}

async fn create_user(edge: &Edge, email: &str) {
    let pw = edge.dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    edge.admin_ok(&[
        "user",
        "create",
        email,
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .await;
}

async fn setup(users: &[&str]) -> (Edge, Rp) {
    setup_with(&[], users).await
}

async fn setup_with(flags: &[&str], users: &[&str]) -> (Edge, Rp) {
    let edge = Edge::start(flags).await;
    for u in users {
        create_user(&edge, u).await;
    }
    let out = edge
        .admin_ok(&[
            "--json",
            "client",
            "create",
            "Wiki",
            "--redirect-uri",
            REDIRECT,
        ])
        .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rp = Rp {
        client_id: v["client_id"].as_str().unwrap().to_owned(),
        secret: v["client_secret"].as_str().unwrap().to_owned(),
    };
    (edge, rp)
}

fn pkce() -> (String, String) {
    let verifier =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn authorize_url(client_id: &str, redirect: &str, challenge: &str, extra: &str) -> String {
    format!(
        "/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20email&state=st-1&nonce=n-1&code_challenge={challenge}&code_challenge_method=S256{extra}",
        enc(redirect)
    )
}

/// The reason codes of every sign-in event, with the address each came from.
async fn signin_events(edge: &Edge) -> Vec<serde_json::Value> {
    let (status, events, _) = edge
        .api(Method::GET, "/v1/idp/signin-events?limit=1000", None)
        .await;
    assert_eq!(status, 200, "{events}");
    events.as_array().unwrap().clone()
}

/// Reasons that mean a password was checked (an unknown email is checked against a dummy hash,
/// so it costs the same).
const CHECKED: &[&str] = &["bad_password", "unknown_user", "disabled", "ok_password"];

fn checks(events: &[serde_json::Value], keep: impl Fn(&serde_json::Value) -> bool) -> usize {
    events
        .iter()
        .filter(|e| keep(e) && CHECKED.contains(&e["reason"].as_str().unwrap_or_default()))
        .count()
}

/// How many attempts `policy` lets through, at most, to one key hammering it without pause for
/// `window`: the free failures, then one more each time a delay has passed. The test's bound
/// comes from the policy itself, so a slow machine (a longer burst) does not make it flaky.
fn allowance(policy: Policy, window: Duration) -> usize {
    let mut throttle = Throttle::new(policy);
    let t0 = Instant::now();
    let mut allowed = 0;
    let step = Duration::from_millis(10);
    let mut at = Duration::ZERO;
    while at <= window {
        while throttle.check(&(), t0 + at).is_ok() {
            throttle.failure(&(), t0 + at);
            allowed += 1;
        }
        at += step;
    }
    allowed
}

/// Samples the edge's resident memory until stopped; kills the edge the moment it passes
/// `limit`, so a regression fails the test without taking the machine's memory with it.
struct MemoryWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MemoryWatch {
    fn start(pid: u32, limit: u64) -> MemoryWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(common::rss_bytes(pid)));
        let task = tokio::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                        return;
                    };
                    let rss = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                        .map_or(0, |kb| kb * 1024);
                    peak.fetch_max(rss, Ordering::Relaxed);
                    if rss > limit {
                        eprintln!(
                            "the edge holds {} MiB, past its bound of {} MiB: killing it",
                            rss / MIB,
                            limit / MIB
                        );
                        common::signal(pid, "KILL");
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        MemoryWatch { stop, peak, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Waits until the edge's resident memory is back under `limit` (allocators give memory back
/// lazily, so this is a readiness wait, not a sleep).
async fn memory_falls_back(pid: u32, limit: u64) {
    let wait = async {
        while common::rss_bytes(pid) > limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(common::READY_TIMEOUT, wait)
        .await
        .is_err()
    {
        panic!(
            "the edge still holds {} MiB, more than {} MiB",
            common::rss_bytes(pid) / MIB,
            limit / MIB
        );
    }
}

fn idp_client(edge: &Edge, source: Option<IpAddr>) -> reqwest::Client {
    let tls = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve(IDP_HOST, edge.public)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(source)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The answer to one attacker request: status and `Retry-After` (seconds).
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
}

async fn post_signin(
    client: &reqwest::Client,
    edge: &Edge,
    cookies: &str,
    form: &[(&str, &str)],
) -> Answer {
    let resp = client
        .post(edge.url(IDP_HOST, "/signin"))
        .header("cookie", cookies)
        .form(form)
        .send()
        .await
        .unwrap();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Answer {
        status: resp.status(),
        retry_after,
    }
}

/// Every refusal of a burst is 429 or 503 with a `Retry-After`; every other answer is the
/// wrong-password page.
fn check_refusals(answers: &[Answer]) {
    for a in answers {
        match a.status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => assert!(
                a.retry_after.is_some_and(|s| s >= 1),
                "a {} without Retry-After",
                a.status
            ),
            other => panic!("unexpected answer {other} to a wrong password"),
        }
    }
}

/// What the edge may grow by while it serves a burst of sign-ins: a few Argon2id jobs at 19 MiB
/// each, 300 TLS connections and their buffers. 160 MiB is ample; the unbounded provider grew
/// by gigabytes (one 19 MiB Argon2id state per request, all at once).
const SIGNIN_BURST_GROWTH: u64 = 160 * MIB;
/// What it may keep once the burst is over.
const SIGNIN_AFTER_GROWTH: u64 = 64 * MIB;
const BURST: usize = 300;

#[tokio::test]
async fn a_burst_of_sign_ins_checks_no_more_passwords_than_the_throttles_allow() {
    // The burst is 300 connections from one address: all of them reach the provider, whose own
    // throttles are under test here (the edge's cap on connections per address has its own test).
    let (edge, rp) = setup_with(
        &["--max-connections-per-ip", "1024"],
        &["ada@example.com", "cy@example.com"],
    )
    .await;
    let pid = edge.pid();
    let mut attacker = Browser::new(&edge);
    let (_, challenge) = pkce();
    let form = attacker
        .open(&authorize_url(&rp.client_id, REDIRECT, &challenge, ""))
        .await;
    let (csrf, req) = (form.field("csrf"), form.field("req"));
    let cookies = attacker.cookie_header();

    // 300 wrong passwords at once from one address, sprayed over 30 accounts that do not
    // exist (each still costs a full hash), while a real user signs in from another address.
    let before = common::rss_bytes(pid);
    let watch = MemoryWatch::start(pid, before + SIGNIN_BURST_GROWTH);
    let client = idp_client(&edge, None);
    let started = Instant::now();
    let burst = futures_util::future::join_all((0..BURST).map(|i| {
        let (client, cookies, csrf, req) = (&client, &cookies, &csrf, &req);
        let email = format!("nobody{}@example.com", i % 30);
        let edge = &edge;
        async move {
            post_signin(
                client,
                edge,
                cookies,
                &[
                    ("csrf", csrf),
                    ("req", req),
                    ("email", &email),
                    ("password", "wrong wrong wrong"),
                ],
            )
            .await
        }
    }));
    let user = async {
        let mut b = Browser::new_from(&edge, Some(USER_ADDRESS));
        let (verifier, challenge) = pkce();
        let page = b
            .sign_in(
                &authorize_url(&rp.client_id, REDIRECT, &challenge, ""),
                "cy@example.com",
                PASSWORD,
            )
            .await;
        (page, verifier)
    };
    let (answers, (page, verifier)) = tokio::join!(burst, user);
    let burst_time = started.elapsed();
    let peak = watch.stop().await;
    eprintln!(
        "burst of {BURST} in {burst_time:?}: edge {} MiB before, {} MiB at most",
        before / MIB,
        peak / MIB
    );
    assert!(
        peak <= before + SIGNIN_BURST_GROWTH,
        "the edge grew from {} MiB to {} MiB during the burst",
        before / MIB,
        peak / MIB
    );
    check_refusals(&answers);
    let events = signin_events(&edge).await;
    let checked = checks(&events, |e| e["ip"] == "127.0.0.1");
    let allowed = allowance(PER_IP, burst_time);
    eprintln!("{checked} passwords checked from one address; the policy allows {allowed}");
    assert!(
        checked <= allowed,
        "{checked} passwords checked in a {burst_time:?} burst; the per-address policy allows {allowed}"
    );
    let unauthorized = answers
        .iter()
        .filter(|a| a.status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(
        unauthorized, checked,
        "every checked password is an event, every event a checked password"
    );
    // The user at the other address signed in and got a code that redeems.
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let q = query(page.location.as_deref().unwrap());
    let resp = edge
        .client(IDP_HOST)
        .post(edge.url(IDP_HOST, "/token"))
        .basic_auth(&rp.client_id, Some(&rp.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // One account attacked from 60 addresses at once: the per-address throttle never binds,
    // the per-account one must.
    let started = Instant::now();
    let answers = futures_util::future::join_all((1..=60u8).map(|i| {
        let client = idp_client(&edge, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, i))));
        let (cookies, csrf, req, edge) = (&cookies, &csrf, &req, &edge);
        async move {
            post_signin(
                &client,
                edge,
                cookies,
                &[
                    ("csrf", csrf),
                    ("req", req),
                    ("email", "ada@example.com"),
                    ("password", "wrong wrong wrong"),
                ],
            )
            .await
        }
    }))
    .await;
    let burst_time = started.elapsed();
    check_refusals(&answers);
    let events = signin_events(&edge).await;
    let checked = checks(&events, |e| e["email"] == "ada@example.com");
    let allowed = allowance(PER_ACCOUNT, burst_time);
    eprintln!(
        "{checked} passwords of one account checked in {burst_time:?}; the policy allows {allowed}"
    );
    assert!(
        checked <= allowed && checked as u32 <= PER_ACCOUNT.lockout_after,
        "{checked} passwords of one account checked in a {burst_time:?} burst; the per-account policy allows {allowed} and locks out at {}",
        PER_ACCOUNT.lockout_after
    );

    memory_falls_back(pid, before + SIGNIN_AFTER_GROWTH).await;
    eprintln!(
        "after the bursts: edge {} MiB",
        common::rss_bytes(pid) / MIB
    );
}

/// What the edge may grow by while thousands of authorization requests arrive: the pending
/// sign-ins of one address are capped (the oldest evicted), each bounded in size.
const AUTHORIZE_FLOOD_GROWTH: u64 = 48 * MIB;
const FLOOD: usize = 2000;

/// Sends `n` GETs, 32 at a time, and returns each answer's status and `Location`.
async fn flood(client: &reqwest::Client, urls: Vec<String>) -> Vec<(StatusCode, Option<String>)> {
    use futures_util::StreamExt;
    futures_util::stream::iter(urls)
        .map(|url| async move {
            let resp = client.get(url).send().await.unwrap();
            let location = resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            (resp.status(), location)
        })
        .buffered(32)
        .collect()
        .await
}

#[tokio::test]
async fn authorize_floods_are_bounded_and_never_stop_a_real_sign_in() {
    // The flood comes from one address faster than the edge lets one client send by default:
    // that limit is off here, so the provider's own bounds are what is tested.
    let (edge, rp) = setup_with(&["--requests-per-ip", "0"], &["cy@example.com"]).await;
    let pid = edge.pid();
    let public = edge
        .admin_ok(&[
            "--json",
            "client",
            "create",
            "Cli",
            "--redirect-uri",
            "http://127.0.0.1/cb",
            "--public",
        ])
        .await;
    let public: serde_json::Value = serde_json::from_str(&public).unwrap();
    let public = public["client_id"].as_str().unwrap().to_owned();
    let (_, challenge) = pkce();
    let base = |extra: &str| {
        edge.url(
            IDP_HOST,
            &authorize_url(&public, "http://127.0.0.1/cb", &challenge, extra),
        )
    };
    let big = "x".repeat(60 * 1024);
    let client = idp_client(&edge, None);

    // Each oversized field is refused with invalid_request: on the error page while the
    // redirect URI cannot be trusted (or cannot carry the state back), at the client otherwise.
    let page = |status: StatusCode| (status, None::<&str>);
    let cases: Vec<(String, (StatusCode, Option<&str>))> = vec![
        (
            base("").replace("state=st-1", &format!("state={}", &big[..4096])),
            page(StatusCode::BAD_REQUEST),
        ),
        (
            base("").replace(&public, &big[..4096]),
            page(StatusCode::BAD_REQUEST),
        ),
        (
            base("").replace(
                &enc("http://127.0.0.1/cb"),
                &enc(&format!("http://127.0.0.1/{}", &big[..4096])),
            ),
            page(StatusCode::BAD_REQUEST),
        ),
        (
            base("").replace("nonce=n-1", &format!("nonce={}", &big[..4096])),
            (StatusCode::SEE_OTHER, Some("invalid_request")),
        ),
        (
            base("").replace("scope=openid", &format!("scope=openid%20{}", &big[..4096])),
            (StatusCode::SEE_OTHER, Some("invalid_request")),
        ),
        (
            base(&format!("&login_hint={}", &big[..4096])),
            (StatusCode::SEE_OTHER, Some("invalid_request")),
        ),
        (
            base(&format!("&acr_values={}", &big[..4096])),
            (StatusCode::SEE_OTHER, Some("invalid_request")),
        ),
    ];
    // A head larger than the edge forwards never reaches the provider.
    let resp = client
        .get(base("").replace("state=st-1", &format!("state={big}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("request_head_too_large"));
    for (i, (url, (status, error))) in cases.iter().enumerate() {
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), *status, "case {i}");
        match error {
            Some(e) => {
                let q = query(resp.headers()["location"].to_str().unwrap());
                assert_eq!(q.get("error").map(String::as_str), Some(*e), "case {i}");
            }
            None => {
                assert!(resp.headers().get("location").is_none(), "case {i}");
                let body = resp.text().await.unwrap();
                assert!(body.contains("invalid_request"), "case {i}: {body}");
            }
        }
    }

    // A real user starts signing in from another address...
    let mut user = Browser::new_from(&edge, Some(USER_ADDRESS));
    let (verifier, challenge) = pkce();
    let form = user
        .open(&authorize_url(&rp.client_id, REDIRECT, &challenge, ""))
        .await;
    assert!(
        form.body.contains("<label for=\"password\">"),
        "{}",
        form.body
    );

    // ...while one address floods: thousands of oversized requests, then thousands of
    // well-formed ones, each with the largest state allowed.
    let before = common::rss_bytes(pid);
    let watch = MemoryWatch::start(pid, before + AUTHORIZE_FLOOD_GROWTH);
    let oversized = flood(
        &client,
        (0..FLOOD)
            .map(|_| base("").replace("state=st-1", &format!("state={}", &big[..4096])))
            .collect(),
    )
    .await;
    assert!(
        oversized
            .iter()
            .all(|(s, l)| *s == StatusCode::BAD_REQUEST && l.is_none()),
        "an oversized state was not refused"
    );
    let state = "s".repeat(postern_idp::limits::MAX_STATE_BYTES);
    let accepted = flood(
        &client,
        (0..FLOOD)
            .map(|_| base("").replace("state=st-1", &format!("state={state}")))
            .collect(),
    )
    .await;
    let peak = watch.stop().await;
    let req_of = |(status, location): &(StatusCode, Option<String>)| {
        assert_eq!(*status, StatusCode::SEE_OTHER);
        let location = location.as_deref().unwrap();
        assert!(location.starts_with("/signin?req="), "{location}");
        location["/signin?req=".len()..].to_owned()
    };
    let (first, last) = (req_of(&accepted[0]), req_of(&accepted[FLOOD - 1]));
    eprintln!(
        "flood of {} authorization requests: edge {} MiB before, {} MiB at most",
        2 * FLOOD,
        before / MIB,
        peak / MIB
    );
    assert!(
        peak <= before + AUTHORIZE_FLOOD_GROWTH,
        "the edge grew from {} MiB to {} MiB during the flood",
        before / MIB,
        peak / MIB
    );

    // The flood only pushed out its own oldest sign-ins.
    let mut attacker = Browser::new(&edge);
    let page = attacker.get(&format!("/signin?req={first}")).await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "the oldest was evicted"
    );
    assert!(page.body.contains("Sign-in expired"));
    let page = attacker.get(&format!("/signin?req={last}")).await;
    assert_eq!(page.status, StatusCode::OK, "the newest is kept");

    // The user's sign-in completes.
    let done = user
        .submit_password(&form, "cy@example.com", PASSWORD)
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let q = query(done.location.as_deref().unwrap());
    let resp = edge
        .client(IDP_HOST)
        .post(edge.url(IDP_HOST, "/token"))
        .basic_auth(&rp.client_id, Some(&rp.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_sign_in_fields_are_refused_and_recorded_truncated() {
    let (edge, rp) = setup(&["cy@example.com"]).await;
    let mut b = Browser::new(&edge);
    let (_, challenge) = pkce();
    let form = b
        .open(&authorize_url(&rp.client_id, REDIRECT, &challenge, ""))
        .await;
    let long_email = format!("{}@example.com", "e".repeat(15 * 1024));
    let long_password = "p".repeat(postern_idp::limits::MAX_PASSWORD_BYTES + 1);
    let cases: &[(&str, &str, &str)] = &[
        (&long_email, PASSWORD, "email"),
        ("cy@example.com", &long_password, "password"),
    ];
    for (email, password, field) in cases {
        let page: Page = b.submit_password(&form, email, password).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{field}");
        assert!(
            page.body.contains(&format!("The {field} is longer than")),
            "{}",
            page.body
        );
    }
    let events = signin_events(&edge).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e["reason"], "oversized_input");
        assert!(e["email"].as_str().unwrap().len() <= postern_idp::limits::MAX_EMAIL_BYTES);
    }
    // Nothing was spent: the account is not throttled, the right password still works.
    let page = b.submit_password(&form, "cy@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

// App sessions ---------------------------------------------------------------------------------

#[tokio::test]
async fn disabling_or_resetting_a_user_ends_their_app_sessions_at_once() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    edge.group("g").await;
    let host = "intranet.localhost";
    let external = format!("https://{host}:{}", edge.public.port());
    edge.admin_ok(&[
        "app",
        "publish",
        "intranet",
        "--external-url",
        &external,
        "--internal-url",
        &app.url(),
        "--group",
        "g",
        "--preauth",
        "oidc",
    ])
    .await;
    let _connector = edge.connector("g").await;
    let pw = edge.dir.path().join("new-pw");
    std::fs::write(&pw, "another long passphrase\n").unwrap();
    let pw = pw.to_str().unwrap().to_owned();
    let url = format!("{external}/reports");
    let actions: [(&str, Vec<&str>); 3] = [
        (
            "dee@example.com",
            vec!["user", "disable", "dee@example.com"],
        ),
        (
            "eve@example.com",
            vec![
                "user",
                "reset-password",
                "eve@example.com",
                "--password-file",
                &pw,
            ],
        ),
        (
            "fay@example.com",
            vec!["user", "mfa-reset", "fay@example.com"],
        ),
    ];
    for (email, action) in &actions {
        create_user(&edge, email).await;
        let browser = app_browser(&edge, host);
        sign_in_to_app(&edge, PASSWORD, &browser, &url, email).await;
        assert_eq!(app_status(&browser, &url).await, StatusCode::OK, "{email}");
        edge.admin_ok(action).await;
        assert_eq!(
            app_status(&browser, &url).await,
            StatusCode::UNAUTHORIZED,
            "the app session of {email} outlived `{}`",
            action.join(" ")
        );
    }
}
