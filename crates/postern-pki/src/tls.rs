//! The rustls configs of the edge's listeners and of the connector's dialer.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::{PkiError, ServerCerts};

/// The one crypto provider every Postern TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Why PEM material handed to a TLS config was refused.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{0} holds no PEM certificate")]
    NoCertificate(&'static str),
    #[error("{0} holds no PEM private key")]
    NoKey(&'static str),
    #[error("{0} was refused by TLS: {1}")]
    Refused(&'static str, rustls::Error),
}

/// The public listener and the admin listener: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN.
pub fn public_server_config(certs: Arc<ServerCerts>) -> Result<ServerConfig, PkiError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The connector listener: TLS 1.3 only. A client certificate is verified against the connector
/// CA when presented; it is optional at the handshake only because registration happens before
/// the connector has one, and the edge refuses every other call and every tunnel without it.
pub fn connector_listener_config(
    certs: Arc<ServerCerts>,
    connector_ca: &CertificateDer<'static>,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(connector_ca.clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = alpn;
    Ok(config)
}

/// The connector's dialer: TLS 1.3, the edge verified against `roots_pem`, the connector's
/// certificate presented.
pub fn connector_client_config(
    roots_pem: &str,
    cert_chain_pem: &str,
    key_pem: &str,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, PemError> {
    let roots = root_store(roots_pem, "the edge CA file")?;
    let chain = certs(cert_chain_pem, "the connector certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| PemError::NoKey("the connector key"))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PemError::Refused("TLS 1.3", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| PemError::Refused("the connector certificate and key", e))?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// A client that verifies the server against `roots_pem` and presents no certificate (the admin
/// CLI, and the connector's registration call).
pub fn client_config(roots_pem: &str, alpn: Vec<Vec<u8>>) -> Result<ClientConfig, PemError> {
    let roots = root_store(roots_pem, "the CA file")?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PemError::Refused("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(config)
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(PemError::NoCertificate(what));
    }
    Ok(certs)
}

fn root_store(pem: &str, what: &'static str) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(pem, what)? {
        roots.add(cert).map_err(|e| PemError::Refused(what, e))?;
    }
    Ok(roots)
}

/// The connector's client for `https` apps: the system's trusted roots, TLS 1.2 and 1.3.
pub fn backend_client_config() -> ClientConfig {
    // No ALPN here: the HTTP client that uses this config sets it.
    verifying_client_config(system_roots())
}

/// The system's CA certificates.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::warn!(error = %err, "cannot load some system CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded system CA certificates");
    roots
}

fn verifying_client_config(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The edge's client for OpenID Connect issuers: the system's CA certificates, plus `extra`
/// (the edge's own CA, which signs the built-in identity provider's certificate).
pub fn issuer_client_config(extra: &[CertificateDer<'static>]) -> ClientConfig {
    let mut roots = system_roots();
    roots.add_parsable_certificates(extra.iter().cloned());
    let mut config = verifying_client_config(roots);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// The connector's client for apps an admin published with `insecure_skip_backend_tls_verify`:
/// any certificate is accepted (the handshake's signatures are still checked). Used for no other
/// purpose.
pub fn insecure_backend_client_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InsecureSkipBackendVerify))
        .with_no_client_auth()
}

/// Accepts any server certificate. Only reachable through an app's
/// `insecure_skip_backend_tls_verify` setting.
#[derive(Debug)]
struct InsecureSkipBackendVerify;

impl rustls::client::danger::ServerCertVerifier for InsecureSkipBackendVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
