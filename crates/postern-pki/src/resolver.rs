//! Which server certificate the edge presents for a TLS handshake.
//!
//! Either one configured certificate (a PEM chain and key from the operator), or certificates
//! issued on demand by the edge's local server CA for whatever name the client asked for, so the
//! quickstart and tests get valid HTTPS for any `*.localhost` app with no setup.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{Ca, PkiError};

/// Upper bound on certificates kept for on-demand names; past it the cache starts over, so a
/// client sending random SNI names never costs unbounded memory.
const MAX_CACHED_NAMES: usize = 1024;
/// How many new names per second may get a certificate issued on demand (with a burst of
/// [`ISSUE_BURST`]); past it, handshakes for new names get the default certificate, so a client
/// sending random SNI names cannot make the edge spend its CPU on key generation.
const ISSUE_PER_SECOND: NonZeroU32 = NonZeroU32::new(20).unwrap();
const ISSUE_BURST: NonZeroU32 = NonZeroU32::new(100).unwrap();

type IssueLimiter = governor::DefaultDirectRateLimiter;

pub struct ServerCerts {
    mode: Mode,
}

enum Mode {
    Fixed(Arc<CertifiedKey>),
    Local {
        ca: Arc<Ca>,
        /// Presented when the client sends no SNI (it dialled an IP address), and for new names
        /// past the issuance rate.
        default: Arc<CertifiedKey>,
        cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
        limiter: IssueLimiter,
    },
}

impl std::fmt::Debug for ServerCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Fixed(_) => f.write_str("ServerCerts::Fixed"),
            Mode::Local { .. } => f.write_str("ServerCerts::Local"),
        }
    }
}

impl ServerCerts {
    /// Serves one configured certificate chain and key (PEM files).
    pub fn fixed(cert_path: &Path, key_path: &Path) -> Result<ServerCerts, PkiError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|_| PkiError::BadPem {
                path: cert_path.to_owned(),
                what: "certificate chain",
            })?;
        if chain.is_empty() {
            return Err(PkiError::BadPem {
                path: cert_path.to_owned(),
                what: "certificate chain",
            });
        }
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|_| PkiError::BadPem {
            path: key_path.to_owned(),
            what: "private key",
        })?;
        let certified = certified(chain, key)?;
        Ok(ServerCerts {
            mode: Mode::Fixed(Arc::new(certified)),
        })
    }

    /// Issues certificates on demand from `ca`; `default_names` (host names and IP addresses)
    /// go into the certificate for clients that send no SNI.
    pub fn local(ca: Arc<Ca>, default_names: &[String]) -> Result<ServerCerts, PkiError> {
        let (chain, key) = ca.issue_server(default_names)?;
        let default = Arc::new(certified(chain, key)?);
        Ok(ServerCerts {
            mode: Mode::Local {
                ca,
                default,
                cache: Mutex::new(HashMap::new()),
                limiter: governor::RateLimiter::direct(
                    governor::Quota::per_second(ISSUE_PER_SECOND).allow_burst(ISSUE_BURST),
                ),
            },
        })
    }

    fn for_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        match &self.mode {
            Mode::Fixed(key) => Some(key.clone()),
            Mode::Local {
                ca,
                cache,
                default,
                limiter,
            } => {
                let name = name.to_ascii_lowercase();
                if let Some(hit) = lock(cache).get(&name) {
                    return Some(hit.clone());
                }
                if limiter.check().is_err() {
                    tracing::warn!(%name, "on-demand certificate rate exceeded; presenting the default certificate");
                    return Some(default.clone());
                }
                // Issued outside the lock: signing takes a while and must not stall other
                // handshakes. Two racing handshakes for a new name both issue; one wins the cache.
                let issued = ca
                    .issue_server(std::slice::from_ref(&name))
                    .and_then(|(chain, key)| certified(chain, key));
                let key = match issued {
                    Ok(key) => Arc::new(key),
                    Err(err) => {
                        tracing::warn!(%name, %err, "cannot issue a server certificate");
                        return None;
                    }
                };
                let mut cache = lock(cache);
                if cache.len() >= MAX_CACHED_NAMES {
                    cache.clear();
                }
                cache.insert(name, key.clone());
                Some(key)
            }
        }
    }
}

impl ResolvesServerCert for ServerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match (hello.server_name(), &self.mode) {
            (Some(name), _) => self.for_name(name),
            (None, Mode::Fixed(key)) => Some(key.clone()),
            (None, Mode::Local { default, .. }) => Some(default.clone()),
        }
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, PkiError> {
    let signing = crate::provider().key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(chain, signing))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the cache inconsistent (inserts are single
    // calls), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names_past_the_rate_get_the_default_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            Ca::load_or_create(&dir.path().join("c.pem"), &dir.path().join("k.pem"), "t").unwrap();
        let certs = ServerCerts::local(Arc::new(ca), &["localhost".to_owned()]).unwrap();
        let Mode::Local { default, .. } = &certs.mode else {
            unreachable!()
        };
        let mut defaults = 0;
        for i in 0..(ISSUE_BURST.get() + 20) {
            let got = certs.for_name(&format!("n{i}.example")).unwrap();
            if Arc::ptr_eq(&got, default) {
                defaults += 1;
            }
        }
        assert!(
            defaults >= 10,
            "only {defaults} names were refused issuance"
        );
        // A name issued before is still served from the cache.
        let first = certs.for_name("n0.example").unwrap();
        assert!(!Arc::ptr_eq(&first, default));
    }
}
