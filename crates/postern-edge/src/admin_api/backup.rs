//! A consistent backup of the running edge, streamed to the admin (`postern admin backup`), and
//! the build the edge runs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::{finish, Admin};
use crate::api::ApiFailure;
use crate::state::Shared;

/// Bytes read from the snapshot per chunk of the response.
const CHUNK_BYTES: usize = 64 * 1024;

/// The database as of one moment and the edge's key files, as one SQLite file. It holds every
/// secret the edge has: the response is for an admin to keep as carefully as the data directory.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, ApiFailure> {
    let audit = admin.begin(&shared, "backup.create", "state");
    let result = snapshot(&shared).await;
    match &result {
        Ok((_, len)) => {
            audit
                .succeeded(&format!(
                    "a backup of {len} bytes: the database and the edge's keys"
                ))
                .await
        }
        Err(_) => finish(&audit, &result).await,
    }
    let (file, len) = result?;
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0; CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Writes the snapshot beside the database (same file system, owner-only), opens it and
/// unlinks it: the open file is all that is left, and it goes when the response ends.
async fn snapshot(shared: &Shared) -> Result<(tokio::fs::File, u64), ApiFailure> {
    let _one = shared.backup_lock.try_lock().map_err(|_| {
        ApiFailure::new(
            StatusCode::CONFLICT,
            "backup_running",
            "a backup is being made; wait for it to finish",
        )
    })?;
    let dir = &shared.config.data_dir;
    let tmp = dir.join(format!(
        "backup-{}.tmp",
        postern_obs::trace::hex(&rand::random::<[u8; 8]>())
    ));
    let made = crate::data::backup(&shared.store, dir, &tmp).await;
    let opened = match made {
        Ok(()) => tokio::fs::File::open(&tmp)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&tmp);
    let file = opened.map_err(ApiFailure::internal)?;
    let len = file.metadata().await.map_err(ApiFailure::internal)?.len();
    Ok((file, len))
}

#[derive(Serialize, Deserialize)]
pub struct VersionView {
    /// The release, e.g. `0.1.0`.
    pub version: String,
    /// The commit it was built from (`unknown` when built outside a Git checkout).
    pub commit: String,
    /// The database schema version this build writes.
    pub schema: i64,
}

pub async fn version(State(shared): State<Arc<Shared>>) -> Json<VersionView> {
    Json(VersionView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        commit: shared.config.commit.to_owned(),
        schema: postern_store::SCHEMA_VERSION,
    })
}
