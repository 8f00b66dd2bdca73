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
    /// The one-time registration token an admin created for a connector group.
    pub token: String,
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
