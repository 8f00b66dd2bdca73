//! `postern admin user|directory-group|client|idp`: the built-in identity provider's directory,
//! clients and keys. Passwords are read from files, never from the command line (which other
//! users of the machine can see).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use postern_edge::admin_api::{
    ClientView, DirectoryGroupView, SigninEventView, SigningKeyView, UserView,
};

use super::client::{segment, AdminClient};
use super::output::{format_time, print, say, table, time_cell};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user of the built-in identity provider.
    Create {
        /// Email address: the user's login.
        email: String,
        /// File whose first line is the password (12+ characters, not containing the email,
        /// not a common password).
        #[arg(long)]
        password_file: PathBuf,
        /// Display name (defaults to the part of the email before the @).
        #[arg(long)]
        name: Option<String>,
        /// Give the user the admin role (`roles: ["admin"]` in their tokens).
        #[arg(long)]
        admin: bool,
        /// Directory group to put the user in (repeatable; made if missing).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Require a second factor (TOTP) at every sign-in; enrolment happens at the first.
        #[arg(long)]
        require_mfa: bool,
        /// You vouch that the address is the user's: their tokens say `email_verified: true`
        /// (apps then match assignments by it and receive it in X-Postern-Email).
        #[arg(long)]
        email_verified: bool,
    },
    /// List users.
    List,
    /// Show one user.
    Show { email: String },
    /// Disable a user: their sessions end and their tokens are revoked at once.
    Disable { email: String },
    /// Enable a disabled user.
    Enable { email: String },
    /// Replace a user's password; their sessions end.
    ResetPassword {
        email: String,
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Remove a user's authenticator and recovery codes; they enrol again at next sign-in.
    MfaReset { email: String },
    /// Say whether you vouch that the address is the user's (`email_verified` in the tokens
    /// issued from now on).
    EmailVerified {
        email: String,
        #[arg(value_enum)]
        verified: super::OnOff,
    },
    /// End every session of a user (by email or subject) at the edge, on every app, now. Works
    /// for users of any issuer.
    RevokeSessions { user: String },
}

#[derive(Subcommand)]
pub enum DirectoryGroupCommand {
    /// List directory groups and their members.
    List,
    /// Add a user to a directory group (made if missing).
    AddMember { group: String, email: String },
    /// Remove a user from a directory group.
    RemoveMember { group: String, email: String },
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register an OpenID Connect client; prints its ID and secret (shown once).
    Create {
        name: String,
        /// Redirect URI, matched exactly (repeatable).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Where RP-initiated logout may return to (repeatable).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// A public client (no secret; PKCE with S256 required).
        #[arg(long)]
        public: bool,
        /// Algorithm of its ID tokens: ES256 (default) or RS256.
        #[arg(long)]
        id_token_alg: Option<String>,
    },
    /// List clients.
    List,
    /// Delete a client with its codes and grants.
    Delete { client_id: String },
}

