//! Online backups: one SQLite file holding a consistent copy of the database (`VACUUM INTO`, taken
//! while the edge serves) and the edge's key files, in a table of their own.
//!
//! **Invariant:** a backup holds every secret the edge has; it is created owner-only (0600) and
//! restored only into a path that does not exist yet, never over live data.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::ConnectOptions;

use crate::migrations::{self, SCHEMA_VERSION};
use crate::{Store, StoreError};

/// The table of a backup that holds the files beside the database.
const FILES_TABLE: &str = "postern_backup_files";

/// A file kept beside the database: its name in the data directory and its contents.
pub type DataFile = (String, Vec<u8>);

impl Store {
    /// Writes a consistent copy of the database, with `files`, to `out`, which must not exist.
    pub async fn backup(&self, out: &Path, files: &[DataFile]) -> Result<(), StoreError> {
        let target = utf8(out)?;
        create_private(out)?;
        let written = async {
            sqlx::query("VACUUM INTO ?")
                .bind(target)
                .execute(&self.pool)
                .await?;
            let copy = connect(out, false).await?;
            let mut tx = copy.begin().await?;
            sqlx::query(&format!(
                "CREATE TABLE {FILES_TABLE} (name TEXT PRIMARY KEY, contents BLOB NOT NULL)"
            ))
            .execute(&mut *tx)
            .await?;
            for (name, contents) in files {
                sqlx::query(&format!(
                    "INSERT INTO {FILES_TABLE} (name, contents) VALUES (?, ?)"
                ))
                .bind(name)
                .bind(contents)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            copy.close().await;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if written.is_err() {
            let _ = std::fs::remove_file(out);
        }
        Ok(written?)
    }
}

/// Writes the database a backup holds to `db` (which must not exist) and returns the files it
/// holds, for the caller to put back. Refuses a file that is not a Postern backup, and one from a
/// newer Postern, before writing anything.
pub async fn restore(from: &Path, db: &Path) -> Result<Vec<DataFile>, StoreError> {
    let not_backup = |why: &str| StoreError::NotABackup {
        path: from.display().to_string(),
        why: why.to_owned(),
    };
    if !from.is_file() {
        return Err(not_backup("no such file"));
    }
    let target = utf8(db)?;
    let source = connect(from, true)
        .await
        .map_err(|e| not_backup(&e.to_string()))?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table'")
            .fetch_all(&source)
            .await
            .map_err(|e| not_backup(&e.to_string()))?;
    if !tables.iter().any(|t| t == FILES_TABLE) || !tables.iter().any(|t| t == "schema_migrations")
    {
        return Err(not_backup(
            "it is a database, but not one `postern admin backup` wrote",
        ));
    }
    let found = migrations::recorded(&source).await?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: from.display().to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let files: Vec<DataFile> = sqlx::query_as(&format!(
        "SELECT name, contents FROM {FILES_TABLE} ORDER BY name"
    ))
    .fetch_all(&source)
    .await?;
    create_private(db)?;
    let written = async {
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&source)
            .await?;
        source.close().await;
        let copy = connect(db, false).await?;
        sqlx::query(&format!("DROP TABLE {FILES_TABLE}"))
            .execute(&copy)
            .await?;
        copy.close().await;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(db);
    }
    written?;
    Ok(files)
}

/// One connection to a database file outside the store: the backup being written or read.
async fn connect(path: &Path, read_only: bool) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .disable_statement_logging();
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
}

fn utf8(path: &Path) -> Result<&str, StoreError> {
    path.to_str().ok_or_else(|| StoreError::Open {
        path: path.display().to_string(),
        source: sqlx::Error::Configuration("the path is not UTF-8; choose another".into()),
    })
}

/// Creates an empty file readable by the owner only; fails if it exists.
pub(crate) fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(drop)
        .map_err(|source| StoreError::File {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The database and its WAL files are owner-only from creation; a backup taken while the
    /// store is open restores the same rows and files, and is owner-only too.
    #[tokio::test]
    async fn a_backup_restores_the_same_rows_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = Store::open_sqlite(&db).await.unwrap();
        store.create_group("web").await.unwrap();
        #[cfg(unix)]
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
        }
        let out = dir.path().join("backup.db");
        let files = vec![("ca-key.pem".to_owned(), b"secret".to_vec())];
        store.backup(&out, &files).await.unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&out), 0o600);
        // A second backup to the same path is refused, and the first is left as it was.
        assert!(matches!(
            store.backup(&out, &[]).await,
            Err(StoreError::File { .. })
        ));

        let restored = dir.path().join("restored.db");
        assert_eq!(restore(&out, &restored).await.unwrap(), files);
        #[cfg(unix)]
        assert_eq!(mode(&restored), 0o600);
        let again = Store::open_sqlite(&restored).await.unwrap();
        let names: Vec<String> = again
            .groups()
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert!(names.contains(&"web".to_owned()), "{names:?}");
        // The files table stays in the backup only.
        assert!(sqlx::query("SELECT 1 FROM postern_backup_files")
            .fetch_all(&again.pool)
            .await
            .is_err());
    }

    /// Anything but a backup, and a backup from a newer Postern, is refused before a file is
    /// written; a database from a newer Postern is not opened.
    #[tokio::test]
    async fn strangers_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("restored.db");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database").unwrap();
        let err = restore(&text, &target).await.unwrap_err();
        assert!(matches!(err, StoreError::NotABackup { .. }), "{err}");
        let live = dir.path().join("state.db");
        let store = Store::open_sqlite(&live).await.unwrap();
        let err = restore(&live, &target).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("not one `postern admin backup` wrote"),
            "{err}"
        );

        let out = dir.path().join("backup.db");
        store.backup(&out, &[]).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
            .bind(SCHEMA_VERSION + 5)
            .execute(&store.pool)
            .await
            .unwrap();
        store.pool.close().await;
        let err = Store::open_sqlite(&live)
            .await
            .err()
            .expect("a newer schema was opened");
        let message = err.to_string();
        assert!(
            message.contains(&format!("schema version {}", SCHEMA_VERSION + 5))
                && message.contains(&format!("this Postern's {SCHEMA_VERSION}")),
            "{message}"
        );
        let copy = connect(&out, false).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
            .bind(SCHEMA_VERSION + 1)
            .execute(&copy)
            .await
            .unwrap();
        copy.close().await;
        assert!(matches!(
            restore(&out, &target).await,
            Err(StoreError::TooNew { .. })
        ));
        assert!(!target.exists());
    }
}
