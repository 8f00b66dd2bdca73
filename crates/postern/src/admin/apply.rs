//! `postern admin apply -f FILE`: make the edge's groups, apps (and who is assigned to them),
//! named locations, conditional-access policies, users and clients match a TOML or YAML file.
//!
//! The whole file is checked before anything is sent (policies are compiled against the
//! locations, apps and groups the edge and the file will have together, as the edge compiles
//! them); the plan (what will be created and which fields change) is printed first; `--dry-run`
//! stops there. Applying the same file twice changes nothing the second time. What is not in
//! the file is left alone, unless `--prune` (see `reconcile`).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use postern_edge::admin_api::{AppView, AssignmentView, ClientView, DirectoryGroupView, GroupView};
use postern_edge::apps::{PublishApp, UpdateApp};
use postern_policy::{Known, NamedLocation, Policies, Policy, UserTarget};
use serde::{Deserialize, Serialize};

use super::client::{segment, AdminClient};
use super::output::{print, safe, say};
use super::reconcile::{self, AssigneeSpec, Call, ClientSpec, UserSpec};

#[derive(Args)]
pub struct ApplyArgs {
    /// The file: `.toml`, `.yaml` or `.yml`.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Show what would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also remove what the file does not name, of each kind it lists: policies, locations,
    /// apps, connector groups and clients are deleted, users disabled.
    #[arg(long)]
    prune: bool,
}

/// The file, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DesiredState {
    #[serde(default)]
    pub(super) groups: Vec<GroupSpec>,
    #[serde(default)]
    pub(super) apps: Vec<AppSpec>,
    /// Named locations, as `location create` writes them.
    #[serde(default)]
    pub(super) locations: Vec<NamedLocation>,
    /// Conditional-access policies, as `policy create -f` reads them, each with its `name`.
    #[serde(default)]
    pub(super) policies: Vec<Policy>,
    /// Users of the built-in directory.
    #[serde(default)]
    pub(super) users: Vec<UserSpec>,
    /// OpenID Connect clients of the built-in provider.
    #[serde(default)]
    pub(super) clients: Vec<ClientSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupSpec {
    pub(super) name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppSpec {
    pub(super) name: String,
    /// Who may use the app (with `assignment_required`): exactly these; without the key, the
    /// edge's assignments are left alone.
    #[serde(default)]
    pub(super) assignments: Option<Vec<AssigneeSpec>>,
    external_url: String,
    internal_url: String,
    pub(super) group: String,
    #[serde(default = "passthrough")]
    preauth: String,
    #[serde(default)]
    preserve_host: bool,
    #[serde(default)]
    insecure_skip_backend_tls_verify: bool,
    /// e.g. "85s" or "2m".
    #[serde(default, with = "humantime_serde_opt")]
    backend_timeout: Option<Duration>,
    #[serde(default)]
    maintenance: bool,
    /// With `preauth = "oidc"`: the issuer; none for the built-in identity provider.
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    /// A file holding the client secret (secrets stay out of the file itself). Sent when the app
    /// is published, or when the edge holds no secret for it yet.
    #[serde(default)]
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    assignment_required: bool,
    #[serde(default)]
    require_mfa: bool,
    /// Scripts in the page cannot read the session cookie (HttpOnly).
    #[serde(default = "yes")]
    cookie_http_only: bool,
    /// The session cookie outlives the browser session.
    #[serde(default)]
    cookie_persistent: bool,
    /// The issuer verifies every email it sends (a token without `email_verified` then counts
    /// as verified).
    #[serde(default)]
    issuer_verifies_email: bool,
}

fn yes() -> bool {
    true
}

fn passthrough() -> String {
    "passthrough".to_owned()
}

/// `Option<Duration>` written as a human duration ("85s").
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(&s).map_err(|e| {
                serde::de::Error::custom(format!("backend_timeout {s:?}: {e}; use e.g. \"85s\""))
            })
        })
        .transpose()
    }
}

