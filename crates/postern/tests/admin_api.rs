//! The admin API and CLI with a real edge: the audit trail, admin tokens, the OpenAPI document
//! against the routes served, bad input, and declarative `apply`.

mod common;

use common::{backends, Edge};
use reqwest::Method;
use serde_json::{json, Value};

/// The audit events (oldest first) as `(actor, action, target, result)`.
async fn trail(edge: &Edge, query: &str) -> Vec<(String, String, String, String)> {
    let (status, page, _) = edge
        .api(Method::GET, &format!("/v1/audit?{query}"), None)
        .await;
    assert_eq!(status, 200, "{page}");
    let mut events: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (s("actor"), s("action"), s("target"), s("result"))
        })
        .collect();
    events.reverse();
    events
}

fn ev(actor: &str, action: &str, target: &str, result: &str) -> (String, String, String, String) {
    (actor.into(), action.into(), target.into(), result.into())
}

#[tokio::test]
async fn a_full_lifecycle_leaves_an_audit_trail() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    let boot = "admin:bootstrap";
    edge.group("g").await;
    edge.group("h").await;
    edge.publish("app", "app.localhost", &app.url(), "g", &[])
        .await;
    // A refused change is recorded as a failure.
    let out = edge
        .admin(&[
            "app",
            "publish",
            "app",
            "--external-url",
            "https://x.localhost",
            "--internal-url",
            &app.url(),
            "--group",
            "g",
        ])
        .await;
    assert!(!out.status.success());
    let c = edge.connector("g").await;
    edge.admin_ok(&["app", "update", "app", "--backend-timeout", "30s"])
        .await;
    edge.admin_ok(&["app", "update", "app", "--maintenance", "on"])
        .await;
    edge.admin_ok(&["app", "update", "app", "--maintenance", "off"])
        .await;
    edge.admin_ok(&["connector", "move", &c.id, "--group", "h"])
        .await;
    edge.admin_ok(&["connector", "revoke", &c.id]).await;
    edge.admin_ok(&["app", "delete", "app"]).await;
    edge.admin_ok(&["group", "rename", "h", "h2"]).await;
    edge.admin_ok(&["group", "delete", "h2"]).await;

    let got = trail(&edge, "limit=1000").await;
    // The connector is named by the registration token it presented (never by the hostname it
    // chose), the same token for the same connector.
    let reg = got
        .iter()
        .find(|e| e.1 == "connector.register")
        .unwrap()
        .0
        .clone();
    assert!(reg.starts_with("registration-token:"), "{reg}");
    let want = vec![
        ev(boot, "group.create", "g", "success"),
        ev(boot, "group.create", "h", "success"),
        ev(boot, "app.publish", "app", "success"),
        ev(boot, "app.publish", "app", "failure"),
        ev(boot, "registration_token.create", "g", "success"),
        ev(&reg, "connector.register", &c.id, "success"),
        ev(boot, "app.update", "app", "success"),
        ev(boot, "app.maintenance", "app", "success"),
        ev(boot, "app.maintenance", "app", "success"),
        ev(boot, "connector.move", &c.id, "success"),
        ev(boot, "connector.revoke", &c.id, "success"),
        ev(boot, "app.delete", "app", "success"),
        ev(boot, "group.rename", "h", "success"),
        ev(boot, "group.delete", "h2", "success"),
    ];
    assert_eq!(got, want);

    // Every event has a time, a detail where it matters and a request ID; the failure names why.
    let (_, page, _) = edge.api(Method::GET, "/v1/audit?limit=1000", None).await;
    let events = page["events"].as_array().unwrap();
    assert!(events
        .iter()
        .all(|e| e["request_id"].as_str().unwrap().len() == 32));
    assert!(events
        .iter()
        .all(|e| e["time"].as_str().unwrap().ends_with('Z')));
    let failed = events.iter().find(|e| e["result"] == "failure").unwrap();
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("already published"),
        "{failed}"
    );
    let update = events.iter().find(|e| e["action"] == "app.update").unwrap();
    assert!(
        update["detail"]
            .as_str()
            .unwrap()
            .contains("backend_timeout_secs"),
        "{update}"
    );
    // The request ID in the log is the one the caller got back.
    let (status, _, headers) = edge
        .api(
            Method::POST,
            "/v1/groups",
            Some(json!({ "name": "traced" })),
        )
        .await;
    assert_eq!(status, 201);
    let rid = headers["x-request-id"].to_str().unwrap().to_owned();
    let (_, page, _) = edge.api(Method::GET, "/v1/audit?limit=1", None).await;
    assert_eq!(page["events"][0]["request_id"], rid.as_str());

    // Filters and pages, through the CLI.
    let json_of = |s: String| serde_json::from_str::<Value>(&s).unwrap();
    let apps = json_of(
        edge.admin_ok(&["audit", "--action", "app.", "--json"])
            .await,
    );
    assert_eq!(apps["events"].as_array().unwrap().len(), 6);
    let by_reg = json_of(edge.admin_ok(&["audit", "--actor", &reg, "--json"]).await);
    assert_eq!(by_reg["events"].as_array().unwrap().len(), 1);
    let future = json_of(
        edge.admin_ok(&["audit", "--since", "2999-01-01T00:00:00Z", "--json"])
            .await,
    );
    assert!(future["events"].as_array().unwrap().is_empty());
    let recent = json_of(edge.admin_ok(&["audit", "--since", "1h", "--json"]).await);
    assert_eq!(recent["events"].as_array().unwrap().len(), 15);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["audit", "--limit", "4", "--json"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = json_of(edge.admin_ok(&args).await);
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 15);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "pages are newest first, without overlap"
    );
    let table = edge.admin_ok(&["audit", "--limit", "2"]).await;
    assert!(
        table.contains("ACTION") && table.contains("more: --cursor"),
        "{table}"
    );
    // `logs audit` is the same listing; the chain of every record written is intact.
    let logs = json_of(
        edge.admin_ok(&["logs", "audit", "--since", "1h", "--json"])
            .await,
    );
    assert_eq!(logs["events"].as_array().unwrap().len(), 15);
    assert!(logs["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["uid"].as_str().unwrap().len() == 36));
    let verified = edge.admin_ok(&["logs", "verify"]).await;
    assert!(
        verified.contains("audit log: intact (15 records)"),
        "{verified}"
    );
}

/// Runs `logs verify`, which must fail naming `expected` (e.g. "audit log is not intact: record
/// 2 altered"), or succeed when `expected` is `None`.
async fn verify(edge: &Edge, expected: Option<&str>) {
    let out = edge.admin(&["logs", "verify"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match expected {
        None => assert!(out.status.success(), "{stderr}"),
        Some(e) => {
            assert!(!out.status.success());
            assert!(stderr.contains(e), "{stderr}");
        }
    }
}

#[tokio::test]
async fn logs_verify_names_the_first_altered_missing_or_inserted_record() {
    let edge = Edge::start(&[]).await;
    for g in ["a", "b", "c", "d"] {
        edge.group(g).await;
    }
    verify(&edge, None).await;
    // Edited by hand in the edge's own database, as someone with the file would.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite:{}",
        edge.dir.path().join("state.db").display()
    ))
    .await
    .unwrap();
    let sql = |q: &'static str| {
        let db = db.clone();
        async move { sqlx::query(q).execute(&db).await.unwrap() }
    };
    sql("UPDATE audit_events SET target = 'z' WHERE id = 2").await;
    verify(&edge, Some("the audit log is not intact: record 2 altered")).await;
    sql("UPDATE audit_events SET target = 'b' WHERE id = 2").await;
    verify(&edge, None).await;

    sql("CREATE TABLE saved AS SELECT * FROM audit_events WHERE id = 3").await;
    sql("DELETE FROM audit_events WHERE id = 3").await;
    verify(&edge, Some("the audit log is not intact: record 3 missing")).await;
    sql("INSERT INTO audit_events SELECT * FROM saved").await;
    verify(&edge, None).await;

    sql(
        "INSERT INTO audit_events (id, uid, at_ms, actor, action, target, result, detail,
             request_id, prev_hash, hash)
         SELECT 5, 'forged', at_ms, actor, action, 'e', result, detail, request_id, hash, hash
         FROM audit_events WHERE id = 4",
    )
    .await;
    verify(
        &edge,
        Some("the audit log is not intact: record 5 inserted"),
    )
    .await;
}

