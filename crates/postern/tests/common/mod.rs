//! A harness that runs real `postern` processes (edge, connectors, admin CLI) on ephemeral
//! loopback ports, plus the backends the tests publish.

#![allow(dead_code)]

pub mod backends;
pub mod browser;
pub mod geoip;
pub mod issuer;
pub mod load;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// How long any readiness wait may take before the test fails (a hang is a bug, not a pass).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Edge {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub public: SocketAddr,
    pub connector: SocketAddr,
    pub admin: SocketAddr,
    /// The metrics listener, with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    /// The plain-HTTP redirect listener, with `--http-listen`.
    pub http: Option<SocketAddr>,
}

impl Edge {
    pub async fn start(extra: &[&str]) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        Edge::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Edge {
        Edge::start_with(dir, extra, &[]).await
    }

    pub async fn start_with(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Edge {
        let mut defaults = Vec::new();
        for flag in ["--listen", "--connector-listen", "--admin-listen"] {
            if !extra.contains(&flag) {
                defaults.extend([flag, "127.0.0.1:0"]);
            }
        }
        let mut child = Command::new(BIN)
            .args(["edge", "--data"])
            .arg(dir.path())
            .args(defaults)
            .args(extra)
            .envs(env.iter().copied())
            .env("POSTERN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn edge");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut public, mut connector, mut admin, mut metrics) = (None, None, None, None);
        let mut http = None;
        let wants_metrics = extra.contains(&"--metrics-listen");
        let wants_http = extra.contains(&"--http-listen");
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let addr = |l: &str| {
                    l.rsplit("https://")
                        .next()
                        .unwrap()
                        .trim()
                        .parse::<SocketAddr>()
                        .ok()
                };
                let t = line.trim();
                if t.starts_with("public:") {
                    public = addr(t);
                } else if t.starts_with("connector:") {
                    connector = addr(t);
                } else if t.starts_with("admin:") {
                    admin = addr(t);
                } else if let Some(url) = t.strip_prefix("metrics:") {
                    metrics = url
                        .trim()
                        .trim_start_matches("http://")
                        .trim_end_matches("/metrics")
                        .parse::<SocketAddr>()
                        .ok();
                } else if let Some(url) = t.strip_prefix("http:") {
                    http = url
                        .trim()
                        .trim_start_matches("http://")
                        .split(' ')
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                }
                if public.is_some()
                    && connector.is_some()
                    && admin.is_some()
                    && (metrics.is_some() || !wants_metrics)
                    && (http.is_some() || !wants_http)
                {
                    break;
                }
            }
        };
        tokio::time::timeout(READY_TIMEOUT, read)
            .await
            .expect("edge did not start");
        // Keep draining stdout so the edge never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Edge {
            child,
            dir,
            public: public.expect("the edge exited before printing its addresses"),
            connector: connector.expect("the edge exited before printing its addresses"),
            admin: admin.expect("the edge exited before printing its addresses"),
            metrics,
            http,
        }
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_path()).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Runs `postern admin ARGS` against this edge.
    pub async fn admin(&self, args: &[&str]) -> std::process::Output {
        self.admin_with_token_file(&self.dir.path().join("admin-token"), args)
            .await
    }

    /// Runs `postern admin ARGS` against this edge with another token file.
    pub async fn admin_with_token_file(
        &self,
        token_file: &Path,
        args: &[&str],
    ) -> std::process::Output {
        admin_cli(
            &format!("https://{}", self.admin),
            token_file,
            &self.ca_path(),
            args,
        )
        .await
    }

    pub async fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args).await;
        assert!(
            out.status.success(),
            "postern admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub async fn group(&self, name: &str) {
        self.admin_ok(&["group", "create", name]).await;
    }

    /// Stores the conditional-access policy `name` from `yaml`, through `policy create -f`.
    pub async fn policy(&self, name: &str, yaml: &str) {
        let file: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = self.dir.path().join(format!("policy-{file}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        self.admin_ok(&["policy", "create", name, "-f", path.to_str().unwrap()])
            .await;
    }

    /// A user of the built-in directory with `password`, and `extra` flags of `user create`.
    pub async fn user(&self, email: &str, password: &str, extra: &[&str]) {
        let pw = self.dir.path().join(format!("pw-{email}"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        let mut args = vec![
            "user",
            "create",
            email,
            "--password-file",
            pw.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.admin_ok(&args).await;
    }

    /// Publishes `http://backend` at `https://HOST:PORT` in `group`.
    pub async fn publish(
        &self,
        name: &str,
        host: &str,
        internal: &str,
        group: &str,
        extra: &[&str],
    ) {
        let external = format!("https://{host}:{}", self.public.port());
        let mut args = vec![
            "app",
            "publish",
            name,
            "--external-url",
            &external,
            "--internal-url",
            internal,
            "--group",
            group,
        ];
        if !extra.contains(&"--preauth") {
            args.extend(["--preauth", "passthrough"]);
        }
        args.extend_from_slice(extra);
        self.admin_ok(&args).await;
    }

    pub async fn token(&self, group: &str) -> String {
        self.admin_ok(&["connector", "token", "--group", group])
            .await
            .trim()
            .to_owned()
    }

    /// Registers a connector in `group` with a fresh token and starts it.
    pub async fn connector(&self, group: &str) -> Connector {
        self.connector_with(group, &[]).await
    }

    /// Like [`Edge::connector`], with extra `connector run` arguments.
    pub async fn connector_with(&self, group: &str, run_args: &[&str]) -> Connector {
        let (state, state_dir, id) = self.registered(group).await;
        let child = Connector::spawn_with(&state_dir, run_args);
        let c = Connector {
            child,
            state,
            state_dir,
            id,
        };
        self.wait_tunnels(&c.id, 2).await;
        c
    }

    /// Like [`Edge::connector_with`], also collecting what the connector logs.
    pub async fn connector_logged(&self, group: &str, run_args: &[&str]) -> (Connector, LogLines) {
        let (state, state_dir, id) = self.registered(group).await;
        let mut child = Command::new(BIN)
            .args(["connector", "run", "--state"])
            .arg(&state_dir)
            .args(run_args)
            .env("POSTERN_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn connector");
        let log = LogLines::collect(child.stderr.take().unwrap());
        let c = Connector {
            child,
            state,
            state_dir,
            id,
        };
        self.wait_tunnels(&c.id, 2).await;
        (c, log)
    }

    /// Registers a connector in `group` with a fresh token: its state directory and ID.
    async fn registered(&self, group: &str) -> (tempfile::TempDir, PathBuf, String) {
        let state = tempfile::tempdir().unwrap();
        let state_dir = state.path().join("state");
        let token = self.token(group).await;
        let out = self.register(&token, &state_dir).await;
        assert!(
            out.status.success(),
            "register failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(state_dir.join("registration.json")).unwrap(),
        )
        .unwrap();
        let id = reg["connector_id"].as_str().unwrap().to_owned();
        (state, state_dir, id)
    }

    pub async fn register(&self, token: &str, state_dir: &Path) -> std::process::Output {
        Command::new(BIN)
            .args([
                "connector",
                "register",
                "--edge",
                &format!("https://{}", self.connector),
                "--token",
                token,
            ])
            .arg("--state")
            .arg(state_dir)
            .arg("--ca-file")
            .arg(self.ca_path())
            .output()
            .await
            .unwrap()
    }

    /// Waits until the edge counts exactly `n` live tunnels of connector `id`.
    pub async fn wait_tunnels(&self, id: &str, n: u64) {
        let client = self.admin_client();
        let url = format!("https://{}/v1/connectors", self.admin);
        let token = std::fs::read_to_string(self.dir.path().join("admin-token")).unwrap();
        let wait = async {
            loop {
                let list: serde_json::Value = client
                    .get(&url)
                    .bearer_auth(token.trim())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let open = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["id"] == id)
                    .map(|c| c["tunnels"].as_u64().unwrap())
                    .unwrap_or(0);
                if open == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(READY_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("connector {id} never had {n} tunnels"));
    }

    /// Calls the admin API directly with the bootstrap token: status, JSON body (`null` when
    /// empty), headers.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        self.api_as(&self.admin_token(), method, path, body).await
    }

    /// Calls the admin API directly with `token`.
    pub async fn api_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let mut req = self
            .admin_client()
            .request(method, format!("https://{}{path}", self.admin))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        };
        (status, json, headers)
    }

    /// A control-plane client that presents the client certificate in `state_dir`.
    pub fn connector_client(&self, state_dir: &Path) -> reqwest::Client {
        let read = |f: &str| std::fs::read_to_string(state_dir.join(f)).unwrap();
        let tls = postern_pki::connector_client_config(
            &self.ca_pem(),
            &read("connector.pem"),
            &read("connector-key.pem"),
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        )
        .unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// Waits until `check` holds for the connector list (as JSON), or fails after `within`.
    pub async fn wait_connectors(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&[serde_json::Value]) -> bool,
    ) {
        let wait = async {
            loop {
                let (_, list, _) = self.api(reqwest::Method::GET, "/v1/connectors", None).await;
                if check(list.as_array().unwrap()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("not within {within:?}: {what}"));
    }

    fn admin_client(&self) -> reqwest::Client {
        let tls = postern_pki::client_config(&self.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .unwrap()
    }

    /// A client for users: trusts the edge's CA and resolves `host` to the public listener.
    pub fn client(&self, host: &str) -> reqwest::Client {
        self.client_with(host, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
    }

    pub fn client_with(&self, host: &str, alpn: Vec<Vec<u8>>) -> reqwest::Client {
        let tls = postern_pki::client_config(&self.ca_pem(), alpn).unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve(host, self.public)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// A TLS connection to the public listener for `host` (SNI), offering one ALPN protocol.
    pub async fn tls_to_public(
        &self,
        host: &str,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let config = postern_pki::client_config(&self.ca_pem(), vec![alpn.to_vec()]).unwrap();
        let tcp = tokio::net::TcpStream::connect(self.public).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.public.port())
    }
}

/// Runs `postern admin ARGS` against the admin API at `admin_url`.
pub async fn admin_cli(
    admin_url: &str,
    token_file: &Path,
    ca_file: &Path,
    args: &[&str],
) -> std::process::Output {
    Command::new(BIN)
        .args(["admin", "--admin-url", admin_url])
        .arg("--token-file")
        .arg(token_file)
        .arg("--ca-file")
        .arg(ca_file)
        .args(args)
        .output()
        .await
        .unwrap()
}

pub struct Connector {
    pub child: Child,
    pub state: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub id: String,
}

impl Connector {
    pub fn spawn(state_dir: &Path) -> Child {
        Connector::spawn_with(state_dir, &[])
    }

    pub fn spawn_with(state_dir: &Path, extra: &[&str]) -> Child {
        Command::new(BIN)
            .args(["connector", "run", "--state"])
            .arg(state_dir)
            .args(extra)
            .env("POSTERN_LOG", "info")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn connector")
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }
}

/// The lines a child process writes to stderr, collected as they come and echoed to the test's
/// own stderr (so a failing test still shows them).
#[derive(Clone, Default)]
pub struct LogLines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl LogLines {
    pub fn collect(stderr: tokio::process::ChildStderr) -> LogLines {
        let log = LogLines::default();
        let lines = log.0.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("{line}");
                lines.lock().unwrap().push(line);
            }
        });
        log
    }

    /// Waits until a line contains every one of `fragments`, and returns it.
    pub async fn wait_for(&self, fragments: &[&str]) -> String {
        let wait = async {
            loop {
                let found = self
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| fragments.iter().all(|f| l.contains(f)))
                    .cloned();
                if let Some(line) = found {
                    return line;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(READY_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("no log line with {fragments:?}"))
    }

    /// Whether a line so far contains every one of `fragments`.
    pub fn has(&self, fragments: &[&str]) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|l| fragments.iter().all(|f| l.contains(f)))
    }
}

/// Sends a signal to a child process.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Resident memory of a running process, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read the memory of process {pid}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/PID/status")
}

/// PEM text for DER bytes.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// GETs `http://addr/path` (the metrics listener is plain HTTP): status and body.
pub async fn plain_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}