/// One change the plan makes.
#[derive(Serialize, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Change {
    CreateGroup {
        name: String,
    },
    CreateUser {
        email: String,
        #[serde(skip)]
        request: serde_json::Value,
        /// Calls right after the creation (disabling a user the file lists as disabled).
        #[serde(skip)]
        then: Vec<Call>,
    },
    UpdateUser {
        email: String,
        /// Field -> [current, wanted].
        fields: BTreeMap<String, [serde_json::Value; 2]>,
        #[serde(skip)]
        calls: Vec<Call>,
    },
    Assign {
        app: String,
        kind: String,
        value: String,
    },
    Unassign {
        app: String,
        kind: String,
        value: String,
    },
    CreateClient {
        name: String,
        #[serde(skip)]
        request: serde_json::Value,
        #[serde(skip)]
        secret_file: Option<PathBuf>,
    },
    /// `--prune`: something the file no longer names.
    Remove {
        kind: &'static str,
        name: String,
        #[serde(skip)]
        call: Call,
    },
    PublishApp {
        name: String,
        #[serde(skip)]
        request: PublishApp,
    },
    UpdateApp {
        name: String,
        /// Field -> [current, wanted].
        fields: BTreeMap<String, [serde_json::Value; 2]>,
        #[serde(skip)]
        patch: UpdateApp,
    },
    PutLocation {
        name: String,
        /// Field -> [current, wanted]; empty for a new one.
        fields: BTreeMap<String, [serde_json::Value; 2]>,
        #[serde(skip)]
        location: NamedLocation,
    },
    PutPolicy {
        name: String,
        /// Field -> [current, wanted]; empty for a new one.
        fields: BTreeMap<String, [serde_json::Value; 2]>,
        #[serde(skip)]
        policy: Policy,
    },
}

/// Writes `+ KIND NAME`, or `~ KIND NAME` and each changed field.
fn put_line(
    f: &mut std::fmt::Formatter<'_>,
    kind: &str,
    name: &str,
    fields: &BTreeMap<String, [serde_json::Value; 2]>,
) -> std::fmt::Result {
    if fields.is_empty() {
        return write!(f, "+ {kind} {}", safe(name));
    }
    write!(f, "~ {kind} {}", safe(name))?;
    for (field, [from, to]) in fields {
        write!(f, "\n    {}: {from} -> {to}", safe(field))?;
    }
    Ok(())
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Values come from the file and from the edge: shown with control characters escaped
            // (the field values are JSON, which escapes them itself).
            Change::CreateGroup { name } => write!(f, "+ group {}", safe(name)),
            Change::PublishApp { name, request } => write!(
                f,
                "+ app {}: {} -> {} (group {}, preauth {})",
                safe(name),
                safe(&request.external_url),
                safe(&request.internal_url),
                safe(&request.group),
                safe(&request.preauth)
            ),
            Change::UpdateApp { name, fields, .. } => put_line(f, "app", name, fields),
            Change::CreateUser { email, .. } => write!(f, "+ user {}", safe(email)),
            Change::UpdateUser { email, fields, .. } => put_line(f, "user", email, fields),
            Change::Assign { app, kind, value } => {
                write!(f, "+ assignment {}: {kind} {}", safe(app), safe(value))
            }
            Change::Unassign { app, kind, value } => {
                write!(f, "- assignment {}: {kind} {}", safe(app), safe(value))
            }
            Change::CreateClient { name, .. } => write!(f, "+ client {}", safe(name)),
            Change::Remove { kind, name, .. } => write!(f, "- {kind} {}", safe(name)),
            Change::PutLocation { name, fields, .. } => put_line(f, "location", name, fields),
            Change::PutPolicy { name, fields, .. } => put_line(f, "policy", name, fields),
        }
    }
}

#[derive(Serialize)]
struct Outcome<'a> {
    dry_run: bool,
    changes: &'a [Change],
}

