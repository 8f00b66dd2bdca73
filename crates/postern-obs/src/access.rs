//! The access log: one JSON line per request, produced once at the request's end (the same record
//! feeds the metrics) and written by its own task. The request path only hands the record to a
//! bounded channel; when the writer falls behind, records are dropped and counted
//! (`postern_access_log_dropped_total`) rather than slowing requests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Records waiting for the writer at most; past it they are dropped and counted. With the writer
/// taking them every [`BATCH_INTERVAL`], it keeps up with 800,000 requests a second.
pub const QUEUE_RECORDS: usize = 16_384;
/// How long the writer lets records gather after the first of a batch before writing them all
/// and flushing: under load, one wake-up and one write per interval instead of one per request; a
/// record is on disk at most this long after its request ended.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(20);
/// The writer's buffer: a batch is written in a few system calls.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Where the access log goes: a file (appended to) or standard output (`-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for Destination {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Destination, Self::Err> {
        Ok(match s {
            "-" => Destination::Stdout,
            path => Destination::File(PathBuf::from(path)),
        })
    }
}

/// One request as the access log shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: String,
    /// The `traceparent` the edge sent on (the incoming trace with the edge's span, or a new one).
    pub traceparent: String,
    pub trace_id: String,
    /// The app's published name, or `-` when the host matched none.
    pub app: String,
    pub host: String,
    pub method: String,
    /// The path, and the query only when the edge runs with `--access-log-query`.
    pub path: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    /// Time from sending the request down a tunnel to its response head.
    pub upstream_ms: Option<f64>,
    pub client_ip: IpAddr,
    pub user_sub: Option<String>,
    pub user_email: Option<String>,
    pub connector_id: Option<String>,
    /// The refusal code when the edge answered with an error page of its own.
    pub refusal: Option<&'static str>,
    /// A WebSocket: the record is written when it closes, with the bytes it carried.
    pub websocket: bool,
}

/// Milliseconds with microsecond precision.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let t = time::OffsetDateTime::from(*t);
    let text = t
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

/// The sending half of the access log. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<Record>,
}

/// The access log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {path}: {source}; check --access-log")]
pub struct OpenError {
    path: String,
    source: std::io::Error,
}

impl AccessLog {
    /// Opens the destination now (so a bad path fails at start) and spawns the writer.
    pub async fn open(dest: &Destination) -> Result<AccessLog, OpenError> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match dest {
            Destination::Stdout => Box::new(tokio::io::stdout()),
            Destination::File(path) => {
                Box::new(open_append(path).await.map_err(|source| OpenError {
                    path: path.display().to_string(),
                    source,
                })?)
            }
        };
        crate::metrics::access_log_opened();
        let (tx, rx) = mpsc::channel(QUEUE_RECORDS);
        tokio::spawn(write_records(
            rx,
            BufWriter::with_capacity(WRITE_BUFFER_BYTES, out),
        ));
        Ok(AccessLog { tx })
    }

    /// Hands a record to the writer without waiting; drops and counts it if the queue is full.
    pub fn log(&self, record: Record) {
        if self.tx.try_send(record).is_err() {
            crate::metrics::access_log_dropped();
        }
    }
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Writes records in batches of what gathered over [`BATCH_INTERVAL`], then flushes.
async fn write_records(
    mut rx: mpsc::Receiver<Record>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
) {
    let mut line = Vec::with_capacity(512);
    // Each batch starts with a record waited for without a timer (an idle log costs nothing),
    // then lets more gather while senders wake nobody.
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(BATCH_INTERVAL).await;
        let mut next = Some(first);
        while let Some(record) = next {
            line.clear();
            if serde_json::to_writer(&mut line, &record).is_ok() {
                line.push(b'\n');
                if let Err(e) = out.write_all(&line).await {
                    tracing::warn!(error = %e, "cannot write the access log");
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush().await {
            tracing::warn!(error = %e, "cannot write the access log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        for (input, expected) in [
            ("-", Destination::Stdout),
            ("access.log", Destination::File("access.log".into())),
            (
                "/var/log/postern/a.log",
                Destination::File("/var/log/postern/a.log".into()),
            ),
        ] {
            assert_eq!(input.parse::<Destination>().unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn a_record_is_one_json_object_with_an_rfc3339_time() {
        let record = Record {
            time: std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: "r".into(),
            traceparent: "t".into(),
            trace_id: "id".into(),
            app: "wiki".into(),
            host: "wiki.example".into(),
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            bytes_in: 1,
            bytes_out: 2,
            duration_ms: millis(Duration::from_micros(1500)),
            upstream_ms: None,
            client_ip: "192.0.2.1".parse().unwrap(),
            user_sub: None,
            user_email: None,
            connector_id: Some("c_1".into()),
            refusal: Some("sign_in_required"),
            websocket: false,
        };
        let v: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_ms"], serde_json::Value::Null);
        assert_eq!(v["client_ip"], "192.0.2.1");
        assert_eq!(v["refusal"], "sign_in_required");
    }
}
