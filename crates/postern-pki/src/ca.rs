//! A local certificate authority: created on first start, kept on disk, used to issue server
//! certificates (the edge's server CA) or connector client certificates (the connector CA).

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::files::{write_private, write_public};
use crate::PkiError;

/// How long a local CA is valid. Long, because replacing it means re-registering every connector.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate issued on demand is valid. It lives in memory only and is
/// reissued on every start.
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);
/// Tolerated clock skew between the edge and its peers when certificates start.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A certificate authority whose key is on this machine.
/// Connector certificates start this long before they are issued, so an edge whose clock is a
/// little behind the one that signed still accepts them. [`cert_issued_at`](crate::cert_issued_at)
/// undoes it to tell a certificate's age.
pub const CONNECTOR_CERT_BACKDATE: Duration = Duration::from_secs(300);

pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate the CA signed, with what the store needs to remember about it.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub pem: String,
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Why a connector's certificate signing request was refused. Each is the client's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("the CSR is not a PEM-encoded PKCS#10 certificate request")]
    Malformed,
    #[error("the CSR's signature does not verify with its own public key")]
    BadSignature,
    #[error("the CSR's subject may only hold a common name; found {0}")]
    UnexpectedSubject(String),
    #[error(
        "the CSR requests extensions; Postern sets a connector certificate's extensions itself"
    )]
    UnexpectedExtensions,
    #[error("the CSR's key must be ECDSA P-256, ECDSA P-384 or Ed25519")]
    UnsupportedKey,
    #[error("signing failed: {0}")]
    Signing(String),
}

impl Ca {
    /// Loads the CA from `cert_path` and `key_path`, or creates it there when neither exists.
    pub fn load_or_create(cert_path: &Path, key_path: &Path, name: &str) -> Result<Ca, PkiError> {
        if cert_path.exists() || key_path.exists() {
            return Ca::load(cert_path, key_path);
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Postern");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        // The key first: a certificate without its key would make the next start fail.
        write_private(key_path, key.serialize_pem().as_bytes())?;
        write_public(cert_path, cert.pem().as_bytes())?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, PkiError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Io {
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let bad = |path: &Path, what| PkiError::BadPem {
            path: path.to_owned(),
            what,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|_| bad(key_path, "private key"))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| bad(cert_path, "certificate"))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|_| bad(cert_path, "CA certificate"))?;
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses) with a fresh key.
    pub fn issue_server(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + SERVER_CERT_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }

    /// Signs a connector's CSR. The certificate's subject is the connector's ID and its only
    /// purpose is TLS client authentication, whatever the CSR asked for; a CSR that asks for more
    /// than a key is refused rather than silently trimmed.
    pub fn sign_connector_csr(
        &self,
        csr_pem: &str,
        connector_id: &str,
        valid_for: Duration,
    ) -> Result<IssuedCert, CsrError> {
        let spki = check_csr(csr_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, connector_id);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Postern connector");
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:postern:connector:{connector_id}")
                .try_into()
                .map_err(|e: rcgen::Error| CsrError::Signing(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CONNECTOR_CERT_BACKDATE;
        params.not_after = now + valid_for;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let cert = params
            .signed_by(&spki, &self.issuer)
            .map_err(|e| CsrError::Signing(e.to_string()))?;
        Ok(IssuedCert {
            pem: cert.pem(),
            serial_hex: hex(serial.as_ref()),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

/// Parses and checks a CSR with x509-parser (not rcgen's CSR parser, which panics on some
/// malformed subjects), returning the public key to certify.
fn check_csr(csr_pem: &str) -> Result<SubjectPublicKeyInfo, CsrError> {
    use x509_parser::certification_request::X509CertificationRequest;

    if csr_pem.len() > 16 * 1024 {
        return Err(CsrError::Malformed);
    }
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|_| CsrError::Malformed)?;
    let (rest, csr) =
        X509CertificationRequest::from_der(der.as_ref()).map_err(|_| CsrError::Malformed)?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed);
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let info = &csr.certification_request_info;
    for attr in info.subject.iter_attributes() {
        if attr.attr_type() != &x509_parser::oid_registry::OID_X509_COMMON_NAME {
            return Err(CsrError::UnexpectedSubject(info.subject.to_string()));
        }
    }
    if csr
        .requested_extensions()
        .is_some_and(|mut e| e.next().is_some())
    {
        return Err(CsrError::UnexpectedExtensions);
    }
    let spki = SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|_| CsrError::UnsupportedKey)?;
    let alg = spki.algorithm();
    let allowed = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ];
    if !allowed.contains(&alg) {
        return Err(CsrError::UnsupportedKey);
    }
    Ok(spki)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, as RFC 5280 asks of serial numbers.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(
            &dir.path().join("ca.pem"),
            &dir.path().join("ca-key.pem"),
            "t",
        )
        .unwrap();
        (dir, ca)
    }

    fn csr_with(f: impl FnOnce(&mut CertificateParams)) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        f(&mut params);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn check(csr: &str, expected: Result<(), CsrError>) {
        let (_dir, ca) = ca();
        let got = ca
            .sign_connector_csr(csr, "c-1", Duration::from_secs(3600))
            .map(|_| ());
        assert_eq!(got, expected);
    }

    #[test]
    fn signs_a_plain_csr() {
        check(&crate::generate_key_and_csr().unwrap().csr_pem, Ok(()));
        check(
            &csr_with(|p| p.distinguished_name.push(DnType::CommonName, "anything")),
            Ok(()),
        );
    }

    #[test]
    fn refuses_bad_csrs() {
        check("", Err(CsrError::Malformed));
        check("not a pem", Err(CsrError::Malformed));
        check(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            Err(CsrError::Malformed),
        );
        check(
            &csr_with(|p| p.distinguished_name.push(DnType::OrganizationName, "Evil")),
            Err(CsrError::UnexpectedSubject("O=Evil".into())),
        );
        check(
            &csr_with(|p| p.subject_alt_names = vec![SanType::DnsName("evil".try_into().unwrap())]),
            Err(CsrError::UnexpectedExtensions),
        );
        check(
            &csr_with(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
            Err(CsrError::UnexpectedExtensions),
        );
    }

    #[test]
    fn refuses_a_tampered_csr() {
        let pem = crate::generate_key_and_csr().unwrap().csr_pem;
        let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        // Flip a bit inside the subject's common name.
        let at = der.windows(7).position(|w| w == b"postern").unwrap();
        der[at] ^= 1;
        let body = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der);
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
        );
        check(&tampered, Err(CsrError::BadSignature));
    }

    #[test]
    fn a_certificate_tells_when_it_was_issued_and_expires() {
        let (_dir, ca) = ca();
        let csr = crate::generate_key_and_csr().unwrap().csr_pem;
        let before = std::time::SystemTime::now() - Duration::from_secs(1);
        let cert = ca
            .sign_connector_csr(&csr, "c_1", Duration::from_secs(3600))
            .unwrap();
        let after = std::time::SystemTime::now() + Duration::from_secs(1);
        let (issued, expires) = crate::cert_issued_at(&cert.pem).unwrap();
        assert!(issued >= before && issued <= after, "{issued:?}");
        let life = expires.duration_since(issued).unwrap();
        assert!(life.as_secs().abs_diff(3600) <= 2, "{life:?}");
        assert!(crate::cert_issued_at("garbage").is_err());
    }

    /// The edge recognises a certificate by the serial it recorded at signing: what the
    /// certificate carries must read back as exactly that, for many random serials.
    #[test]
    fn a_certificate_names_its_connector_and_the_serial_recorded_for_it() {
        use rustls::pki_types::pem::PemObject;
        let (_dir, ca) = ca();
        let csr = crate::generate_key_and_csr().unwrap().csr_pem;
        for _ in 0..32 {
            let cert = ca
                .sign_connector_csr(&csr, "c_1", Duration::from_secs(3600))
                .unwrap();
            let der =
                rustls::pki_types::CertificateDer::from_pem_slice(cert.pem.as_bytes()).unwrap();
            assert_eq!(
                crate::connector_identity_from_cert(&der),
                Some(crate::CertIdentity {
                    connector_id: "c_1".into(),
                    serial_hex: cert.serial_hex.clone(),
                })
            );
        }
        assert_eq!(crate::connector_identity_from_cert(b"garbage"), None);
    }

    #[test]
    fn reloads_from_disk() {
        let (dir, ca) = ca();
        let again = Ca::load_or_create(
            &dir.path().join("ca.pem"),
            &dir.path().join("ca-key.pem"),
            "t",
        )
        .unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
    }
}
