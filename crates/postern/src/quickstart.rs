//! `postern quickstart`: an edge, a demo app and a registered connector in one process, with no
//! config. Every part talks to the others over the real interfaces: the admin API over HTTPS,
//! registration with a one-time token, and the demo app through the mutual-TLS tunnel.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use postern_edge::admin_api::{AppView, GroupView};
use postern_edge::apps::PublishApp;
use tokio::sync::watch;

use crate::admin::AdminClient;

const GROUP: &str = "quickstart";
const APP: &str = "whoami";

#[derive(Args)]
pub struct QuickstartArgs {
    /// Directory for the quickstart's state (kept between runs).
    #[arg(long, default_value = "postern-quickstart")]
    data: PathBuf,
    /// Port of the public HTTPS listener on 127.0.0.1.
    #[arg(long, default_value_t = 8443)]
    port: u16,
}

pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let edge_dir = args.data.join("edge");
    let connector_dir = args.data.join("connector");
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let config = postern_edge::EdgeConfig::new(
        edge_dir.clone(),
        loopback(args.port),
        loopback(0),
        loopback(0),
    );
    let edge = postern_edge::start(config).await.with_context(|| {
        format!(
            "cannot start the edge (is port {} free? pick another with --port)",
            args.port
        )
    })?;
    let ca_pem = std::fs::read_to_string(&edge.ca_path)?;
    let admin = AdminClient::new(
        &format!("https://{}", edge.admin_addr),
        edge.admin_token().expose(),
        &ca_pem,
    )?;

    let users_file = crate::quickstart_users::ensure(&admin, &args.data).await?;

    let demo = crate::demo::start().await?;
    let groups: Vec<GroupView> = admin.get("/v1/groups").await?;
    if !groups.iter().any(|g| g.name == GROUP) {
        let _: GroupView = admin
            .post("/v1/groups", &serde_json::json!({ "name": GROUP }))
            .await?;
    }
    // The demo app listens on a new port every run, so the app is published afresh.
    let apps: Vec<AppView> = admin.get("/v1/apps").await?;
    if apps.iter().any(|a| a.name == APP) {
        admin.delete(&format!("/v1/apps/{APP}")).await?;
    }
    let external = format!("https://{APP}.localhost:{}", edge.public_addr.port());
    let _: AppView = admin
        .post(
            "/v1/apps",
            // Users sign in with the built-in identity provider before anything reaches the app.
            &PublishApp {
                preauth: "oidc".to_owned(),
                ..PublishApp::new(APP, &external, &format!("http://{demo}/"), GROUP)
            },
        )
        .await?;

    if !postern_connector::state::is_registered(&connector_dir) {
        let token: serde_json::Value = admin
            .post(
                &format!("/v1/groups/{GROUP}/registration-tokens"),
                &serde_json::json!({}),
            )
            .await?;
        let token = token["token"]
            .as_str()
            .context("no token in the admin API's answer")?;
        postern_connector::register(postern_connector::RegisterOptions {
            edge_url: &format!("https://{}", edge.connector_addr),
            token,
            state_dir: &connector_dir,
            edge_ca_pem: &ca_pem,
            hostname: &postern_connector::hostname(),
        })
        .await?;
    } else {
        // The connector listener's port is new every run: point the registration at it.
        let path = connector_dir.join(postern_connector::state::REGISTRATION);
        let mut reg: postern_connector::state::Registration =
            serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        reg.edge_url = format!("https://{}", edge.connector_addr);
        postern_pki::write_public(&path, serde_json::to_string_pretty(&reg)?.as_bytes())?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let connector = tokio::spawn(postern_connector::run(
        postern_connector::RunOptions {
            state_dir: connector_dir,
            tunnels: postern_connector::DEFAULT_TUNNELS,
            drain_timeout: postern_connector::DEFAULT_DRAIN_TIMEOUT,
            renew_after: postern_connector::DEFAULT_RENEW_AFTER,
            // The demo app is on loopback, which the default policy allows.
            destinations: postern_connector::DestinationPolicy::default(),
            metrics_listen: None,
        },
        stop_rx,
    ));

    let ca = edge.ca_path.display();
    println!();
    println!("Postern quickstart is running.");
    println!();
    println!("  Demo app (through the tunnel, behind sign-in): {external}/");
    println!("  Try it:  open {external}/ in a browser and sign in as a user of quickstart.json");
    println!(
        "  (trust {ca} first, or accept the warning). Without a session, API clients get 401:"
    );
    println!("           curl --cacert {ca} -H 'accept: application/json' {external}/");
    println!();
    println!(
        "  Admin API: https://{}  (token in {})",
        edge.admin_addr,
        edge_dir.join("admin-token").display()
    );
    println!(
        "  Try it:  postern admin --admin-url https://{} --token-file {} --ca-file {ca} app list",
        edge.admin_addr,
        edge_dir.join("admin-token").display()
    );
    println!();
    println!(
        "  Sign-in service (built-in identity provider): {}/.well-known/openid-configuration",
        edge.idp_issuer()
    );
    println!(
        "  Its admin and demo users and their passwords: {}",
        users_file.display()
    );
    println!(
        "  Add a passkey (in a browser that trusts {ca}): {}/account",
        edge.idp_issuer()
    );
    println!();
    println!("Press Ctrl-C to stop.");

    postern_obs::process::terminated().await;
    let _ = stop_tx.send(true);
    let _ = connector.await;
    edge.shutdown().await;
    Ok(())
}
