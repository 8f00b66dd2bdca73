//! The parts of `apply` beyond groups, apps and access: users of the built-in directory (and
//! their directory groups), who is assigned to each app, the built-in provider's clients, and
//! `--prune`.
//!
//! Every change is one or more admin API calls, planned in full before any is made.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context};
use postern_edge::admin_api::{AssignmentView, ClientView, ConnectorView, GroupView, UserView};
use postern_policy::{NamedLocation, Policy};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::apply::{Change, DesiredState};
use super::client::{segment, AdminClient};
use postern_edge::admin_api::AppView;

/// One admin API call a change makes.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

impl Call {
    fn post(path: String, body: Value) -> Call {
        Call {
            method: Method::POST,
            path,
            body: Some(body),
        }
    }

    fn delete(path: String) -> Call {
        Call {
            method: Method::DELETE,
            path,
            body: None,
        }
    }

    pub async fn send(&self, client: &AdminClient) -> anyhow::Result<Value> {
        match (&self.method, &self.body) {
            (&Method::POST, Some(body)) => client.post(&self.path, body).await,
            (&Method::DELETE, None) => client.delete(&self.path).await.map(|()| Value::Null),
            (m, _) => bail!("no such call: {m} {}", self.path),
        }
    }
}

/// A user of the built-in directory, as the file wants them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    email: String,
    #[serde(default)]
    display_name: Option<String>,
    /// A file holding the password a new user starts with (passwords stay out of the file
    /// itself); read only when the user is created.
    #[serde(default)]
    password_file: Option<PathBuf>,
    // Each setting left out keeps what an existing user has (a new user gets the default:
    // not an admin, no MFA required, enabled, email not verified, in no groups).
    #[serde(default)]
    admin: Option<bool>,
    #[serde(default)]
    require_mfa: Option<bool>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    email_verified: Option<bool>,
    /// Directory groups the user is a member of, and no others.
    #[serde(default)]
    groups: Option<Vec<String>>,
}

/// An OpenID Connect client of the built-in provider.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    name: String,
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    public: bool,
    /// `ES256` (the default) or `RS256`.
    #[serde(default)]
    id_token_alg: Option<String>,
    /// Where apply writes a new confidential client's secret (owner-only); required for one.
    #[serde(default)]
    secret_file: Option<PathBuf>,
}

/// Someone assigned to an app: a user (email or subject) or a group.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AssigneeSpec {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

impl AssigneeSpec {
    fn view(&self, app: &str) -> anyhow::Result<AssignmentView> {
        match (&self.user, &self.group) {
            (Some(u), None) => Ok(AssignmentView {
                kind: "user".into(),
                value: u.trim().to_owned(),
            }),
            (None, Some(g)) => Ok(AssignmentView {
                kind: "group".into(),
                value: g.trim().to_owned(),
            }),
            _ => bail!("app {app:?}: each assignment names one `user` or one `group`"),
        }
    }
}

