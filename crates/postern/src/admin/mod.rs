//! `postern admin`: the admin API from the command line. Tables for people, `--json` for scripts;
//! any error exits non-zero with a one-line reason.

mod access;
mod apply;
mod client;
mod directory;
mod logs;
mod output;
mod reconcile;
mod risk;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use postern_edge::admin_api::{
    AdminTokenView, AppView, AssignmentView, AuditPage, ConnectorView, GroupView, NewAdminTokenView,
};
use postern_edge::apps::{PublishApp, UpdateApp};

use client::segment;
pub use client::AdminClient;
use output::{format_time, print, say, table, time_cell};

#[derive(Args)]
pub struct AdminArgs {
    /// The edge's admin API, e.g. https://127.0.0.1:8445.
    #[arg(long, env = "POSTERN_ADMIN_URL")]
    admin_url: String,
    /// File holding an admin token (the edge writes DATA/admin-token).
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
    /// Admin API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Add a new session-cookie key; sessions issued before keep working.
    RotateSessionKey,
    /// Read the audit log, newest first (the same as `logs audit`).
    Audit(AuditArgs),
    /// Save a consistent backup of the running edge (database and keys) to a new file, readable
    /// by you only; restore it with `postern edge restore --from FILE --data DIR`.
    Backup {
        /// The file to write; it must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// The sign-in and audit logs, and verifying them.
    #[command(subcommand)]
    Logs(logs::LogsCommand),
    /// Make groups, apps and their assignments, named locations, policies, users and clients
    /// match a TOML or YAML file (`--dry-run` shows the plan; `--prune` removes what it omits).
    Apply(apply::ApplyArgs),
    /// Users of the built-in identity provider.
    #[command(subcommand)]
    User(directory::UserCommand),
    /// Directory groups of users (not connector groups).
    #[command(subcommand)]
    DirectoryGroup(directory::DirectoryGroupCommand),
    /// OpenID Connect clients of the built-in identity provider.
    #[command(subcommand)]
    Client(directory::ClientCommand),
    /// The built-in identity provider's signing keys and sign-in events.
    #[command(subcommand)]
    Idp(directory::IdpCommand),
    /// Named locations (address ranges, countries) for conditional access.
    #[command(subcommand)]
    Location(access::LocationCommand),
    /// Conditional-access policies, and what-if.
    #[command(subcommand)]
    Policy(access::PolicyCommand),
    /// Identity protection: users at risk, risk detections, and decisions about them.
    #[command(subcommand)]
    Risk(risk::RiskCommand),
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a connector group.
    Create { name: String },
    /// List connector groups.
    List,
    /// Rename a group; its apps and connectors follow.
    Rename { name: String, new_name: String },
    /// Delete a group that no app and no live connector uses.
    Delete { name: String },
}

/// A switch's value; `true` and `false` are accepted too.
#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    #[value(alias = "true")]
    On,
    #[value(alias = "false")]
    Off,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Publish an internal app at an external URL (--external-url, --internal-url and --group are
    /// required; the other settings have their defaults).
    Publish {
        name: String,
        #[command(flatten)]
        settings: AppSettings,
    },
    /// List published apps.
    List,
    /// Show one app.
    Show { name: String },
    /// Change some of an app's settings; the others keep their values.
    Update {
        name: String,
        /// New name.
        #[arg(long)]
        rename: Option<String>,
        #[command(flatten)]
        settings: AppSettings,
    },
    /// Assign a user or a group to an app that requires assignment.
    Assign {
        name: String,
        #[command(flatten)]
        who: Assignee,
    },
    /// Remove an assignment.
    Unassign {
        name: String,
        #[command(flatten)]
        who: Assignee,
    },
    /// List who is assigned to an app.
    Assignments { name: String },
    /// Unpublish an app.
    Delete { name: String },
}

/// An app's settings, for `app publish` and `app update` alike: the same flags and value words
/// (a switch is `on` or `off`, and alone means `on`), named as the API's fields and `apply`'s
/// keys with `-` for `_`.
#[derive(Args)]
struct AppSettings {
    /// Public URL, e.g. https://wiki.example.com (host only: Postern routes by host).
    #[arg(long)]
    external_url: Option<String>,
    /// Where the connector reaches the app, e.g. http://10.0.0.5:8080/.
    #[arg(long)]
    internal_url: Option<String>,
    /// Connector group whose connectors carry the app's traffic.
    #[arg(long)]
    group: Option<String>,
    /// Pre-authentication: `passthrough` (the app signs users in itself; the default) or `oidc`.
    #[arg(long)]
    preauth: Option<String>,
    /// Send the external host as `Host` to the app instead of the internal URL's host.
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    preserve_host: Option<OnOff>,
    /// Accept any certificate from an https internal URL. Dangerous: only for apps whose
    /// certificate cannot be verified.
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    insecure_skip_backend_tls_verify: Option<OnOff>,
    /// How long the app may take to send its response headers (default 85s).
    #[arg(long, value_parser = humantime::parse_duration)]
    backend_timeout: Option<Duration>,
    /// Maintenance mode: every user gets a maintenance page while it is on.
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    maintenance: Option<OnOff>,
    /// With --preauth oidc: the OpenID Connect issuer (https, or http on loopback); without it
    /// (or "" in an update), the built-in identity provider.
    #[arg(long)]
    issuer: Option<String>,
    /// The client ID registered with the issuer for this app.
    #[arg(long)]
    client_id: Option<String>,
    /// File holding the client secret (omit for a public client).
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// Only users assigned to the app (`app assign`) get in.
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    assignment_required: Option<OnOff>,
    /// Users must have signed in with a second factor.
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    require_mfa: Option<OnOff>,
    /// Scripts in the page cannot read the session cookie (HttpOnly; on by default, `off` not
    /// recommended).
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    cookie_http_only: Option<OnOff>,
    /// Keep the session cookie across browser restarts (off by default).
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on", alias = "persistent-cookie")]
    cookie_persistent: Option<OnOff>,
    /// The issuer verifies every email it puts in a token, so a token without `email_verified`
    /// counts as verified (an explicit `false` never does). Off by default: only a token saying
    /// `email_verified: true` lets the email match assignments and reach the app.
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    issuer_verifies_email: Option<OnOff>,
}

impl AppSettings {
    /// The settings given, as a change to an app (the others keep their values).
    fn update(self, rename: Option<String>) -> anyhow::Result<UpdateApp> {
        let on = |v: Option<OnOff>| v.map(|v| matches!(v, OnOff::On));
        Ok(UpdateApp {
            name: rename,
            external_url: self.external_url,
            internal_url: self.internal_url,
            group: self.group,
            preauth: self.preauth,
            preserve_host: on(self.preserve_host),
            insecure_skip_backend_tls_verify: on(self.insecure_skip_backend_tls_verify),
            backend_timeout_secs: self.backend_timeout.map(|d| d.as_secs()),
            maintenance: on(self.maintenance),
            issuer: self.issuer,
            client_id: self.client_id,
            client_secret: self
                .client_secret_file
                .as_ref()
                .map(|p| read_secret(p, "--client-secret-file"))
                .transpose()?,
            assignment_required: on(self.assignment_required),
            require_mfa: on(self.require_mfa),
            cookie_http_only: on(self.cookie_http_only),
            cookie_persistent: on(self.cookie_persistent),
            issuer_verifies_email: on(self.issuer_verifies_email),
        })
    }