pub async fn run(client: &AdminClient, json: bool, args: ApplyArgs) -> anyhow::Result<()> {
    let desired = read(&args.file)?;
    let groups: Vec<GroupView> = client.get("/v1/groups").await?;
    let apps: Vec<AppView> = client.get("/v1/apps").await?;
    let mut changes = plan(&desired, &groups, &apps)
        .with_context(|| format!("{} was not applied", args.file.display()))?;
    let not_applied = || format!("{} was not applied", args.file.display());
    if !desired.locations.is_empty() || !desired.policies.is_empty() || args.prune {
        let edge = EdgeAccess::fetch(client, &desired, &apps).await?;
        changes.extend(plan_access(&desired, &apps, &edge, args.prune).with_context(not_applied)?);
    }
    changes.extend(
        reconcile::plan_assignments(client, &desired, &apps)
            .await
            .with_context(not_applied)?,
    );
    changes.extend(
        reconcile::plan_users(client, &desired)
            .await
            .with_context(not_applied)?,
    );
    changes.extend(
        reconcile::plan_clients(client, &desired)
            .await
            .with_context(not_applied)?,
    );
    if args.prune {
        changes.extend(
            reconcile::plan_prune(client, &desired, &apps, &groups)
                .await
                .with_context(not_applied)?,
        );
    }
    if !json {
        if changes.is_empty() {
            say!(
                "no changes: the edge already matches {}",
                args.file.display()
            );
        }
        for c in &changes {
            println!("{c}");
        }
    }
    if !args.dry_run {
        for c in &changes {
            execute(client, c, json).await.with_context(|| {
                format!(
                    "while applying `{}`",
                    c.to_string().lines().next().unwrap_or_default()
                )
            })?;
        }
    }
    print(
        json,
        &Outcome {
            dry_run: args.dry_run,
            changes: &changes,
        },
        || {
            if !changes.is_empty() {
                if args.dry_run {
                    say!("dry run: {} change(s) not applied", changes.len());
                } else {
                    say!("applied {} change(s)", changes.len());
                }
            }
        },
    );
    Ok(())
}

fn read(path: &PathBuf) -> anyhow::Result<DesiredState> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read -f {}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "toml" => toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message())),
        "yaml" | "yml" => {
            if text.trim().is_empty() {
                return Ok(DesiredState::default());
            }
            serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{} is not valid", path.display()))
        }
        _ => bail!(
            "-f {} must end in .toml, .yaml or .yml so its format is known",
            path.display()
        ),
    }
}

/// Checks the whole file and works out the changes, without sending anything.
fn plan(
    desired: &DesiredState,
    groups: &[GroupView],
    apps: &[AppView],
) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::new();
    let existing_groups: HashSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let mut known_groups = existing_groups.clone();
    let mut seen = HashSet::new();
    for g in &desired.groups {
        postern_edge::apps::check_name(&g.name).map_err(|e| anyhow::anyhow!("group: {e}"))?;
        if !seen.insert(g.name.as_str()) {
            bail!("group {:?} is listed twice", g.name);
        }
        known_groups.insert(&g.name);
        if !existing_groups.contains(g.name.as_str()) {
            changes.push(Change::CreateGroup {
                name: g.name.clone(),
            });
        }
    }
    let mut names = HashSet::new();
    let mut hosts = HashSet::new();
    for spec in &desired.apps {
        let client_secret = spec
            .client_secret_file
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_owned())
                    .with_context(|| {
                        format!(
                            "app {:?}: cannot read client_secret_file {}",
                            spec.name,
                            p.display()
                        )
                    })
            })
            .transpose()?;
        let request = PublishApp {
            preauth: spec.preauth.clone(),
            preserve_host: spec.preserve_host,
            insecure_skip_backend_tls_verify: spec.insecure_skip_backend_tls_verify,
            backend_timeout_secs: spec.backend_timeout.map(|d| d.as_secs()),
            maintenance: spec.maintenance,
            issuer: spec.issuer.clone(),
            client_id: spec.client_id.clone(),
            client_secret: client_secret.clone(),
            assignment_required: spec.assignment_required,
            require_mfa: spec.require_mfa,
            cookie_http_only: spec.cookie_http_only,
            cookie_persistent: spec.cookie_persistent,
            issuer_verifies_email: spec.issuer_verifies_email,
            ..PublishApp::new(
                &spec.name,
                &spec.external_url,
                &spec.internal_url,
                &spec.group,
            )
        };
        let valid = postern_edge::apps::validate(&request)
            .map_err(|e| anyhow::anyhow!("app {:?}: {e}", spec.name))?;
        if !names.insert(valid.name.clone()) {
            bail!("app {:?} is listed twice", spec.name);
        }
        if !hosts.insert(valid.external_host.clone()) {
            bail!(
                "two apps in the file use the external host {}; each host serves one app",
                valid.external_host
            );
        }
        if !known_groups.contains(valid.group.as_str()) {
            bail!(
                "app {:?} names group {:?}, which neither the edge nor the file has; add it under groups",
                spec.name,
                valid.group
            );
        }
        if let Some(other) = apps
            .iter()
            .find(|a| a.name != valid.name && host_of(&a.external_url) == valid.external_host)
        {
            bail!(
                "app {:?} wants {}, which the edge's app {:?} already uses",
                spec.name,
                valid.external_host,
                other.name
            );
        }
        match apps.iter().find(|a| a.name == valid.name) {
            None => changes.push(Change::PublishApp {
                name: valid.name.clone(),
                request,
            }),
            Some(current) => {
                // The file's settings as the edge stores them (URLs, names and the timeout
                // normalised by validation).
                let wanted = PublishApp {
                    external_url: valid.external_url,
                    internal_url: valid.internal_url,
                    group: valid.group,
                    preauth: valid.preauth.as_str().to_owned(),
                    backend_timeout_secs: Some(valid.backend_timeout.as_secs()),
                    issuer: valid.oidc.as_ref().and_then(|o| o.issuer.clone()),
                    ..request
                };
                if let Some(change) = diff(current, wanted)? {
                    changes.push(change);
                }
            }
        }
    }
    Ok(changes)
}

