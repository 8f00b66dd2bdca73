//! `postern admin risk …`: identity protection's risky users and detections, and the
//! administrator's decisions about them.

use clap::Subcommand;
use postern_edge::admin_api::{RiskDetectionView, RiskyUserView};

use super::client::segment;
use super::output::{print, say, table};
use super::AdminClient;

#[derive(Subcommand)]
pub enum RiskCommand {
    /// Users with detections, or whom an administrator decided about, with their user risk.
    Users,
    /// Risk detections, newest first.
    Detections {
        /// Only this user's (email).
        #[arg(long)]
        user: Option<String>,
        /// How far back: a duration (`24h`, `7d`) or an RFC 3339 time. Default: 90 days.
        #[arg(long)]
        since: Option<String>,
    },
    /// Confirm a user compromised: user risk high until dismissed, every session ends.
    ConfirmCompromised { email: String },
    /// Dismiss a user's risk: the detections standing against them no longer count.
    Dismiss { email: String },
}

fn users_table(users: &[RiskyUserView]) {
    table(
        &["USER", "RISK", "STATE", "UPDATED", "ISSUER"],
        users
            .iter()
            .map(|u| {
                vec![
                    u.user_principal_name.clone(),
                    u.risk_level.clone(),
                    u.risk_state.clone(),
                    u.risk_last_updated_date_time.clone(),
                    u.issuer.clone(),
                ]
            })
            .collect(),
    )
}

pub async fn risk(client: &AdminClient, json: bool, cmd: RiskCommand) -> anyhow::Result<()> {
    match cmd {
        RiskCommand::Users => {
            let users: Vec<RiskyUserView> = client.get("/v1/risk/users").await?;
            print(json, &users, || users_table(&users));
        }
        RiskCommand::Detections { user, since } => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if let Some(u) = &user {
                query.append_pair("user", u);
            }
            if let Some(s) = &since {
                query.append_pair("since", &super::time_filter("--since", s)?);
            }
            let path = format!("/v1/risk/detections?{}", query.finish());
            let found: Vec<RiskDetectionView> = client.get(&path).await?;
            print(json, &found, || {
                table(
                    &["TIME", "USER", "DETECTION", "RISK", "STATE", "IP", "DETAIL"],
                    found
                        .iter()
                        .map(|d| {
                            vec![
                                d.detected_date_time.clone(),
                                d.user_principal_name.clone(),
                                d.risk_event_type.clone(),
                                d.risk_level.clone(),
                                d.risk_state.clone(),
                                d.ip_address.clone(),
                                d.additional_info.clone(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        RiskCommand::ConfirmCompromised { email } => {
            let changed: Vec<RiskyUserView> = client
                .post(
                    &format!("/v1/risk/users/{}/confirm-compromised", segment(&email)),
                    &serde_json::json!({}),
                )
                .await?;
            print(json, &changed, || {
                say!("{email} confirmed compromised: user risk high, sessions ended")
            });
        }
        RiskCommand::Dismiss { email } => {
            let changed: Vec<RiskyUserView> = client
                .post(
                    &format!("/v1/risk/users/{}/dismiss", segment(&email)),
                    &serde_json::json!({}),
                )
                .await?;
            print(json, &changed, || say!("{email}'s risk dismissed"));
        }
    }
    Ok(())
}