#[tokio::test]
async fn admin_tokens_act_under_their_own_name_until_revoked() {
    let edge = Edge::start(&[]).await;
    let token = edge
        .admin_ok(&["token", "create", "ci"])
        .await
        .trim()
        .to_owned();
    assert!(token.starts_with("pat_"));
    let file = edge.dir.path().join("ci-token");
    std::fs::write(&file, &token).unwrap();
    let out = edge
        .admin_with_token_file(&file, &["group", "create", "from-ci"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value =
        serde_json::from_str(&edge.admin_ok(&["token", "list", "--json"]).await).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert!(list[0]["last_used_at"].as_i64().is_some());
    assert!(
        list[0].get("token").is_none(),
        "a token's value is shown only once"
    );
    let events = trail(&edge, "action=group.create").await;
    assert_eq!(
        events,
        vec![ev(
            &format!("admin:{id}"),
            "group.create",
            "from-ci",
            "success"
        )]
    );

    edge.admin_ok(&["token", "revoke", &id]).await;
    let out = edge.admin_with_token_file(&file, &["group", "list"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("token_refused") && stderr.lines().count() == 1,
        "{stderr}"
    );

    // A token past its lifetime is refused too.
    let (status, body, _) = edge
        .api(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({ "name": "brief", "ttl_secs": 1 })),
        )
        .await;
    assert_eq!(status, 201);
    let brief = body["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body, _) = edge.api_as(&brief, Method::GET, "/v1/groups", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_refused");
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_served() {
    let edge = Edge::start(&[]).await;
    // Served without a token, byte for byte the file in the repository.
    let resp = edge.api_as("", Method::GET, "/v1/openapi.yaml", None).await;
    assert_eq!(resp.0, 200);
    let served = resp.1.as_str().unwrap().to_owned();
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.yaml"
    ))
    .unwrap();
    assert_eq!(served, file);

    // Every documented route is served: the router knows the path and the method.
    let doc: Value = serde_yaml_ng::from_str(&file).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "patch", "delete", "put"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .replace("{name}", "nothing-here")
                .replace("{id}", "nothing-here")
                .replace("{email}", "nobody@example.com");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (m == Method::POST || m == Method::PATCH).then(|| json!({}));
            let (status, answer, _) = edge.api(m.clone(), &concrete, body).await;
            let code = answer["error"]["code"].as_str().unwrap_or("");
            assert!(
                code != "no_such_route" && code != "method_not_allowed" && status != 405,
                "{m} {path} is documented but not served: {status} {answer}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 56);
    // And an undocumented one is not.
    let (status, answer, _) = edge.api(Method::GET, "/v1/nothing", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("no_such_route"))
    );
    let (status, answer, _) = edge.api(Method::PUT, "/v1/apps", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

/// A call, and the status, error code and message fragment it must get.
type BadCall<'a> = (Method, String, Option<Value>, u16, &'a str, &'a str);

/// The state bad input must not change.
async fn snapshot(edge: &Edge) -> Value {
    let (_, groups, _) = edge.api(Method::GET, "/v1/groups", None).await;
    let (_, apps, _) = edge.api(Method::GET, "/v1/apps", None).await;
    let (_, connectors, _) = edge.api(Method::GET, "/v1/connectors", None).await;
    let (_, tokens, _) = edge.api(Method::GET, "/v1/admin-tokens", None).await;
    let (_, policies, _) = edge.api(Method::GET, "/v1/policies", None).await;
    let (_, locations, _) = edge.api(Method::GET, "/v1/locations", None).await;
    let connectors: Vec<Value> = connectors
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!([c["id"], c["group"], c["status"], c["cert_not_after"]]))
        .collect();
    json!({ "groups": groups, "apps": apps, "connectors": connectors, "tokens": tokens,
            "policies": policies, "locations": locations })
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("app", "app.localhost", &app.url(), "g", &[])
        .await;
    let c = edge.connector("g").await;
    let before = snapshot(&edge).await;
    let publish = |name: &str, ext: &str, int: &str, group: &str| json!({ "name": name, "external_url": ext, "internal_url": int, "group": group, "preauth": "passthrough" });
    let big = "x".repeat(100 * 1024);
    let cases: Vec<BadCall> = vec![
        (
            Method::GET,
            "/v1/signins?limit=x".into(),
            None,
            400,
            "invalid_request",
            "limit",
        ),
        (
            Method::GET,
            "/v1/audit?bogus=1".into(),
            None,
            400,
            "invalid_request",
            "bogus",
        ),
        (
            Method::PUT,
            "/v1/policies/p".into(),
            Some(
                json!({"name": "other", "state": "on", "users": {"include": ["all"]}, "apps": {"include": ["all"]}, "grant": {"block": true}}),
            ),
            400,
            "name_mismatch",
            "make them the same",
        ),
        (
            Method::PUT,
            "/v1/locations/l".into(),
            Some(json!({"name": "l", "cidrs": ["10.0.0.0/33"]})),
            422,
            "bad_json",
            "cidrs",
        ),
        (
            Method::PUT,
            "/v1/locations/l".into(),
            Some(json!({"name": "l", "countries": ["ZZ"]})),
            400,
            "invalid_policy",
            "ZZ",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish("b", "http://b.localhost", &app.url(), "g")),
            400,
            "invalid_app",
            "must use https",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish("b", "not a url", &app.url(), "g")),
            400,
            "invalid_app",
            "is not a URL",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish("b", "https://LOGIN.localhost", &app.url(), "g")),
            409,
            "host_taken",
            "the built-in identity provider's host",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish("b", "https://b.localhost/path", &app.url(), "g")),
            400,
            "invalid_app",
            "no path",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish("b", "https://b.localhost", "ftp://10.0.0.1/", "g")),
            400,
            "invalid_app",
            "http or https",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish("b", "https://APP.localhost", &app.url(), "g")),
            409,
            "conflict",
            "already published at app.localhost",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish("app", "https://b.localhost", &app.url(), "g")),
            409,
            "conflict",
            "already published",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish("b", "https://b.localhost", &app.url(), "nope")),
            400,
            "unknown_group",
            "postern admin group create nope",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(json!({ "name": "b", "surprise": 1 })),
            422,
            "bad_json",
            "unknown field",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(json!({ "name": big })),
            413,
            "body_too_large",
            "",
        ),
        (
            Method::PATCH,
            "/v1/apps/app".into(),
            Some(json!({})),
            400,
            "nothing_to_change",
            "names no field",
        ),
        (
            Method::PATCH,
            "/v1/apps/app".into(),
            Some(json!({ "group": "nope" })),
            400,
            "unknown_group",
            "does not exist",
        ),
        (
            Method::PATCH,
            "/v1/apps/app".into(),
            Some(json!({ "internal_url": "gopher://x" })),
            400,
            "invalid_app",
            "http or https",
        ),
        (
            Method::PATCH,
            "/v1/apps/ghost".into(),
            Some(json!({ "maintenance": true })),
            404,
            "not_found",
            "does not exist",
        ),
        (
            Method::DELETE,
            "/v1/groups/g".into(),
            None,
            409,
            "in_use",
            "still carries apps app",
        ),
        (
            Method::PATCH,
            "/v1/groups/g".into(),
            Some(json!({ "name": "bad name!" })),
            400,
            "invalid_name",
            "is not valid",
        ),
        // Names an admin gives refuse control characters (a forged line, a terminal escape).
        (
            Method::POST,
            "/v1/groups".into(),
            Some(json!({ "name": "g2\n\x1b[31m" })),
            400,
            "invalid_name",
            "is not valid",
        ),
        (
            Method::PATCH,
            "/v1/groups/g".into(),
            Some(json!({ "name": "g\r\nforged" })),
            400,
            "invalid_name",
            "is not valid",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish(
                "b\n\x1b[31m",
                "https://b.localhost",
                &app.url(),
                "g",
            )),
            400,
            "invalid_app",
            "is not valid",
        ),
        (
            Method::PATCH,
            "/v1/apps/app".into(),
            Some(json!({ "name": "app\u{202e}" })),
            400,
            "invalid_app",
            "is not valid",
        ),
        (
            Method::POST,
            "/v1/apps".into(),
            Some(publish(
                "b",
                "https://b.localhost",
                &app.url(),
                "g\n\x1b[31m",
            )),
            400,
            "unknown_group",
            "does not exist",
        ),
        (
            Method::PATCH,
            format!("/v1/connectors/{}", c.id),
            Some(json!({ "group": "nope" })),
            400,
            "unknown_group",
            "does not exist",
        ),
        (
            Method::PATCH,
            "/v1/apps/app".into(),
            Some(json!({ "issuer_verifies_email": true })),
            400,
            "invalid_app",
            "only with preauth \"oidc\"",
        ),
        (
            Method::POST,
            "/v1/users/nobody@example.com/email-verified".into(),
            Some(json!({ "verified": true })),
            404,
            "not_found",
            "does not exist",
        ),
        (
            Method::POST,
            "/v1/users/nobody@example.com/email-verified".into(),
            Some(json!({ "verified": "yes" })),
            422,
            "bad_json",
            "",
        ),
        (
            Method::POST,
            "/v1/connectors/c_ghost/revoke".into(),
            None,
            404,
            "not_found",
            "does not exist",
        ),
        (
            Method::POST,
            "/v1/admin-tokens".into(),
            Some(json!({ "name": "t", "ttl_secs": 0 })),
            400,
            "invalid_ttl",
            "out of range",
        ),
        (
            Method::GET,
            "/v1/audit?since=yesterday".into(),
            None,
            400,
            "invalid_time",
            "RFC 3339",
        ),
        (
            Method::GET,
            "/v1/audit?limit=0".into(),
            None,
            400,
            "invalid_limit",
            "out of range",
        ),
        (
            Method::GET,
            "/v1/audit?cursor=abc".into(),
            None,
            400,
            "invalid_cursor",
            "next_cursor",
        ),
    ];
    for (method, path, body, status, code, fragment) in cases {
        let (got, answer, headers) = edge.api(method.clone(), &path, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(fragment),
            "{method} {path}: {message:?} lacks {fragment:?}"
        );
        assert!(
            !message.chars().any(char::is_control),
            "{method} {path}: the message carries a control character: {message:?}"
        );
        assert_eq!(
            answer["error"]["request_id"].as_str(),
            headers["x-request-id"].to_str().ok(),
            "the error names its request ID"
        );
    }
    // Forged and missing admin tokens.
    for token in ["pat_forged", ""] {
        let (status, answer, _) = edge
            .api_as(
                token,
                Method::POST,
                "/v1/groups",
                Some(json!({ "name": "z" })),
            )
            .await;
        assert_eq!(status, 401, "{answer}");
    }
    // Malformed CSRs and CSRs asking for more than a key, on renewal.
    let client = edge.connector_client(&c.state_dir);
    for csr in [
        "",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        &csr_with_extension(),
        &csr_with_subject(),
    ] {
        let resp = client
            .post(format!("https://{}/v1/connector/renew", edge.connector))
            .json(&json!({ "csr_pem": csr }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_csr", "{body}");
    }
    // Renewal without a client certificate.
    let anonymous = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    let resp = reqwest::Client::builder()
        .use_preconfigured_tls(anonymous)
        .build()
        .unwrap()
        .post(format!("https://{}/v1/connector/renew", edge.connector))
        .json(&json!({ "csr_pem": postern_pki::generate_key_and_csr().unwrap().csr_pem }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A forged registration token: refused, nothing written, and recorded as a failure.
    let dir = tempfile::tempdir().unwrap();
    let out = edge.register("pst_forged", &dir.path().join("c")).await;
    assert!(!out.status.success());
    let refused = trail(&edge, "action=connector.register").await;
    assert_eq!(refused.last().unwrap().3, "failure");
    let renewals = trail(&edge, "action=connector.renew").await;
    assert_eq!(
        renewals.len(),
        5,
        "four bad CSRs and one call without a certificate"
    );
    assert!(renewals.iter().all(|e| e.3 == "failure"));

    assert_eq!(snapshot(&edge).await, before, "bad input changed the state");
    // The CLI says what is wrong in one line and exits non-zero.
    let out = edge
        .admin(&["app", "update", "ghost", "--maintenance", "on"])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    let out = edge.admin(&["app", "update", "app"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to change"));
}

/// A CSR that asks for a subject beyond a common name.
fn csr_with_subject() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "c_someone_else");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Evil Corp");
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// A CSR that asks for a subject alternative name: the edge must refuse it, not trim it.
fn csr_with_extension() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// `apply -f` of the file `name` holding `content` fails, saying `fragment`.
async fn apply_refused(
    edge: &Edge,
    dir: &std::path::Path,
    name: &str,
    content: &str,
    fragment: &str,
) {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let out = edge.admin(&["apply", "-f", path.to_str().unwrap()]).await;
    assert!(!out.status.success(), "{name} was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(fragment), "{name}: {stderr}");
}

#[tokio::test]
async fn apply_makes_the_edge_match_a_file_and_is_idempotent() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    let port = edge.public.port();
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("postern.toml");
    std::fs::write(
        &toml_path,
        format!(
            r#"
[[groups]]
name = "office"

[[apps]]
name = "wiki"
external_url = "https://wiki.localhost:{port}"
internal_url = "{internal}"
group = "office"

[[apps]]
name = "crm"
external_url = "https://crm.localhost:{port}"
internal_url = "{internal}"
group = "office"
backend_timeout = "30s"

[[apps]]
name = "hr"
external_url = "https://hr.localhost:{port}"
internal_url = "{internal}"
group = "office"
preauth = "oidc"
require_mfa = true
cookie_persistent = true
"#,
            internal = app.url()
        ),
    )
    .unwrap();
    let file = toml_path.to_str().unwrap();

    let plan = edge.admin_ok(&["apply", "-f", file, "--dry-run"]).await;
    assert!(plan.contains("+ group office"), "{plan}");
    assert!(
        plan.contains("+ app wiki") && plan.contains("+ app crm") && plan.contains("+ app hr"),
        "{plan}"
    );
    assert!(plan.contains("dry run: 4 change(s) not applied"), "{plan}");
    let (_, apps, _) = edge.api(Method::GET, "/v1/apps", None).await;
    assert!(
        apps.as_array().unwrap().is_empty(),
        "a dry run changed the edge"
    );

    let applied = edge.admin_ok(&["apply", "-f", file]).await;
    assert!(applied.contains("applied 4 change(s)"), "{applied}");
    let (_, apps, _) = edge.api(Method::GET, "/v1/apps", None).await;
    assert_eq!(apps.as_array().unwrap().len(), 3);
    assert_eq!(apps[0]["name"], "crm");
    assert_eq!(apps[0]["backend_timeout_secs"], 30);
    let (_, hr, _) = edge.api(Method::GET, "/v1/apps/hr", None).await;
    assert_eq!(hr["sign_in"]["cookie_persistent"], true, "{hr}");
    assert_eq!(hr["sign_in"]["require_mfa"], true, "{hr}");
    let events = trail(&edge, "limit=1000").await.len();

    let again = edge.admin_ok(&["apply", "-f", file]).await;
    assert!(again.contains("no changes"), "{again}");
    assert_eq!(
        trail(&edge, "limit=1000").await.len(),
        events,
        "an idempotent apply changed something"
    );

    // `app update` takes the settings by the same names, a switch as on or off (alone: on); the
    // file then finds exactly what changed and puts it back.
    edge.admin_ok(&[
        "app",
        "update",
        "hr",
        "--cookie-persistent",
        "off",
        "--require-mfa",
        "off",
    ])
    .await;
    edge.admin_ok(&[
        "app",
        "update",
        "hr",
        "--cookie-http-only",
        "off",
        "--preserve-host",
    ])
    .await;
    let (_, hr, _) = edge.api(Method::GET, "/v1/apps/hr", None).await;
    assert_eq!(
        (
            &hr["sign_in"]["cookie_persistent"],
            &hr["sign_in"]["require_mfa"],
            &hr["sign_in"]["cookie_http_only"],
            &hr["preserve_host"]
        ),
        (&json!(false), &json!(false), &json!(false), &json!(true)),
        "{hr}"
    );
    let back: Value = serde_json::from_str(
        &edge
            .admin_ok(&["apply", "-f", file, "--dry-run", "--json"])
            .await,
    )
    .unwrap();
    let fields = &back["changes"][0]["fields"];
    assert_eq!(back["changes"].as_array().unwrap().len(), 1, "{back}");
    for (field, from, to) in [
        ("cookie_persistent", false, true),
        ("require_mfa", false, true),
        ("cookie_http_only", false, true),
        ("preserve_host", true, false),
    ] {
        assert_eq!(fields[field], json!([from, to]), "{field}: {back}");
    }
    assert_eq!(fields.as_object().unwrap().len(), 4, "{back}");
    edge.admin_ok(&["apply", "-f", file]).await;
    let again = edge.admin_ok(&["apply", "-f", file]).await;
    assert!(again.contains("no changes"), "{again}");

    // The same state in YAML, with one change: a diff, then the update.
    let other = backends::app().await;
    let yaml_path = dir.path().join("postern.yaml");
    std::fs::write(
        &yaml_path,
        format!(
            "groups:\n  - name: office\napps:\n  - name: wiki\n    external_url: https://wiki.localhost:{port}\n    internal_url: {}\n    group: office\n    maintenance: true\n",
            other.url()
        ),
    )
    .unwrap();
    let yaml = yaml_path.to_str().unwrap();
    let diff: Value = serde_json::from_str(
        &edge
            .admin_ok(&["apply", "-f", yaml, "--dry-run", "--json"])
            .await,
    )
    .unwrap();
    assert_eq!(diff["dry_run"], true);
    let changes = diff["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{diff}");
    assert_eq!(changes[0]["op"], "update_app");
    assert_eq!(changes[0]["fields"]["maintenance"], json!([false, true]));
    assert_eq!(changes[0]["fields"]["internal_url"][1], other.url());
    edge.admin_ok(&["apply", "-f", yaml]).await;
    let (_, wiki, _) = edge.api(Method::GET, "/v1/apps/wiki", None).await;
    assert_eq!(wiki["maintenance"], true);
    assert_eq!(wiki["internal_url"], other.url());
    // crm is not in the YAML file and is left alone.
    let (status, _, _) = edge.api(Method::GET, "/v1/apps/crm", None).await;
    assert_eq!(status, 200);

    // Bad files are refused whole, naming the problem, and change nothing.
    let before = snapshot(&edge).await;
    let bad = [
        ("unknown.toml", "[[apps]]\nname = \"x\"\nsurprise = true\n", "unknown field"),
        ("url.toml", &format!("[[apps]]\nname = \"x\"\nexternal_url = \"http://x.localhost\"\ninternal_url = \"{}\"\ngroup = \"office\"\n", app.url()), "must use https"),
        ("group.yaml", &format!("apps:\n  - name: x\n    external_url: https://x.localhost\n    internal_url: {}\n    group: nowhere\n", app.url()), "neither the edge nor the file"),
        ("taken.yaml", &format!("groups: [{{name: later}}]\napps:\n  - name: x\n    external_url: https://wiki.localhost:{port}\n    internal_url: {}\n    group: office\n", app.url()), "already uses"),
        ("twice.yaml", "groups: [{name: a}, {name: a}]\n", "listed twice"),
        ("config.json", "{}", "must end in .toml, .yaml or .yml"),
    ];
    for (name, content, fragment) in bad {
        apply_refused(&edge, dir.path(), name, content, fragment).await;
    }
    assert_eq!(snapshot(&edge).await, before);
}

#[tokio::test]
async fn apply_sets_named_locations_and_policies_checked_as_a_whole() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    let port = edge.public.port();
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("access.toml");
    // The app, the location and the policies that name them arrive in one file.
    std::fs::write(
        &toml_path,
        format!(
            r#"
[[groups]]
name = "office"

[[apps]]
name = "payroll"
external_url = "https://payroll.localhost:{port}"
internal_url = "{internal}"
group = "office"

[[locations]]
name = "hq"
cidrs = ["10.1.0.0/16"]
countries = ["gb"]
trusted = true

[[policies]]
name = "payroll from hq only"
state = "on"
users = {{ include = ["all"] }}
apps = {{ include = ["app:payroll"] }}
conditions = {{ locations = {{ include = ["any"], exclude = ["location:hq"] }} }}
grant = {{ block = true }}

[[policies]]
name = "mfa everywhere"
state = "report-only"
users = {{ include = ["all"], exclude = ["admins"] }}
apps = {{ include = ["all"] }}
grant = {{ require = ["mfa"] }}
"#,
            internal = app.url()
        ),
    )
    .unwrap();
    let file = toml_path.to_str().unwrap();
    let plan = edge.admin_ok(&["apply", "-f", file, "--dry-run"]).await;
    for line in [
        "+ location hq",
        "+ policy payroll from hq only",
        "+ policy mfa everywhere",
        "dry run: 5 change(s) not applied",
    ] {
        assert!(plan.contains(line), "{line}: {plan}");
    }
    let applied = edge.admin_ok(&["apply", "-f", file]).await;
    assert!(applied.contains("applied 5 change(s)"), "{applied}");
    let policies: Value =
        serde_json::from_str(&edge.admin_ok(&["policy", "list", "--json"]).await).unwrap();
    let names: Vec<_> = policies
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["payroll from hq only", "mfa everywhere"]);
    let (_, locations, _) = edge.api(Method::GET, "/v1/locations", None).await;
    assert_eq!(locations[0]["countries"], json!(["GB"]));
    // What-if sees them at once: outside hq, payroll is blocked by the file's policy.
    let what_if: Value = serde_json::from_str(
        &edge
            .admin_ok(&[
                "policy",
                "what-if",
                "--user",
                "ada@example.com",
                "--app",
                "payroll",
                "--ip",
                "192.0.2.1",
                "--json",
            ])
            .await,
    )
    .unwrap();
    assert_eq!(what_if["result"], "block", "{what_if}");
    assert_eq!(what_if["policy"], "payroll from hq only");
    let again = edge.admin_ok(&["apply", "-f", file]).await;
    assert!(again.contains("no changes"), "{again}");

    // One policy changed in YAML: a diff of its fields, then the change.
    let yaml_path = dir.path().join("access.yaml");
    std::fs::write(
        &yaml_path,
        "policies:\n  - name: mfa everywhere\n    state: on\n    users: { include: [all], exclude: [admins] }\n    apps: { include: [all] }\n    grant: { require: [mfa] }\n",
    )
    .unwrap();
    let yaml = yaml_path.to_str().unwrap();
    let diff: Value = serde_json::from_str(
        &edge
            .admin_ok(&["apply", "-f", yaml, "--dry-run", "--json"])
            .await,
    )
    .unwrap();
    let changes = diff["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{diff}");
    assert_eq!(changes[0]["op"], "put_policy");
    assert_eq!(
        changes[0]["fields"],
        json!({ "state": ["report-only", "on"] })
    );
    edge.admin_ok(&["apply", "-f", yaml]).await;
    let (_, policy, _) = edge.api(Method::GET, "/v1/policies", None).await;
    assert_eq!(policy[1]["state"], "on");

    // A file that would leave the policies unusable is refused whole, naming the policy and
    // field, before anything is sent: not even its valid location is created.
    let before = snapshot(&edge).await;
    let policy = |name: &str, rest: &str| {
        format!("  - name: {name}\n    state: on\n    users: {{ include: [all] }}\n    apps: {{ include: [all] }}\n    grant: {{ block: true }}\n{rest}")
    };
    let ok_location = "locations:\n  - name: branch\n    cidrs: [10.2.0.0/16]\n";
    let bad = [
        (
            "nowhere.yaml",
            format!("{ok_location}policies:\n{}", policy("p", "    conditions: { locations: { include: [location:nowhere] } }\n")),
            "p: conditions.locations.include[0]: no location is named \"nowhere\"",
        ),
        (
            "group.yaml",
            format!("{ok_location}policies:\n  - name: g\n    state: on\n    users: {{ include: [group:ghosts] }}\n    apps: {{ include: [all] }}\n    grant: {{ block: true }}\n"),
            "g: users.include[0]: no group is named \"ghosts\"",
        ),
        (
            "app.yaml",
            format!("{ok_location}policies:\n  - name: a\n    state: on\n    users: {{ include: [all] }}\n    apps: {{ include: [app:ghost] }}\n    grant: {{ block: true }}\n"),
            "a: apps.include[0]: no app is named \"ghost\"",
        ),
        (
            "country.yaml",
            "locations:\n  - name: nowhere\n    countries: [XX]\n".to_owned(),
            "nowhere: countries[0]",
        ),
        (
            "cidr.yaml",
            "locations:\n  - name: bad\n    cidrs: [10.0.0.0/99]\n".to_owned(),
            "is not valid",
        ),
        (
            "twice.yaml",
            format!("policies:\n{}{}", policy("same", ""), policy("same", "")),
            "policy \"same\" is listed twice",
        ),
    ];
    for (name, content, fragment) in bad {
        apply_refused(&edge, dir.path(), name, &content, fragment).await;
    }
    assert_eq!(snapshot(&edge).await, before);
}

/// Changes that would leave the stored policies unusable (every signed-in request refused) or
/// silently switched off are refused, at once or when they race.
#[tokio::test]
async fn policy_changes_cannot_leave_the_edge_unable_to_decide_or_fail_open() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("hr", "hr.localhost", &app.url(), "g", &[])
        .await;
    let what_if = |ip: &'static str| {
        let edge = &edge;
        async move {
            edge.api(
                Method::POST,
                "/v1/policies/what-if",
                Some(json!({"user": "eve@example.com", "app": "hr", "ip": ip})),
            )
            .await
        }
    };
    let block = |location: &str| {
        json!({
            "name": format!("hr not from {location}"), "state": "on",
            "users": {"include": ["all"]}, "apps": {"include": ["app:hr"]},
            "conditions": {"locations": {"include": [format!("location:{location}")]}},
            "grant": {"block": true},
        })
    };

    // A location deleted while a policy naming it is stored, twenty times at once: one of the
    // two wins each time, and the edge can still decide.
    for i in 0..20 {
        let name = format!("racy{i}");
        let (status, _, _) = edge
            .api(
                Method::PUT,
                &format!("/v1/locations/{name}"),
                Some(json!({"name": name, "cidrs": ["192.0.2.0/24"]})),
            )
            .await;
        assert_eq!(status, 201);
        let policy = block(&name);
        let policy_name = policy["name"].as_str().unwrap().to_owned();
        let (put_path, delete_path) = (
            format!("/v1/policies/{}", policy_name.replace(' ', "%20")),
            format!("/v1/locations/{name}"),
        );
        let put = edge.api(Method::PUT, &put_path, Some(policy));
        let delete = edge.api(Method::DELETE, &delete_path, None);
        let ((put, _, _), (deleted, _, _)) = tokio::join!(put, delete);
        assert!(
            matches!((put, deleted), (201, 409) | (400, 204)),
            "both went through: {put} {deleted}"
        );
    }
    let (status, v, _) = what_if("192.0.2.1").await;
    assert_eq!(status, 200, "{v}");

    // Renaming or deleting an app a policy names is refused, naming the policy.
    let (status, body, _) = edge
        .api(Method::PATCH, "/v1/apps/hr", Some(json!({"name": "hr2"})))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("hr not from racy"));
    let (status, _, _) = edge.api(Method::DELETE, "/v1/apps/hr", None).await;
    assert_eq!(status, 409);
    let (_, v, _) = what_if("192.0.2.1").await;
    assert_eq!(v["result"], "block", "{v}");

    // Names the API itself uses, and times beyond any calendar, are refused.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reserved.yaml");
    std::fs::write(
        &file,
        "locations: [{ name: fresh, cidrs: [198.51.100.0/24] }]\npolicies:\n  - { name: what-if, state: on, users: { include: [all] }, apps: { include: [all] }, grant: { block: true } }\n",
    )
    .unwrap();
    let out = edge.admin(&["apply", "-f", file.to_str().unwrap()]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("what-if endpoint"),
        "{err}"
    );
    let (_, locations, _) = edge.api(Method::GET, "/v1/locations", None).await;
    assert!(
        !locations.to_string().contains("fresh"),
        "nothing of the file was sent"
    );
    let out = edge
        .admin(&[
            "policy",
            "what-if",
            "--user",
            "eve@example.com",
            "--app",
            "hr",
            "--ip",
            "192.0.2.1",
            "--at",
            "9223372036854775807",
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("year 9999"), "{err}");
    let (status, _, _) = what_if("192.0.2.1").await;
    assert_eq!(status, 200, "the edge still answers");
}