/// The settings of an app's sign-in, shown only for an app with pre-authentication.
const SIGN_IN_FIELDS: &[&str] = &[
    "issuer",
    "client_id",
    "assignment_required",
    "require_mfa",
    "cookie_http_only",
    "cookie_persistent",
    "issuer_verifies_email",
];

/// An app's settings as the edge shows them, in the shape of a publish request.
fn shown(current: &AppView) -> PublishApp {
    let mut app = PublishApp::new(
        &current.name,
        &current.external_url,
        &current.internal_url,
        &current.group,
    );
    app.preauth = current.preauth.clone();
    app.preserve_host = current.preserve_host;
    app.insecure_skip_backend_tls_verify = current.insecure_skip_backend_tls_verify;
    app.backend_timeout_secs = Some(current.backend_timeout_secs);
    app.maintenance = current.maintenance;
    if let Some(s) = &current.sign_in {
        app.issuer = Some(s.issuer.clone()).filter(|i| i != "built-in");
        app.client_id = Some(s.client_id.clone()).filter(|c| !c.is_empty());
        app.assignment_required = s.assignment_required;
        app.require_mfa = s.require_mfa;
        app.cookie_http_only = s.cookie_http_only;
        app.cookie_persistent = s.cookie_persistent;
        app.issuer_verifies_email = s.issuer_verifies_email;
    }
    app
}

/// The fields whose values differ between the edge's app and the file's, compared in the API's
/// own field names, and the update that makes the edge match.
fn diff(current: &AppView, wanted: PublishApp) -> anyhow::Result<Option<Change>> {
    let as_map = |app: &PublishApp| match serde_json::to_value(app) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (from, to) = (as_map(&shown(current)), as_map(&wanted));
    // The built-in provider names its client itself: only an explicit client ID is compared.
    let compare_client = !wanted.client_id.as_deref().unwrap_or_default().is_empty();
    // Sign-in settings mean nothing to an app that stays passthrough (and the edge shows none).
    let passthrough = wanted.preauth == "passthrough" && current.preauth == "passthrough";
    let names: std::collections::BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    let mut fields = BTreeMap::new();
    let mut changed = serde_json::Map::new();
    for field in names {
        if matches!(field.as_str(), "name" | "client_secret")
            || (field == "client_id" && !compare_client)
            || (passthrough && SIGN_IN_FIELDS.contains(&field.as_str()))
        {
            continue;
        }
        let null = serde_json::Value::Null;
        let (before, value) = (
            from.get(field).unwrap_or(&null),
            to.get(field).unwrap_or(&null),
        );
        if before != value {
            fields.insert(field.clone(), [before.clone(), value.clone()]);
            // No issuer is the built-in provider, which an update names with "".
            let sent = match (field.as_str(), value) {
                ("issuer", serde_json::Value::Null) => serde_json::json!(""),
                _ => value.clone(),
            };
            changed.insert(field.clone(), sent);
        }
    }
    let mut patch: UpdateApp = serde_json::from_value(serde_json::Value::Object(changed))
        .context("the edge's app fields and the update's differ; upgrade the CLI")?;
    // Secrets are never shown back, so one is sent only when the edge holds none.
    let secret_missing = !current
        .sign_in
        .as_ref()
        .is_some_and(|s| s.client_secret_set);
    if wanted.client_secret.is_some() && secret_missing {
        fields.insert(
            "client_secret".to_owned(),
            [
                serde_json::json!("(none)"),
                serde_json::json!("(from file)"),
            ],
        );
        patch.client_secret = wanted.client_secret;
    }
    Ok((!patch.is_empty()).then(|| Change::UpdateApp {
        name: current.name.clone(),
        fields,
        patch,
    }))
}

