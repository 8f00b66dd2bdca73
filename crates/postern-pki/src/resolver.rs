//! Which server certificate the edge presents for a TLS handshake.
//!
//! Either one configured certificate (a PEM chain and key from the operator), or certificates
//! issued on demand by the edge's local server CA, so the quickstart and tests get valid HTTPS for
//! any `*.localhost` app with no setup. On demand means only for names the edge serves: the
//! default names (in the certificate shown to clients that send no SNI) and the names the edge
//! sets with [`ServerCerts::serve_names`] (published apps' hosts, the identity provider's host).
//! Any other name gets no certificate and the handshake fails, so a stranger's SNI costs a set
//! lookup: it never reaches the CA, never enters the cache and never evicts a served name.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{Ca, PkiError};

/// Upper bound on the names certificates are issued for on demand (and so on the cache, which
/// holds only those). The names come from the admin's published apps, not from clients; past it,
/// the rest are left out (logged), so a runaway configuration cannot grow the edge without bound.
pub const MAX_SERVED_NAMES: usize = 10_000;

pub struct ServerCerts {
    mode: Mode,
}

enum Mode {
    /// The operator's certificate: reloaded from its files on [`ServerCerts::reload`] (SIGHUP)
    /// and when they change; a new pair is used for new handshakes only if it loads whole.
    Fixed(Mutex<Operator>),
    Local {
        ca: Arc<Ca>,
        /// Presented when the client sends no SNI (it dialled an IP address), or names one of
        /// `default_names`.
        default: Arc<CertifiedKey>,
        default_names: HashSet<String>,
        served: Mutex<Served>,
    },
}

/// The operator's certificate files, what was loaded from them, and what they looked like then.
struct Operator {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Arc<CertifiedKey>,
    stamp: Option<Stamp>,
}

/// What tells a replaced file: its size, modification time and inode, for both files.
type Stamp = [(u64, std::time::SystemTime, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Option<Stamp> {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some((m.len(), m.modified().ok()?, inode))
    };
    Some([one(cert)?, one(key)?])
}

/// Reads a PEM certificate chain and its private key, and checks they belong together.
fn load_operator(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, PkiError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| PkiError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let bad = |path: &Path, what| PkiError::BadOperatorPem {
        path: path.to_owned(),
        what,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert_path)?)
        .collect::<Result<_, _>>()
        .map_err(|_| bad(cert_path, "certificate chain"))?;
    if chain.is_empty() {
        return Err(bad(cert_path, "certificate chain"));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?)
        .map_err(|_| bad(key_path, "private key"))?;
    let certified = certified(chain, key)?;
    certified.keys_match().map_err(|_| PkiError::KeyMismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    })?;
    Ok(certified)
}

/// The names served on demand, and the certificates issued for them so far.
#[derive(Default)]
struct Served {
    names: HashSet<String>,
    cache: HashMap<String, Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServerCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Fixed(_) => f.write_str("ServerCerts::Fixed"),
            Mode::Local { .. } => f.write_str("ServerCerts::Local"),
        }
    }
}