/// Users: created when missing (with their password file), enabled or disabled, email
/// verification and directory groups brought to what the file says.
pub async fn plan_users(
    client: &AdminClient,
    desired: &DesiredState,
) -> anyhow::Result<Vec<Change>> {
    if desired.users.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<UserView> = client.get("/v1/users").await?;
    let mut changes = Vec::new();
    let mut seen = BTreeSet::new();
    for spec in &desired.users {
        let email = spec.email.trim().to_ascii_lowercase();
        if !seen.insert(email.clone()) {
            bail!("user {email:?} is listed twice");
        }
        let groups: Option<BTreeSet<String>> = spec
            .groups
            .as_ref()
            .map(|gs| gs.iter().map(|g| g.trim().to_owned()).collect());
        let Some(current) = users.iter().find(|u| u.email == email) else {
            let Some(file) = &spec.password_file else {
                bail!("user {email:?} does not exist yet: give password_file, the file holding the password they start with");
            };
            let password = std::fs::read_to_string(file)
                .with_context(|| {
                    format!(
                        "user {email:?}: cannot read password_file {}",
                        file.display()
                    )
                })?
                .trim()
                .to_owned();
            postern_idp::password::check_policy(&email, &password).map_err(|weak| {
                anyhow::anyhow!(
                    "user {email:?}: the password in {} is refused: {weak}",
                    file.display()
                )
            })?;
            let then = if spec.enabled.unwrap_or(true) {
                Vec::new()
            } else {
                vec![Call::post(
                    format!("/v1/users/{}/disable", segment(&email)),
                    json!({}),
                )]
            };
            changes.push(Change::CreateUser {
                email: email.clone(),
                request: json!({
                    "email": email,
                    "password": password,
                    "display_name": spec.display_name,
                    "admin": spec.admin.unwrap_or(false),
                    "require_mfa": spec.require_mfa.unwrap_or(false),
                    "groups": groups.unwrap_or_default(),
                    "email_verified": spec.email_verified.unwrap_or(false),
                }),
                then,
            });
            continue;
        };
        // Set at creation only: the API changes none of them afterwards.
        let fixed = [
            spec.admin
                .map(|a| ("admin", json!(current.admin), json!(a))),
            spec.require_mfa
                .map(|m| ("require_mfa", json!(current.require_mfa), json!(m))),
        ]
        .into_iter()
        .flatten()
        .chain(
            spec.display_name
                .as_ref()
                .map(|d| ("display_name", json!(current.display_name), json!(d))),
        )
        .filter(|(_, from, to)| from != to)
        .map(|(field, from, to)| format!("{field} is {from}, the file says {to}"))
        .collect::<Vec<_>>();
        if !fixed.is_empty() {
            bail!(
                "user {email:?}: {}; these are set when a user is created and apply does not change them (for MFA, `user mfa-reset`)",
                fixed.join(", ")
            );
        }
        let mut fields = BTreeMap::new();
        let mut calls = Vec::new();
        let user = segment(&email);
        if let Some(enabled) = spec.enabled.filter(|e| *e != current.enabled) {
            fields.insert(
                "enabled".to_owned(),
                [json!(current.enabled), json!(enabled)],
            );
            let verb = if enabled { "enable" } else { "disable" };
            calls.push(Call::post(format!("/v1/users/{user}/{verb}"), json!({})));
        }
        if let Some(verified) = spec.email_verified.filter(|v| *v != current.email_verified) {
            fields.insert(
                "email_verified".to_owned(),
                [json!(current.email_verified), json!(verified)],
            );
            calls.push(Call::post(
                format!("/v1/users/{user}/email-verified"),
                json!({ "verified": verified }),
            ));
        }
        let have: BTreeSet<String> = current.groups.iter().cloned().collect();
        if let Some(groups) = groups.filter(|g| *g != have) {
            fields.insert("groups".to_owned(), [json!(have), json!(groups)]);
            for g in groups.difference(&have) {
                calls.push(Call::post(
                    format!("/v1/directory-groups/{}/members", segment(g)),
                    json!({ "email": email }),
                ));
            }
            for g in have.difference(&groups) {
                calls.push(Call::delete(format!(
                    "/v1/directory-groups/{}/members/{user}",
                    segment(g)
                )));
            }
        }
        if !calls.is_empty() {
            changes.push(Change::UpdateUser {
                email,
                fields,
                calls,
            });
        }
    }
    Ok(changes)
}

/// Assignments of the apps that list them: the file's set exactly (an app without an
/// `assignments` key keeps its own).
pub async fn plan_assignments(
    client: &AdminClient,
    desired: &DesiredState,
    apps: &[AppView],
) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::new();
    for spec in &desired.apps {
        let Some(wanted) = &spec.assignments else {
            continue;
        };
        let wanted = wanted
            .iter()
            .map(|a| a.view(&spec.name).map(|v| (v.kind, v.value)))
            .collect::<anyhow::Result<BTreeSet<(String, String)>>>()?;
        let current: BTreeSet<(String, String)> = if apps.iter().any(|a| a.name == spec.name) {
            let list: Vec<AssignmentView> = client
                .get(&format!("/v1/apps/{}/assignments", segment(&spec.name)))
                .await?;
            list.into_iter().map(|a| (a.kind, a.value)).collect()
        } else {
            BTreeSet::new()
        };
        for (kind, value) in wanted.difference(&current) {
            changes.push(Change::Assign {
                app: spec.name.clone(),
                kind: kind.clone(),
                value: value.clone(),
            });
        }
        for (kind, value) in current.difference(&wanted) {
            changes.push(Change::Unassign {
                app: spec.name.clone(),
                kind: kind.clone(),
                value: value.clone(),
            });
        }
    }
    Ok(changes)
}

