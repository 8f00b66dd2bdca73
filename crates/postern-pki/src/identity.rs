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
    connector_identity_from_cert(der).map(|i| i.connector_id)
}

/// Who a connector certificate speaks for, and which certificate it is: the connector ID it was
/// issued for and its serial number. The ID alone would let every certificate ever issued to a
/// connector stand for it until it expires; the edge accepts only the serial it issued last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    pub connector_id: String,
    /// The serial number in lowercase hex without leading zero bytes, as [`crate::IssuedCert`]
    /// records it.
    pub serial_hex: String,
}

/// The [`CertIdentity`] of a connector certificate (DER), or `None` if it cannot be parsed or
/// names no connector.
pub fn connector_identity_from_cert(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    let connector_id = cn.as_str().ok()?.to_owned();
    let serial = cert.raw_serial();
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    let serial_hex = serial[first..].iter().map(|b| format!("{b:02x}")).collect();
    Some(CertIdentity {
        connector_id,
        serial_hex,
    })
}

/// When a certificate (DER) expires; `None` if it cannot be read.
pub fn der_not_after(der: &rustls::pki_types::CertificateDer<'_>) -> Option<std::time::SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = cert.validity().not_after.timestamp().max(0) as u64;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// When a connector certificate (PEM) was issued, and when it expires: its validity period, with
/// the backdating undone. The connector renews by the first, and shows the second.
pub fn cert_issued_at(
    cert_pem: &str,
) -> Result<(std::time::SystemTime, std::time::SystemTime), PkiError> {
    use rustls::pki_types::pem::PemObject;
    let bad = || PkiError::BadPem {
        path: "connector certificate".into(),
        what: "certificate",
    };
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| bad())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| bad())?;
    let at = |t: i64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    let validity = cert.validity();
    Ok((
        at(validity.not_before.timestamp()) + crate::ca::CONNECTOR_CERT_BACKDATE,
        at(validity.not_after.timestamp()),
    ))
}