/// A name as SNI and the routing table compare it: lower-case, without a trailing dot.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl ServerCerts {
    /// Serves one configured certificate chain and key (PEM files), whatever name is asked for.
    pub fn fixed(cert_path: &Path, key_path: &Path) -> Result<ServerCerts, PkiError> {
        let stamp = stamp(cert_path, key_path);
        let current = Arc::new(load_operator(cert_path, key_path)?);
        Ok(ServerCerts {
            mode: Mode::Fixed(Mutex::new(Operator {
                cert_path: cert_path.to_owned(),
                key_path: key_path.to_owned(),
                current,
                stamp,
            })),
        })
    }

    /// Loads the operator's certificate files again, for new handshakes (connections already
    /// open keep theirs). A pair that does not load whole is refused and the current one kept.
    /// `Ok(false)` for the local CA, which has nothing to reload.
    pub fn reload(&self) -> Result<bool, PkiError> {
        let Mode::Fixed(operator) = &self.mode else {
            return Ok(false);
        };
        let (cert_path, key_path) = {
            let op = lock(operator);
            (op.cert_path.clone(), op.key_path.clone())
        };
        let stamp = stamp(&cert_path, &key_path);
        // Recorded even when the pair is refused, so a broken file is reported once, not at
        // every check, until it changes again.
        let loaded = load_operator(&cert_path, &key_path);
        let mut op = lock(operator);
        op.stamp = stamp;
        op.current = Arc::new(loaded?);
        Ok(true)
    }

    /// [`ServerCerts::reload`] if either file changed (size, time or inode) since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, PkiError> {
        let Mode::Fixed(operator) = &self.mode else {
            return Ok(false);
        };
        let changed = {
            let op = lock(operator);
            stamp(&op.cert_path, &op.key_path) != op.stamp
        };
        if changed {
            self.reload()
        } else {
            Ok(false)
        }
    }

    /// Issues certificates on demand from `ca`; `default_names` (host names and IP addresses)
    /// go into the certificate for clients that send no SNI, and are served from the start.
    pub fn local(ca: Arc<Ca>, default_names: &[String]) -> Result<ServerCerts, PkiError> {
        let (chain, key) = ca.issue_server(default_names)?;
        let default = Arc::new(certified(chain, key)?);
        Ok(ServerCerts {
            mode: Mode::Local {
                ca,
                default,
                default_names: default_names.iter().map(|n| normalise(n)).collect(),
                served: Mutex::new(Served::default()),
            },
        })
    }

    /// When the certificate shown to clients that send no SNI (or the configured one) expires.
    pub fn not_after(&self) -> Option<std::time::SystemTime> {
        let certified = match &self.mode {
            Mode::Fixed(op) => lock(op).current.clone(),
            Mode::Local { default, .. } => default.clone(),
        };
        crate::der_not_after(certified.cert.first()?)
    }

    /// Replaces the names (besides the default names) that get a certificate on demand; the
    /// certificates of names no longer served are dropped. A fixed certificate ignores this.
    pub fn serve_names(&self, names: impl IntoIterator<Item = String>) {
        let Mode::Local { served, .. } = &self.mode else {
            return;
        };
        let mut next = HashSet::new();
        for name in names {
            if next.len() >= MAX_SERVED_NAMES {
                tracing::error!(
                    limit = MAX_SERVED_NAMES,
                    "more names to serve than the on-demand certificate limit; the rest get no certificate"
                );
                break;
            }
            next.insert(normalise(&name));
        }
        let mut served = lock(served);
        served.cache.retain(|name, _| next.contains(name));
        served.names = next;
    }

    fn for_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        match &self.mode {
            Mode::Fixed(op) => Some(lock(op).current.clone()),
            Mode::Local {
                ca,
                default,
                default_names,
                served,
            } => {
                let name = normalise(name);
                if default_names.contains(&name) {
                    return Some(default.clone());
                }
                {
                    let served = lock(served);
                    if let Some(hit) = served.cache.get(&name) {
                        return Some(hit.clone());
                    }
                    if !served.names.contains(&name) {
                        tracing::debug!(%name, "no certificate for a name the edge does not serve");
                        return None;
                    }
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
                let mut served = lock(served);
                // Unpublished while it was being issued: hand it to this handshake only.
                if served.names.contains(&name) {
                    served.cache.insert(name, key.clone());
                }
                Some(key)
            }
        }
    }
}

impl ResolvesServerCert for ServerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match (hello.server_name(), &self.mode) {
            (Some(name), _) => self.for_name(name),
            (None, Mode::Fixed(op)) => Some(lock(op).current.clone()),
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

    fn local() -> (tempfile::TempDir, ServerCerts) {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            Ca::load_or_create(&dir.path().join("c.pem"), &dir.path().join("k.pem"), "t").unwrap();
        let certs = ServerCerts::local(Arc::new(ca), &["localhost".to_owned()]).unwrap();
        (dir, certs)
    }