/// The edge's locations, policies and the user groups a policy may name.
struct EdgeAccess {
    locations: Vec<NamedLocation>,
    policies: Vec<Policy>,
    groups: HashSet<String>,
}

impl EdgeAccess {
    async fn fetch(
        client: &AdminClient,
        desired: &DesiredState,
        apps: &[AppView],
    ) -> anyhow::Result<EdgeAccess> {
        let locations = client.get("/v1/locations").await?;
        let policies = client.get("/v1/policies").await?;
        let directory: Vec<DirectoryGroupView> = client.get("/v1/directory-groups").await?;
        let mut groups: HashSet<String> = directory.into_iter().map(|g| g.name).collect();
        // Groups an issuer's `groups` claim carries are known from assignments: read those only
        // when a policy names a group the directory does not have.
        let named = desired.policies.iter().flat_map(|p| {
            p.users
                .include
                .iter()
                .chain(&p.users.exclude)
                .filter_map(|t| match t {
                    UserTarget::Group(g) => Some(g),
                    _ => None,
                })
        });
        if named.into_iter().any(|g| !groups.contains(g)) {
            for app in apps {
                let assigned: Vec<AssignmentView> = client
                    .get(&format!("/v1/apps/{}/assignments", segment(&app.name)))
                    .await?;
                groups.extend(
                    assigned
                        .into_iter()
                        .filter(|a| a.kind == "group")
                        .map(|a| a.value),
                );
            }
        }
        Ok(EdgeAccess {
            locations,
            policies,
            groups,
        })
    }
}

/// Names as the edge will know them once the file's apps are published.
struct Names<'a> {
    apps: HashSet<&'a str>,
    groups: &'a HashSet<String>,
}

impl Known for Names<'_> {
    fn group(&self, name: &str) -> bool {
        self.groups.contains(name)
    }
    fn app(&self, name: &str) -> bool {
        self.apps.contains(name)
    }
}

/// The file's locations and policies, compiled together with the edge's (as the edge will
/// hold them), and the changes that get them there.
fn plan_access(
    desired: &DesiredState,
    apps: &[AppView],
    edge: &EdgeAccess,
    prune: bool,
) -> anyhow::Result<Vec<Change>> {
    let mut locations = edge.locations.clone();
    let mut policies = edge.policies.clone();
    let mut changes = Vec::new();
    let mut seen = HashSet::new();
    for wanted in &desired.locations {
        if !seen.insert(wanted.name.as_str()) {
            bail!("location {:?} is listed twice", wanted.name);
        }
        let mut wanted = wanted.clone();
        wanted.countries = wanted
            .countries
            .iter()
            .map(|c| c.to_ascii_uppercase())
            .collect();
        Policies::check_new_location(&wanted).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(fields) = put(&mut locations, &wanted, |l| &l.name)? {
            changes.push(Change::PutLocation {
                name: wanted.name.clone(),
                fields,
                location: wanted,
            });
        }
    }
    let mut seen = HashSet::new();
    for wanted in &desired.policies {
        if !seen.insert(wanted.name.as_str()) {
            bail!("policy {:?} is listed twice", wanted.name);
        }
        if let Some(reason) = postern_edge::preauth::access::reserved_name(&wanted.name) {
            bail!("{}: name: {reason}", wanted.name);
        }
        Policies::check_new_policy(wanted).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(fields) = put(&mut policies, wanted, |p| &p.name)? {
            changes.push(Change::PutPolicy {
                name: wanted.name.clone(),
                fields,
                policy: wanted.clone(),
            });
        }
    }
    let mut names = Names {
        apps: apps
            .iter()
            .map(|a| a.name.as_str())
            .chain(desired.apps.iter().map(|a| a.name.as_str()))
            .collect(),
        groups: &edge.groups,
    };
    Policies::compile(&policies, &locations, &names).map_err(|e| anyhow::anyhow!("{e}"))?;
    if prune {
        // What --prune leaves must hold together too, or apply would stop half-way when the
        // edge refuses to delete a location or an app a remaining policy names.
        let kept_policies: HashSet<&str> =
            desired.policies.iter().map(|p| p.name.as_str()).collect();
        let kept_locations: HashSet<&str> =
            desired.locations.iter().map(|l| l.name.as_str()).collect();
        if !kept_policies.is_empty() {
            policies.retain(|p| kept_policies.contains(p.name.as_str()));
        }
        if !kept_locations.is_empty() {
            locations.retain(|l| kept_locations.contains(l.name.as_str()));
        }
        if !desired.apps.is_empty() {
            names.apps = desired.apps.iter().map(|a| a.name.as_str()).collect();
        }
        Policies::compile(&policies, &locations, &names).map_err(|e| {
            anyhow::anyhow!("after --prune: {e}; keep it in the file or change the policy")
        })?;
    }
    Ok(changes)
}

