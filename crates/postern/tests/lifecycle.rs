//! The edge's life as an operator runs it: one edge per data directory, backups taken while it
//! serves and restored into a new directory, a database from a newer Postern refused, and what
//! the binary says about itself (version, completions, man pages).

mod common;

use common::browser::{app_browser, app_status, sign_in_to_app};
use common::{backends, Edge, BIN};
use reqwest::StatusCode;

const PASSWORD: &str = "a long enough passphrase";

async fn postern(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .output()
        .await
        .unwrap()
}

/// `postern edge` on `dir` with ephemeral listeners, run to its end (for edges that refuse to
/// start).
async fn edge_on(dir: &std::path::Path) -> std::process::Output {
    let any = "127.0.0.1:0";
    let data = dir.to_str().unwrap();
    postern(&[
        "edge",
        "--data",
        data,
        "--listen",
        any,
        "--connector-listen",
        any,
        "--admin-listen",
        any,
    ])
    .await
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A backup taken from a serving edge, restored into a new directory, gives an edge that serves
/// the same apps, users, sessions and connectors: the connector redials it with the
/// certificate it already has, a browser's session cookie still works, and the user signs in.
#[tokio::test]
async fn a_restored_backup_serves_the_same_apps_users_sessions_and_connectors() {
    let first = Edge::start(&[]).await;
    let app = backends::app().await;
    first.group("g").await;
    let host = "wiki.localhost";
    first
        .publish("wiki", host, &app.url(), "g", &["--preauth", "oidc"])
        .await;
    first.user("ann@example.com", PASSWORD, &[]).await;
    let connector = first.connector("g").await;
    let url = first.url(host, "/");
    let browser = app_browser(&first, host);
    sign_in_to_app(&first, PASSWORD, &browser, &url, "ann@example.com").await;
    assert_eq!(app_status(&browser, &url).await, StatusCode::OK);

    let kept = tempfile::tempdir().unwrap();
    let backup = kept.path().join("edge.backup");
    let backup_arg = backup.to_str().unwrap();
    first.admin_ok(&["backup", "--out", backup_arg]).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the backup holds keys");
    }
    // The admin gets no second file over the first.
    let again = first.admin(&["backup", "--out", backup_arg]).await;
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("exists; give --out a new file name"),
        "{}",
        stderr(&again)
    );
    let audit = first
        .admin_ok(&["--json", "audit", "--action", "backup.create"])
        .await;
    assert!(
        audit.contains("the database and the edge's keys"),
        "{audit}"
    );

    // The edge is lost; a new directory is made from the backup.
    let (public, connector_port, admin) = (first.public, first.connector, first.admin);
    let mut first = first;
    first.child.kill().await.unwrap();
    let fresh = tempfile::tempdir().unwrap();
    // As a packaged edge's operator would run it: the service's config file in the environment
    // is the running edge's, not the restore's.
    let etc = tempfile::tempdir().unwrap();
    let config = etc.path().join("edge.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax-connections = 10\n").unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["edge", "restore", "--from", backup_arg, "--data"])
        .arg(fresh.path())
        .env("POSTERN_CONFIG", &config)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A second restore into the same directory is refused: it holds data now.
    let twice = postern(&[
        "edge",
        "restore",
        "--from",
        backup_arg,
        "--data",
        fresh.path().to_str().unwrap(),
    ])
    .await;
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("already holds an edge's data"),
        "{}",
        stderr(&twice)
    );

    let listen = |a: std::net::SocketAddr| a.to_string();
    let (p, c, a) = (listen(public), listen(connector_port), listen(admin));
    let second = Edge::start_in(
        fresh,
        &[
            "--listen",
            &p,
            "--connector-listen",
            &c,
            "--admin-listen",
            &a,
        ],
    )
    .await;
    // The same admin token, the same connector (it redials with its certificate), the same app.
    assert_eq!(second.admin_token(), first.admin_token());
    second.wait_tunnels(&connector.id, 2).await;
    let apps = second.admin_ok(&["app", "list"]).await;
    assert!(apps.contains("wiki"), "{apps}");
    // The browser's session goes on; the user signs in again from another browser.
    assert_eq!(app_status(&browser, &url).await, StatusCode::OK);
    let other = app_browser(&second, host);
    assert_eq!(app_status(&other, &url).await, StatusCode::UNAUTHORIZED);
    sign_in_to_app(&second, PASSWORD, &other, &url, "ann@example.com").await;
    assert_eq!(app_status(&other, &url).await, StatusCode::OK);
    drop(connector);
}

