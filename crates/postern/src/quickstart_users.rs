//! The quickstart's people: an administrator and a demo user of the built-in identity provider,
//! with random passwords written to `DATA/quickstart.json` (mode 0600) and nowhere else.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use postern_edge::admin_api::UserView;
use serde::{Deserialize, Serialize};

use crate::admin::AdminClient;

pub const USERS_FILE: &str = "quickstart.json";

#[derive(Serialize, Deserialize)]
struct QuickstartUser {
    email: String,
    password: String,
    admin: bool,
}

#[derive(Serialize, Deserialize)]
struct UsersFile {
    users: Vec<QuickstartUser>,
}

const PEOPLE: &[(&str, &str, bool)] = &[
    ("admin@postern.localhost", "Quickstart Admin", true),
    ("demo@postern.localhost", "Demo User", false),
];

fn random_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

/// Makes the users on first run (or gives them new passwords if the file was lost) and returns
/// the file's path.
pub async fn ensure(admin: &AdminClient, data: &Path) -> anyhow::Result<PathBuf> {
    let path = data.join(USERS_FILE);
    if path.exists() {
        return Ok(path);
    }
    let existing: Vec<UserView> = admin.get("/v1/users").await?;
    let mut users = Vec::new();
    for (email, name, is_admin) in PEOPLE {
        let password = random_password();
        if existing.iter().any(|u| u.email == *email) {
            let _: UserView = admin
                .post(
                    &format!("/v1/users/{email}/password"),
                    &serde_json::json!({ "password": password }),
                )
                .await?;
        } else {
            let _: UserView = admin
                .post(
                    "/v1/users",
                    &serde_json::json!({
                        "email": email,
                        "password": password,
                        "display_name": name,
                        "admin": is_admin,
                        // The quickstart made these accounts and vouches for them, so the demo
                        // app shows their email (X-Postern-Email).
                        "email_verified": true,
                    }),
                )
                .await?;
        }
        users.push(QuickstartUser {
            email: (*email).to_owned(),
            password,
            admin: *is_admin,
        });
    }
    let json = serde_json::to_string_pretty(&UsersFile { users })?;
    postern_pki::write_private(&path, json.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
