//! Export of the audit and sign-in logs to a SIEM: a JSON-lines file with size-based rotation,
//! syslog (RFC 5424, octet-counted framing of RFC 6587 over TCP or TLS as in RFC 5425), and an
//! HTTPS webhook taking JSON batches.
//!
//! The store is the queue. Each sink keeps a cursor per log in the store (the last record it
//! acknowledged); one task per sink reads the records after its cursor in batches, sends them,
//! and moves the cursor only after the sink acknowledged (the file written and synced, the
//! webhook's 2xx, the syslog stream flushed). A receiver outage or an edge restart therefore
//! loses nothing: delivery is at least once, and every record carries its stable `id` (a UUID)
//! for de-duplication.
//!
//! **Invariant:** a cursor never moves past a record its sink has not acknowledged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postern_store::{AuditQuery, Log, SigninQuery, Store};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::admin_api::SigninView;

/// Records sent per batch: a webhook request or a file append stays small.
pub const BATCH_RECORDS: u32 = 500;
/// How often an idle exporter looks for new records. Records wait at most this long.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// First wait after a failed delivery; doubled per failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// 100 MiB per file before it is rotated.
pub const DEFAULT_FILE_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Rotated files kept beside the current one (`FILE.1` … `FILE.N`).
pub const DEFAULT_FILE_KEEP: u32 = 5;
/// The most of a webhook's answer read (for the log line when it refuses a batch).
pub const WEBHOOK_BODY_BYTES: usize = 4096;
/// How long a webhook may take to answer one batch.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest syslog message sent: rsyslog's default `maxMessageSize` is 8 KiB, and a record
/// (every text field bounded) fits well within it; a longer one is cut at a character boundary.
pub const SYSLOG_MESSAGE_BYTES: usize = 8192;

/// Where records go.
#[derive(Clone, Debug, Default)]
pub struct SiemConfig {
    pub file: Option<FileSink>,
    pub syslog: Option<SyslogSink>,
    pub webhook: Option<WebhookSink>,
}

#[derive(Clone, Debug)]
pub struct FileSink {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

#[derive(Clone, Debug)]
pub struct SyslogSink {
    /// `host:port`.
    pub address: String,
    /// TLS (RFC 5425) with this CA (PEM), or plain TCP when `None`.
    pub tls_ca_pem: Option<String>,
    /// The server name checked in its certificate (the host in `tls://HOST:PORT`).
    pub tls_name: String,
}

#[derive(Clone, Debug)]
pub struct WebhookSink {
    pub url: url::Url,
    /// Extra CA (PEM) the webhook's certificate may chain to.
    pub ca_pem: Option<String>,
}

/// Why a sink's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SiemError {
    #[error("--siem-syslog {0:?} is not tcp://HOST:PORT or tls://HOST:PORT")]
    SyslogUrl(String),
    #[error("the SIEM CA file is not PEM certificates: {0}")]
    Ca(String),
    #[error("--siem-webhook {0:?} must be an https:// URL")]
    WebhookUrl(String),
    #[error("--siem-file {path}: cannot be opened for appending ({reason}); give a file in an existing, writable directory")]
    File { path: String, reason: String },
}

