//! `postern admin location …` and `postern admin policy …`: conditional access.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use postern_edge::admin_api::{WhatIf, WhatIfView};
use postern_policy::{NamedLocation, Platform, Policy, PolicyState, RiskLevel};

use super::client::segment;

use super::output::{print, say, table};
use super::AdminClient;

/// The largest policy file read.
const MAX_POLICY_FILE_BYTES: u64 = 64 * 1024;

#[derive(Subcommand)]
pub enum LocationCommand {
    /// Create or replace a named location: address ranges and/or countries.
    Create {
        name: String,
        /// An address range (CIDR, e.g. 203.0.113.0/24); repeat or list several.
        #[arg(long = "cidr", num_args = 1.., value_name = "CIDR")]
        cidrs: Vec<ipnet::IpNet>,
        /// A country (ISO 3166-1 alpha-2, e.g. IS); repeat or list several. Needs --geoip-db on
        /// the edge.
        #[arg(long = "country", num_args = 1.., value_name = "CC")]
        countries: Vec<String>,
        /// Trusted (a policy can target `trusted` locations).
        #[arg(long)]
        trusted: bool,
    },
    /// List named locations.
    List,
    /// Delete a named location no policy uses.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy from a YAML or JSON file (its `name`, if given, must be NAME).
    Create {
        name: String,
        #[arg(short = 'f', long = "file", value_name = "POLICY.yaml")]
        file: PathBuf,
    },
    /// List policies.
    List,
    /// Delete a policy.
    Delete { name: String },
    /// Explain which policies apply to a sign-in and what they decide, without one.
    WhatIf {
        /// A directory user's email, or an external user's email or subject.
        #[arg(long)]
        user: String,
        #[arg(long)]
        app: String,
        /// The client's address.
        #[arg(long)]
        ip: IpAddr,
        #[arg(long, value_enum)]
        platform: Option<PlatformArg>,
        /// A group of an external user (repeatable); a directory user's come from the directory.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The sign-in used a second factor.
        #[arg(long)]
        mfa: bool,
        /// The sign-in used a passkey.
        #[arg(long)]
        passkey: bool,
        /// The sign-in risk (none, low, medium, high); default: medium when the address is on
        /// the edge's anonymizer list, else none.
        #[arg(long, value_name = "LEVEL", value_parser = risk_level)]
        sign_in_risk: Option<RiskLevel>,
        /// The user risk; default: the user's current risk.
        #[arg(long, value_name = "LEVEL", value_parser = risk_level)]
        user_risk: Option<RiskLevel>,
        /// When the sign-in happens (RFC 3339 or Unix seconds), for time windows; default: now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
}

/// A policy's state as policy files write it (`report-only`).
fn state_name(state: PolicyState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn risk_level(s: &str) -> Result<RiskLevel, String> {
    RiskLevel::parse(s)
        .ok_or_else(|| format!("{s:?} is not a risk level: none, low, medium or high"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PlatformArg {
    Android,
    Ios,
    Windows,
    Macos,
    Linux,
    Other,
}

impl From<PlatformArg> for Platform {
    fn from(p: PlatformArg) -> Platform {
        match p {
            PlatformArg::Android => Platform::Android,
            PlatformArg::Ios => Platform::Ios,
            PlatformArg::Windows => Platform::Windows,
            PlatformArg::Macos => Platform::Macos,
            PlatformArg::Linux => Platform::Linux,
            PlatformArg::Other => Platform::Other,
        }
    }
}

pub async fn location(
    client: &AdminClient,
    json: bool,
    cmd: LocationCommand,
) -> anyhow::Result<()> {
    match cmd {
        LocationCommand::Create {
            name,
            cidrs,
            countries,
            trusted,
        } => {
            if cidrs.is_empty() && countries.is_empty() {
                bail!("give the location --cidr ranges, --country codes, or both");
            }
            let location = NamedLocation {
                name: name.clone(),
                cidrs,
                countries: countries.iter().map(|c| c.to_ascii_uppercase()).collect(),
                trusted,
            };
            let saved: NamedLocation = client
                .put(&format!("/v1/locations/{}", segment(&name)), &location)
                .await?;
            print(json, &saved, || say!("named location {} saved", saved.name));
        }
        LocationCommand::List => {
            let all: Vec<NamedLocation> = client.get("/v1/locations").await?;
            print(json, &all, || {
                table(
                    &["NAME", "TRUSTED", "CIDRS", "COUNTRIES"],
                    all.iter()
                        .map(|l| {
                            vec![
                                l.name.clone(),
                                l.trusted.to_string(),
                                l.cidrs
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(","),
                                l.countries.join(","),
                            ]
                        })
                        .collect(),
                )
            });
        }
        LocationCommand::Delete { name } => {
            client
                .delete(&format!("/v1/locations/{}", segment(&name)))
                .await?;
            say!("named location {name} deleted");
        }
    }
    Ok(())
}

/// Reads a policy file (YAML, which includes JSON), named `name`.
fn read_policy(name: &str, file: &PathBuf) -> anyhow::Result<Policy> {
    let shown = file.display();
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read the policy file {shown}"))?
        .len();
    if size > MAX_POLICY_FILE_BYTES {
        bail!("the policy file {shown} is {size} bytes; at most {MAX_POLICY_FILE_BYTES} are read");
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the policy file {shown}"))?;
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("the policy file {shown} is not YAML or JSON"))?;
    let Some(map) = doc.as_mapping_mut() else {
        bail!("the policy file {shown} must hold one policy (a mapping with users, apps, grant…)");
    };
    match map.get("name").map(|v| v.as_str()) {
        None => {
            map.insert("name".into(), name.into());
        }
        Some(Some(n)) if n == name => {}
        Some(other) => bail!(
            "the policy file {shown} names the policy {:?}, not {name:?}; make them the same",
            other.unwrap_or_default()
        ),
    }
    serde_yaml_ng::from_value(doc)
        .with_context(|| format!("the policy file {shown} is not a valid policy"))
}

pub async fn policy(client: &AdminClient, json: bool, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Create { name, file } => {
            let policy = read_policy(&name, &file)?;
            let saved: Policy = client
                .put(&format!("/v1/policies/{}", segment(&name)), &policy)
                .await?;
            print(json, &saved, || {
                say!("policy {} saved ({})", saved.name, state_name(saved.state))
            });
        }
        PolicyCommand::List => {
            let all: Vec<Policy> = client.get("/v1/policies").await?;
            print(json, &all, || {
                table(
                    &["NAME", "STATE", "USERS", "APPS", "GRANT"],
                    all.iter()
                        .map(|p| {
                            let list = |v: &[String]| v.join(",");
                            vec![
                                p.name.clone(),
                                state_name(p.state),
                                list(&texts(&p.users.include)),
                                list(&texts(&p.apps.include)),
                                if p.grant.block {
                                    "block".to_owned()
                                } else {
                                    format!("{:?}", p.grant.require).to_lowercase()
                                },
                            ]
                        })
                        .collect(),
                )
            });
        }
        PolicyCommand::Delete { name } => {
            client
                .delete(&format!("/v1/policies/{}", segment(&name)))
                .await?;
            say!("policy {name} deleted");
        }
        PolicyCommand::WhatIf {
            user,
            app,
            ip,
            platform,
            groups,
            mfa,
            passkey,
            sign_in_risk,
            user_risk,
            at,
        } => {
            let at = match at {
                None => None,
                Some(t) => Some(
                    super::time_filter("--at", &t)?
                        .parse::<u64>()
                        .map_err(|_| anyhow::anyhow!("--at {t:?} is before 1970"))?,
                ),
            };
            let q = WhatIf {
                user,
                app,
                ip,
                platform: platform.map(Into::into),
                groups,
                mfa,
                passkey,
                sign_in_risk,
                user_risk,
                at,
            };
            let view: WhatIfView = client.post("/v1/policies/what-if", &q).await?;
            print(json, &view, || {
                match &view.policy {
                    Some(p) => say!("{} (policy {p})", view.result),
                    None => say!("{}", view.result),
                }
                say!(
                    "sign-in risk {}, user risk {}",
                    view.sign_in_risk.as_str(),
                    view.user_risk.as_str()
                );
                table(
                    &["POLICY", "STATE", "OUTCOME"],
                    view.policies
                        .iter()
                        .map(|p| vec![p.name.clone(), state_name(p.state), p.outcome.clone()])
                        .collect(),
                )
            });
        }
    }
    Ok(())
}

/// Targets in their text form (`group:staff`).
fn texts<T: Clone + Into<String>>(targets: &[T]) -> Vec<String> {
    targets.iter().cloned().map(Into::into).collect()
}
