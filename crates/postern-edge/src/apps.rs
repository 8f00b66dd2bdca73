//! Checking an admin's request to publish an app before it reaches the store.

use std::time::Duration;

use postern_store::{AccessRules, CookieOptions, NewApp, OidcClient, Preauth};
use serde::{Deserialize, Serialize};
use url::Url;

/// The default time an app has to send its response headers (Entra application proxy's default).
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(85);
/// The longest per-app timeout an admin may set.
const MAX_BACKEND_TIMEOUT: Duration = Duration::from_secs(3600);

/// `POST /v1/apps`, as the admin sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishApp {
    pub name: String,
    pub external_url: String,
    pub internal_url: String,
    pub group: String,
    pub preauth: String,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub insecure_skip_backend_tls_verify: bool,
    #[serde(default)]
    pub backend_timeout_secs: Option<u64>,
    /// Publish in maintenance mode: users get the maintenance page until it is turned off.
    #[serde(default)]
    pub maintenance: bool,
    /// With `preauth: oidc`: the issuer (https, or http on loopback); none for the built-in
    /// identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub assignment_required: bool,
    #[serde(default)]
    pub require_mfa: bool,
    #[serde(default = "yes")]
    pub cookie_http_only: bool,
    #[serde(default)]
    pub cookie_persistent: bool,
    /// With `preauth: oidc`: the admin vouches that the issuer verifies every email it sends, so
    /// a token without `email_verified` counts as verified (an explicit `false` never does).
    #[serde(default)]
    pub issuer_verifies_email: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/apps/{name}`: the fields to change; the others keep their values.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpdateApp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preauth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_host: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_backend_tls_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_mfa: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_http_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_persistent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_verifies_email: Option<bool>,
}

impl UpdateApp {
    pub fn is_empty(&self) -> bool {
        *self == UpdateApp::default()
    }
}

impl PublishApp {
    /// A passthrough app with every default.
    pub fn new(name: &str, external_url: &str, internal_url: &str, group: &str) -> PublishApp {
        PublishApp {
            name: name.to_owned(),
            external_url: external_url.to_owned(),
            internal_url: internal_url.to_owned(),
            group: group.to_owned(),
            preauth: Preauth::Passthrough.as_str().to_owned(),
            preserve_host: false,
            insecure_skip_backend_tls_verify: false,
            backend_timeout_secs: None,
            maintenance: false,
            issuer: None,
            client_id: None,
            client_secret: None,
            assignment_required: false,
            require_mfa: false,
            cookie_http_only: true,
            cookie_persistent: false,
            issuer_verifies_email: false,
        }
    }

    /// The publish request that would produce `app` as it is now.
    pub fn from_app(app: &postern_store::App) -> PublishApp {
        PublishApp {
            name: app.name.clone(),
            external_url: app.external_url.clone(),
            internal_url: app.internal_url.clone(),
            group: app.group.clone(),
            preauth: app.preauth.as_str().to_owned(),
            preserve_host: app.preserve_host,
            insecure_skip_backend_tls_verify: app.insecure_skip_backend_tls_verify,
            backend_timeout_secs: Some(app.backend_timeout.as_secs()),
            maintenance: app.maintenance,
            issuer: app.oidc.as_ref().and_then(|o| o.issuer.clone()),
            client_id: app.oidc.as_ref().map(|o| o.client_id.clone()),
            // The secret of the client the edge registered with the built-in provider is the
            // edge's own, not a setting: an update keeps it (see `admin_api::apps::checked`).
            client_secret: app
                .oidc
                .as_ref()
                .filter(|o| o.issuer.is_some())
                .and_then(|o| o.client_secret.clone()),
            assignment_required: app.access.assignment_required,
            require_mfa: app.access.require_mfa,
            cookie_http_only: app.cookie.http_only,
            cookie_persistent: app.cookie.persistent,
            issuer_verifies_email: app.oidc.as_ref().is_some_and(|o| o.issuer_verifies_email),
        }
    }

    /// This request with `patch` applied on top.
    pub fn patched(mut self, patch: &UpdateApp) -> PublishApp {
        let set = |field: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                *field = v.clone();
            }
        };
        set(&mut self.name, &patch.name);
        set(&mut self.external_url, &patch.external_url);
        set(&mut self.internal_url, &patch.internal_url);
        set(&mut self.group, &patch.group);
        set(&mut self.preauth, &patch.preauth);
        self.preserve_host = patch.preserve_host.unwrap_or(self.preserve_host);
        self.insecure_skip_backend_tls_verify = patch
            .insecure_skip_backend_tls_verify
            .unwrap_or(self.insecure_skip_backend_tls_verify);
        if patch.backend_timeout_secs.is_some() {
            self.backend_timeout_secs = patch.backend_timeout_secs;
        }
        self.maintenance = patch.maintenance.unwrap_or(self.maintenance);
        for (field, value) in [
            (&mut self.issuer, &patch.issuer),
            (&mut self.client_id, &patch.client_id),
            (&mut self.client_secret, &patch.client_secret),
        ] {
            if let Some(v) = value {
                // An empty string clears the field (e.g. back to the built-in provider).
                *field = (!v.is_empty()).then(|| v.clone());
            }
        }
        self.assignment_required = patch
            .assignment_required
            .unwrap_or(self.assignment_required);
        self.require_mfa = patch.require_mfa.unwrap_or(self.require_mfa);
        self.cookie_http_only = patch.cookie_http_only.unwrap_or(self.cookie_http_only);
        self.cookie_persistent = patch.cookie_persistent.unwrap_or(self.cookie_persistent);
        self.issuer_verifies_email = patch
            .issuer_verifies_email
            .unwrap_or(self.issuer_verifies_email);
        self
    }
}

/// Why a publish request was refused; the message names the field and the fix.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

pub fn validate(req: &PublishApp) -> Result<NewApp, Invalid> {
    check_name(&req.name)?;
    let external = Url::parse(&req.external_url).map_err(|e| {
        Invalid(format!(
            "external URL {:?} is not a URL ({e}); use e.g. https://app.example.com",
            req.external_url
        ))
    })?;
    if external.scheme() != "https" {
        return Err(Invalid(format!(
            "external URL {:?} must use https: the edge terminates TLS for every app",
            req.external_url
        )));
    }
    let host = match external.host() {
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        Some(_) => {
            return Err(Invalid(format!(
                "external URL {:?} must name a host, not an IP address",
                req.external_url
            )))
        }
        None => {
            return Err(Invalid(format!(
                "external URL {:?} has no host",
                req.external_url
            )))
        }
    };
    if !external.username().is_empty() || external.password().is_some() {
        return Err(Invalid("external URL must not contain credentials".into()));
    }
    if external.path() != "/" || external.query().is_some() || external.fragment().is_some() {
        return Err(Invalid(format!(
            "external URL {:?} must have no path, query or fragment: Postern routes by host",
            req.external_url
        )));
    }
    let internal = Url::parse(&req.internal_url).map_err(|e| {
        Invalid(format!(
            "internal URL {:?} is not a URL ({e}); use e.g. http://10.0.0.5:8080/",
            req.internal_url
        ))
    })?;
    if !matches!(internal.scheme(), "http" | "https") {
        return Err(Invalid(format!(
            "internal URL {:?} must use http or https",
            req.internal_url
        )));
    }
    if internal.host().is_none() {
        return Err(Invalid(format!(
            "internal URL {:?} has no host",
            req.internal_url
        )));
    }
    if !internal.username().is_empty() || internal.password().is_some() {
        return Err(Invalid("internal URL must not contain credentials".into()));
    }
    if internal.query().is_some() || internal.fragment().is_some() {
        return Err(Invalid(format!(
            "internal URL {:?} must have no query or fragment",
            req.internal_url
        )));
    }
    let preauth = Preauth::parse(&req.preauth).ok_or_else(|| {
        Invalid(format!(
            "preauth {:?} is not supported; use \"passthrough\" or \"oidc\"",
            req.preauth
        ))
    })?;
    let oidc = match preauth {
        Preauth::Passthrough => {
            let set = req.issuer.is_some()
                || req.client_id.is_some()
                || req.client_secret.is_some()
                || req.assignment_required
                || req.require_mfa
                || req.issuer_verifies_email;
            if set {
                return Err(Invalid(
                    "issuer, client ID and secret, assignment, MFA and issuer-verifies-email apply only with preauth \"oidc\"; passthrough apps sign users in themselves".into(),
                ));
            }
            None
        }
        Preauth::Oidc => Some(oidc_client(req)?),
    };
    let backend_timeout = match req.backend_timeout_secs {
        None => DEFAULT_BACKEND_TIMEOUT,
        Some(s) if s >= 1 && s <= MAX_BACKEND_TIMEOUT.as_secs() => Duration::from_secs(s),
        Some(s) => {
            return Err(Invalid(format!(
                "backend timeout {s}s is out of range; use 1 to {} seconds",
                MAX_BACKEND_TIMEOUT.as_secs()
            )))
        }
    };
    if req.group.is_empty() {
        return Err(Invalid("group must name a connector group".into()));
    }
    Ok(NewApp {
        name: req.name.clone(),
        external_url: external.to_string(),
        external_host: host,
        internal_url: internal.to_string(),
        group: req.group.clone(),
        preauth,
        preserve_host: req.preserve_host,
        insecure_skip_backend_tls_verify: req.insecure_skip_backend_tls_verify,
        backend_timeout,
        maintenance: req.maintenance,
        oidc,
        access: AccessRules {
            assignment_required: req.assignment_required,
            require_mfa: req.require_mfa,
        },
        cookie: CookieOptions {
            http_only: req.cookie_http_only,
            persistent: req.cookie_persistent,
        },
    })
}

/// The OIDC client of an app with `preauth: oidc`. Without an issuer the app uses the built-in
/// identity provider, and the edge fills in the client it registers there.
fn oidc_client(req: &PublishApp) -> Result<OidcClient, Invalid> {
    let printable =
        |v: &str| !v.is_empty() && v.len() <= 512 && v.bytes().all(|b| (0x21..0x7f).contains(&b));
    match &req.issuer {
        Some(issuer) => {
            postern_auth::IssuerUrl::parse(issuer).map_err(|e| Invalid(format!("issuer: {e}")))?;
            let client_id = req.client_id.clone().ok_or_else(|| {
                Invalid(format!(
                    "an app signing users in with {issuer} needs the client ID registered there (--client-id)"
                ))
            })?;
            if !printable(&client_id) {
                return Err(Invalid(
                    "client ID must be 1 to 512 printable ASCII characters".into(),
                ));
            }
            if let Some(secret) = &req.client_secret {
                if !printable(secret) {
                    return Err(Invalid(
                        "client secret must be 1 to 512 printable ASCII characters; check --client-secret-file".into(),
                    ));
                }
            }
            Ok(OidcClient {
                issuer: Some(issuer.clone()),
                client_id,
                client_secret: req.client_secret.clone(),
                issuer_verifies_email: req.issuer_verifies_email,
            })
        }
        None => {
            if req.client_secret.is_some() {
                return Err(Invalid(
                    "a client secret needs an --issuer; the built-in identity provider registers the app's client itself".into(),
                ));
            }
            Ok(OidcClient {
                issuer: None,
                client_id: req.client_id.clone().unwrap_or_default(),
                client_secret: None,
                issuer_verifies_email: req.issuer_verifies_email,
            })
        }
    }
}

/// Names of apps and groups: short, printable in a table and a URL path.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "name {name:?} is not valid: use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(external: &str, internal: &str) -> PublishApp {
        PublishApp::new("app", external, internal, "g")
    }

    fn check(external: &str, internal: &str, expected_host: Result<&str, &str>) {
        let got = validate(&req(external, internal));
        match (got, expected_host) {
            (Ok(app), Ok(host)) => assert_eq!(app.external_host, host),
            (Err(Invalid(msg)), Err(fragment)) => {
                assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}")
            }
            (got, want) => panic!("{external} {internal}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn urls() {
        check(
            "https://App.Example.com",
            "http://10.0.0.5:8080",
            Ok("app.example.com"),
        );
        check(
            "https://a.localhost:8443/",
            "https://intranet/app/",
            Ok("a.localhost"),
        );
        check("http://a.example", "http://b", Err("must use https"));
        check("https://a.example/path", "http://b", Err("no path"));
        check("https://a.example/?q", "http://b", Err("no path"));
        check("https://u:p@a.example", "http://b", Err("credentials"));
        check("https://127.0.0.1", "http://b", Err("not an IP"));
        check("nope", "http://b", Err("not a URL"));
        check("https://a.example", "ftp://b", Err("http or https"));
        check("https://a.example", "http://b/?x=1", Err("no query"));
        check("https://a.example", "not a url", Err("not a URL"));
    }

    #[test]
    fn names_and_options() {
        assert!(check_name("whoami").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"a".repeat(64)).is_err());
        let mut r = req("https://a.example", "http://b");
        r.preauth = "oidc-maybe".into();
        assert!(validate(&r).is_err());
        r.preauth = "passthrough".into();
        r.backend_timeout_secs = Some(0);
        assert!(validate(&r).is_err());
        r.backend_timeout_secs = Some(10);
        assert_eq!(
            validate(&r).unwrap().backend_timeout,
            Duration::from_secs(10)
        );
    }
}