/// Checks at start what can be checked of the sinks without sending: the file can be opened
/// for appending (a missing directory would otherwise only show as retries in the log).
pub fn check(config: &SiemConfig) -> Result<(), SiemError> {
    if let Some(f) = &config.file {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&f.path)
            .map_err(|e| SiemError::File {
                path: f.path.display().to_string(),
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

impl SyslogSink {
    /// Parses `tcp://HOST:PORT` or `tls://HOST:PORT` (with the CA for TLS).
    pub fn parse(target: &str, ca_pem: Option<String>) -> Result<SyslogSink, SiemError> {
        let bad = || SiemError::SyslogUrl(target.to_owned());
        let url = url::Url::parse(target).map_err(|_| bad())?;
        let host = url.host_str().ok_or_else(bad)?.to_owned();
        let port = url.port().ok_or_else(bad)?;
        let tls = match url.scheme() {
            "tcp" => false,
            "tls" => true,
            _ => return Err(bad()),
        };
        Ok(SyslogSink {
            address: format!("{host}:{port}"),
            tls_ca_pem: if tls {
                Some(ca_pem.unwrap_or_default())
            } else {
                None
            },
            tls_name: host.trim_matches(['[', ']']).to_owned(),
        })
    }
}

/// Starts one exporter task per configured sink.
pub fn start(store: &Store, config: &SiemConfig) -> Result<(), SiemError> {
    if let Some(f) = &config.file {
        spawn(store, "file", Box::new(FileWriter { sink: f.clone() }));
    }
    if let Some(s) = &config.syslog {
        let tls = match &s.tls_ca_pem {
            Some(pem) => {
                let cfg = if pem.is_empty() {
                    postern_pki::issuer_client_config(&[])
                } else {
                    postern_pki::client_config(pem, Vec::new())
                        .map_err(|e| SiemError::Ca(e.to_string()))?
                };
                Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
            }
            None => None,
        };
        spawn(
            store,
            "syslog",
            Box::new(SyslogWriter {
                sink: s.clone(),
                tls,
                hostname: crate::siem::hostname(),
            }),
        );
    }
    if let Some(w) = &config.webhook {
        if w.url.scheme() != "https" {
            return Err(SiemError::WebhookUrl(w.url.to_string()));
        }
        let tls = match &w.ca_pem {
            Some(pem) => postern_pki::client_config(pem, Vec::new())
                .map_err(|e| SiemError::Ca(e.to_string()))?,
            None => postern_pki::issuer_client_config(&[]),
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SiemError::Ca(e.to_string()))?;
        spawn(
            store,
            "webhook",
            Box::new(WebhookWriter {
                url: w.url.clone(),
                client,
            }),
        );
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned())
}

/// What [`Sink::send`] returns.
pub type Delivery<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// A destination that acknowledges a batch by returning `Ok`.
pub trait Sink: Send {
    /// Delivers `records` (JSON objects, oldest first). `Ok` means the sink has them: the caller
    /// then moves the cursor past them. Must be safe to call again with the same records.
    fn send<'a>(&'a mut self, log: Log, records: &'a [Value]) -> Delivery<'a>;
}

fn spawn(store: &Store, name: &'static str, sink: Box<dyn Sink>) {
    tokio::spawn(run(store.clone(), name, sink));
}

/// The exporter loop of one sink: forever, each log's records after the cursor, in batches.
pub async fn run(store: Store, name: &'static str, mut sink: Box<dyn Sink>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match export_once(&store, name, sink.as_mut()).await {
            Ok(0) => {
                backoff = FIRST_BACKOFF;
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Ok(_) => backoff = FIRST_BACKOFF,
            Err(e) => {
                tracing::warn!(sink = name, error = %e, retry_in = ?backoff, "SIEM delivery failed; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Sends one batch of each log past `name`'s cursors; returns how many records went.
pub async fn export_once(store: &Store, name: &str, sink: &mut dyn Sink) -> Result<usize, String> {
    let mut sent = 0;
    for log in Log::ALL {
        let after = store
            .export_cursor(name, log)
            .await
            .map_err(|e| e.to_string())?;
        let (records, last) = batch(store, log, after).await.map_err(|e| e.to_string())?;
        let Some(last) = last else { continue };
        sink.send(log, &records).await?;
        store
            .set_export_cursor(name, log, last)
            .await
            .map_err(|e| e.to_string())?;
        sent += records.len();
    }
    Ok(sent)
}

/// The records of `log` after `after`, as exported, and the last one's sequence number.
async fn batch(
    store: &Store,
    log: Log,
    after: i64,
) -> Result<(Vec<Value>, Option<i64>), postern_store::StoreError> {
    Ok(match log {
        Log::Audit => {
            let events = store
                .audit(&AuditQuery {
                    after_id: Some(after),
                    limit: BATCH_RECORDS,
                    ..Default::default()
                })
                .await?;
            let last = events.last().map(|e| e.id);
            let records = events
                .into_iter()
                .map(|e| {
                    json!({
                        "log": "audit",
                        "id": e.uid,
                        "sequence": e.id,
                        "time": humantime::format_rfc3339_millis(
                            std::time::UNIX_EPOCH
                                + Duration::from_millis(e.at_ms.max(0) as u64),
                        )
                        .to_string(),
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "result": e.result,
                        "detail": e.detail,
                        "request_id": e.request_id,
                    })
                })
                .collect();
            (records, last)
        }
        Log::Signins => {
            let signins = store
                .signins(&SigninQuery {
                    after_id: Some(after),
                    limit: BATCH_RECORDS,
                    ..Default::default()
                })
                .await?;
            let last = signins.last().map(|s| s.id);
            let records = signins
                .into_iter()
                .map(|s| {
                    let mut v =
                        serde_json::to_value(SigninView::from_stored(s)).unwrap_or(Value::Null);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("log".into(), "signins".into());
                    }
                    v
                })
                .collect();
            (records, last)
        }
    })
}

// File ---------------------------------------------------------------------------------------

struct FileWriter {
    sink: FileSink,
}

impl Sink for FileWriter {
    fn send<'a>(&'a mut self, _log: Log, records: &'a [Value]) -> Delivery<'a> {
        Box::pin(async move {
            // Line by line, so that no file grows past the limit (unless one record alone is
            // larger); each file is synced before it is rotated away and at the end.
            let path = &self.sink.path;
            let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
            let open = || async {
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
            };
            let mut size = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
            let mut f = open().await.map_err(fail)?;
            for r in records {
                let mut line = r.to_string().into_bytes();
                line.push(b'\n');
                if size > 0 && size + line.len() as u64 > self.sink.max_bytes {
                    f.sync_data().await.map_err(fail)?;
                    rotate(path, self.sink.keep).await.map_err(fail)?;
                    f = open().await.map_err(fail)?;
                    size = 0;
                }
                f.write_all(&line).await.map_err(fail)?;
                size += line.len() as u64;
            }
            // Acknowledged only once it is on disk.
            f.sync_data().await.map_err(fail)
        })
    }
}

/// `FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2`, … ; `FILE.keep` is dropped.
async fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return tokio::fs::remove_file(path).await;
    }
    let _ = tokio::fs::remove_file(numbered(keep)).await;
    for n in (1..keep).rev() {
        match tokio::fs::rename(numbered(n), numbered(n + 1)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    tokio::fs::rename(path, numbered(1)).await
}

// Syslog -------------------------------------------------------------------------------------

trait Stream: tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

struct SyslogWriter {
    sink: SyslogSink,
    tls: Option<tokio_rustls::TlsConnector>,
    hostname: String,
}

impl SyslogWriter {
    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let tcp = tokio::net::TcpStream::connect(&self.sink.address)
            .await
            .map_err(|e| format!("cannot connect to syslog {}: {e}", self.sink.address))?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.sink.tls_name.clone())
                    .map_err(|e| e.to_string())?;
                let s = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with syslog {}: {e}", self.sink.address))?;
                Ok(Box::new(s))
            }
        }
    }
}

impl Sink for SyslogWriter {
    fn send<'a>(&'a mut self, log: Log, records: &'a [Value]) -> Delivery<'a> {
        Box::pin(async move {
            // A connection per batch: a broken one is found at once, and the batch is sent again.
            let mut stream = self.connect().await?;
            let mut out = Vec::new();
            for r in records {
                out.extend(frame(&syslog_message(&self.hostname, log, r)));
            }
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
            stream.shutdown().await.map_err(|e| e.to_string())
        })
    }
}

/// One record as an RFC 5424 message: facility 13 (log audit), severity informational, or
/// warning for a failed sign-in or a refused change; the record's UUID as MSGID (its 32 hex
/// digits: RFC 5424 allows 32 characters); the JSON as MSG.
pub fn syslog_message(hostname: &str, log: Log, record: &Value) -> String {
    let failed = record["result"] == "failure"
        || record["status"]["errorCode"]
            .as_str()
            .is_some_and(|c| c != "0");
    let severity = if failed { 4 } else { 6 };
    let pri = 13 * 8 + severity;
    let time = record["time"]
        .as_str()
        .or(record["createdDateTime"].as_str())
        .unwrap_or("-");
    let msgid: String = record["id"]
        .as_str()
        .unwrap_or("-")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    let msg = format!(
        "<{pri}>1 {time} {hostname} postern - {} [postern@32473 log=\"{}\"] {record}",
        if msgid.is_empty() { "-" } else { &msgid },
        log.as_str()
    );
    cut(msg, SYSLOG_MESSAGE_BYTES)
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Octet-counting framing (RFC 6587 3.4.1): `LENGTH SP MESSAGE`.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend(msg.as_bytes());
    out
}

// Webhook ------------------------------------------------------------------------------------

struct WebhookWriter {
    url: url::Url,
    client: reqwest::Client,
}

impl Sink for WebhookWriter {
    fn send<'a>(&'a mut self, log: Log, records: &'a [Value]) -> Delivery<'a> {
        Box::pin(async move {
            let resp = self
                .client
                .post(self.url.clone())
                .json(&json!({ "log": log.as_str(), "records": records }))
                .send()
                .await
                .map_err(|e| format!("webhook: {e}"))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            Err(format!(
                "webhook answered {status}: {}",
                capped_body(resp, WEBHOOK_BODY_BYTES).await
            ))
        })
    }
}

/// At most `max` bytes of a response body, as text.
async fn capped_body(mut resp: reqwest::Response, max: usize) -> String {
    let mut body = Vec::new();
    while body.len() < max {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c[..c.len().min(max - body.len())]),
            _ => break,
        }
    }
    postern_proto::text::escape(&String::from_utf8_lossy(&body)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_targets() {
        let s = SyslogSink::parse("tcp://127.0.0.1:514", None).unwrap();
        assert_eq!(
            (s.address.as_str(), s.tls_ca_pem.is_none()),
            ("127.0.0.1:514", true)
        );
        let s = SyslogSink::parse("tls://siem.example:6514", Some("pem".into())).unwrap();
        assert_eq!(
            (s.address.as_str(), s.tls_name.as_str()),
            ("siem.example:6514", "siem.example")
        );
        for bad in ["udp://h:514", "tcp://h", "h:514", ""] {
            assert!(SyslogSink::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn syslog_messages_are_rfc_5424_octet_counted_and_bounded() {
        let r = json!({"id": "u-1", "time": "2026-01-01T00:00:00.000Z", "result": "failure"});
        let m = syslog_message("edge", Log::Audit, &r);
        assert!(
            m.starts_with(
                "<108>1 2026-01-01T00:00:00.000Z edge postern - u1 [postern@32473 log=\"audit\"] {"
            ),
            "{m}"
        );
        let uuid = json!({"id": "1f510e44-50bd-4b53-bb3a-dc52c7d4300c"});
        assert!(syslog_message("edge", Log::Audit, &uuid)
            .contains(" postern - 1f510e4450bd4b53bb3adc52c7d4300c ["));
        assert_eq!(frame("abc"), b"3 abc");
        let big = json!({"id": "u", "detail": "é".repeat(SYSLOG_MESSAGE_BYTES)});
        let m = syslog_message("edge", Log::Audit, &big);
        assert!(m.len() <= SYSLOG_MESSAGE_BYTES);
        assert!(m.starts_with("<110>1 - edge"), "{m}");
    }

    #[tokio::test]
    async fn the_file_rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siem.jsonl");
        let mut w = FileWriter {
            sink: FileSink {
                path: path.clone(),
                max_bytes: 100,
                keep: 2,
            },
        };
        let rec = |i: usize| json!({"id": format!("{i:040}")});
        // One record at a time, then a batch that must be split across files.
        for i in 0..3 {
            w.send(Log::Audit, &[rec(i)]).await.unwrap();
        }
        w.send(Log::Audit, &(3..7).map(rec).collect::<Vec<_>>())
            .await
            .unwrap();
        let lines = |p: PathBuf| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let dotted = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        // Each file holds what fits in 100 bytes: two 50-byte lines. Seven records: the oldest
        // two are gone with the file that held them (keep 2).
        assert_eq!(
            (lines(path.clone()), lines(dotted(1)), lines(dotted(2))),
            (1, 2, 2)
        );
        assert!(!dotted(3).exists());
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains(&format!("{:040}", 6)));
    }

    /// A sink that refuses while `down`, and records every record it accepted.
    struct Flaky {
        down: Arc<std::sync::atomic::AtomicBool>,
        got: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Sink for Flaky {
        fn send<'a>(&'a mut self, _log: Log, records: &'a [Value]) -> Delivery<'a> {
            Box::pin(async move {
                if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("down".into());
                }
                let mut got = self.got.lock().unwrap();
                got.extend(records.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn nothing_is_lost_across_an_outage_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = Store::open_sqlite(&db).await.unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut sink = Flaky {
            down: down.clone(),
            got: got.clone(),
        };
        for i in 0..(BATCH_RECORDS + 3) {
            store.create_group(&format!("g{i}")).await.ok();
            store
                .record_audit(&postern_store::Audit {
                    actor: "admin:bootstrap".into(),
                    action: "group.create".into(),
                    target: format!("g{i}"),
                    outcome: postern_store::Outcome::Success,
                    detail: String::new(),
                    request_id: "r".into(),
                })
                .await
                .unwrap();
        }
        // The receiver is down: nothing moves.
        assert!(export_once(&store, "t", &mut sink).await.is_err());
        assert_eq!(store.export_cursor("t", Log::Audit).await.unwrap(), 0);
        // The edge restarts (a new store handle on the same file) and the receiver comes back.
        drop(store);
        let store = Store::open_sqlite(&db).await.unwrap();
        down.store(false, std::sync::atomic::Ordering::SeqCst);
        while export_once(&store, "t", &mut sink).await.unwrap() > 0 {}
        let want: Vec<String> = store
            .audit(&AuditQuery {
                after_id: Some(0),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.uid)
            .collect();
        assert_eq!(want.len(), BATCH_RECORDS as usize + 3);
        assert_eq!(*got.lock().unwrap(), want);
    }
}
