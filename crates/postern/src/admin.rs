//! `postern admin`: the admin API from the command line. Tables for people, `--json` for scripts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use postern_edge::admin_api::{AppView, ConnectorView, GroupView};
use postern_edge::apps::PublishApp;
use postern_proto::api::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Args)]
pub struct AdminArgs {
    /// The edge's admin API, e.g. https://127.0.0.1:8445.
    #[arg(long, env = "POSTERN_ADMIN_URL")]
    admin_url: String,
    /// File holding the admin token (the edge writes DATA/admin-token).
    #[arg(long, env = "POSTERN_TOKEN_FILE")]
    token_file: PathBuf,
    /// CA certificate (PEM) of the admin API (the edge's DATA/ca.pem).
    #[arg(long, env = "POSTERN_CA_FILE")]
    ca_file: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Connector groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Published apps.
    #[command(subcommand)]
    App(AppCommand),
    /// Connectors and their registration tokens.
    #[command(subcommand)]
    Connector(ConnectorCommand),
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a connector group.
    Create { name: String },
    /// List connector groups.
    List,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Publish an internal app at an external URL.
    Publish {
        name: String,
        /// Public URL, e.g. https://wiki.example.com (host only: Postern routes by host).
        #[arg(long)]
        external_url: String,
        /// Where the connector reaches the app, e.g. http://10.0.0.5:8080/.
        #[arg(long)]
        internal_url: String,
        /// Connector group whose connectors carry the app's traffic.
        #[arg(long)]
        group: String,
        /// Pre-authentication: `passthrough` (the app signs users in itself).
        #[arg(long, default_value = "passthrough")]
        preauth: String,
        /// Send the external host as `Host` to the app instead of the internal URL's host.
        #[arg(long)]
        preserve_host: bool,
        /// Accept any certificate from an https internal URL. Dangerous: only for apps whose
        /// certificate cannot be verified.
        #[arg(long)]
        insecure_skip_backend_tls_verify: bool,
        /// How long the app may take to send its response headers (default 85s).
        #[arg(long, value_parser = humantime::parse_duration)]
        backend_timeout: Option<Duration>,
    },
    /// List published apps.
    List,
    /// Show one app.
    Show { name: String },
    /// Unpublish an app.
    Delete { name: String },
}