/// Clients the file names and the edge lacks are created; one that differs is refused, since a
/// client cannot change in place without its users noticing.
pub async fn plan_clients(
    client: &AdminClient,
    desired: &DesiredState,
) -> anyhow::Result<Vec<Change>> {
    if desired.clients.is_empty() {
        return Ok(Vec::new());
    }
    let clients: Vec<ClientView> = client.get("/v1/clients").await?;
    let mut changes = Vec::new();
    let mut seen = BTreeSet::new();
    let mut secret_files = BTreeSet::new();
    for spec in &desired.clients {
        if !seen.insert(spec.name.as_str()) {
            bail!("client {:?} is listed twice", spec.name);
        }
        let alg = spec
            .id_token_alg
            .clone()
            .unwrap_or_else(|| "ES256".to_owned());
        match clients
            .iter()
            .find(|c| c.app.is_none() && c.name == spec.name)
        {
            Some(c) => {
                let differs: Vec<&str> = [
                    ("redirect_uris", c.redirect_uris != spec.redirect_uris),
                    (
                        "post_logout_redirect_uris",
                        c.post_logout_redirect_uris != spec.post_logout_redirect_uris,
                    ),
                    ("public", c.public != spec.public),
                    ("id_token_alg", !c.id_token_alg.eq_ignore_ascii_case(&alg)),
                ]
                .into_iter()
                .filter_map(|(f, d)| d.then_some(f))
                .collect();
                if !differs.is_empty() {
                    bail!(
                        "client {:?} ({}) differs from the file in {}; a client does not change in place: delete it (`client delete {}`) and apply again for a new one",
                        spec.name,
                        c.client_id,
                        differs.join(", "),
                        c.client_id
                    );
                }
            }
            None => {
                if !spec.public && spec.secret_file.is_none() {
                    bail!(
                        "client {:?} is confidential: give secret_file, where apply writes its new secret",
                        spec.name
                    );
                }
                if let Some(f) = &spec.secret_file {
                    // Checked before anything is created: a secret is shown only once.
                    if f.exists() {
                        bail!(
                            "client {:?}: secret_file {} exists; name a new file for the new client's secret",
                            spec.name,
                            f.display()
                        );
                    }
                    let parent = f.parent().filter(|p| !p.as_os_str().is_empty());
                    if parent.is_some_and(|p| !p.is_dir()) {
                        bail!(
                            "client {:?}: secret_file {}: its directory does not exist; create it first",
                            spec.name,
                            f.display()
                        );
                    }
                    if !secret_files.insert(f.clone()) {
                        bail!(
                            "client {:?}: secret_file {} is named by another client too; give each its own",
                            spec.name,
                            f.display()
                        );
                    }
                }
                changes.push(Change::CreateClient {
                    name: spec.name.clone(),
                    request: json!({
                        "name": spec.name,
                        "redirect_uris": spec.redirect_uris,
                        "post_logout_redirect_uris": spec.post_logout_redirect_uris,
                        "public": spec.public,
                        "id_token_alg": alg,
                    }),
                    secret_file: spec.secret_file.clone(),
                });
            }
        }
    }
    Ok(changes)
}