#[derive(Subcommand)]
pub enum IdpCommand {
    /// Show the token signing keys.
    Keys,
    /// Publish a successor signing key now (it signs after relying parties could fetch it).
    RotateKeys,
    /// Sign-in attempts, newest first.
    Signins {
        #[arg(long)]
        email: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --password-file {}", path.display()))?;
    let pw = text.lines().next().unwrap_or_default().to_owned();
    anyhow::ensure!(
        !pw.is_empty(),
        "--password-file {} is empty; put the password on its first line",
        path.display()
    );
    Ok(pw)
}

fn user_line(u: &UserView) -> String {
    format!(
        "{} (id {}, {}{}{}, email {})",
        u.email,
        u.id,
        if u.enabled { "enabled" } else { "disabled" },
        if u.admin { ", admin" } else { "" },
        if u.require_mfa { ", MFA required" } else { "" },
        if u.email_verified {
            "verified"
        } else {
            "not verified"
        }
    )
}

pub async fn user(client: &AdminClient, json: bool, cmd: UserCommand) -> anyhow::Result<()> {
    let path = |email: &str, rest: &str| format!("/v1/users/{}{rest}", segment(email));
    let u: UserView = match cmd {
        UserCommand::Create {
            email,
            password_file,
            name,
            admin,
            groups,
            require_mfa,
            email_verified,
        } => {
            let body = serde_json::json!({
                "email_verified": email_verified,
                "email": email,
                "password": read_password(&password_file)?,
                "display_name": name,
                "admin": admin,
                "groups": groups,
                "require_mfa": require_mfa,
            });
            let u: UserView = client.post("/v1/users", &body).await?;
            print(json, &u, || say!("created user {}", user_line(&u)));
            return Ok(());
        }
        UserCommand::List => {
            let users: Vec<UserView> = client.get("/v1/users").await?;
            print(json, &users, || {
                table(
                    &[
                        "EMAIL", "VERIFIED", "NAME", "STATUS", "ADMIN", "MFA", "GROUPS", "ID",
                        "CREATED",
                    ],
                    users
                        .iter()
                        .map(|u| {
                            vec![
                                u.email.clone(),
                                if u.email_verified { "yes" } else { "no" }.to_owned(),
                                u.display_name.clone(),
                                if u.enabled { "enabled" } else { "disabled" }.to_owned(),
                                if u.admin { "yes" } else { "" }.to_owned(),
                                mfa_summary(u),
                                u.groups.join(","),
                                u.id.clone(),
                                format_time(u.created_at),
                            ]
                        })
                        .collect(),
                )
            });
            return Ok(());
        }
        UserCommand::Show { email } => client.get(&path(&email, "")).await?,
        UserCommand::Disable { email } => {
            let u: UserView = client
                .post(&path(&email, "/disable"), &serde_json::json!({}))
                .await?;
            print(json, &u, || {
                say!(
                    "disabled {}; their sessions ended and tokens were revoked",
                    u.email
                )
            });
            return Ok(());
        }
        UserCommand::Enable { email } => {
            client
                .post(&path(&email, "/enable"), &serde_json::json!({}))
                .await?
        }
        UserCommand::ResetPassword {
            email,
            password_file,
        } => {
            let body = serde_json::json!({ "password": read_password(&password_file)? });
            let u: UserView = client.post(&path(&email, "/password"), &body).await?;
            print(json, &u, || {
                say!("replaced the password of {}; their sessions ended", u.email)
            });
            return Ok(());
        }
        UserCommand::RevokeSessions { user } => {
            let v: serde_json::Value = client
                .post(&path(&user, "/revoke-sessions"), &serde_json::json!({}))
                .await?;
            print(json, &v, || {
                say!("ended every session of {user}; they must sign in again")
            });
            return Ok(());
        }
        UserCommand::EmailVerified { email, verified } => {
            let verified = matches!(verified, super::OnOff::On);
            let u: UserView = client
                .post(
                    &path(&email, "/email-verified"),
                    &serde_json::json!({ "verified": verified }),
                )
                .await?;
            print(json, &u, || {
                if u.email_verified {
                    println!(
                        "{}'s email is verified in the tokens issued from now on",
                        u.email
                    )
                } else {
                    println!(
                        "{}'s email is not verified in the tokens issued from now on; apps match them by subject only",
                        u.email
                    )
                }
            });
            return Ok(());
        }
        UserCommand::MfaReset { email } => {
            let u: UserView = client
                .post(&path(&email, "/mfa-reset"), &serde_json::json!({}))
                .await?;
            print(json, &u, || {
                say!(
                    "reset the second factor of {}; they enrol again at their next sign-in",
                    u.email
                )
            });
            return Ok(());
        }
    };
    print(json, &u, || say!("{}", user_line(&u)));
    Ok(())
}

pub async fn directory_group(
    client: &AdminClient,
    json: bool,
    cmd: DirectoryGroupCommand,
) -> anyhow::Result<()> {
    match cmd {
        DirectoryGroupCommand::List => {
            let groups: Vec<DirectoryGroupView> = client.get("/v1/directory-groups").await?;
            print(json, &groups, || {
                table(
                    &["GROUP", "MEMBERS"],
                    groups
                        .iter()
                        .map(|g| vec![g.name.clone(), g.members.join(", ")])
                        .collect(),
                )
            });
        }
        DirectoryGroupCommand::AddMember { group, email } => {
            let u: UserView = client
                .post(
                    &format!("/v1/directory-groups/{}/members", segment(&group)),
                    &serde_json::json!({ "email": email }),
                )
                .await?;
            print(json, &u, || say!("added {} to {group}", u.email));
        }
        DirectoryGroupCommand::RemoveMember { group, email } => {
            let u: UserView = client
                .delete_json(&format!(
                    "/v1/directory-groups/{}/members/{}",
                    segment(&group),
                    segment(&email)
                ))
                .await?;
            print(json, &u, || say!("removed {} from {group}", u.email));
        }
    }
    Ok(())
}

pub async fn oidc_client(
    client: &AdminClient,
    json: bool,
    cmd: ClientCommand,
) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Create {
            name,
            redirect_uris,
            post_logout_redirect_uris,
            public,
            id_token_alg,
        } => {
            let c: ClientView = client
                .post(
                    "/v1/clients",
                    &serde_json::json!({
                        "name": name,
                        "redirect_uris": redirect_uris,
                        "post_logout_redirect_uris": post_logout_redirect_uris,
                        "public": public,
                        "id_token_alg": id_token_alg,
                    }),
                )
                .await?;
            let out = serde_json::json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
            });
            print(json, &out, || {
                say!("registered client {} ({})", c.name, c.client_id);
                match &c.client_secret {
                    Some(s) => say!("client secret (shown once): {s}"),
                    None => say!("public client: no secret; use PKCE with S256"),
                }
            });
        }
        ClientCommand::List => {
            let clients: Vec<ClientView> = client.get("/v1/clients").await?;
            print(json, &clients, || {
                table(
                    &["NAME", "CLIENT ID", "TYPE", "REDIRECT URIS", "APP"],
                    clients
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.client_id.clone(),
                                if c.public { "public" } else { "confidential" }.to_owned(),
                                c.redirect_uris.join(" "),
                                c.app.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        ClientCommand::Delete { client_id } => {
            client
                .delete(&format!("/v1/clients/{}", segment(&client_id)))
                .await?;
            print(json, &serde_json::json!({ "deleted": client_id }), || {
                say!("deleted client {client_id}")
            });
        }
    }
    Ok(())
}

pub async fn idp(client: &AdminClient, json: bool, cmd: IdpCommand) -> anyhow::Result<()> {
    let keys_table = |keys: &[SigningKeyView]| {
        table(
            &["KID", "ALG", "PUBLISHED", "SIGNS FROM", "RETIRED"],
            keys.iter()
                .map(|k| {
                    vec![
                        k.kid.clone(),
                        k.alg.clone(),
                        format_time(k.created_at),
                        format_time(k.activates_at),
                        time_cell(k.retires_at),
                    ]
                })
                .collect(),
        )
    };
    match cmd {
        IdpCommand::Keys => {
            let keys: Vec<SigningKeyView> = client.get("/v1/idp/signing-keys").await?;
            print(json, &keys, || keys_table(&keys));
        }
        IdpCommand::RotateKeys => {
            let keys: Vec<SigningKeyView> = client
                .post("/v1/idp/signing-keys/rotate", &serde_json::json!({}))
                .await?;
            print(json, &keys, || keys_table(&keys));
        }
        IdpCommand::Signins { email, limit } => {
            let mut path = format!("/v1/idp/signin-events?limit={limit}");
            if let Some(e) = email {
                path.push_str(&format!("&email={}", segment(&e)));
            }
            let events: Vec<SigninEventView> = client.get(&path).await?;
            print(json, &events, || {
                table(
                    &["TIME", "EMAIL", "IP", "OUTCOME", "REASON", "CLIENT"],
                    events
                        .iter()
                        .map(|e| {
                            vec![
                                format_time(e.at_ms / 1000),
                                e.email.clone(),
                                e.ip.clone(),
                                e.outcome.clone(),
                                e.reason.clone(),
                                e.client_id.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )
            });
        }
    }
    Ok(())
}

/// The MFA column of `user list`: the methods enrolled, or whether one is still required.
fn mfa_summary(u: &UserView) -> String {
    let mut methods = Vec::new();
    if u.mfa_enrolled {
        methods.push("totp".to_owned());
    }
    match u.passkeys {
        0 => {}
        1 => methods.push("passkey".to_owned()),
        n => methods.push(format!("{n} passkeys")),
    }
    if methods.is_empty() && u.require_mfa {
        return "required, not enrolled".to_owned();
    }
    methods.join(", ")
}
