//! The edge's data directory: what lives in it, the lock that keeps a second edge out of it, and
//! how a backup of it is made and put back.
//!
//! **Invariants:** the directory is 0700 and every secret in it 0600 from creation; one edge at
//! a time uses it (an exclusive lock held while the edge runs); a restore writes only into a
//! directory that holds no edge's data, and only the files named in [`files::BACKED_UP`].

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use postern_store::{DataFile, Store};

use crate::Secret;

/// Files in the edge's data directory.
pub mod files {
    /// The server CA certificate: what users' browsers, the admin CLI and connectors trust when
    /// no certificate is configured.
    pub const CA_CERT: &str = "ca.pem";
    pub const CA_KEY: &str = "ca-key.pem";
    /// The CA that signs connectors' client certificates.
    pub const CONNECTOR_CA_CERT: &str = "connector-ca.pem";
    pub const CONNECTOR_CA_KEY: &str = "connector-ca-key.pem";
    pub const ADMIN_TOKEN: &str = "admin-token";
    pub const STATE_DB: &str = "state.db";
    /// Held locked while an edge runs; holds its process ID.
    pub const LOCK: &str = "lock";
    /// The files a backup carries beside the database, and whether each is a secret.
    pub const BACKED_UP: &[(&str, bool)] = &[
        (CA_CERT, false),
        (CA_KEY, true),
        (CONNECTOR_CA_CERT, false),
        (CONNECTOR_CA_KEY, true),
        (ADMIN_TOKEN, true),
    ];
}

/// The exclusive lock on a data directory: released when dropped (or when the process ends,
/// however it ends).
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

