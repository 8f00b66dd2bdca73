//! What administrators do to the directory and the client registry, validated: the admin API
//! and the quickstart call these, never the store directly, so the password policy and the
//! redirect URI rules hold whatever the caller.

use postern_store::{
    Client, ClientSecret, IdTokenAlg, NewClient, NewUser, Store, StoreError, User,
};
use url::Url;

use crate::limits::{
    is_forbidden_in_names, MAX_CLIENT_NAME_CHARS, MAX_DISPLAY_NAME_CHARS, MAX_EMAIL_BYTES,
    MAX_REDIRECT_URIS, MAX_REDIRECT_URI_BYTES,
};
use crate::password::{self, WeakPassword};

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    WeakPassword(#[from] WeakPassword),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] password::HashError),
}

/// A user to create, as an admin gives it.
#[derive(Clone)]
pub struct UserRequest {
    pub email: String,
    pub display_name: Option<String>,
    pub password: String,
    pub admin: bool,
    pub require_mfa: bool,
    pub groups: Vec<String>,
    /// The administrator vouches that the address is the user's.
    pub email_verified: bool,
}

impl std::fmt::Debug for UserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRequest")
            .field("email", &self.email)
            .field("admin", &self.admin)
            .field("require_mfa", &self.require_mfa)
            .field("groups", &self.groups)
            .field("email_verified", &self.email_verified)
            .finish_non_exhaustive()
    }
}

/// Checks an email address's shape: one `@`, a non-empty local part, a domain, no spaces or
/// control characters, at most [`MAX_EMAIL_BYTES`].
pub fn check_email(email: &str) -> Result<String, DirectoryError> {
    let email = email.trim().to_ascii_lowercase();
    if email.len() > MAX_EMAIL_BYTES {
        return Err(DirectoryError::Invalid(format!(
            "email is {} bytes long; an address has at most {MAX_EMAIL_BYTES}",
            email.len()
        )));
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || is_forbidden_in_names(c))
    {
        return Err(DirectoryError::Invalid(format!(
            "email {email:?} contains spaces or control characters"
        )));
    }
    let ok = match email.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    };
    if ok {
        Ok(email)
    } else {
        Err(DirectoryError::Invalid(format!(
            "email {email:?} is not an email address (expected name@domain)"
        )))
    }
}

/// Checks a name a person reads (a display name, a client name): 1 to `max` characters, no
/// control or text-reordering characters. `field` names it in the refusal.
pub fn check_name(field: &str, name: &str, max: usize) -> Result<(), DirectoryError> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > max {
        return Err(DirectoryError::Invalid(format!(
            "{field} must be 1 to {max} characters (it has {chars})"
        )));
    }
    if let Some(c) = name.chars().find(|c| is_forbidden_in_names(*c)) {
        return Err(DirectoryError::Invalid(format!(
            "{field} must not contain control characters (it contains U+{:04X})",
            c as u32
        )));
    }
    Ok(())
}

fn check_group_name(name: &str) -> Result<(), DirectoryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::Invalid(format!(
            "group name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

async fn hash(password: String) -> Result<String, DirectoryError> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| DirectoryError::Invalid(format!("hashing was interrupted: {e}")))?
        .map_err(DirectoryError::from)
}

pub async fn create_user(store: &Store, req: UserRequest) -> Result<User, DirectoryError> {
    let email = check_email(&req.email)?;
    for g in &req.groups {
        check_group_name(g)?;
    }
    password::check_policy(&email, &req.password)?;
    let display_name = req
        .display_name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
    check_name("display_name", &display_name, MAX_DISPLAY_NAME_CHARS)?;
    let new = NewUser {
        email,
        display_name,
        password_hash: hash(req.password).await?,
        admin: req.admin,
        require_mfa: req.require_mfa,
        groups: req.groups,
        email_verified: req.email_verified,
    };
    Ok(store.create_user(&new).await?)
}

pub async fn reset_password(
    store: &Store,
    email: &str,
    password: String,
) -> Result<User, DirectoryError> {
    let user = store.user(email).await?;
    password::check_policy(&user.email, &password)?;
    Ok(store
        .set_password(&user.email, &hash(password).await?)
        .await?)
}

pub async fn add_group_member(
    store: &Store,
    group: &str,
    email: &str,
) -> Result<User, DirectoryError> {
    check_group_name(group)?;
    Ok(store.add_group_member(group, email).await?)
}