#[derive(Subcommand)]
enum ConnectorCommand {
    /// Create a one-time registration token for a group; prints the token alone.
    Token {
        #[arg(long)]
        group: String,
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// List registered connectors.
    List,
}

/// A client of the admin API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(admin_url: &str, token: &str, ca_pem: &str) -> anyhow::Result<AdminClient> {
        let url = url::Url::parse(admin_url).with_context(|| {
            format!("--admin-url {admin_url:?} is not a URL; use e.g. https://127.0.0.1:8445")
        })?;
        if url.scheme() != "https" {
            bail!("--admin-url {admin_url:?} must use https");
        }
        let tls = postern_pki::client_config(ca_pem, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
            .context("the --ca-file does not hold a usable CA certificate")?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(AdminClient {
            base: admin_url.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            http,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(self.http.get(self.url(path))).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call::<serde_json::Value>(self.http.delete(self.url(path)))
            .await
            .map(|_| ())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req.bearer_auth(&self.token).send().await.with_context(|| {
            format!(
                "cannot reach the admin API at {}; check --admin-url and --ca-file",
                self.base
            )
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .context("reading the admin API's answer")?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| format!("{} ({})", e.error.message, e.error.code))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{status}: {msg}");
        }
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body).context("the admin API's answer is not the expected JSON")
    }
}

/// Path segments from user input are percent-encoded so a name can never change the route.
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read --token-file {}", args.token_file.display()))?;
    let ca = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("cannot read --ca-file {}", args.ca_file.display()))?;
    let client = AdminClient::new(&args.admin_url, &token, &ca)?;
    let json = args.json;
    match args.command {
        AdminCommand::Group(GroupCommand::Create { name }) => {
            let g: GroupView = client
                .post("/v1/groups", &serde_json::json!({ "name": name }))
                .await?;
            print(json, &g, || println!("created connector group {}", g.name));
        }
        AdminCommand::Group(GroupCommand::List) => {
            let groups: Vec<GroupView> = client.get("/v1/groups").await?;
            print(json, &groups, || {
                table(
                    &["NAME"],
                    groups.iter().map(|g| vec![g.name.clone()]).collect(),
                )
            });
        }
        AdminCommand::App(AppCommand::Publish {
            name,
            external_url,
            internal_url,
            group,
            preauth,
            preserve_host,
            insecure_skip_backend_tls_verify,
            backend_timeout,
        }) => {
            let req = PublishApp {
                name,
                external_url,
                internal_url,
                group,
                preauth,
                preserve_host,
                insecure_skip_backend_tls_verify,
                backend_timeout_secs: backend_timeout.map(|d| d.as_secs()),
            };
            let app: AppView = client.post("/v1/apps", &req).await?;
            print(json, &app, || {
                println!(
                    "published {} at {} -> {} (group {})",
                    app.name, app.external_url, app.internal_url, app.group
                )
            });
        }
        AdminCommand::App(AppCommand::List) => {
            let apps: Vec<AppView> = client.get("/v1/apps").await?;
            print(json, &apps, || {
                table(
                    &[
                        "NAME",
                        "EXTERNAL URL",
                        "INTERNAL URL",
                        "GROUP",
                        "PREAUTH",
                        "TUNNELS",
                    ],
                    apps.iter()
                        .map(|a| {
                            let tunnels = if a.tunnels == 0 {
                                "0 (no connector online!)".to_owned()
                            } else {
                                a.tunnels.to_string()
                            };
                            vec![
                                a.name.clone(),
                                a.external_url.clone(),
                                a.internal_url.clone(),
                                a.group.clone(),
                                a.preauth.clone(),
                                tunnels,
                            ]
                        })
                        .collect(),
                )
            });
        }
        AdminCommand::App(AppCommand::Show { name }) => {
            let a: AppView = client.get(&format!("/v1/apps/{}", segment(&name))).await?;
            print(json, &a, || {
                println!("name:          {}", a.name);
                println!("external url:  {}", a.external_url);
                println!("internal url:  {}", a.internal_url);
                println!("group:         {}", a.group);
                println!("preauth:       {}", a.preauth);
                println!("preserve host: {}", a.preserve_host);
                println!(
                    "skip backend TLS verify: {}",
                    a.insecure_skip_backend_tls_verify
                );
                println!("backend timeout: {}s", a.backend_timeout_secs);
                println!("tunnels open:  {}", a.tunnels);
            });
        }
        AdminCommand::App(AppCommand::Delete { name }) => {
            client
                .delete(&format!("/v1/apps/{}", segment(&name)))
                .await?;
            print(json, &serde_json::json!({ "deleted": name }), || {
                println!("deleted app {name}")
            });
        }
        AdminCommand::Connector(ConnectorCommand::Token { group, ttl }) => {
            let t: serde_json::Value = client
                .post(
                    &format!("/v1/groups/{}/registration-tokens", segment(&group)),
                    &serde_json::json!({ "ttl_secs": ttl.as_secs() }),
                )
                .await?;
            let token = t["token"]
                .as_str()
                .context("the admin API returned no token")?;
            print(json, &t, || println!("{token}"));
        }
        AdminCommand::Connector(ConnectorCommand::List) => {
            let cs: Vec<ConnectorView> = client.get("/v1/connectors").await?;
            print(json, &cs, || {
                table(
                    &[
                        "ID",
                        "GROUP",
                        "STATUS",
                        "TUNNELS",
                        "REQUESTS",
                        "HOST",
                        "VERSION",
                        "CERT EXPIRES",
                    ],
                    cs.iter()
                        .map(|c| {
                            vec![
                                c.id.clone(),
                                c.group.clone(),
                                c.status.clone(),
                                c.tunnels.to_string(),
                                c.requests.to_string(),
                                c.hostname.clone(),
                                c.version.clone(),
                                c.cert_not_after.map(format_time).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )
            });
        }
    }
    Ok(())
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("postern: cannot print JSON: {e}"),
        }
    } else {
        human();
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn format_time(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}