/// Creates the data directory (0700) if needed and locks it, or says which process holds it.
pub fn lock(dir: &Path) -> anyhow::Result<DataLock> {
    create_private_dir(dir)?;
    let path = dir.join(files::LOCK);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                pid if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
                    format!(" (process {pid})")
                }
                _ => String::new(),
            };
            anyhow::bail!(
                "the data directory {} is in use by another edge{holder}: stop that edge, or give this one another --data",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DataLock { _file: file })
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// The admin token: from the environment if given, else the one in `DATA/admin-token`, else a new
/// random one written there (mode 0600).
pub(crate) fn admin_token(
    dir: &Path,
    bootstrap: Option<Secret>,
) -> anyhow::Result<(Secret, Option<PathBuf>)> {
    /// A shorter token is guessable; the generated one has 43 characters.
    const MIN_TOKEN_CHARS: usize = 16;
    if let Some(token) = bootstrap {
        anyhow::ensure!(
            token.expose().len() >= MIN_TOKEN_CHARS,
            "POSTERN_BOOTSTRAP_TOKEN is too short: use at least {MIN_TOKEN_CHARS} characters"
        );
        return Ok((token, None));
    }
    let path = dir.join(files::ADMIN_TOKEN);
    match std::fs::read_to_string(&path) {
        Ok(existing) if !existing.trim().is_empty() => {
            anyhow::ensure!(
                existing.trim().len() >= MIN_TOKEN_CHARS,
                "{} holds a token shorter than {MIN_TOKEN_CHARS} characters: write a longer \
                 one, or delete the file to have the edge generate one",
                path.display()
            );
            return Ok((Secret::new(existing.trim()), Some(path)));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    use base64::Engine;
    let token = format!(
        "pat_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    postern_pki::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok((Secret::new(token), Some(path)))
}

/// Writes a consistent backup of a running edge's data to `out` (which must not exist): the
/// database as of one moment, and the key files beside it.
pub async fn backup(store: &Store, dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut kept = Vec::new();
    for (name, _) in files::BACKED_UP {
        match std::fs::read(dir.join(name)) {
            Ok(contents) => kept.push((name.to_string(), contents)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", dir.join(name).display()))
            }
        }
    }
    store.backup(out, &kept).await?;
    Ok(())
}

/// Restores a backup into `dir`, which must hold no edge's data (it is created if missing); an
/// edge started on `dir` then serves what the backed-up edge served. Returns the files restored.
pub async fn restore(from: &Path, dir: &Path) -> anyhow::Result<Vec<String>> {
    create_private_dir(dir)?;
    let _lock = lock(dir)?;
    if let Some(found) = [files::STATE_DB]
        .iter()
        .chain(files::BACKED_UP.iter().map(|(name, _)| name))
        .find(|name| dir.join(name).exists())
    {
        anyhow::bail!(
            "{} already holds an edge's data ({found}): restore into an empty or new directory",
            dir.display()
        );
    }
    let db = dir.join(files::STATE_DB);
    let restored: Vec<DataFile> = postern_store::restore(from, &db).await?;
    let mut names = vec![files::STATE_DB.to_owned()];
    for (name, _) in &restored {
        // A backup is a file from outside: only the names this edge writes are put back.
        if !files::BACKED_UP.iter().any(|(known, _)| known == name) {
            tracing::warn!(file = %postern_proto::text::escape(name), "skipped a file this edge does not use");
        }
    }
    let has = |name: &str| restored.iter().any(|(n, _)| n == name);
    for (cert, key) in [
        (files::CA_CERT, files::CA_KEY),
        (files::CONNECTOR_CA_CERT, files::CONNECTOR_CA_KEY),
    ] {
        if has(cert) != has(key) {
            let _ = std::fs::remove_file(&db);
            anyhow::bail!(
                "{} holds {} without {}: a certificate authority needs both; nothing was restored",
                from.display(),
                if has(cert) { cert } else { key },
                if has(cert) { key } else { cert },
            );
        }
    }
    for (known, secret) in files::BACKED_UP {
        let Some((_, contents)) = restored.iter().find(|(n, _)| n == known) else {
            continue;
        };
        let path = dir.join(known);
        if *secret {
            postern_pki::write_private(&path, contents)?;
        } else {
            postern_pki::write_public(&path, contents)?;
        }
        names.push(known.to_string());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on a locked directory is refused, naming the holder; dropping the first
    /// frees it.
    #[test]
    fn one_edge_at_a_time_holds_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("in use by another edge")
                && err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(first);
        lock(dir.path()).unwrap();
    }

    /// The admin token file is generated once; a hand-written one that is too short is refused.
    #[test]
    fn a_short_admin_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (made, path) = admin_token(dir.path(), None).unwrap();
        let (again, _) = admin_token(dir.path(), None).unwrap();
        assert_eq!(made.expose(), again.expose());
        std::fs::write(path.unwrap(), "hunter2\n").unwrap();
        let err = admin_token(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("shorter than 16 characters"), "{err}");
    }

    /// A restore never writes over a directory that holds data, and puts back only the files
    /// the edge uses, secrets owner-only.
    #[tokio::test]
    async fn a_restore_writes_only_known_files_into_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        create_private_dir(&live).unwrap();
        let store = Store::open_sqlite(&live.join(files::STATE_DB))
            .await
            .unwrap();
        let out = dir.path().join("backup.db");
        store
            .backup(
                &out,
                &[
                    (files::CA_KEY.to_owned(), b"key".to_vec()),
                    (files::CA_CERT.to_owned(), b"cert".to_vec()),
                    ("../../escape".to_owned(), b"x".to_vec()),
                ],
            )
            .await
            .unwrap();
        let err = restore(&out, &live).await.unwrap_err().to_string();
        assert!(
            err.contains("already holds an edge's data (state.db)"),
            "{err}"
        );

        let fresh = dir.path().join("fresh");
        let names = restore(&out, &fresh).await.unwrap();
        assert_eq!(names, [files::STATE_DB, files::CA_CERT, files::CA_KEY]);
        assert!(!dir.path().join("escape").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |f: &str| {
                std::fs::metadata(fresh.join(f))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode(files::CA_KEY), 0o600);
            assert_eq!(mode(files::STATE_DB), 0o600);
            assert_eq!(mode(files::CA_CERT), 0o644);
        }

        // A certificate without its key would leave an edge that cannot start: refused whole.
        let half = dir.path().join("half.db");
        store
            .backup(
                &half,
                &[(files::CONNECTOR_CA_CERT.to_owned(), b"c".to_vec())],
            )
            .await
            .unwrap();
        let empty = dir.path().join("empty");
        let err = restore(&half, &empty).await.unwrap_err().to_string();
        assert!(
            err.contains("connector-ca.pem without connector-ca-key.pem"),
            "{err}"
        );
        assert!(!empty.join(files::STATE_DB).exists());
    }
}