/// Checks a redirect URI: absolute, no fragment (RFC 6749 section 3.1.2), `https`, or `http` only
/// for a loopback host (RFC 8252 section 7.3).
pub fn check_redirect_uri(uri: &str) -> Result<(), DirectoryError> {
    if uri.len() > MAX_REDIRECT_URI_BYTES {
        return Err(DirectoryError::Invalid(format!(
            "a redirect URI is {} bytes long; at most {MAX_REDIRECT_URI_BYTES} are allowed",
            uri.len()
        )));
    }
    let bad = |why: &str| DirectoryError::Invalid(format!("redirect URI {uri:?} {why}"));
    let url = Url::parse(uri).map_err(|e| bad(&format!("does not parse: {e}")))?;
    if url.fragment().is_some() {
        return Err(bad("must not have a fragment"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")) => Ok(()),
        _ => Err(bad("must be https (or http on a loopback address)")),
    }
}

/// A client to register, as an admin gives it.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub public: bool,
    /// `ES256` (the default) or `RS256`, for relying parties that cannot verify ES256.
    pub id_token_alg: Option<String>,
}

pub async fn create_client(
    store: &Store,
    req: ClientRequest,
) -> Result<(Client, Option<ClientSecret>), DirectoryError> {
    check_name("client name", &req.name, MAX_CLIENT_NAME_CHARS)?;
    if req.redirect_uris.is_empty() {
        return Err(DirectoryError::Invalid(
            "a client needs at least one redirect URI (--redirect-uri)".to_owned(),
        ));
    }
    if req.redirect_uris.len() > MAX_REDIRECT_URIS
        || req.post_logout_redirect_uris.len() > MAX_REDIRECT_URIS
    {
        return Err(DirectoryError::Invalid(format!(
            "a client may have at most {MAX_REDIRECT_URIS} redirect URIs and {MAX_REDIRECT_URIS} post-logout redirect URIs"
        )));
    }
    for u in req
        .redirect_uris
        .iter()
        .chain(&req.post_logout_redirect_uris)
    {
        check_redirect_uri(u)?;
    }
    let id_token_alg = match req.id_token_alg.as_deref() {
        None => IdTokenAlg::Es256,
        Some(a) => IdTokenAlg::parse(&a.to_ascii_uppercase()).ok_or_else(|| {
            DirectoryError::Invalid(format!(
                "ID token algorithm {a:?} is not supported; use ES256 or RS256"
            ))
        })?,
    };
    let new = NewClient {
        name: req.name,
        public: req.public,
        redirect_uris: req.redirect_uris,
        post_logout_redirect_uris: req.post_logout_redirect_uris,
        id_token_alg,
    };
    Ok(store.create_client(&new).await?)
}

/// The client of a published app (see [`Store::ensure_app_client`]), with its redirect URI
/// checked.
pub async fn ensure_app_client(
    store: &Store,
    app_name: &str,
    redirect_uri: &str,
) -> Result<(String, ClientSecret), DirectoryError> {
    check_redirect_uri(redirect_uri)?;
    Ok(store.ensure_app_client(app_name, redirect_uri).await?)
}

/// The name of the public client the connector uses for the device authorization grant.
pub const CONNECTOR_CLIENT: &str = "postern-connector";

/// The public client connectors use to sign an administrator in with the device grant, made on
/// first use. It has no redirect URI that works, since the device grant needs none.
pub async fn connector_client(store: &Store) -> Result<Client, DirectoryError> {
    if let Some(c) = store
        .clients()
        .await?
        .into_iter()
        .find(|c| c.name == CONNECTOR_CLIENT)
    {
        return Ok(c);
    }
    let new = NewClient {
        name: CONNECTOR_CLIENT.to_owned(),
        public: true,
        redirect_uris: vec!["http://127.0.0.1/unused".to_owned()],
        post_logout_redirect_uris: vec![],
        id_token_alg: IdTokenAlg::Es256,
    };
    match store.create_client(&new).await {
        Ok((c, _)) => Ok(c),
        Err(StoreError::Conflict(_)) => Ok(store
            .clients()
            .await?
            .into_iter()
            .find(|c| c.name == CONNECTOR_CLIENT)
            .ok_or_else(|| DirectoryError::Invalid("the connector client vanished".to_owned()))?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        let check = |u: &str, ok: bool| assert_eq!(check_redirect_uri(u).is_ok(), ok, "{u}");
        check("https://app.example.com/cb", true);
        check("http://127.0.0.1:8080/cb", true);
        check("http://localhost/cb", true);
        check("http://app.example.com/cb", false);
        check("https://app.example.com/cb#x", false);
        check("/cb", false);
        check("javascript:alert(1)", false);
    }

    #[test]
    fn emails() {
        assert_eq!(check_email(" Ada@Example.com ").unwrap(), "ada@example.com");
        let refused = |e: &str, why: &str| match check_email(e) {
            Err(DirectoryError::Invalid(m)) => assert!(m.contains(why), "{e:?}: {m}"),
            other => panic!("{e:?} accepted: {other:?}"),
        };
        refused("ada", "not an email address");
        refused("@example.com", "not an email address");
        refused("a b@example.com", "spaces or control characters");
        refused("a\u{1b}[31m@example.com", "control characters");
        refused("ada\u{202e}moc@example.com", "control characters");
        refused(&format!("{}@example.com", "a".repeat(250)), "bytes long");
    }

    #[test]
    fn names_people_read_refuse_controls_and_overlong_values() {
        let cases: &[(&str, bool)] = &[
            ("Ada Lovelace", true),
            ("Zoë 漢字", true),
            ("", false),
            ("   ", false),
            ("Ada\nLovelace", false),
            ("Ada\u{7}", false),
            ("\u{202e}ecilA", false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                check_name("display_name", name, 100).is_ok(),
                *ok,
                "{name:?}"
            );
        }
        let long = "x".repeat(101);
        match check_name("client name", &long, 100) {
            Err(DirectoryError::Invalid(m)) => assert!(m.starts_with("client name must be")),
            other => panic!("{other:?}"),
        }
    }
}
