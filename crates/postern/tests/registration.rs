//! Connector registration and the connector listener's certificate checks, with real processes.

mod common;

use std::sync::Arc;

use common::Edge;

fn assert_refused(out: &std::process::Output, fragment: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a refusal, got success");
    assert!(
        stderr.contains(fragment),
        "stderr lacks {fragment:?}: {stderr}"
    );
}

#[tokio::test]
async fn bad_registration_tokens_are_refused_and_store_nothing() {
    let edge = Edge::start(&[]).await;
    edge.group("g").await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("c");

    let out = edge.register("pst_not-a-real-token", &dir).await;
    assert_refused(&out, "not known to this edge");
    assert!(!dir.exists(), "a refused registration wrote {dir:?}");

    let token = edge
        .admin_ok(&["connector", "token", "--group", "g", "--ttl", "1s"])
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let out = edge.register(token.trim(), &dir).await;
    assert_refused(&out, "expired");
    assert!(!dir.exists());

    let token = edge.token("g").await;
    let out = edge.register(&token, &dir).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = state.path().join("other");
    let out = edge.register(&token, &other).await;
    assert_refused(&out, "already used");
    assert!(!other.exists());

    // Registering into a directory that already holds a connector is refused before any call.
    let out = edge.register(&edge.token("g").await, &dir).await;
    assert_refused(&out, "already holds a registered connector");

    // Exactly one connector exists.
    let list: serde_json::Value =
        serde_json::from_str(&edge.admin_ok(&["connector", "list", "--json"]).await).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_connector_key_stays_private() {
    let edge = Edge::start(&[]).await;
    edge.group("g").await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("c");
    let out = edge.register(&edge.token("g").await, &dir).await;
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("connector-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for f in ["ca-key.pem", "connector-ca-key.pem", "admin-token"] {
        let mode = std::fs::metadata(edge.dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

/// Opens a TLS 1.3 connection to the connector listener with the tunnel ALPN and the given client
/// identity, and reports how the first read ends.
async fn tunnel_handshake(edge: &Edge, identity: Option<(String, String)>) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let alpn = vec![postern_proto::tunnel::TUNNEL_ALPN.to_vec()];
    let config = match identity {
        Some((cert, key)) => {
            postern_pki::connector_client_config(&edge.ca_pem(), &cert, &key, alpn).unwrap()
        }
        None => {
            let mut c = postern_pki::client_config(&edge.ca_pem(), alpn).unwrap();
            c.alpn_protocols = vec![postern_proto::tunnel::TUNNEL_ALPN.to_vec()];
            c
        }
    };
    let tcp = tokio::net::TcpStream::connect(edge.connector)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // In TLS 1.3 the server judges the client certificate after the client's handshake finished;
    // its verdict arrives with the first read.
    let mut buf = [0u8; 64];
    match tokio::time::timeout(common::READY_TIMEOUT, tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// A connector is known by its certificate's serial, not only by the name in it: after a renewal
/// the old certificate keeps working until the new one is first used (so a lost renewal answer
/// cannot lock the connector out), and from then on the old certificate and key are refused for
/// a config call, a tunnel and a renewal.
#[tokio::test]
async fn a_renewed_certificate_retires_the_old_one_at_its_first_use() {
    let edge = Edge::start(&[]).await;
    edge.group("g").await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("c");
    assert!(edge
        .register(&edge.token("g").await, &dir)
        .await
        .status
        .success());
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let (old_cert, old_key) = (read("connector.pem"), read("connector-key.pem"));
    let old = edge.connector_client(&dir);
    let base = format!("https://{}/v1/connector", edge.connector);
    let config = |client: &reqwest::Client| {
        let req = client.get(format!("{base}/config"));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let renew = |client: &reqwest::Client| {
        let csr = postern_pki::generate_key_and_csr().unwrap();
        let req = client
            .post(format!("{base}/renew"))
            .json(&serde_json::json!({ "csr_pem": csr.csr_pem }));
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.text().await.unwrap(),
                csr.key_pem,
            )
        }
    };
    assert_eq!(config(&old).await.0, 200);
    assert_eq!(
        tunnel_handshake(&edge, Some((old_cert.clone(), old_key.clone()))).await,
        Ok(())
    );

    // Renewed with the old certificate, as the connector does it.
    let (status, body, new_key) = renew(&old).await;
    assert_eq!(status, 200, "{body}");
    let renewed: postern_proto::api::RenewResponse = serde_json::from_str(&body).unwrap();
    // Not used yet: the old certificate still works, for calls and tunnels alike.
    assert_eq!(config(&old).await.0, 200);
    assert_eq!(
        tunnel_handshake(&edge, Some((old_cert.clone(), old_key.clone()))).await,
        Ok(())
    );

    // The new certificate's first use.
    std::fs::write(dir.join("connector.pem"), &renewed.certificate_pem).unwrap();
    std::fs::write(dir.join("connector-key.pem"), &new_key).unwrap();
    let new = edge.connector_client(&dir);
    assert_eq!(config(&new).await.0, 200);

    // From now on the old pair is refused: a config call, a tunnel, a renewal.
    assert_eq!(
        config(&old).await,
        (403, "certificate_not_current".to_owned())
    );
    let refused = tunnel_handshake(&edge, Some((old_cert, old_key))).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("closed")),
        "{refused:?}"
    );
    let (status, body, _) = renew(&old).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("certificate_not_current"), "{body}");
    // The new one goes on working.
    assert_eq!(config(&new).await.0, 200);
    assert_eq!(
        tunnel_handshake(&edge, Some((renewed.certificate_pem, new_key))).await,
        Ok(())
    );
}

/// What a caller reports about a connector is bounded and printable, or refused with a 400
/// naming the field before anything is stored; and a value that is in the store anyway (written
/// by an older edge) is shown escaped by the admin CLI, never acted on by the terminal.
#[tokio::test]
async fn reported_values_are_bounded_refused_with_control_characters_and_shown_escaped() {
    let edge = Edge::start(&[]).await;
    edge.group("g").await;
    let token = edge.token("g").await;
    let plain = reqwest::Client::builder()
        .use_preconfigured_tls(
            postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap(),
        )
        .build()
        .unwrap();
    let register_url = format!("https://{}/v1/connector/register", edge.connector);
    let register = |hostname: String, version: &str| {
        let body = serde_json::json!({
            "token": token,
            "csr_pem": postern_pki::generate_key_and_csr().unwrap().csr_pem,
            "hostname": hostname,
            "version": version,
        });
        let req = plain.post(&register_url).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let forged = "evil\n\x1b[31mred";
    for (hostname, version, field) in [
        ("h".repeat(60 * 1024), "1.0", "hostname"),
        ("h".repeat(254), "1.0", "hostname"),
        (forged.to_owned(), "1.0", "hostname"),
        ("host\u{202e}".to_owned(), "1.0", "hostname"),
        ("host".to_owned(), "1.0\r\n", "version"),
        ("host".to_owned(), &"9".repeat(65)[..], "version"),
    ] {
        let (status, body) = register(hostname, version).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
        assert!(
            !message.contains('\n') && !message.contains('\x1b'),
            "{message}"
        );
        assert!(body["error"]["request_id"].as_str().is_some(), "{body}");
    }
    // Nothing was stored: no connector, no audit event, and the token is still unused.
    let list: serde_json::Value =
        serde_json::from_str(&edge.admin_ok(&["connector", "list", "--json"]).await).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
    let (_, audit, _) = edge
        .api(
            reqwest::Method::GET,
            "/v1/audit?action=connector.register",
            None,
        )
        .await;
    assert_eq!(audit["events"].as_array().unwrap().len(), 0, "{audit}");
    let (status, body) = register("host-1".into(), "1.0").await;
    assert_eq!(status, 200, "{body}");
    let id = body["connector_id"].as_str().unwrap().to_owned();

    // Config calls report the host name and version in headers: bounded and printable too.
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("c");
    let token = edge.token("g").await;
    assert!(edge.register(&token, &dir).await.status.success());
    let client = edge.connector_client(&dir);
    let config_url = format!("https://{}/v1/connector/config", edge.connector);
    let connector_id: String = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(dir.join("registration.json")).unwrap(),
    )
    .unwrap()["connector_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hostname_of = |id: String| {
        let get = edge.api(reqwest::Method::GET, "/v1/connectors", None);
        async move {
            let (_, list, _) = get.await;
            list.as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id.as_str())
                .unwrap()["hostname"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let before = hostname_of(connector_id.clone()).await;
    for (header, value) in [
        ("postern-connector-hostname", b"h".repeat(60 * 1024)),
        ("postern-connector-hostname", b"h".repeat(254)),
        ("postern-connector-hostname", b"tab\there".to_vec()),
        ("postern-connector-hostname", b"csi\xc2\x9b31m".to_vec()),
        ("postern-connector-hostname", b"\xff\xfe".to_vec()),
        ("postern-connector-version", b"9".repeat(65)),
    ] {
        let sent = client
            .get(&config_url)
            .header(
                header,
                reqwest::header::HeaderValue::from_bytes(&value).unwrap(),
            )
            .send()
            .await;
        match sent {
            // Too large for the HTTP server's header list: refused before it reaches the edge.
            Ok(resp) if resp.status() == 431 => assert!(value.len() > 16 * 1024, "{header}"),
            Ok(resp) => {
                assert_eq!(resp.status(), 400, "{header} of {} bytes", value.len());
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "invalid_field");
                assert!(body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(header));
            }
            Err(e) => panic!("{header}: {e}"),
        }
        assert_eq!(hostname_of(connector_id.clone()).await, before);
    }

    // A value with control characters already in the store (an older edge accepted them) is
    // shown escaped in the CLI's table, detail view and audit log, never raw.
    let store = postern_store::Store::open_sqlite(&edge.dir.path().join("state.db"))
        .await
        .unwrap();
    store
        .connector_seen(
            &id,
            &postern_store::ConnectorReport {
                hostname: Some(forged.into()),
                version: Some("1\u{202e}0".into()),
                address: None,
            },
        )
        .await
        .unwrap();
    store
        .record(&postern_store::NewAuditEvent {
            actor: &format!("registration:{forged}"),
            action: "connector.register",
            target: "-",
            outcome: postern_store::Outcome::Failure,
            detail: "forged\nline",
            request_id: "r",
        })
        .await
        .unwrap();
    for args in [
        &["connector", "list"][..],
        &["connector", "show", &id][..],
        &["audit"][..],
    ] {
        let out = edge.admin_ok(args).await;
        assert!(
            !out.contains('\x1b') && !out.contains('\u{202e}'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains(r"evil\n\x1b[31mred"), "{args:?}: {out}");
        assert!(!out.contains("evil\n"), "{args:?}: {out}");
    }
    let list = edge.admin_ok(&["connector", "list"]).await;
    assert!(list.contains(r"1\u{202e}0"), "{list}");
    assert_eq!(list.lines().count(), 3, "{list}");
    let audit = edge.admin_ok(&["audit"]).await;
    assert!(audit.contains(r"forged\nline"), "{audit}");
    // JSON for scripts carries the value itself, escaped by JSON.
    let json: serde_json::Value =
        serde_json::from_str(&edge.admin_ok(&["connector", "show", &id, "--json"]).await).unwrap();
    assert_eq!(json["hostname"], forged);
}

#[tokio::test]
async fn a_client_certificate_from_a_foreign_ca_is_refused_at_the_handshake() {
    let edge = Edge::start(&[]).await;
    let foreign = tempfile::tempdir().unwrap();
    let ca = postern_pki::Ca::load_or_create(
        &foreign.path().join("ca.pem"),
        &foreign.path().join("key.pem"),
        "foreign",
    )
    .unwrap();
    let generated = postern_pki::generate_key_and_csr().unwrap();
    let cert = ca
        .sign_connector_csr(
            &generated.csr_pem,
            "c_forged",
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let err = tunnel_handshake(&edge, Some((cert.pem, generated.key_pem)))
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownCA") || err.contains("BadCertificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_tunnel_without_a_client_certificate_is_closed() {
    let edge = Edge::start(&[]).await;
    let err = tunnel_handshake(&edge, None).await.unwrap_err();
    assert!(
        err.contains("closed") || err.contains("reset") || err.contains("CertificateRequired"),
        "{err}"
    );
}

#[tokio::test]
async fn the_connector_listener_speaks_only_tls_1_3() {
    let edge = Edge::start(&[]).await;
    let config = rustls::ClientConfig::builder_with_provider(postern_pki::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates({
            let mut roots = rustls::RootCertStore::empty();
            use rustls::pki_types::pem::PemObject;
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(edge.ca_pem().as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            roots
        })
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(edge.connector)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let res = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    assert!(res.is_err(), "a TLS 1.2 handshake succeeded");
}

#[tokio::test]
async fn admin_cli_errors_name_the_fix_and_change_nothing() {
    let edge = Edge::start(&[]).await;
    edge.group("g").await;
    let out = edge.admin(&["group", "create", "g"]).await;
    assert_refused(&out, "already exists");
    let out = edge
        .admin(&[
            "app",
            "publish",
            "x",
            "--external-url",
            "http://x.localhost",
            "--internal-url",
            "http://127.0.0.1:1",
            "--group",
            "g",
        ])
        .await;
    assert_refused(&out, "must use https");
    let out = edge
        .admin(&[
            "app",
            "publish",
            "x",
            "--external-url",
            "https://x.localhost",
            "--internal-url",
            "http://127.0.0.1:1",
            "--group",
            "nope",
        ])
        .await;
    assert_refused(&out, "does not exist");
    let out = edge.admin(&["connector", "token", "--group", "nope"]).await;
    assert_refused(&out, "does not exist");
    let apps: serde_json::Value =
        serde_json::from_str(&edge.admin_ok(&["app", "list", "--json"]).await).unwrap();
    assert!(apps.as_array().unwrap().is_empty());

    // A wrong admin token.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "pat_wrong").unwrap();
    let out = edge
        .admin_with_token_file(bad.path(), &["group", "list"])
        .await;
    assert_refused(&out, "not valid for this edge");
}

#[tokio::test]
async fn state_survives_an_edge_restart_and_the_connector_redials() {
    let edge = Edge::start(&[]).await;
    let app = common::backends::app().await;
    edge.group("g").await;
    edge.publish("app", "restart.localhost", &app.url(), "g", &[])
        .await;
    let c = edge.connector("g").await;
    let connector_port = edge.connector.port();
    let dir = edge.dir;
    let mut child = edge.child;
    child.kill().await.unwrap();
    // Same connector address, so the running connector finds the edge again by itself.
    let listen = format!("127.0.0.1:{connector_port}");
    let edge = Edge::start_in(dir, &["--connector-listen", &listen]).await;
    edge.wait_tunnels(&c.id, 2).await;
    let resp = edge
        .client("restart.localhost")
        .get(edge.url("restart.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_configured_certificate_is_served_on_the_public_listener() {
    let dir = tempfile::tempdir().unwrap();
    let ca = postern_pki::Ca::load_or_create(
        &dir.path().join("own-ca.pem"),
        &dir.path().join("own-ca-key.pem"),
        "own",
    )
    .unwrap();
    let (chain, key) = ca.issue_server(&["tls.localhost".to_owned()]).unwrap();
    let chain_pem: String = chain
        .iter()
        .map(|c| common::to_pem("CERTIFICATE", c))
        .collect();
    std::fs::write(dir.path().join("chain.pem"), chain_pem).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        common::to_pem("PRIVATE KEY", key.secret_der()),
    )
    .unwrap();
    let cert = dir.path().join("chain.pem");
    let key = dir.path().join("key.pem");
    let edge = Edge::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;

    let own = postern_pki::client_config(ca.cert_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(own)
        .resolve("tls.localhost", edge.public)
        .build()
        .unwrap();
    let resp = client
        .get(edge.url("tls.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the configured certificate is served");
    // The local CA did not sign what the public listener presents.
    let local = edge.client("tls.localhost");
    assert!(local
        .get(edge.url("tls.localhost", "/"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn the_bootstrap_token_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token = "bootstrap-token-for-tests-0123456789";
    let edge = Edge::start_with(dir, &[], &[("POSTERN_BOOTSTRAP_TOKEN", token)]).await;
    assert!(
        !edge.dir.path().join("admin-token").exists(),
        "no token file when the environment sets it"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), token).unwrap();
    let out = edge
        .admin_with_token_file(file.path(), &["group", "create", "g"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