/// `apply` also makes the directory match: users (created with the password in their
/// password_file, enabled or not, their directory groups), who is assigned to an app, and
/// clients (a new one's secret written owner-only); `--prune` removes what the file no longer
/// names, of each kind it lists, and shows it first with `--dry-run`.
#[tokio::test]
async fn apply_covers_users_assignments_and_clients_and_prunes() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    let port = edge.public.port();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("start.pw");
    std::fs::write(&pw, "a long enough passphrase\n").unwrap();
    let secret = dir.path().join("grafana.secret");
    let write = |name: &str, users: &str, apps_extra: &str, more: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                r#"
[[groups]]
name = "office"
{more}
[[apps]]
name = "wiki"
external_url = "https://wiki.localhost:{port}"
internal_url = "{internal}"
group = "office"
preauth = "oidc"
assignment_required = true
{apps_extra}
{users}
"#,
                internal = app.url(),
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let first = write(
        "first.toml",
        &format!(
            r#"
[[users]]
email = "ann@example.com"
password_file = "{pw}"
groups = ["staff"]

[[users]]
email = "bob@example.com"
password_file = "{pw}"
enabled = false

[[clients]]
name = "grafana"
redirect_uris = ["https://grafana.example.com/login/generic_oauth"]
secret_file = "{secret}"

[[clients]]
name = "spa"
redirect_uris = ["https://spa.example.com/cb"]
public = true
"#,
            pw = pw.display(),
            secret = secret.display()
        ),
        r#"assignments = [{ user = "ann@example.com" }, { group = "staff" }]"#,
        "[[groups]]\nname = \"old\"\n[[apps]]\nname = \"crm\"\nexternal_url = \"https://crm.localhost\"\ninternal_url = \"http://127.0.0.1:9/\"\ngroup = \"office\"\n",
    );
    let plan = edge.admin_ok(&["apply", "-f", &first, "--dry-run"]).await;
    for line in [
        "+ user ann@example.com",
        "+ user bob@example.com",
        "+ assignment wiki: user ann@example.com",
        "+ assignment wiki: group staff",
        "+ client grafana",
        "+ client spa",
    ] {
        assert!(plan.contains(line), "{line} missing from:\n{plan}");
    }
    assert!(!secret.exists(), "a dry run wrote a secret");
    edge.admin_ok(&["apply", "-f", &first]).await;
    let (_, ann, _) = edge
        .api(Method::GET, "/v1/users/ann@example.com", None)
        .await;
    assert_eq!(ann["groups"], json!(["staff"]), "{ann}");
    let (_, bob, _) = edge
        .api(Method::GET, "/v1/users/bob@example.com", None)
        .await;
    assert_eq!(bob["enabled"], false, "{bob}");
    let (_, assigned, _) = edge
        .api(Method::GET, "/v1/apps/wiki/assignments", None)
        .await;
    assert_eq!(assigned.as_array().unwrap().len(), 2, "{assigned}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!std::fs::read_to_string(&secret).unwrap().trim().is_empty());
    let again = edge.admin_ok(&["apply", "-f", &first]).await;
    assert!(again.contains("no changes"), "{again}");

    // A user changed outside the file is pruned (disabled); crm, the old group, the spa client
    // and one assignment go; ann leaves her group.
    edge.user("carl@example.com", "a long enough passphrase", &[])
        .await;
    let second = write(
        "second.toml",
        "[[users]]\nemail = \"ann@example.com\"\ngroups = []\n\n[[users]]\nemail = \"bob@example.com\"\nenabled = false\n\n[[clients]]\nname = \"grafana\"\nredirect_uris = [\"https://grafana.example.com/login/generic_oauth\"]\n",
        r#"assignments = [{ group = "staff" }]"#,
        "",
    );
    let without = edge.admin_ok(&["apply", "-f", &second, "--dry-run"]).await;
    assert!(
        !without.contains("- app crm"),
        "pruned without --prune: {without}"
    );
    let plan = edge
        .admin_ok(&["apply", "-f", &second, "--dry-run", "--prune"])
        .await;
    for line in [
        "- assignment wiki: user ann@example.com",
        "~ user ann@example.com",
        "groups: [\"staff\"] -> []",
        "- app crm",
        "- group old",
        "- client spa",
        "- user (disabled) carl@example.com",
    ] {
        assert!(plan.contains(line), "{line} missing from:\n{plan}");
    }
    assert!(!plan.contains("bob@example.com"), "{plan}");
    let (_, crm, _) = edge.api(Method::GET, "/v1/apps/crm", None).await;
    assert_eq!(crm["name"], "crm", "a dry run pruned");
    edge.admin_ok(&["apply", "-f", &second, "--prune"]).await;
    let (status, _, _) = edge.api(Method::GET, "/v1/apps/crm", None).await;
    assert_eq!(status, 404);
    let (_, carl, _) = edge
        .api(Method::GET, "/v1/users/carl@example.com", None)
        .await;
    assert_eq!(carl["enabled"], false, "{carl}");
    let (_, clients, _) = edge.api(Method::GET, "/v1/clients", None).await;
    let names: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["app"].is_null())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["grafana"]);
    let again = edge.admin_ok(&["apply", "-f", &second, "--prune"]).await;
    assert!(again.contains("no changes"), "{again}");

    // What apply cannot change is refused, naming the field and what to do, changing nothing.
    let before = snapshot(&edge).await;
    let admin = write(
        "admin.toml",
        "[[users]]\nemail = \"ann@example.com\"\nadmin = true\n",
        "",
        "",
    );
    let out = edge.admin(&["apply", "-f", &admin]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin is false, the file says true"), "{err}");
    let stranger = write(
        "new.toml",
        "[[users]]\nemail = \"dan@example.com\"\n",
        "",
        "",
    );
    let out = edge.admin(&["apply", "-f", &stranger]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("give password_file"));
    // A new client's secret exists once: where it would be written is checked before anything
    // is created.
    let (_, clients_before, _) = edge.api(Method::GET, "/v1/clients", None).await;
    for (clients, expected) in [
        (
            format!(
                "[[clients]]\nname = \"a\"\nredirect_uris = [\"https://a.example.com/cb\"]\nsecret_file = \"{}/no-such-dir/a.secret\"\n",
                dir.path().display()
            ),
            "its directory does not exist",
        ),
        (
            format!(
                "[[clients]]\nname = \"a\"\nredirect_uris = [\"https://a.example.com/cb\"]\nsecret_file = \"{0}/shared.secret\"\n\
                 [[clients]]\nname = \"b\"\nredirect_uris = [\"https://b.example.com/cb\"]\nsecret_file = \"{0}/shared.secret\"\n",
                dir.path().display()
            ),
            "is named by another client too",
        ),
    ] {
        let file = write("clients.toml", &clients, "", "");
        let out = edge.admin(&["apply", "-f", &file]).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
    let (_, clients_after, _) = edge.api(Method::GET, "/v1/clients", None).await;
    assert_eq!(clients_after, clients_before);
    assert_eq!(snapshot(&edge).await, before);
    // Leaving out a user's settings keeps them; pruning every admin away is refused.
    let (status, _, _) = edge
        .api(
            Method::POST,
            "/v1/users",
            Some(json!({"email": "root@example.com", "password": "a long enough passphrase", "admin": true})),
        )
        .await;
    assert_eq!(status, 201);
    let users_before = edge.api(Method::GET, "/v1/users", None).await.1;
    let quiet = write(
        "quiet.toml",
        "[[users]]\nemail = \"ann@example.com\"\n[[users]]\nemail = \"root@example.com\"\n",
        "",
        "",
    );
    let plan = edge.admin_ok(&["apply", "-f", &quiet]).await;
    assert!(plan.contains("no changes"), "{plan}");
    let no_admin = write(
        "no-admin.toml",
        "[[users]]\nemail = \"ann@example.com\"\n",
        "",
        "",
    );
    let out = edge.admin(&["apply", "-f", &no_admin, "--prune"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every enabled admin"), "{err}");
    // A plan that the edge would refuse half-way is refused whole, before any change: a weak
    // password, a pruned group an app stays in, a pruned location a policy still names.
    let weak = dir.path().join("weak.pw");
    std::fs::write(&weak, "password\n").unwrap();
    let weak_user = write(
        "weak.toml",
        &format!(
            "[[users]]\nemail = \"eve@example.com\"\npassword_file = \"{}\"\n",
            weak.display()
        ),
        "",
        "",
    );
    let hq = "[[locations]]\nname = \"hq\"\ncidrs = [\"10.1.0.0/16\"]\n\
              [[policies]]\nname = \"wiki from hq\"\nstate = \"on\"\nusers = { include = [\"all\"] }\n\
              apps = { include = [\"app:wiki\"] }\n\
              conditions = { locations = { include = [\"any\"], exclude = [\"location:hq\"] } }\n\
              grant = { block = true }\n";
    let with_hq = write("hq.toml", "", "", hq);
    edge.admin_ok(&["apply", "-f", &with_hq]).await;
    let (status, _, _) = edge
        .api(Method::POST, "/v1/groups", Some(json!({"name": "spare"})))
        .await;
    assert_eq!(status, 201);
    let before = snapshot(&edge).await;
    let lab_only = write(
        "lab.toml",
        "",
        "",
        "[[locations]]\nname = \"lab\"\ncidrs = [\"10.2.0.0/16\"]\n",
    );
    let side_app = write(
        "side.toml",
        "",
        "",
        &format!(
            "[[apps]]\nname = \"side\"\nexternal_url = \"https://side.localhost:{port}\"\ninternal_url = \"http://127.0.0.1:9/\"\ngroup = \"spare\"\n"
        ),
    );
    for (file, prune, expected) in [
        (&weak_user, false, "the password in"),
        (&lab_only, true, "after --prune"),
        (&side_app, true, "which app \"side\" is published through"),
    ] {
        let mut args = vec!["apply", "-f", file.as_str()];
        if prune {
            args.push("--prune");
        }
        let out = edge.admin(&args).await;
        assert!(!out.status.success(), "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
    assert_eq!(
        edge.api(Method::GET, "/v1/users", None).await.1,
        users_before
    );
    assert_eq!(snapshot(&edge).await, before);
}
