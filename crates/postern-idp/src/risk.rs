//! Identity protection at the built-in provider: what only it sees, the passwords. After each
//! password check, the recent failures from the caller's address and against the account are
//! judged by `postern_policy::risk` (a password spray, brute force); a password that matched is
//! looked up in the operator's leaked-passwords list (`--leaked-passwords DIR`, range files in
//! the public pwned-passwords format: `DIR/XXXXX` or `DIR/XXXXX.txt`, lines `SUFFIX:COUNT`).
//! Detections against an existing account are stored and raise its risk.
//!
//! **Bounds:** failures are read from the store's sign-in log, at most
//! [`postern_store::MAX_RECENT_FAILURES`]; a range file is read up to [`RANGE_FILE_BYTES`]; the
//! password is hashed with SHA-1 only to look it up (the k-anonymity format), never stored.

use std::io::Read;
use std::path::{Path, PathBuf};

use postern_policy::risk::{self, Detection, Failure};
use postern_store::{NewDetection, BUILT_IN_ISSUER};
use sha1::{Digest, Sha1};

use crate::{Caller, Idp};

/// The largest range file read (the public ones are about 40 KiB).
pub const RANGE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The operator's leaked-passwords list.
#[derive(Clone, Debug)]
pub struct LeakedPasswords {
    dir: PathBuf,
}

impl LeakedPasswords {
    /// Checks that `dir` is a readable directory holding at least one range file.
    pub fn open(dir: &Path) -> Result<LeakedPasswords, String> {
        let fail = |e: String| {
            format!(
                "the leaked-passwords directory {}: {e}; check --leaked-passwords",
                dir.display()
            )
        };
        let mut entries = std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))?;
        let has_range = entries.any(|e| {
            e.ok().is_some_and(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let stem = name.strip_suffix(".txt").unwrap_or(&name);
                stem.len() == 5 && stem.bytes().all(|b| b.is_ascii_hexdigit())
            })
        });
        if !has_range {
            return Err(fail(
                "it holds no range file (5 hex digits, as in the pwned-passwords range files)"
                    .into(),
            ));
        }
        Ok(LeakedPasswords {
            dir: dir.to_path_buf(),
        })
    }

    /// How many times `password` appears in the list (`None`: not found, or no range file for
    /// its prefix). Reads one file: call it off the async threads.
    pub fn lookup(&self, password: &str) -> Option<u64> {
        let digest = Sha1::digest(password.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        let prefix = &hex[..5];
        let text = [
            prefix.to_owned(),
            format!("{prefix}.txt"),
            prefix.to_lowercase(),
        ]
        .iter()
        .find_map(|name| read_bounded(&self.dir.join(name)))?;
        risk::range_lookup(&text, &hex)
    }
}

fn read_bounded(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(RANGE_FILE_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

impl Idp {
    /// Judges a password check for `email` from `caller` that has just been recorded (a failure
    /// is in the log already): `user` is the account's ID when it exists, `matched` the password
    /// when it was right. Returns what was found.
    pub(crate) async fn judge_password(
        &self,
        email: &str,
        user: Option<&str>,
        caller: &Caller,
        matched: Option<&str>,
    ) -> Vec<Detection> {
        let now_ms = crate::now() * 1000;
        let ip = caller.ip.to_string();
        let since = now_ms - risk::FAILURE_WINDOW_SECONDS * 1000;
        let failures = match self.store.recent_failures(&ip, email, since).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read recent failures; no spray or brute force judged");
                Vec::new()
            }
        };
        let failures: Vec<Failure> = failures
            .into_iter()
            .filter_map(|f| {
                Some(Failure {
                    at: f.at_ms / 1000,
                    ip: f.ip_address.parse().ok()?,
                    account: f.account,
                })
            })
            .collect();
        let mut found = risk::assess_failures(&failures, email, caller.ip, now_ms / 1000);
        if let (Some(password), Some(list)) = (matched, &self.leaked) {
            let (list, password) = (list.clone(), password.to_owned());
            if let Ok(Some(count)) =
                tokio::task::spawn_blocking(move || list.lookup(&password)).await
            {
                found.push(risk::leaked(count));
            }
        }
        let Some(user) = user else { return found };
        for d in &found {
            tracing::warn!(detection = d.kind.as_str(), level = d.level.as_str(), user = email, ip = %caller.ip, detail = %d.detail, "risk detected");
            postern_obs::metrics::risk_detection(d.kind.as_str(), d.level.as_str());
            let new = NewDetection {
                at_ms: now_ms,
                issuer: BUILT_IN_ISSUER.to_owned(),
                subject: user.to_owned(),
                user_principal_name: email.to_owned(),
                kind: d.kind.as_str().to_owned(),
                level: d.level.as_str().to_owned(),
                ip_address: ip.clone(),
                detail: d.detail.clone(),
                source: "idp".to_owned(),
                correlation_id: caller.request_id.clone(),
            };
            if let Err(e) = self.store.record_detection(&new).await {
                tracing::error!(error = %e, "cannot record a risk detection");
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaked_password_is_found_in_its_range_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = LeakedPasswords::open(dir.path()).unwrap_err();
        assert!(empty.contains("no range file"), "{empty}");
        // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8
        std::fs::write(
            dir.path().join("5BAA6.txt"),
            "003D68EB55068C33ACE09247EE4C639306B:3\r\n1E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824\r\n",
        )
        .unwrap();
        let list = LeakedPasswords::open(dir.path()).unwrap();
        assert_eq!(list.lookup("password"), Some(9_545_824));
        assert_eq!(list.lookup("correct horse battery staple"), None);
        let missing = LeakedPasswords::open(&dir.path().join("nope")).unwrap_err();
        assert!(missing.contains("--leaked-passwords"), "{missing}");
    }
}