/// A second edge on a data directory in use is refused and names the edge holding it; a file
/// that is not a backup is refused by restore with a reason.
#[tokio::test]
async fn a_data_directory_holds_one_edge_and_restore_takes_only_backups() {
    let edge = Edge::start(&[]).await;
    let out = edge_on(edge.dir.path()).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("is in use by another edge")
            && err.contains(&format!("process {}", edge.pid())),
        "{err}"
    );
    // Nothing of the running edge was touched: it still answers.
    edge.admin_ok(&["group", "list"]).await;

    let scratch = tempfile::tempdir().unwrap();
    let bogus = scratch.path().join("notes.txt");
    std::fs::write(&bogus, "hello").unwrap();
    let target = scratch.path().join("data");
    let out = postern(&[
        "edge",
        "restore",
        "--from",
        bogus.to_str().unwrap(),
        "--data",
        target.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a Postern backup"),
        "{}",
        stderr(&out)
    );
    assert!(!target.join("state.db").exists());
}

/// A database stamped with a schema newer than the binary is refused with both versions named,
/// and left as it was.
#[tokio::test]
async fn a_database_from_a_newer_postern_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = postern_store::Store::open_sqlite(&db).await.unwrap();
    drop(store);
    let newer = postern_store::SCHEMA_VERSION + 1;
    {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .connect()
            .await
            .unwrap();
        sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
            .bind(newer)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let out = edge_on(dir.path()).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("schema version {newer}"))
            && err.contains(&format!("this Postern's {}", postern_store::SCHEMA_VERSION)),
        "{err}"
    );
}