/// Puts `wanted` into `items` (replacing the one of its name): `None` when it is already
/// there as it is; otherwise the fields that change (none for a new one).
fn put<T: Clone + PartialEq + Serialize>(
    items: &mut Vec<T>,
    wanted: &T,
    name_of: fn(&T) -> &String,
) -> anyhow::Result<Option<BTreeMap<String, [serde_json::Value; 2]>>> {
    let Some(current) = items.iter_mut().find(|i| name_of(i) == name_of(wanted)) else {
        items.push(wanted.clone());
        return Ok(Some(BTreeMap::new()));
    };
    if current == wanted {
        return Ok(None);
    }
    let as_map = |v: &T| -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        match serde_json::to_value(v)? {
            serde_json::Value::Object(m) => Ok(m),
            _ => bail!("not an object"),
        }
    };
    let (from, to) = (as_map(current)?, as_map(wanted)?);
    let mut fields = BTreeMap::new();
    for key in from.keys().chain(to.keys()) {
        let (a, b) = (
            from.get(key).cloned().unwrap_or_default(),
            to.get(key).cloned().unwrap_or_default(),
        );
        if a != b {
            fields.insert(key.clone(), [a, b]);
        }
    }
    *current = wanted.clone();
    Ok(Some(fields))
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        })
        .unwrap_or_default()
}

async fn execute(client: &AdminClient, change: &Change, json: bool) -> anyhow::Result<()> {
    match change {
        Change::CreateGroup { name } => {
            let _: GroupView = client
                .post("/v1/groups", &serde_json::json!({ "name": name }))
                .await?;
        }
        Change::PublishApp { request, .. } => {
            let _: AppView = client.post("/v1/apps", request).await?;
        }
        Change::UpdateApp { name, patch, .. } => {
            let _: AppView = client
                .patch(&format!("/v1/apps/{}", segment(name)), patch)
                .await?;
        }
        Change::PutLocation { name, location, .. } => {
            let _: NamedLocation = client
                .put(&format!("/v1/locations/{}", segment(name)), location)
                .await?;
        }
        Change::PutPolicy { name, policy, .. } => {
            let _: Policy = client
                .put(&format!("/v1/policies/{}", segment(name)), policy)
                .await?;
        }
        Change::CreateUser { request, then, .. } => {
            let _: serde_json::Value = client.post("/v1/users", request).await?;
            for call in then {
                call.send(client).await?;
            }
        }
        Change::UpdateUser { calls, .. } => {
            for call in calls {
                call.send(client).await?;
            }
        }
        Change::Assign { app, kind, value } | Change::Unassign { app, kind, value } => {
            let path = format!("/v1/apps/{}/assignments", segment(app));
            let who = AssignmentView {
                kind: kind.clone(),
                value: value.clone(),
            };
            if matches!(change, Change::Assign { .. }) {
                let _: AssignmentView = client.post(&path, &who).await?;
            } else {
                client.delete_with_body(&path, &who).await?;
            }
        }
        Change::CreateClient {
            name,
            request,
            secret_file,
        } => {
            let created: ClientView = client.post("/v1/clients", request).await?;
            reconcile::keep_secret(name, &created, secret_file.as_ref())?;
            if !json {
                say!("client {name}: client_id {}", created.client_id);
            }
        }
        Change::Remove { call, .. } => {
            call.send(client).await?;
        }
    }
    Ok(())
}
