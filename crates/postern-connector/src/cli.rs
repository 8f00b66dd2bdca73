//! The connector's command line, shared by `postern connector ...` and the `postern-connector`
//! binary (which holds the connector alone: no edge, no identity provider).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio::sync::watch;

#[derive(Subcommand)]
pub enum ConnectorCommand {
    /// Register this connector with an edge using a one-time token from an admin.
    Register(RegisterArgs),
    /// Run a registered connector: keep tunnels open and forward requests to the apps.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RegisterArgs {
    /// The edge's connector listener, e.g. https://edge.example.com:8444.
    #[arg(long)]
    edge: String,
    /// One-time registration token (`postern admin connector token --group NAME`). Without it,
    /// an administrator signs in instead (device authorization against the edge's built-in
    /// identity provider) and --group names the connector group to join.
    #[arg(long, env = "POSTERN_REGISTRATION_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Connector group to join when registering through an administrator's sign-in.
    #[arg(long, conflicts_with = "token")]
    group: Option<String>,
    /// Dial this address for the identity provider's host instead of resolving it (for names
    /// such as login.localhost that do not resolve on this machine).
    #[arg(long)]
    idp_connect_to: Option<SocketAddr>,
    /// Directory for the connector's key, certificate and registration.
    #[arg(long)]
    state: PathBuf,
    /// CA certificate (PEM) the edge's certificate chains to (the edge's DATA/ca.pem).
    #[arg(long)]
    ca_file: PathBuf,
}

#[derive(Args)]
pub struct RunArgs {
    /// The directory given to `postern connector register`.
    #[arg(long)]
    state: PathBuf,
    /// How many tunnel connections to keep open to the edge.
    #[arg(long, default_value_t = crate::DEFAULT_TUNNELS)]
    tunnels: usize,
    /// How long shutdown waits for streams in flight.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Renew the client certificate when it is this old (the edge may ask for sooner).
    #[arg(long, default_value = "180d", value_parser = positive_duration)]
    renew_after: Duration,
    /// Connect to apps only at this address, network (CIDR) or host name (`*.domain` for every
    /// name under it); repeat the flag, or separate values with commas in the environment.
    /// Without it, every address but link-local and cloud metadata ones is allowed; those are
    /// refused unless a network rule names them.
    #[arg(
        long = "allow-destination",
        value_name = "CIDR|HOST",
        env = "POSTERN_ALLOW_DESTINATION",
        value_delimiter = ','
    )]
    allow_destination: Vec<crate::DestinationRule>,
    /// Serve /metrics (Prometheus), /healthz and /readyz over plain HTTP on this address, e.g.
    /// 127.0.0.1:9464; without it the connector listens on nothing.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// Runs `register` or `run`.
pub async fn run(command: ConnectorCommand) -> anyhow::Result<()> {
    match command {
        ConnectorCommand::Register(args) => register(args).await,
        ConnectorCommand::Run(args) => run_connector(args).await,
    }
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let ca = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("cannot read --ca-file {}", args.ca_file.display()))?;
    let opts = crate::RegisterOptions {
        edge_url: &args.edge,
        token: args.token.as_deref().unwrap_or_default(),
        state_dir: &args.state,
        edge_ca_pem: &ca,
        hostname: &crate::hostname(),
    };
    let reg = match (&args.token, &args.group) {
        (Some(_), _) => crate::register(opts).await?,
        (None, Some(group)) => {
            let access_token = crate::device::sign_in(
                &args.edge,
                &ca,
                args.idp_connect_to,
                |start| {
                    println!("To approve this connector, an administrator opens");
                    // The address and code come from the edge: shown with control characters escaped.
                    let uri = start.verification_uri_complete.as_deref().unwrap_or(&start.verification_uri);
                    println!("  {}", postern_proto::text::escape(uri));
                    println!("and checks that it shows the code {}", postern_proto::text::escape(&start.user_code));
                    println!("Waiting for approval (the code expires in {} minutes)...", start.expires_in / 60);
                },
            )
            .await?;
            crate::register_as_admin(opts, &access_token, group).await?
        }
        (None, None) => anyhow::bail!(
            "give --token (from `postern admin connector token --group NAME`), or --group NAME to register by an administrator's sign-in"
        ),
    };
    println!(
        "registered connector {} in group {:?}; start it with: postern connector run --state {}",
        reg.connector_id,
        reg.group,
        args.state.display()
    );
    Ok(())
}

async fn run_connector(args: RunArgs) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    let run = crate::run(
        crate::RunOptions {
            state_dir: args.state,
            tunnels: args.tunnels,
            drain_timeout: args.drain_timeout,
            renew_after: args.renew_after,
            destinations: crate::DestinationPolicy::new(args.allow_destination),
            metrics_listen: args.metrics_listen,
        },
        rx,
    );
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r,
        _ = postern_obs::process::terminated() => {
            tracing::info!("shutting down: GOAWAY sent, finishing streams in flight");
            let _ = tx.send(true);
            run.await
        }
    }
}

/// A duration of at least one second, e.g. `180d`, `12h`, `90s`.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; use e.g. 180d, 12h or 90s"))?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(d)
}
