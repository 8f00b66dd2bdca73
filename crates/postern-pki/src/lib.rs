//! Postern's public-key infrastructure: the edge's two local certificate authorities, CSR signing
//! for connectors, server certificates on demand, and the rustls configs of every listener and
//! dialer.
//!
//! **Invariant:** every rustls config in Postern is built here, with the `ring` provider; the
//! connector listener and the connector's dialer accept TLS 1.3 only.

mod ca;
mod files;
mod identity;
mod resolver;
mod tls;

pub use ca::{Ca, CsrError, IssuedCert, CONNECTOR_CERT_BACKDATE};
pub use files::{write_private, write_public};
pub use identity::{
    cert_issued_at, connector_id_from_cert, connector_identity_from_cert, der_not_after,
    generate_key_and_csr, CertIdentity, GeneratedKey,
};
pub use resolver::ServerCerts;
pub use tls::{
    backend_client_config, client_config, connector_client_config, connector_listener_config,
    insecure_backend_client_config, issuer_client_config, provider, public_server_config, PemError,
};

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid PEM {what}; delete it to let Postern make a new one, or replace it"
    )]
    BadPem {
        path: std::path::PathBuf,
        what: &'static str,
    },
    #[error("{path} is not a PEM {what}; give --tls-cert a certificate chain and --tls-key its private key, both PEM")]
    BadOperatorPem {
        path: std::path::PathBuf,
        what: &'static str,
    },
    #[error("the private key {key} does not belong to the certificate {cert}; give the key the certificate was issued for")]
    KeyMismatch {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}
