//! A soak: normal users at saturation while every anonymous attack runs at once (oversized heads,
//! clients that stop reading, silent connections, a request flood, a sign-in flood and an
//! authorization flood), with the edge's and connector's memory sampled throughout.
//!
//! Passes when no normal request failed (the attackers' own 429s and 431s are theirs) and memory
//! falls back to its baseline once the attack stops. `POSTERN_SOAK_SECONDS` sets the length (a
//! few seconds in the test suite; `bench/soak.sh` runs 60 s on a release build).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::{backends, Edge, READY_TIMEOUT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

const MIB: u64 = 1 << 20;
const HOST: &str = "soak.localhost";

fn soak_seconds() -> u64 {
    std::env::var("POSTERN_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// An address of its own for each simulated client, inside 127/8.
fn addr(block: u8, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, block, n))
}

struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_users_are_served_while_every_attack_runs_and_memory_comes_back() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("soak", HOST, &app.url(), "g", &[]).await;
    let connector = edge.connector("g").await;
    let pw = edge.dir.path().join("pw");
    std::fs::write(&pw, "a long enough passphrase\n").unwrap();
    edge.admin_ok(&[
        "user",
        "create",
        "ada@example.com",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .await;
    let out = edge
        .admin_ok(&[
            "--json",
            "client",
            "create",
            "Soak",
            "--redirect-uri",
            "https://rp.example/cb",
        ])
        .await;
    let client_id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally {
        ok: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
    });
    let mut normal = JoinSet::new();
    // Normal users: 32 addresses, small requests back to back, and a few 1 MiB downloads.
    for n in 1..=32u8 {
        let client = user_client(&edge, addr(2, n));
        let url = edge.url(
            HOST,
            if n % 8 == 0 {
                "/download?bytes=1048576"
            } else {
                "/"
            },
        );
        let (stop, tally) = (stop.clone(), tally.clone());
        normal.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(format!("{e:?}")),
                };
                match outcome {
                    Ok(()) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tally.failures.lock().unwrap().push(e),
                }
            }
        });
    }

    let pids = [edge.pid(), connector.pid()];
    let rss = || pids.iter().map(|p| common::rss_bytes(*p)).sum::<u64>();
    // Warm up with normal traffic only, then take the baseline.
    let warm = tally.ok.load(Ordering::Relaxed);
    let until = tokio::time::Instant::now() + READY_TIMEOUT;
    while tally.ok.load(Ordering::Relaxed) < warm + 2000 {
        assert!(
            tokio::time::Instant::now() < until,
            "normal load did not get going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let baseline = rss();

    let attack_stop = Arc::new(AtomicBool::new(false));
    let mut attacks = JoinSet::new();
    attacks.spawn(oversized_heads(
        edge.public,
        edge.ca_pem(),
        attack_stop.clone(),
    ));
    attacks.spawn(stalled_readers(
        edge.public,
        edge.ca_pem(),
        attack_stop.clone(),
    ));
    attacks.spawn(silent_connections(
        edge.public,
        edge.ca_pem(),
        attack_stop.clone(),
    ));
    attacks.spawn(request_flood(
        user_client(&edge, addr(1, 4)),
        edge.url(HOST, "/"),
        attack_stop.clone(),
    ));
    attacks.spawn(sign_in_flood(
        Browser::new_from(&edge, Some(addr(1, 5))),
        client_id.clone(),
        attack_stop.clone(),
    ));
    attacks.spawn(authorize_flood(
        Browser::new_from(&edge, Some(addr(1, 6))),
        client_id,
        attack_stop.clone(),
    ));

    let started = Instant::now();
    let mut peak = baseline;
    while started.elapsed() < Duration::from_secs(soak_seconds()) {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    attack_stop.store(true, Ordering::Relaxed);
    let mut attack_reports = Vec::new();
    while let Some(r) = attacks.join_next().await {
        attack_reports.push(r.unwrap());
    }
    let served_during = tally.ok.load(Ordering::Relaxed) - warm;
    stop.store(true, Ordering::Relaxed);
    while normal.join_next().await.is_some() {}

    let failures = tally.failures.lock().unwrap().clone();
    eprintln!(
        "soak of {} s: {served_during} normal requests served, {} failed; memory (edge + connector) {} MiB before, {} MiB at most",
        soak_seconds(),
        failures.len(),
        baseline / MIB,
        peak / MIB
    );
    for r in &attack_reports {
        eprintln!("  attack {r}");
    }
    assert!(
        failures.is_empty(),
        "{} normal requests failed, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Once the attackers are gone, memory falls back to the baseline: the allocator gives idle pages
    // back about ten seconds after they were freed, so this waits for it; the bound allows for
    // caches warmed during the soak.
    let bound = baseline + baseline / 4 + 32 * MIB;
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let now = rss();
        if now <= bound {
            eprintln!("memory after the attack: {} MiB", now / MIB);
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "memory stayed at {} MiB after the attack; baseline {} MiB, bound {} MiB",
            now / MIB,
            baseline / MIB,
            bound / MIB
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn user_client(edge: &Edge, from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(
            postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap(),
        )
        .resolve(HOST, edge.public)
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A TLS connection from `from`, or `None` when the edge refuses it (an attacker's lot).
async fn tls(
    public: SocketAddr,
    ca: &str,
    from: IpAddr,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let tcp = socket.connect(public).await.ok()?;
    let config = postern_pki::client_config(ca, vec![b"http/1.1".to_vec()]).ok()?;
    let name = rustls::pki_types::ServerName::try_from(HOST).ok()?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()
}

/// Requests with heads too large to forward: a 60 KB cookie and a 100 KB header, in turn.
async fn oversized_heads(public: SocketAddr, ca: String, stop: Arc<AtomicBool>) -> String {
    let (mut sent, mut refused) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let Some(mut conn) = tls(public, &ca, addr(1, 1)).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let header = if sent % 2 == 0 {
            format!("Cookie: s={}\r\n", "c".repeat(60 * 1024))
        } else {
            format!("X-Big: {}\r\n", "b".repeat(100 * 1024))
        };
        let req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{header}Connection: close\r\n\r\n");
        sent += 1;
        if conn.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut answer),
        )
        .await;
        if answer.starts_with(b"HTTP/1.1 431") {
            refused += 1;
        }
    }
    format!("oversized heads: {sent} sent, {refused} answered 431")
}

/// Clients that ask for 256 MiB and never read, up to the per-address connection cap.
async fn stalled_readers(public: SocketAddr, ca: String, stop: Arc<AtomicBool>) -> String {
    let mut held = Vec::new();
    let mut refused = 0;
    while !stop.load(Ordering::Relaxed) {
        match tls(public, &ca, addr(1, 2)).await {
            Some(mut conn) => {
                let req = format!("GET /download?bytes=268435456 HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
                let _ = conn.write_all(req.as_bytes()).await;
                held.push(conn);
            }
            None => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    format!("stalled readers: {} opened, {refused} refused", held.len())
}

/// TLS connections that send nothing, from several addresses, as fast as they are accepted.
async fn silent_connections(public: SocketAddr, ca: String, stop: Arc<AtomicBool>) -> String {
    let mut held = Vec::new();
    let mut refused = 0;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let from = addr(3, (n % 8) as u8 + 1);
        n += 1;
        match tls(public, &ca, from).await {
            Some(conn) => held.push(conn),
            None => refused += 1,
        }
    }
    format!(
        "silent connections: {} opened, {refused} refused",
        held.len()
    )
}

/// Small requests from one address as fast as it can send them.
async fn request_flood(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> String {
    let (mut sent, mut limited) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        if let Ok(r) = client.get(&url).send().await {
            sent += 1;
            if r.status() == 429 {
                limited += 1;
            }
        }
    }
    format!("request flood: {sent} sent, {limited} answered 429")
}

/// Wrong passwords from one address against one pending sign-in, as fast as answered.
async fn sign_in_flood(mut browser: Browser, client_id: String, stop: Arc<AtomicBool>) -> String {
    let form = browser.open(&authorize(&client_id, "s")).await;
    let (csrf, req) = (form.field("csrf"), form.field("req"));
    let (mut sent, mut refused) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let page = browser
            .post(
                "/signin",
                &[
                    ("csrf", &csrf),
                    ("req", &req),
                    ("email", &format!("nobody{}@example.com", sent % 50)),
                    ("password", "wrong wrong wrong"),
                ],
            )
            .await;
        sent += 1;
        if page.status == 429 || page.status == 503 {
            refused += 1;
        }
    }
    format!("sign-in flood: {sent} sent, {refused} answered 429/503")
}

/// Authorization requests with the largest state allowed, from one address.
async fn authorize_flood(mut browser: Browser, client_id: String, stop: Arc<AtomicBool>) -> String {
    let state = "s".repeat(2048);
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        browser.get(&authorize(&client_id, &state)).await;
        sent += 1;
    }
    format!("authorization flood: {sent} sent")
}

fn authorize(client_id: &str, state: &str) -> String {
    format!(
        "/authorize?response_type=code&client_id={client_id}&redirect_uri=https%3A%2F%2Frp.example%2Fcb&scope=openid&state={state}&nonce=n&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWzkhP7GKZcUc&code_challenge_method=S256"
    )
}
