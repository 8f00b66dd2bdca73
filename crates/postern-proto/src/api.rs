//! Messages of the edge's HTTP APIs (control plane and admin) that both sides parse.

use serde::{Deserialize, Serialize};

use crate::text::{check_reported, TextError, MAX_HOSTNAME_BYTES, MAX_VERSION_BYTES};

/// Longest registration token accepted: the edge's are 47 characters; this leaves room without
/// letting a caller make the edge hash megabytes.
pub const MAX_REGISTRATION_TOKEN_BYTES: usize = 256;
/// Longest access token accepted in a registration: the built-in identity provider's signed JWTs
/// are under 2 KiB.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 8 * 1024;
/// Longest connector group name: the edge's group names are at most 63 characters.
pub const MAX_GROUP_BYTES: usize = 63;

/// The JSON body of every error answer from a Postern API: a stable machine-readable code and a
/// message that tells a person what to fix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub error: ApiErrorBody,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST /v1/connector/register`: the only control-plane call made without a client certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The one-time registration token an admin created for a connector group; empty when
    /// `access_token` is sent instead.
    #[serde(default)]
    pub token: String,
    /// Instead of a registration token: an access token of the built-in identity provider,
    /// issued to the connector client (device authorization grant) for a user with the admin
    /// role, and the connector group to join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// PKCS#10 certificate signing request (PEM) for the connector's own key.
    pub csr_pem: String,
    /// The connector's host name, for the admin's connector list.
    pub hostname: String,
    /// The connector's software version.
    pub version: String,
}

impl RegisterRequest {
    /// Checks what an unauthenticated caller sent before any work is spent on it: every field
    /// bounded, and the host name, version and group printable (they are stored, listed and
    /// logged). The CSR is bounded and parsed by the CA.
    pub fn check(&self) -> Result<(), TextError> {
        check_reported("hostname", &self.hostname, MAX_HOSTNAME_BYTES)?;
        check_reported("version", &self.version, MAX_VERSION_BYTES)?;
        check_reported("token", &self.token, MAX_REGISTRATION_TOKEN_BYTES)?;
        if let Some(t) = &self.access_token {
            check_reported("access_token", t, MAX_ACCESS_TOKEN_BYTES)?;
        }
        if let Some(g) = &self.group {
            check_reported("group", g, MAX_GROUP_BYTES)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterResponse {
    pub connector_id: String,
    pub group: String,
    /// The connector's client certificate (PEM), signed by the edge's connector CA.
    pub certificate_pem: String,
    /// The connector CA's certificate (PEM).
    pub connector_ca_pem: String,
}

/// `GET /v1/connector/idp`: where a connector signs an administrator in to register without a
/// registration token (OAuth 2.0 device authorization grant, RFC 8628).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdpInfo {
    /// The built-in identity provider's issuer URL; its discovery document names the endpoints.
    pub issuer: String,
    /// The public client to use for the device authorization grant.
    pub client_id: String,
}

/// Headers a connector sends on every control-plane call, so the edge can show what runs where.
pub const HEADER_CONNECTOR_VERSION: &str = "postern-connector-version";
pub const HEADER_CONNECTOR_HOSTNAME: &str = "postern-connector-hostname";

/// `POST /v1/connector/renew`, made over mutual TLS with the certificate being replaced.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// PKCS#10 certificate signing request (PEM) for the connector's new key.
    pub csr_pem: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewResponse {
    /// The new client certificate (PEM).
    pub certificate_pem: String,
    /// Its expiry, Unix seconds.
    pub not_after: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_bounded_and_printable() {
        let ok = RegisterRequest {
            token: "pst_abc".into(),
            access_token: None,
            group: None,
            csr_pem: String::new(),
            hostname: "host-1".into(),
            version: "0.1.0".into(),
        };
        assert_eq!(ok.check(), Ok(()));
        let with = |f: &dyn Fn(&mut RegisterRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            r.check().map_err(|e| e.field())
        };
        assert_eq!(
            with(&|r| r.hostname = "h".repeat(60 * 1024)),
            Err("hostname")
        );
        assert_eq!(
            with(&|r| r.hostname = "h\n\x1b[31m".into()),
            Err("hostname")
        );
        assert_eq!(with(&|r| r.version = "v".repeat(65)), Err("version"));
        assert_eq!(with(&|r| r.version = "1\u{202e}".into()), Err("version"));
        assert_eq!(with(&|r| r.token = "t".repeat(257)), Err("token"));
        assert_eq!(
            with(&|r| r.access_token = Some("a".repeat(9000))),
            Err("access_token")
        );
        assert_eq!(with(&|r| r.group = Some("g\r".into())), Err("group"));
        assert_eq!(with(&|r| r.group = Some("office".into())), Ok(()));
    }
}
