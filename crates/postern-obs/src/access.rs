//! The access log: one JSON line per request, produced once at the request's end (the same record
//! feeds the metrics) and written by its own task. The request path only hands the record to a
//! bounded channel; when the writer falls behind, records are dropped and counted
//! (`postern_access_log_dropped_total`) rather than slowing requests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Records waiting for the writer at most; past it they are dropped and counted. With the writer
/// taking them every [`BATCH_INTERVAL`], it keeps up with 800,000 requests a second.
pub const QUEUE_RECORDS: usize = 16_384;
/// How long the writer lets records gather after the first of a batch before writing them all
/// and flushing: under load, one wake-up and one write per interval instead of one per request; a
/// record is on disk at most this long after its request ended.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(20);
/// A batch is written once it holds this much: a few system calls per batch.
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
        tokio::spawn(write_records(rx, out));
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
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
) {
    let mut batch = Vec::with_capacity(WRITE_BUFFER_BYTES);
    let mut clock = SecondClock::default();
    // Each batch starts with a record waited for without a timer (an idle log costs nothing),
    // then lets more gather while senders wake nobody.
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(BATCH_INTERVAL).await;
        let mut next = Some(first);
        while let Some(record) = next {
            encode(&record, &mut clock, &mut batch);
            if batch.len() >= WRITE_BUFFER_BYTES {
                write_out(&mut out, &mut batch).await;
            }
            next = rx.try_recv().ok();
        }
        write_out(&mut out, &mut batch).await;
        if let Err(e) = out.flush().await {
            tracing::warn!(error = %e, "cannot write the access log");
        }
    }
}

async fn write_out(out: &mut Box<dyn AsyncWrite + Send + Unpin>, batch: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = out.write_all(batch).await {
        tracing::warn!(error = %e, "cannot write the access log");
    }
    batch.clear();
}

/// The RFC 3339 text of the current second, made once per second: the time of every record
/// in that second is this and its milliseconds.
#[derive(Default)]
struct SecondClock {
    second: Option<u64>,
    text: String,
}

impl SecondClock {
    fn write(&mut self, t: SystemTime, out: &mut Vec<u8>) {
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(second);
            // A whole second is written without a fraction: `2023-11-14T22:13:20Z`.
            let mut text = time::OffsetDateTime::from(whole)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            text.pop();
            self.text = text;
            self.second = Some(second);
        }
        out.extend_from_slice(self.text.as_bytes());
        out.push(b'.');
        digits3(since.subsec_millis(), out);
        out.push(b'Z');
    }
}

fn digits3(n: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// A JSON string: copied as it is when nothing in it needs escaping (the common case: IDs,
/// hosts, paths), else escaped by `serde_json`.
fn string(s: &str, out: &mut Vec<u8>) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn opt_string(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => string(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn integer(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with microsecond precision, as `1.500`: the same number `millis` gives.
fn millis_text(d: Option<f64>, out: &mut Vec<u8>) {
    let Some(ms) = d else {
        out.extend_from_slice(b"null");
        return;
    };
    let micros = (ms * 1000.0).round().max(0.0) as u64;
    integer(micros / 1000, out);
    out.push(b'.');
    digits3((micros % 1000) as u32, out);
}

/// Appends `r` as one JSON line: the same object `serde_json` makes of a [`Record`] (the tests
/// hold them equal), at a fraction of the cost, since a busy edge writes one per request.
fn encode(r: &Record, clock: &mut SecondClock, out: &mut Vec<u8>) {
    use std::io::Write;
    out.extend_from_slice(b"{\"time\":\"");
    clock.write(r.time, out);
    out.extend_from_slice(b"\",\"request_id\":");
    string(&r.request_id, out);
    out.extend_from_slice(b",\"traceparent\":");
    string(&r.traceparent, out);
    out.extend_from_slice(b",\"trace_id\":");
    string(&r.trace_id, out);
    out.extend_from_slice(b",\"app\":");
    string(&r.app, out);
    out.extend_from_slice(b",\"host\":");
    string(&r.host, out);
    out.extend_from_slice(b",\"method\":");
    string(&r.method, out);
    out.extend_from_slice(b",\"path\":");
    string(&r.path, out);
    out.extend_from_slice(b",\"status\":");
    integer(r.status.into(), out);
    out.extend_from_slice(b",\"bytes_in\":");
    integer(r.bytes_in, out);
    out.extend_from_slice(b",\"bytes_out\":");
    integer(r.bytes_out, out);
    out.extend_from_slice(b",\"duration_ms\":");
    millis_text(Some(r.duration_ms), out);
    out.extend_from_slice(b",\"upstream_ms\":");
    millis_text(r.upstream_ms, out);
    out.extend_from_slice(b",\"client_ip\":\"");
    let _ = write!(out, "{}", r.client_ip);
    out.extend_from_slice(b"\",\"user_sub\":");
    opt_string(r.user_sub.as_deref(), out);
    out.extend_from_slice(b",\"user_email\":");
    opt_string(r.user_email.as_deref(), out);
    out.extend_from_slice(b",\"connector_id\":");
    opt_string(r.connector_id.as_deref(), out);
    out.extend_from_slice(b",\"refusal\":");
    opt_string(r.refusal, out);
    out.extend_from_slice(if r.websocket {
        b",\"websocket\":true}\n".as_slice()
    } else {
        b",\"websocket\":false}\n".as_slice()
    });
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

    #[test]
    fn lines_are_what_serde_makes_of_the_record_even_for_hostile_text() {
        let mut clock = SecondClock::default();
        let base = Record {
            time: std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_007),
            request_id: "0af7651916cd43dd8448eb211c80319c".into(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            app: "wiki".into(),
            host: "wiki.example".into(),
            method: "GET".into(),
            path: "/a?b=c".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: u64::MAX,
            duration_ms: millis(Duration::from_micros(1_234_567)),
            upstream_ms: Some(millis(Duration::from_micros(5))),
            client_ip: "2001:db8::1".parse().unwrap(),
            user_sub: Some("sub".into()),
            user_email: None,
            connector_id: None,
            refusal: None,
            websocket: true,
        };
        let hostile = Record {
            path: "/\"quoted\"\\back\u{0}\u{1f}\u{7f}é\u{2028}/".into(),
            host: "h\nost".into(),
            user_email: Some("a\"b@example.com".into()),
            upstream_ms: None,
            websocket: false,
            duration_ms: 0.0,
            time: std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_001_999),
            ..base.clone()
        };
        for r in [base, hostile] {
            let mut line = Vec::new();
            encode(&r, &mut clock, &mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let ours: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(
                ours,
                serde_json::to_value(&r).unwrap(),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
    }
}