/// `postern version` and `/v1/version` agree on the release and commit; completions and man
/// pages are generated from the command-line definition.
#[tokio::test]
async fn the_binary_says_what_it_is_and_documents_itself() {
    let out = postern(&["version"]).await;
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with(&format!("postern {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );

    let edge = Edge::start(&[]).await;
    let tls = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let v: serde_json::Value = http
        .get(format!("https://{}/v1/version", edge.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let commit = v["commit"].as_str().unwrap();
    assert!(line.contains(&format!("commit {commit},")), "{line} vs {v}");
    assert_eq!(v["schema"], postern_store::SCHEMA_VERSION);

    for shell in ["bash", "zsh", "fish"] {
        let out = postern(&["completions", shell]).await;
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("restore") && script.contains("backup"),
            "{shell}"
        );
    }
    let man = tempfile::tempdir().unwrap();
    let out = postern(&["man", "--out", man.path().to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "postern.1",
        "postern-edge.1",
        "postern-edge-restore.1",
        "postern-admin-backup.1",
    ] {
        let text = std::fs::read_to_string(man.path().join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
}

const CONNECTOR_BIN: &str = env!("CARGO_BIN_EXE_postern-connector");

/// Symbols of the binary at `path` whose names contain any of `fragments`.
fn symbols(path: &str, fragments: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("nm").arg(path).output().unwrap();
    assert!(out.status.success(), "nm {path}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| fragments.iter().any(|f| l.contains(f)))
        .map(str::to_owned)
        .collect()
}

/// The `postern-connector` binary alone registers and carries an app's requests. Neither binary
/// needs the host's OpenSSL, and the connector holds no code of the identity provider.
#[tokio::test]
async fn the_connector_binary_alone_carries_an_app() {
    for bin in [BIN, CONNECTOR_BIN] {
        let out = std::process::Command::new("ldd").arg(bin).output().unwrap();
        let libs = String::from_utf8_lossy(&out.stdout);
        assert!(
            !libs.contains("libssl") && !libs.contains("libcrypto"),
            "{bin} links the host's OpenSSL:\n{libs}"
        );
    }
    let linked = symbols(
        CONNECTOR_BIN,
        &["postern_idp", "webauthn", "postern_edge", "SSL_CTX_new"],
    );
    assert!(
        linked.is_empty(),
        "the connector links {}",
        linked.join("\n")
    );

    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("web", "web.localhost", &app.url(), "g", &[])
        .await;
    let token = edge.token("g").await;
    let state = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(CONNECTOR_BIN)
        .args([
            "register",
            "--edge",
            &format!("https://{}", edge.connector),
            "--token",
            &token,
        ])
        .arg("--state")
        .arg(state.path())
        .arg("--ca-file")
        .arg(edge.ca_path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let reg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.path().join("registration.json")).unwrap(),
    )
    .unwrap();
    let _running = tokio::process::Command::new(CONNECTOR_BIN)
        .arg("run")
        .arg("--state")
        .arg(state.path())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    edge.wait_tunnels(reg["connector_id"].as_str().unwrap(), 2)
        .await;
    let resp = edge
        .client("web.localhost")
        .get(edge.url("web.localhost", "/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let version = std::process::Command::new(CONNECTOR_BIN)
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("postern-connector "));
}

async fn check_config(
    file: &std::path::Path,
    flags: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(["edge", "--config"])
        .arg(file)
        .arg("--check-config")
        .args(flags)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap()
}

/// A config file gives every edge setting by its flag's name; the environment overrides it and a
/// flag overrides both; `--check-config` shows each setting and where it came from; a mistake
/// is refused with the file, the line and a fix, and an edge started from the file uses it.
#[tokio::test]
async fn a_config_file_under_the_environment_under_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(
        &file,
        "# the edge\n\
         listen = \"127.0.0.1:0\"\n\
         max-connections = 1000\n\
         max_connections_per_ip = 10\n\
         tls-name = [\"edge.example.com\", \"edge2.example.com\"]\n\
         idp-host = \"id.localhost\"\n\
         access-log-query = false\n",
    )
    .unwrap();
    let out = check_config(
        &file,
        &["--max-connections-per-ip", "30"],
        &[
            ("POSTERN_MAX_CONNECTIONS", "2000"),
            ("POSTERN_IDLE_TIMEOUT", "2m"),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8(out.stdout).unwrap();
    let at = |line: &str| shown.lines().any(|l| l.trim() == line);
    let file_at = |n: usize| format!("({}:{n})", file.display());
    assert!(
        at(&format!("listen = 127.0.0.1:0    {}", file_at(2))),
        "{shown}"
    );
    assert!(
        at("max-connections = 2000    (POSTERN_MAX_CONNECTIONS)"),
        "{shown}"
    );
    assert!(at("max-connections-per-ip = 30    (flag)"), "{shown}");
    assert!(at("idle-timeout = 2m    (POSTERN_IDLE_TIMEOUT)"), "{shown}");
    assert!(
        at(&format!(
            "tls-name = edge.example.com, edge2.example.com    {}",
            file_at(5)
        )),
        "{shown}"
    );
    assert!(!shown.contains("access-log-query"), "{shown}");

    // Mistakes name the file, the line and what to do.
    let cases: &[(&str, &str)] = &[
        (
            "max-conections = 5",
            ":2: unknown setting `max-conections`; did you mean `max-connections`?",
        ),
        (
            "idle-timeout = \"soon\"",
            ":2: invalid value 'soon' for '--idle-timeout",
        ),
        (
            "listen = [\"a\", \"b\"]",
            ":2: listen: takes one value, not a list",
        ),
        (
            "access-log-query = \"yes\"",
            ":2: access-log-query: give true or false",
        ),
        (
            "listen = \"x\"\nlisten = \"y\"",
            ":3: duplicate key `listen`",
        ),
        ("check-config = true", ":2: unknown setting `check-config`"),
    ];
    for (setting, expected) in cases {
        std::fs::write(&file, format!("# the edge\n{setting}\n")).unwrap();
        let out = check_config(&file, &[], &[]).await;
        assert_eq!(out.status.code(), Some(2), "{setting}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}{expected}", file.display())),
            "{setting}: {err}"
        );
    }
    // A file larger than any config is refused before it is parsed.
    std::fs::write(&file, "#".repeat(1024 * 1024 + 1)).unwrap();
    let out = check_config(&file, &[], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("larger than 1048576 bytes"),
        "{}",
        stderr(&out)
    );
    // A rule across sources: --tls-cert from the environment needs --tls-key from somewhere.
    std::fs::write(&file, "max-connections = 10\n").unwrap();
    let out = check_config(&file, &[], &[("POSTERN_TLS_CERT", "/nonexistent")]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--tls-key"), "{}", stderr(&out));
    // --check-config opens what the settings name.
    std::fs::write(&file, "geoip-db = [\"/nonexistent.mmdb\"]\n").unwrap();
    let out = check_config(&file, &[], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent.mmdb"),
        "{}",
        stderr(&out)
    );

    // An edge started from the file serves its identity provider on the file's host.
    std::fs::write(&file, "idp-host = \"id.localhost\"\n").unwrap();
    let edge = Edge::start(&["--config", file.to_str().unwrap()]).await;
    let discovery: serde_json::Value = edge
        .client("id.localhost")
        .get(edge.url("id.localhost", "/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["issuer"],
        format!("https://id.localhost:{}", edge.public.port())
    );
}