    /// The settings given, with the defaults for the others, as a new app.
    fn publish(self, name: String) -> anyhow::Result<PublishApp> {
        let patch = self.update(None)?;
        let (Some(external_url), Some(internal_url), Some(group)) =
            (&patch.external_url, &patch.internal_url, &patch.group)
        else {
            anyhow::bail!("app publish needs --external-url, --internal-url and --group");
        };
        Ok(PublishApp::new(&name, external_url, internal_url, group).patched(&patch))
    }
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Assignee {
    /// A user, by email or subject.
    #[arg(long)]
    user: Option<String>,
    /// A group, as the issuer names it in the `groups` claim.
    #[arg(long)]
    group: Option<String>,
}

impl Assignee {
    fn view(&self) -> AssignmentView {
        match (&self.user, &self.group) {
            (Some(u), _) => AssignmentView {
                kind: "user".into(),
                value: u.clone(),
            },
            (None, g) => AssignmentView {
                kind: "group".into(),
                value: g.clone().unwrap_or_default(),
            },
        }
    }
}

/// Reads a secret from a file, trimmed.
fn read_secret(path: &PathBuf, flag: &str) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {flag} {}", path.display()))?;
    let s = s.trim().to_owned();
    anyhow::ensure!(!s.is_empty(), "{flag} {} is empty", path.display());
    Ok(s)
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
    /// List registered connectors with their health.
    List,
    /// Show one connector.
    Show { id: String },
    /// Move a connector to another group.
    Move {
        id: String,
        #[arg(long)]
        group: String,
    },
    /// Revoke a connector: its tunnels close and its certificate is refused from now on.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an admin API token; prints the token alone (shown only now).
    Create {
        name: String,
        /// Lifetime (e.g. 90d); without it the token lives until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List admin API tokens.
    List,
    /// Revoke an admin API token.
    Revoke { id: String },
}

#[derive(Args)]
pub(crate) struct AuditArgs {
    /// Events at or after this time: RFC 3339, Unix seconds, or an age such as 1h or 7d.
    #[arg(long)]
    since: Option<String>,
    /// Events before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Only this actor, e.g. admin:bootstrap or connector:c_0123.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (app.publish), or a prefix ending in '.' (connector.).
    #[arg(long)]
    action: Option<String>,
    /// Events per page.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Continue from the `next_cursor` of a previous page.
    #[arg(long)]
    cursor: Option<String>,
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read --token-file {}", args.token_file.display()))?;
    let ca = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("cannot read --ca-file {}", args.ca_file.display()))?;
    let client = AdminClient::new(&args.admin_url, &token, &ca)?;
    let json = args.json;
    match args.command {
        AdminCommand::Group(cmd) => group(&client, json, cmd).await,
        AdminCommand::App(cmd) => app(&client, json, cmd).await,
        AdminCommand::Connector(cmd) => connector(&client, json, cmd).await,
        AdminCommand::Token(cmd) => admin_token(&client, json, cmd).await,
        AdminCommand::RotateSessionKey => {
            let v: serde_json::Value = client
                .post("/v1/session-keys/rotate", &serde_json::json!({}))
                .await?;
            print(json, &v, || {
                say!("new session-cookie key in use; existing sessions keep working")
            });
            Ok(())
        }
        AdminCommand::Audit(a) => audit(&client, json, a).await,
        AdminCommand::Backup { out } => {
            let len = client.download("/v1/backup", &out).await?;
            print(
                json,
                &serde_json::json!({ "file": out, "bytes": len }),
                || {
                    say!(
                        "backup written to {} ({len} bytes); it holds the edge's keys: keep it safe",
                        out.display()
                    )
                },
            );
            Ok(())
        }
        AdminCommand::Logs(cmd) => logs::run(&client, json, cmd).await,
        AdminCommand::Apply(a) => apply::run(&client, json, a).await,
        AdminCommand::User(cmd) => directory::user(&client, json, cmd).await,
        AdminCommand::DirectoryGroup(cmd) => directory::directory_group(&client, json, cmd).await,
        AdminCommand::Client(cmd) => directory::oidc_client(&client, json, cmd).await,
        AdminCommand::Idp(cmd) => directory::idp(&client, json, cmd).await,
        AdminCommand::Location(cmd) => access::location(&client, json, cmd).await,
        AdminCommand::Policy(cmd) => access::policy(&client, json, cmd).await,
        AdminCommand::Risk(cmd) => risk::risk(&client, json, cmd).await,
    }
}

async fn group(client: &AdminClient, json: bool, cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::Create { name } => {
            let g: GroupView = client
                .post("/v1/groups", &serde_json::json!({ "name": name }))
                .await?;
            print(json, &g, || say!("created connector group {}", g.name));
        }
        GroupCommand::List => {
            let groups: Vec<GroupView> = client.get("/v1/groups").await?;
            print(json, &groups, || {
                table(
                    &["NAME", "APPS", "CONNECTORS", "TUNNELS"],
                    groups
                        .iter()
                        .map(|g| {
                            vec![
                                g.name.clone(),
                                g.apps.to_string(),
                                g.connectors.to_string(),
                                g.tunnels.to_string(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        GroupCommand::Rename { name, new_name } => {
            let g: GroupView = client
                .patch(
                    &format!("/v1/groups/{}", segment(&name)),
                    &serde_json::json!({ "name": new_name }),
                )
                .await?;
            print(json, &g, || {
                say!("renamed connector group {name} to {}", g.name)
            });
        }
        GroupCommand::Delete { name } => {
            client
                .delete(&format!("/v1/groups/{}", segment(&name)))
                .await?;
            print(json, &serde_json::json!({ "deleted": name }), || {
                say!("deleted connector group {name}")
            });
        }
    }
    Ok(())
}

async fn app(client: &AdminClient, json: bool, cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Publish { name, settings } => {
            let req = settings.publish(name)?;
            let app: AppView = client.post("/v1/apps", &req).await?;
            print(json, &app, || {
                say!(
                    "published {} at {} -> {} (group {})",
                    app.name,
                    app.external_url,
                    app.internal_url,
                    app.group
                );
                if let Some(w) = &app.warning {
                    say!("warning: {w}");
                }
            });
        }
        AppCommand::List => {
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
                        "WARNING",
                    ],
                    apps.iter()
                        .map(|a| {
                            vec![
                                a.name.clone(),
                                a.external_url.clone(),
                                a.internal_url.clone(),
                                a.group.clone(),
                                a.preauth.clone(),
                                a.tunnels.to_string(),
                                a.warning.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        AppCommand::Show { name } => {
            let a: AppView = client.get(&format!("/v1/apps/{}", segment(&name))).await?;
            print(json, &a, || show_app(&a));
        }
        AppCommand::Update {
            name,
            rename,
            settings,
        } => {
            let patch = settings.update(rename)?;
            if patch.is_empty() {
                anyhow::bail!("nothing to change: give at least one option, e.g. --internal-url URL or --maintenance on");
            }
            let a: AppView = client
                .patch(&format!("/v1/apps/{}", segment(&name)), &patch)
                .await?;
            print(json, &a, || {
                say!("updated app {}", a.name);
                show_app(&a);
            });
        }
        AppCommand::Assign { name, who } => {
            let a: AssignmentView = client
                .post(
                    &format!("/v1/apps/{}/assignments", segment(&name)),
                    &who.view(),
                )
                .await?;
            print(json, &a, || {
                say!("assigned {} {} to {name}", a.kind, a.value)
            });
        }
        AppCommand::Unassign { name, who } => {
            let view = who.view();
            client
                .delete_with_body(&format!("/v1/apps/{}/assignments", segment(&name)), &view)
                .await?;
            print(json, &view, || {
                say!("removed {} {} from {name}", view.kind, view.value)
            });
        }
        AppCommand::Assignments { name } => {
            let list: Vec<AssignmentView> = client
                .get(&format!("/v1/apps/{}/assignments", segment(&name)))
                .await?;
            print(json, &list, || {
                table(
                    &["KIND", "VALUE"],
                    list.iter()
                        .map(|a| vec![a.kind.clone(), a.value.clone()])
                        .collect(),
                )
            });
        }
        AppCommand::Delete { name } => {
            client
                .delete(&format!("/v1/apps/{}", segment(&name)))
                .await?;
            print(json, &serde_json::json!({ "deleted": name }), || {
                say!("deleted app {name}")
            });
        }
    }
    Ok(())
}

fn show_app(a: &AppView) {
    say!("name:            {}", a.name);
    say!("external url:    {}", a.external_url);
    say!("internal url:    {}", a.internal_url);
    say!("group:           {}", a.group);
    say!("preauth:         {}", a.preauth);
    say!("preserve host:   {}", a.preserve_host);
    say!(
        "skip backend TLS verify: {}",
        a.insecure_skip_backend_tls_verify
    );
    say!("backend timeout: {}s", a.backend_timeout_secs);
    say!(
        "maintenance:     {}",
        if a.maintenance { "on" } else { "off" }
    );
    if let Some(s) = &a.sign_in {
        say!("sign-in issuer:  {}", s.issuer);
        say!("client id:       {}", s.client_id);
        say!(
            "assignment:      {}",
            if s.assignment_required {
                "required"
            } else {
                "not required"
            }
        );
        say!("require MFA:     {}", s.require_mfa);
        say!(
            "emails:          {}",
            if s.issuer_verifies_email {
                "verified by the issuer unless a token says otherwise"
            } else {
                "used only when a token says email_verified"
            }
        );
    }
    say!("tunnels open:    {}", a.tunnels);
    if let Some(w) = &a.warning {
        say!("warning:         {w}");
    }
}

async fn connector(client: &AdminClient, json: bool, cmd: ConnectorCommand) -> anyhow::Result<()> {
    match cmd {
        ConnectorCommand::Token { group, ttl } => {
            let t: serde_json::Value = client
                .post(
                    &format!("/v1/groups/{}/registration-tokens", segment(&group)),
                    &serde_json::json!({ "ttl_secs": ttl.as_secs() }),
                )
                .await?;
            let token = t["token"]
                .as_str()
                .context("the admin API returned no token")?;
            print(json, &t, || say!("{token}"));
        }
        ConnectorCommand::List => {
            let cs: Vec<ConnectorView> = client.get("/v1/connectors").await?;
            print(json, &cs, || {
                table(
                    &[
                        "ID",
                        "GROUP",
                        "STATUS",
                        "TUNNELS",
                        "REQUESTS",
                        "LAST SEEN",
                        "HOST",
                        "ADDRESS",
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
                                time_cell(c.last_seen_at),
                                c.hostname.clone(),
                                c.address.clone().unwrap_or_default(),
                                c.version.clone(),
                                time_cell(c.cert_not_after),
                            ]
                        })
                        .collect(),
                )
            });
        }
        ConnectorCommand::Show { id } => {
            let c: ConnectorView = client
                .get(&format!("/v1/connectors/{}", segment(&id)))
                .await?;
            print(json, &c, || show_connector(&c));
        }
        ConnectorCommand::Move { id, group } => {
            let c: ConnectorView = client
                .patch(
                    &format!("/v1/connectors/{}", segment(&id)),
                    &serde_json::json!({ "group": group }),
                )
                .await?;
            print(json, &c, || {
                say!("moved connector {} to group {}", c.id, c.group)
            });
        }
        ConnectorCommand::Revoke { id } => {
            let c: ConnectorView = client
                .post(
                    &format!("/v1/connectors/{}/revoke", segment(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            print(json, &c, || {
                say!("revoked connector {}; its tunnels are closed", c.id)
            });
        }
    }
    Ok(())
}

fn show_connector(c: &ConnectorView) {
    say!("id:           {}", c.id);
    say!("group:        {}", c.group);
    say!("status:       {}", c.status);
    say!("tunnels open: {}", c.tunnels);
    say!("requests:     {}", c.requests);
    say!("host:         {}", c.hostname);
    say!("address:      {}", c.address.clone().unwrap_or_default());
    say!("version:      {}", c.version);
    say!("registered:   {}", format_time(c.registered_at));
    say!("last seen:    {}", time_cell(c.last_seen_at));
    say!("cert expires: {}", time_cell(c.cert_not_after));
    if c.revoked_at.is_some() {
        say!("revoked:      {}", time_cell(c.revoked_at));
    }
}

async fn admin_token(client: &AdminClient, json: bool, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, ttl } => {
            let t: NewAdminTokenView = client
                .post(
                    "/v1/admin-tokens",
                    &serde_json::json!({ "name": name, "ttl_secs": ttl.map(|d| d.as_secs()) }),
                )
                .await?;
            print(json, &t, || say!("{}", t.token));
        }
        TokenCommand::List => {
            let ts: Vec<AdminTokenView> = client.get("/v1/admin-tokens").await?;
            print(json, &ts, || {
                table(
                    &["ID", "NAME", "CREATED", "EXPIRES", "LAST USED", "REVOKED"],
                    ts.iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.name.clone(),
                                format_time(t.created_at),
                                time_cell(t.expires_at),
                                time_cell(t.last_used_at),
                                time_cell(t.revoked_at),
                            ]
                        })
                        .collect(),
                )
            });
        }
        TokenCommand::Revoke { id } => {
            let t: AdminTokenView = client
                .delete_json(&format!("/v1/admin-tokens/{}", segment(&id)))
                .await?;
            print(json, &t, || {
                say!("revoked admin token {} ({})", t.id, t.name)
            });
        }
    }
    Ok(())
}

/// A `--since`/`--until` value as the API takes it: Unix seconds.
pub(crate) fn time_filter(flag: &str, value: &str) -> anyhow::Result<String> {
    if value.parse::<i64>().is_ok() {
        return Ok(value.to_owned());
    }
    let now = std::time::SystemTime::now();
    let at = if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        t
    } else if let Ok(age) = humantime::parse_duration(value) {
        now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH)
    } else {
        anyhow::bail!("{flag} {value:?} is not a time; use RFC 3339 (2026-01-31T12:00:00Z), Unix seconds, or an age such as 1h or 7d");
    };
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(secs.to_string())
}

pub(crate) async fn audit(client: &AdminClient, json: bool, a: AuditArgs) -> anyhow::Result<()> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(v) = &a.since {
        query.append_pair("since", &time_filter("--since", v)?);
    }
    if let Some(v) = &a.until {
        query.append_pair("until", &time_filter("--until", v)?);
    }
    if let Some(v) = &a.actor {
        query.append_pair("actor", v);
    }
    if let Some(v) = &a.action {
        query.append_pair("action", v);
    }
    if let Some(v) = &a.cursor {
        query.append_pair("cursor", v);
    }
    query.append_pair("limit", &a.limit.to_string());
    let page: AuditPage = client.get(&format!("/v1/audit?{}", query.finish())).await?;
    print(json, &page, || {
        table(
            &[
                "TIME",
                "ACTOR",
                "ACTION",
                "TARGET",
                "RESULT",
                "DETAIL",
                "REQUEST ID",
            ],
            page.events
                .iter()
                .map(|e| {
                    vec![
                        e.time.clone(),
                        e.actor.clone(),
                        e.action.clone(),
                        e.target.clone(),
                        e.result.clone(),
                        e.detail.clone(),
                        e.request_id.clone(),
                    ]
                })
                .collect(),
        );
        if let Some(c) = &page.next_cursor {
            say!("more: --cursor {c}");
        }
    });
    Ok(())
}
