//! The connector's credentials in use: its client certificate and key, as the TLS config of its
//! tunnels and its control-plane client. Swapped whole when the certificate is renewed.

use std::time::SystemTime;

use postern_proto::api::{HEADER_CONNECTOR_HOSTNAME, HEADER_CONNECTOR_VERSION};
use tokio_rustls::TlsConnector;

/// Longer than the edge holds a long-poll, so an idle poll ends with the edge's 304, not a client
/// timeout.
const POLL_CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(40);

pub struct Credentials {
    /// TLS 1.3 with the client certificate, ALPN `postern-tunnel/1`.
    pub tunnel: TlsConnector,
    /// Mutual TLS client for the control plane (config, renewal).
    pub control: reqwest::Client,
    /// When the certificate was issued: its age decides renewal.
    pub issued_at: SystemTime,
    pub not_after: SystemTime,
}

impl Credentials {
    pub fn build(edge_ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<Credentials> {
        let (issued_at, not_after) = postern_pki::cert_issued_at(cert_pem)?;
        let tunnel = postern_pki::connector_client_config(
            edge_ca_pem,
            cert_pem,
            key_pem,
            vec![postern_proto::tunnel::TUNNEL_ALPN.to_vec()],
        )?;
        let control_tls = postern_pki::connector_client_config(
            edge_ca_pem,
            cert_pem,
            key_pem,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        )?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            HEADER_CONNECTOR_VERSION,
            reqwest::header::HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
        );
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&hostname()) {
            headers.insert(HEADER_CONNECTOR_HOSTNAME, v);
        }
        let control = reqwest::Client::builder()
            .use_preconfigured_tls(control_tls)
            .default_headers(headers)
            .timeout(POLL_CLIENT_TIMEOUT)
            .build()?;
        Ok(Credentials {
            tunnel: TlsConnector::from(std::sync::Arc::new(tunnel)),
            control,
            issued_at,
            not_after,
        })
    }
}

/// This machine's host name, as the admin's connector list shows it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
