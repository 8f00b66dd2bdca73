//! `postern admin logs …`: the sign-in log, the audit log, and verifying both hash chains.

use clap::{Args, Subcommand};
use postern_edge::admin_api::{SigninPage, Verification};

use super::output::{print, say, table};
use super::{audit, time_filter, AdminClient, AuditArgs};

#[derive(Subcommand)]
pub enum LogsCommand {
    /// Sign-ins at the edge (any issuer) and at the built-in provider, newest first.
    Signins(SigninArgs),
    /// The audit log, newest first.
    Audit(AuditArgs),
    /// Walk both logs' hash chains; exit 0 when intact, else name the first bad record.
    Verify,
}

#[derive(Args)]
pub struct SigninArgs {
    /// Only this user (email), without case.
    #[arg(long)]
    user: Option<String>,
    /// Only this app (its name).
    #[arg(long)]
    app: Option<String>,
    /// Sign-ins at or after this time: RFC 3339, Unix seconds, or an age such as 1h or 7d.
    #[arg(long)]
    since: Option<String>,
    /// Sign-ins before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Only failed sign-ins.
    #[arg(long)]
    failed: bool,
    /// Sign-ins per page.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Continue from the `next_cursor` of a previous page.
    #[arg(long)]
    cursor: Option<String>,
}

pub async fn run(client: &AdminClient, json: bool, cmd: LogsCommand) -> anyhow::Result<()> {
    match cmd {
        LogsCommand::Signins(a) => signins(client, json, a).await,
        LogsCommand::Audit(a) => audit(client, json, a).await,
        LogsCommand::Verify => verify(client, json).await,
    }
}

async fn signins(client: &AdminClient, json: bool, a: SigninArgs) -> anyhow::Result<()> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(v) = &a.since {
        query.append_pair("since", &time_filter("--since", v)?);
    }
    if let Some(v) = &a.until {
        query.append_pair("until", &time_filter("--until", v)?);
    }
    if let Some(v) = &a.user {
        query.append_pair("user", v);
    }
    if let Some(v) = &a.app {
        query.append_pair("app", v);
    }
    if a.failed {
        query.append_pair("result", "failure");
    }
    if let Some(v) = &a.cursor {
        query.append_pair("cursor", v);
    }
    query.append_pair("limit", &a.limit.to_string());
    let page: SigninPage = client
        .get(&format!("/v1/signins?{}", query.finish()))
        .await?;
    print(json, &page, || {
        table(
            &[
                "TIME",
                "USER",
                "APP",
                "IP",
                "CLIENT",
                "RESULT",
                "METHODS",
                "REQUEST ID",
            ],
            page.signins
                .iter()
                .map(|s| {
                    let result = if s.status.error_code == "0" {
                        "success".to_owned()
                    } else {
                        format!("failure: {}", s.status.error_code)
                    };
                    vec![
                        s.created_date_time.clone(),
                        s.user_principal_name.clone(),
                        s.app_display_name.clone().unwrap_or_default(),
                        s.ip_address.clone(),
                        s.client_app_used.clone(),
                        result,
                        s.authentication_methods_used.join(","),
                        s.correlation_id.clone(),
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

async fn verify(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let v: Verification = client.get("/v1/logs/verify").await?;
    print(json, &v, || {
        for l in &v.logs {
            match (&l.problem, l.record) {
                (Some(p), Some(id)) => say!("{} log: record {id} {p}", l.log),
                _ => say!("{} log: intact ({} records)", l.log, l.records),
            }
        }
    });
    match v.logs.iter().find(|l| !l.intact) {
        None => Ok(()),
        Some(l) => anyhow::bail!(
            "the {} log is not intact: record {} {}",
            l.log,
            l.record.unwrap_or_default(),
            l.problem.as_deref().unwrap_or("altered")
        ),
    }
}