/// `--prune`: of each kind the file lists, what the edge has and the file does not name goes:
/// policies, locations, apps, connector groups and clients are deleted, users disabled (the
/// directory keeps them and their sign-in history). Kinds the file does not list are left alone.
pub async fn plan_prune(
    client: &AdminClient,
    desired: &DesiredState,
    apps: &[AppView],
    groups: &[GroupView],
) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::new();
    let delete = |kind: &'static str, name: &str, path: String| Change::Remove {
        kind,
        name: name.to_owned(),
        call: Call::delete(path),
    };
    if !desired.policies.is_empty() {
        let named: BTreeSet<&str> = desired.policies.iter().map(|p| p.name.as_str()).collect();
        let edge: Vec<Policy> = client.get("/v1/policies").await?;
        for p in edge.iter().filter(|p| !named.contains(p.name.as_str())) {
            changes.push(delete(
                "policy",
                &p.name,
                format!("/v1/policies/{}", segment(&p.name)),
            ));
        }
    }
    if !desired.locations.is_empty() {
        let named: BTreeSet<&str> = desired.locations.iter().map(|l| l.name.as_str()).collect();
        let edge: Vec<NamedLocation> = client.get("/v1/locations").await?;
        for l in edge.iter().filter(|l| !named.contains(l.name.as_str())) {
            changes.push(delete(
                "location",
                &l.name,
                format!("/v1/locations/{}", segment(&l.name)),
            ));
        }
    }
    if !desired.apps.is_empty() {
        let named: BTreeSet<&str> = desired.apps.iter().map(|a| a.name.as_str()).collect();
        for a in apps.iter().filter(|a| !named.contains(a.name.as_str())) {
            changes.push(delete(
                "app",
                &a.name,
                format!("/v1/apps/{}", segment(&a.name)),
            ));
        }
    }
    if !desired.groups.is_empty() {
        let named: BTreeSet<&str> = desired.groups.iter().map(|g| g.name.as_str()).collect();
        let connectors: Vec<ConnectorView> = client.get("/v1/connectors").await?;
        for g in groups.iter().filter(|g| !named.contains(g.name.as_str())) {
            // The apps that stay: the file's, or (when it lists none) the edge's.
            let app_in_group = if desired.apps.is_empty() {
                apps.iter()
                    .find(|a| a.group == g.name)
                    .map(|a| a.name.as_str())
            } else {
                desired
                    .apps
                    .iter()
                    .find(|a| a.group == g.name)
                    .map(|a| a.name.as_str())
            };
            if let Some(app) = app_in_group {
                bail!(
                    "--prune would delete group {:?}, which app {app:?} is published through: move the app to a group the file keeps, or keep the group in the file",
                    g.name
                );
            }
            if let Some(c) = connectors
                .iter()
                .find(|c| c.group == g.name && c.status != "revoked")
            {
                bail!(
                    "--prune would delete group {:?}, which connector {} still belongs to: move or revoke its connectors first, or keep the group in the file",
                    g.name,
                    c.id
                );
            }
            changes.push(delete(
                "group",
                &g.name,
                format!("/v1/groups/{}", segment(&g.name)),
            ));
        }
    }
    if !desired.clients.is_empty() {
        let named: BTreeSet<&str> = desired.clients.iter().map(|c| c.name.as_str()).collect();
        let edge: Vec<ClientView> = client.get("/v1/clients").await?;
        // Clients the edge registered for its apps come and go with the apps.
        for c in edge
            .iter()
            .filter(|c| c.app.is_none() && !named.contains(c.name.as_str()))
        {
            changes.push(delete(
                "client",
                &c.name,
                format!("/v1/clients/{}", segment(&c.client_id)),
            ));
        }
    }
    if !desired.users.is_empty() {
        let named: BTreeSet<String> = desired
            .users
            .iter()
            .map(|u| u.email.trim().to_ascii_lowercase())
            .collect();
        let edge: Vec<UserView> = client.get("/v1/users").await?;
        let stays_enabled = |email: &str| {
            desired.users.iter().any(|spec| {
                spec.email.trim().eq_ignore_ascii_case(email) && spec.enabled != Some(false)
            })
        };
        let admins_kept = edge
            .iter()
            .filter(|u| u.admin && stays_enabled(&u.email))
            .count();
        if admins_kept == 0 && edge.iter().any(|u| u.admin && u.enabled) {
            bail!(
                "--prune would disable every enabled admin user, leaving no one to sign in to the admin console: list at least one admin in the file"
            );
        }
        for u in edge
            .iter()
            .filter(|u| u.enabled && !named.contains(&u.email))
        {
            changes.push(Change::Remove {
                kind: "user (disabled)",
                name: u.email.clone(),
                call: Call::post(
                    format!("/v1/users/{}/disable", segment(&u.email)),
                    json!({}),
                ),
            });
        }
    }
    Ok(changes)
}

/// Writes a new client's secret where the file said, owner-only.
pub fn keep_secret(name: &str, created: &ClientView, file: Option<&PathBuf>) -> anyhow::Result<()> {
    if let (Some(secret), Some(file)) = (&created.client_secret, file) {
        if let Err(e) = postern_pki::write_private(file, format!("{secret}\n").as_bytes()) {
            // The edge keeps only a hash: this is the last place the secret exists.
            eprintln!(
                "client {name:?} ({}): its secret, shown once because it could not be written: {secret}",
                created.client_id
            );
            return Err(e).with_context(|| {
                format!(
                    "client {name:?} was created ({}) but its secret could not be written to {}",
                    created.client_id,
                    file.display()
                )
            });
        }
    }
    Ok(())
}
