//! Messages of the edge's HTTP APIs (control plane and admin) that both sides parse.

use serde::{Deserialize, Serialize};

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
