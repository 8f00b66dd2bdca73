//! The connector's side of its identity: its key and CSR, and reading a connector's ID back from
//! the certificate the edge signed.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::PkiError;

/// A fresh connector key and the CSR that asks the edge to certify it.
pub struct GeneratedKey {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Generates an ECDSA P-256 key and a CSR for it. The subject is a placeholder: the edge names the
/// certificate after the connector ID it assigns.
pub fn generate_key_and_csr() -> Result<GeneratedKey, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "postern-connector");
    let csr = params.serialize_request(&key)?;
    Ok(GeneratedKey {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

/// The connector ID a connector certificate was issued for (its subject common name), or `None`
/// if the certificate cannot be parsed or names none.
pub fn connector_id_from_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
