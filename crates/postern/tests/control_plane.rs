//! The control plane with real processes: live config under load, certificate renewal and
//! revocation, connector health, the audit trail.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::load::Load;
use common::{backends, Edge};
use reqwest::Method;

/// The bound the control plane promises for a change to reach connectors and tunnels.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

/// GETs `url` until `done` accepts the answer, returning how long that took.
async fn until(client: &reqwest::Client, url: &str, done: impl Fn(u16, &str) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(resp) = client.get(url).send().await {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            if done(status, &body) {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < common::READY_TIMEOUT,
            "{url} never reached the expected state"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn config_changes_reach_a_running_connector_within_a_second_under_load() {
    // All the load comes from one loopback address, faster than one client may send by default.
    let edge = Edge::start(&["--requests-per-ip", "0"]).await;
    edge.group("g").await;
    edge.group("h").await;
    let (one, two, three) = (
        backends::app().await,
        backends::app().await,
        backends::app().await,
    );
    edge.publish("busy", "busy.localhost", &one.url(), "g", &[])
        .await;
    let c = edge.connector("g").await;
    let busy = edge.url("busy.localhost", "/");
    let load = Load::start(edge.client("busy.localhost"), busy.clone(), 4);
    load.wait_for_more(50).await;

    // A new app: served through the running connector as soon as it is published.
    let (status, _, _) = edge
        .api(
            Method::POST,
            "/v1/apps",
            Some(serde_json::json!({
                "name": "fresh", "group": "g", "preauth": "passthrough",
                "external_url": edge.url("fresh.localhost", "/"), "internal_url": three.url(),
            })),
        )
        .await;
    assert_eq!(status, 201);
    let client = edge.client("fresh.localhost");
    let took = until(&client, &edge.url("fresh.localhost", "/"), |s, _| s == 200).await;
    assert!(
        took < PROPAGATION_BOUND,
        "a new app took {took:?} to be served"
    );

    // The busy app moves to another backend under load: no request fails, and the new backend
    // takes the traffic within the bound.
    let before = two.hits.load(Ordering::Relaxed);
    let (status, _, _) = edge
        .api(
            Method::PATCH,
            "/v1/apps/busy",
            Some(serde_json::json!({ "internal_url": two.url() })),
        )
        .await;
    assert_eq!(status, 200);
    let start = Instant::now();
    while two.hits.load(Ordering::Relaxed) == before {
        assert!(
            start.elapsed() < common::READY_TIMEOUT,
            "the new backend never got traffic"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        start.elapsed() < PROPAGATION_BOUND,
        "the change took {:?}",
        start.elapsed()
    );
    eprintln!(
        "propagation: the new internal URL took traffic {:?} after the update call returned",
        start.elapsed()
    );
    load.wait_for_more(50).await;
    let settled = one.hits.load(Ordering::Relaxed);
    load.wait_for_more(50).await;
    assert_eq!(
        one.hits.load(Ordering::Relaxed),
        settled,
        "the old backend still gets traffic"
    );

    // Maintenance mode: a clear 503 page for everyone, then back.
    edge.admin_ok(&["app", "update", "fresh", "--maintenance", "on"])
        .await;
    let resp = client
        .get(edge.url("fresh.localhost", "/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "app_in_maintenance");
    let page = client
        .get(edge.url("fresh.localhost", "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("down for maintenance"), "{page}");
    edge.admin_ok(&["app", "update", "fresh", "--maintenance", "off"])
        .await;
    assert_eq!(
        client
            .get(edge.url("fresh.localhost", "/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let tally = load.stop().await;
    assert!(
        tally.failures.is_empty(),
        "failed requests: {:?}",
        tally.failures
    );
    assert!(tally.ok > 150);

    // Moving the connector to another group: its open tunnels carry that group's apps at once.
    edge.publish("other", "other.localhost", &three.url(), "h", &[])
        .await;
    let other = edge.client("other.localhost");
    edge.admin_ok(&["connector", "move", &c.id, "--group", "h"])
        .await;
    let took = until(&other, &edge.url("other.localhost", "/"), |s, _| s == 200).await;
    assert!(took < PROPAGATION_BOUND, "the move took {took:?}");
    eprintln!("propagation: a moved connector served its new group's app after {took:?}");

    // Deleting an app: gone for users at once.
    edge.admin_ok(&["app", "delete", "fresh"]).await;
    let took = until(&client, &edge.url("fresh.localhost", "/"), |s, _| s == 404).await;
    assert!(took < PROPAGATION_BOUND);
}

#[tokio::test]
async fn certificates_renew_under_load_with_no_failed_request() {
    // The edge asks for renewal every 2 seconds; the connector's own default is 180 days.
    // All the load comes from one loopback address, faster than one client may send by default.
    let edge = Edge::start(&["--connector-renew-after", "2s", "--requests-per-ip", "0"]).await;
    edge.group("g").await;
    let app = backends::app().await;
    edge.publish("app", "app.localhost", &app.url(), "g", &[])
        .await;
    let c = edge.connector("g").await;
    let cert_path = c.state_dir.join("connector.pem");
    let key_path = c.state_dir.join("connector-key.pem");
    let first_cert = std::fs::read_to_string(&cert_path).unwrap();
    let first_key = std::fs::read_to_string(&key_path).unwrap();

    let load = Load::start(
        edge.client("app.localhost"),
        edge.url("app.localhost", "/"),
        4,
    );
    load.wait_for_more(50).await;
    // Wait for two renewals in the audit log.
    let start = Instant::now();
    loop {
        let (_, page, _) = edge
            .api(Method::GET, "/v1/audit?action=connector.renew", None)
            .await;
        let renewals = page["events"].as_array().unwrap();
        assert!(
            renewals.iter().all(|e| e["result"] == "success"),
            "{renewals:?}"
        );
        if renewals.len() >= 2 {
            assert!(renewals
                .iter()
                .all(|e| e["actor"] == format!("connector:{}", c.id)));
            break;
        }
        assert!(
            start.elapsed() < common::READY_TIMEOUT,
            "no renewals happened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.wait_for_more(50).await;
    let tally = load.stop().await;
    assert!(
        tally.failures.is_empty(),
        "failed requests during renewal: {:?}",
        tally.failures
    );
    assert!(tally.ok > 100);

    let cert = std::fs::read_to_string(&cert_path).unwrap();
    let key = std::fs::read_to_string(&key_path).unwrap();
    assert_ne!(cert, first_cert, "the certificate on disk was not replaced");
    assert_ne!(key, first_key, "renewal must use a new key");
    edge.wait_tunnels(&c.id, 2).await;

    // The renewed pair on disk works after a restart.
    let mut c = c;
    common::signal(c.pid(), "KILL");
    let _ = c.child.wait().await;
    c.child = common::Connector::spawn(&c.state_dir);
    edge.wait_tunnels(&c.id, 2).await;
    assert_eq!(
        edge.client("app.localhost")
            .get(edge.url("app.localhost", "/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_connector_renews_at_its_own_renewal_age() {
    let edge = Edge::start(&[]).await;
    edge.group("g").await;
    let c = edge.connector_with("g", &["--renew-after", "1s"]).await;
    let first = std::fs::read_to_string(c.state_dir.join("connector.pem")).unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(c.state_dir.join("connector.pem")).unwrap() == first {
        assert!(
            start.elapsed() < common::READY_TIMEOUT,
            "the connector never renewed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Bad renewal ages are refused with the fix.
    let out = tokio::process::Command::new(common::BIN)
        .args(["connector", "run", "--renew-after", "0s", "--state"])
        .arg(&c.state_dir)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1s"));
}

#[tokio::test]
async fn revocation_closes_tunnels_and_refuses_the_connector_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let edge = Edge::start_in(dir, &[]).await;
    edge.group("g").await;
    let app = backends::app().await;
    edge.publish("app", "app.localhost", &app.url(), "g", &[])
        .await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("c");
    let token = edge.token("g").await;
    assert!(edge.register(&token, &state_dir).await.status.success());
    let id: String = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(state_dir.join("registration.json")).unwrap(),
    )
    .unwrap()["connector_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let connector = tokio::process::Command::new(common::BIN)
        .args(["connector", "run", "--state"])
        .arg(&state_dir)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    edge.wait_tunnels(&id, 2).await;

    let out = edge.admin_ok(&["connector", "revoke", &id]).await;
    assert!(out.contains("revoked"), "{out}");
    edge.wait_connectors(
        PROPAGATION_BOUND,
        "tunnels closed after revocation",
        |list| {
            list.iter()
                .any(|c| c["id"] == id && c["tunnels"] == 0 && c["status"] == "revoked")
        },
    )
    .await;
    // The running connector is told on its config long-poll and stops, naming why.
    let out = tokio::time::timeout(common::READY_TIMEOUT, connector.wait_with_output())
        .await
        .expect("a revoked connector kept running")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked"), "{stderr}");
    assert_eq!(
        edge.client("app.localhost")
            .get(edge.url("app.localhost", "/"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .status(),
        502
    );

    // Renewal with the revoked certificate is refused.
    let client = edge.connector_client(&state_dir);
    let csr = postern_pki::generate_key_and_csr().unwrap().csr_pem;
    let resp = client
        .post(format!("https://{}/v1/connector/renew", edge.connector))
        .json(&serde_json::json!({ "csr_pem": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "connector_revoked");

    // After an edge restart the certificate is still refused.
    let mut edge = edge;
    common::signal(edge.pid(), "KILL");
    let _ = edge.child.wait().await;
    let keep = tempfile::TempDir::new().unwrap();
    let dir = std::mem::replace(&mut edge.dir, keep);
    drop(edge);
    assert_eq!(dir.path(), data);
    let edge = Edge::start_in(dir, &[]).await;
    // The connector dials the edge's old port; point it at the new one.
    let reg_path = state_dir.join("registration.json");
    let mut reg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&reg_path).unwrap()).unwrap();
    reg["edge_url"] = format!("https://{}", edge.connector).into();
    std::fs::write(&reg_path, reg.to_string()).unwrap();
    let out = tokio::time::timeout(
        common::READY_TIMEOUT,
        tokio::process::Command::new(common::BIN)
            .args(["connector", "run", "--state"])
            .arg(&state_dir)
            .output(),
    )
    .await
    .expect("a revoked connector kept running after the edge restarted")
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    let list: serde_json::Value =
        serde_json::from_str(&edge.admin_ok(&["connector", "list", "--json"]).await).unwrap();
    let c = &list.as_array().unwrap()[0];
    assert_eq!(c["status"], "revoked");
    assert_eq!(c["tunnels"], 0);

    // A revoked connector does not hold its group; once the group is gone the certificate names
    // an unknown connector, which is refused too.
    edge.admin_ok(&["app", "delete", "app"]).await;
    edge.admin_ok(&["group", "delete", "g"]).await;
    let resp = edge
        .connector_client(&state_dir)
        .post(format!("https://{}/v1/connector/renew", edge.connector))
        .json(&serde_json::json!({ "csr_pem": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_connector");
}

#[tokio::test]
async fn connector_list_shows_health() {
    let edge = Edge::start(&[]).await;
    edge.group("g").await;
    edge.group("empty").await;
    let app = backends::app().await;
    edge.publish("app", "app.localhost", &app.url(), "g", &[])
        .await;
    edge.publish("lonely", "lonely.localhost", &app.url(), "empty", &[])
        .await;
    let c = edge.connector("g").await;
    let list: serde_json::Value =
        serde_json::from_str(&edge.admin_ok(&["connector", "list", "--json"]).await).unwrap();
    let me = &list.as_array().unwrap()[0];
    assert_eq!(me["id"], c.id.as_str());
    assert_eq!(me["group"], "g");
    assert_eq!(me["status"], "active");
    assert_eq!(me["tunnels"], 2);
    assert_eq!(me["address"], "127.0.0.1");
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert!(!me["hostname"].as_str().unwrap().is_empty());
    assert!(me["last_seen_at"].as_i64().unwrap() > 0);
    assert!(me["cert_not_after"].as_i64().unwrap() > unix_now() + 300 * 24 * 3600);
    let table = edge.admin_ok(&["connector", "list"]).await;
    for column in [
        "STATUS",
        "TUNNELS",
        "LAST SEEN",
        "CERT EXPIRES",
        "VERSION",
        "active",
    ] {
        assert!(table.contains(column), "{table}");
    }

    // An app whose group has no connector online carries a warning.
    let apps = edge.admin_ok(&["app", "list"]).await;
    let lonely = apps.lines().find(|l| l.starts_with("lonely")).unwrap();
    assert!(
        lonely.contains("no connector of group \"empty\" is online"),
        "{apps}"
    );
    let healthy = apps.lines().find(|l| l.starts_with("app ")).unwrap();
    assert!(!healthy.contains("no connector"), "{apps}");

    // A stopped connector turns inactive.
    let mut c = c;
    common::signal(c.pid(), "TERM");
    let _ = c.child.wait().await;
    edge.wait_connectors(common::READY_TIMEOUT, "connector inactive", |list| {
        list[0]["status"] == "inactive" && list[0]["tunnels"] == 0
    })
    .await;
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
