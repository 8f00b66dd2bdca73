//! Health, metrics and the access log, on the real binary: the edge's and the connector's
//! `/metrics` pass `promtool check metrics` and a real Prometheus scrapes the edge; the access
//! log has every field for a signed-in request, a refused one and a WebSocket; the trace context
//! reaches the app.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::browser::{form_field, IDP_HOST};
use common::{backends, Edge, READY_TIMEOUT};
use serde_json::Value;

const PASSWORD: &str = "a long enough passphrase";

/// A client for plain HTTP (the metrics listener, Prometheus).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Waits until `check` holds for the body of `http://addr/path`; returns it.
async fn wait_body(addr: SocketAddr, path: &str, check: impl Fn(u16, &str) -> bool) -> String {
    let wait = async {
        loop {
            if let Ok(resp) = http().get(format!("http://{addr}{path}")).send().await {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                if check(status, &body) {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT * 2, wait)
        .await
        .unwrap_or_else(|_| panic!("http://{addr}{path} never became what the test waits for"))
}

/// Runs `promtool check metrics` on an exposition; panics with its complaints.
fn promtool(exposition: &str, what: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the {what}'s metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name{labels}` in an exposition (labels as written, in order).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// A port nothing listens on now, for a server that must be told its port (Prometheus).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let edge = Edge::start(&["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics = edge.metrics.expect("the edge printed its metrics address");
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("echo", "echo.localhost", &app.url(), "g", &[])
        .await;
    let (connector, log) = edge
        .connector_logged(
            "g",
            &["--metrics-listen", "127.0.0.1:0", "--log-format", "json"],
        )
        .await;

    // Health: alive, and ready once bound and loaded with the store answering.
    assert_eq!(
        common::plain_get(metrics, "/healthz").await,
        (200, "ok\n".into())
    );
    assert_eq!(common::plain_get(metrics, "/readyz").await.0, 200);
    assert_eq!(common::plain_get(metrics, "/elsewhere").await.0, 404);

    let client = edge.client("echo.localhost");
    for _ in 0..3 {
        let resp = client
            .get(edge.url("echo.localhost", "/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // A refusal: the echo app in maintenance.
    edge.admin_ok(&["app", "update", "echo", "--maintenance", "on"])
        .await;
    let refused = wait_status(&client, &edge.url("echo.localhost", "/x"), 503).await;
    assert_eq!(refused, 503);

    let exposition = common::plain_get(metrics, "/metrics").await.1;
    promtool(&exposition, "edge");
    assert_eq!(
        sample(
            &exposition,
            "postern_requests_total{app=\"echo\",status_class=\"2xx\"}"
        ),
        Some(3.0),
        "{exposition}"
    );
    assert!(
        sample(
            &exposition,
            "postern_refusals_total{code=\"app_in_maintenance\"}"
        ) >= Some(1.0),
        "{exposition}"
    );
    assert_eq!(
        sample(&exposition, "postern_tunnels{group=\"g\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &exposition,
            &format!(
                "postern_connector_tunnels{{connector=\"{}\"}}",
                connector.id
            )
        ),
        Some(2.0)
    );
    assert_eq!(sample(&exposition, "postern_connectors_online"), Some(1.0));
    assert!(
        sample(
            &exposition,
            "postern_certificate_expiry_seconds{certificate=\"edge\"}"
        ) > Some(0.0)
    );
    // Each connector's certificate on the edge too (the connector's own listener is opt-in):
    // issued for a year by default.
    let connector_cert = sample(
        &exposition,
        &format!(
            "postern_certificate_expiry_seconds{{certificate=\"connector:{}\"}}",
            connector.id
        ),
    );
    assert!(
        connector_cert.is_some_and(|s| s > 300.0 * 86400.0 && s <= 366.0 * 86400.0),
        "{connector_cert:?} {exposition}"
    );
    assert_eq!(
        sample(
            &exposition,
            &format!(
                "postern_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    for name in [
        "postern_request_duration_seconds_bucket{app=\"echo\",le=\"+Inf\"}",
        "postern_upstream_duration_seconds_count{app=\"echo\"}",
        "postern_queue_wait_seconds_count{app=\"echo\"}",
        "postern_request_bytes_total{app=\"echo\"}",
        "postern_response_bytes_total{app=\"echo\"}",
    ] {
        assert!(
            sample(&exposition, name).is_some(),
            "no {name}: {exposition}"
        );
    }
    // No user, path or address is a label.
    assert!(!exposition.contains("/x\""), "{exposition}");
    assert!(!exposition.contains("127.0.0.1"), "{exposition}");

    // The connector's listener, opted into; its log (JSON lines) names the address.
    let line = log.wait_for(&["serving /metrics"]).await;
    let line: Value = serde_json::from_str(&line).expect("a JSON log line");
    let connector_metrics: SocketAddr = line["fields"]["addr"].as_str().unwrap().parse().unwrap();
    let ready = wait_body(connector_metrics, "/readyz", |s, _| s == 200).await;
    assert_eq!(ready, "ready\n");
    let exposition = common::plain_get(connector_metrics, "/metrics").await.1;
    promtool(&exposition, "connector");
    assert!(
        sample(
            &exposition,
            &format!(
                "postern_certificate_expiry_seconds{{certificate=\"connector:{}\"}}",
                connector.id
            )
        ) > Some(0.0),
        "{exposition}"
    );

    // A real Prometheus scrapes the edge; its query API sees the counter.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: postern\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={web}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    wait_body(web, "/-/ready", |s, _| s == 200).await;
    let query = "/api/v1/query?query=postern_requests_total%7Bapp%3D%22echo%22%2Cstatus_class%3D%222xx%22%7D";
    let answer = wait_body(web, query, |s, body| {
        s == 200 && body.contains("\"result\":[{")
    })
    .await;
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["data"]["result"][0]["value"][1], "3", "{answer}");

    // Without its edge, the connector is alive but not ready, and says why.
    let mut edge = edge;
    edge.child.kill().await.unwrap();
    let not_ready = wait_body(connector_metrics, "/readyz", |s, _| s == 503).await;
    assert_eq!(not_ready, "not ready: no tunnel to the edge is up\n");
    assert_eq!(
        common::plain_get(connector_metrics, "/healthz").await.0,
        200
    );
}

/// Requests `url` until it answers `status` (a config change reaching the edge); returns it.
async fn wait_status(client: &reqwest::Client, url: &str, status: u16) -> u16 {
    let wait = async {
        loop {
            let got = client.get(url).send().await.unwrap().status().as_u16();
            if got == status {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, wait)
        .await
        .expect("the edge never answered as expected")
}

/// The access log's records so far.
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Waits for the record of request `id` in the access log.
async fn record_of(path: &Path, id: &str) -> Value {
    let wait = async {
        loop {
            if let Some(r) = records(path).into_iter().find(|r| r["request_id"] == id) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("no access log record for {id}: {:?}", records(path)))
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_access_log_records_signed_in_refused_and_websocket_requests() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let edge = Edge::start(&[
        "--access-log",
        log_path.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .await;
    let port = edge.public.port();
    let app = backends::app().await;
    let ws = backends::websocket_echo().await;
    let pw = edge.dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    edge.admin_ok(&[
        "user",
        "create",
        "ann@example.com",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .await;
    edge.admin_ok(&["user", "email-verified", "ann@example.com", "on"])
        .await;
    edge.group("g").await;
    let external = format!("https://wiki.localhost:{port}");
    let internal = app.url();
    edge.admin_ok(&[
        "app",
        "publish",
        "wiki",
        "--external-url",
        &external,
        "--internal-url",
        &internal,
        "--group",
        "g",
        "--preauth",
        "oidc",
    ])
    .await;
    edge.publish("ws", "ws.localhost", &format!("http://{ws}/"), "g", &[])
        .await;
    let connector = edge.connector("g").await;

    // Sign in with the built-in provider, as a browser would.
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let tls = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    let browser = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .cookie_provider(jar)
        .resolve("wiki.localhost", edge.public)
        .resolve(IDP_HOST, edge.public)
        .build()
        .unwrap();
    let form = browser
        .get(edge.url("wiki.localhost", "/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let html = form.text().await.unwrap();
    let signed_in = browser
        .post(edge.url(IDP_HOST, "/signin"))
        .form(&[
            ("csrf", form_field(&html, "csrf").as_str()),
            ("req", form_field(&html, "req").as_str()),
            ("email", "ann@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);

    // A signed-in request with a trace of its own and a body, and a query the log leaves out.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = browser
        .post(edge.url("wiki.localhost", "/docs/page?secret=1"))
        .header("traceparent", incoming)
        .header("tracestate", "vendor=1")
        .body("twelve bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let body = resp.bytes().await.unwrap();
    let seen_by_app: Value = serde_json::from_slice(&body).unwrap();
    // The app sees the user's trace, with the edge's span as its parent.
    let sent = backends::seen(&seen_by_app, "traceparent");
    assert_eq!(sent.len(), 1, "{seen_by_app}");
    assert!(
        sent[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent[0].ends_with("-01"),
        "{sent:?}"
    );
    assert_ne!(sent[0], incoming);
    assert_eq!(backends::seen(&seen_by_app, "tracestate"), ["vendor=1"]);

    let r = record_of(&log_path, &id).await;
    assert_eq!(r["traceparent"], sent[0].as_str());
    assert_eq!(r["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r["app"], "wiki");
    assert_eq!(r["host"], "wiki.localhost");
    assert_eq!(r["method"], "POST");
    assert_eq!(r["path"], "/docs/page");
    assert_eq!(r["status"], 200);
    assert_eq!(r["bytes_in"], 12);
    assert_eq!(r["bytes_out"], body.len() as u64);
    assert!(r["duration_ms"].as_f64().unwrap() >= r["upstream_ms"].as_f64().unwrap());
    assert_eq!(r["client_ip"], "127.0.0.1");
    assert!(!r["user_sub"].as_str().unwrap().is_empty(), "{r}");
    assert_eq!(r["user_email"], "ann@example.com");
    assert_eq!(r["connector_id"], connector.id.as_str());
    assert_eq!(r["refusal"], Value::Null);
    assert_eq!(r["websocket"], false);
    // RFC 3339 in UTC: 2026-12-01T05:00:00.123456789Z.
    let at = r["time"].as_str().unwrap();
    assert!(
        at.len() >= 20 && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
        "{r}"
    );

    // An invalid traceparent is replaced by a new trace, whose ID is the request ID; its
    // tracestate goes with it.
    let resp = browser
        .get(edge.url("wiki.localhost", "/"))
        .header(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "vendor=1")
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    let seen_by_app: Value = resp.json().await.unwrap();
    let sent = backends::seen(&seen_by_app, "traceparent");
    assert!(sent[0].starts_with(&format!("00-{id}-")), "{sent:?} {id}");
    assert!(backends::seen(&seen_by_app, "tracestate").is_empty());

    // A refused request: no session, an API client.
    let anonymous = edge.client("wiki.localhost");
    let resp = anonymous
        .get(edge.url("wiki.localhost", "/api"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let id = request_id(&resp);
    let r = record_of(&log_path, &id).await;
    assert_eq!(r["status"], 401);
    assert_eq!(r["refusal"], "sign_in_required");
    assert_eq!(r["app"], "wiki");
    assert_eq!(r["path"], "/api");
    assert_eq!(r["user_sub"], Value::Null);
    assert_eq!(r["connector_id"], Value::Null);
    assert_eq!(r["upstream_ms"], Value::Null);
    assert!(r["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(r["trace_id"], id.as_str());

    // A WebSocket: recorded when it closes, with what it carried.
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let tls = edge.tls_to_public("ws.localhost", b"http/1.1").await;
        let url = format!("wss://ws.localhost:{port}/socket");
        let (mut socket, resp) = tokio_tungstenite::client_async(url, tls).await.unwrap();
        assert_eq!(resp.status(), 101);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        socket.send(Message::text("x".repeat(1000))).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text("x".repeat(1000))
        );
        socket.close(None).await.unwrap();
        while socket.next().await.is_some() {}
        // The record is written when the connection closes.
        drop(socket);
        let r = record_of(&log_path, &id).await;
        assert_eq!(r["websocket"], true);
        assert_eq!(r["status"], 101);
        assert_eq!(r["app"], "ws");
        assert_eq!(r["path"], "/socket");
        assert_eq!(r["connector_id"], connector.id.as_str());
        // The masked client frame (1000 bytes of payload) went in, the server's frame came out.
        assert!(r["bytes_in"].as_u64().unwrap() >= 1000, "{r}");
        assert!(r["bytes_out"].as_u64().unwrap() >= 1000, "{r}");
    }

    // The same requests, counted: the sign-in at the provider and at the edge's callback, the
    // pre-authentication decisions, the refusal, the store calls they made.
    let exposition = common::plain_get(edge.metrics.unwrap(), "/metrics").await.1;
    promtool(&exposition, "edge");
    for (series, at_least) in [
        (
            "postern_sign_ins_total{app=\"wiki\",result=\"success\"}",
            1.0,
        ),
        (
            "postern_preauth_decisions_total{app=\"wiki\",decision=\"allow\"}",
            3.0,
        ),
        (
            "postern_preauth_decisions_total{app=\"wiki\",decision=\"redirect\"}",
            2.0,
        ),
        (
            "postern_preauth_decisions_total{app=\"wiki\",decision=\"deny\"}",
            1.0,
        ),
        ("postern_refusals_total{code=\"sign_in_required\"}", 1.0),
        (
            "postern_requests_total{app=\"ws\",status_class=\"1xx\"}",
            1.0,
        ),
        (
            "postern_store_operation_duration_seconds_count{operation=\"create_code\"}",
            1.0,
        ),
        (
            "postern_store_operation_duration_seconds_count{operation=\"authenticate_connector\"}",
            1.0,
        ),
    ] {
        assert!(
            sample(&exposition, series) >= Some(at_least),
            "{series} below {at_least}: {exposition}"
        );
    }
    // The provider counts its own sign-in under its client's ID.
    assert!(
        exposition
            .lines()
            .any(|l| l.starts_with("postern_sign_ins_total{app=\"")
                && l.contains("result=\"success\"")
                && !l.contains("wiki")),
        "{exposition}"
    );
}