    fn cached(certs: &ServerCerts) -> usize {
        let Mode::Local { served, .. } = &certs.mode else {
            unreachable!()
        };
        lock(served).cache.len()
    }

    #[test]
    fn only_served_names_get_certificates_and_only_they_are_cached() {
        let (_dir, certs) = local();
        certs.serve_names([
            "wiki.example.com".to_owned(),
            "Login.Example.com".to_owned(),
        ]);
        let wiki = certs.for_name("wiki.example.com").expect("a served name");
        // The same certificate again, from the cache, whatever the spelling.
        let again = certs.for_name("WIKI.example.com.").unwrap();
        assert!(Arc::ptr_eq(&wiki, &again));
        assert!(certs.for_name("login.example.com").is_some());
        // Strangers' names get nothing, and do not touch the cache.
        for i in 0..2000 {
            assert!(certs.for_name(&format!("n{i}.example")).is_none(), "n{i}");
        }
        assert_eq!(cached(&certs), 2);
        let still = certs.for_name("wiki.example.com").unwrap();
        assert!(Arc::ptr_eq(&wiki, &still), "a served name was evicted");
        // The default names get the default certificate.
        let Mode::Local { default, .. } = &certs.mode else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(&certs.for_name("localhost").unwrap(), default));
    }

    #[test]
    fn unpublished_names_lose_their_certificate_and_new_ones_get_one() {
        let (_dir, certs) = local();
        certs.serve_names(["a.example".to_owned()]);
        assert!(certs.for_name("a.example").is_some());
        certs.serve_names(["b.example".to_owned()]);
        assert!(certs.for_name("a.example").is_none());
        assert_eq!(cached(&certs), 0);
        assert!(certs.for_name("b.example").is_some());
    }

    #[test]
    fn the_served_names_are_bounded() {
        let (_dir, certs) = local();
        certs.serve_names((0..MAX_SERVED_NAMES + 5).map(|i| format!("n{i}.example")));
        let Mode::Local { served, .. } = &certs.mode else {
            unreachable!()
        };
        assert_eq!(lock(served).names.len(), MAX_SERVED_NAMES);
    }

    /// A new pair replaces the old for new handshakes only if it loads whole; a refused pair
    /// is not retried until its files change again.
    #[test]
    fn an_operator_pair_reloads_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        // Each CA's own certificate and key make a pair that belongs together.
        Ca::load_or_create(&p("c1"), &p("k1"), "one").unwrap();
        Ca::load_or_create(&p("c2"), &p("k2"), "two").unwrap();
        // As certbot does: a new file renamed into place.
        let put = |from: &str, to: &str| {
            std::fs::copy(p(from), p("tmp")).unwrap();
            std::fs::rename(p("tmp"), p(to)).unwrap();
        };
        put("c1", "cert.pem");
        put("k1", "key.pem");
        let certs = ServerCerts::fixed(&p("cert.pem"), &p("key.pem")).unwrap();
        let leaf = |c: &ServerCerts| c.for_name("any.example").unwrap().cert[0].clone();
        let first = leaf(&certs);
        assert!(!certs.reload_if_changed().unwrap(), "nothing changed");

        put("c2", "cert.pem");
        let refused = certs.reload_if_changed();
        assert!(
            matches!(refused, Err(PkiError::KeyMismatch { .. })),
            "{refused:?}"
        );
        assert_eq!(
            leaf(&certs),
            first,
            "a refused pair replaced the current one"
        );
        assert!(
            !certs.reload_if_changed().unwrap(),
            "retried an unchanged refused pair"
        );

        put("k2", "key.pem");
        assert!(certs.reload_if_changed().unwrap());
        let second = leaf(&certs);
        assert_ne!(second, first);

        std::fs::remove_file(p("cert.pem")).unwrap();
        assert!(matches!(certs.reload(), Err(PkiError::Io { .. })));
        assert_eq!(leaf(&certs), second);
    }
}
