//! Export to a SIEM with the real binary: Debian's rsyslog receives every audit record over TCP
//! and over TLS (RFC 5424, octet-counted), and the JSON-lines file rotates by size and holds them
//! too.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Edge;
use serde_json::Value;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
/// How long a wait for something that must happen may last before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// An unprivileged rsyslogd with its own config: `imtcp` on a loopback port (plain, or TLS with
/// GnuTLS and a certificate from its own CA), every message's MSGID and MSG written to `out`.
struct Rsyslog {
    child: tokio::process::Child,
    port: u16,
    out: PathBuf,
    /// With TLS: the CA that issued the server's certificate (PEM).
    ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    async fn start(tls: bool) -> Rsyslog {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "rsyslog is not installed; run scripts/install-deps.sh"
        );
        // rsyslog takes a fixed port in its config: take a free one and retry on a collision.
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let out = dir.path().join("out.log");
            let conf = dir.path().join("rsyslog.conf");
            let (global, module, ca) = if tls {
                let d = dir.path();
                let ca = postern_pki::Ca::load_or_create(
                    &d.join("ca.pem"),
                    &d.join("ca-key.pem"),
                    "syslog test CA",
                )
                .unwrap();
                let (chain, key) = ca.issue_server(&["127.0.0.1".to_owned()]).unwrap();
                let certs: String = chain
                    .iter()
                    .map(|c| common::to_pem("CERTIFICATE", c))
                    .collect();
                std::fs::write(d.join("cert.pem"), certs).unwrap();
                std::fs::write(
                    d.join("key.pem"),
                    common::to_pem("PRIVATE KEY", key.secret_der()),
                )
                .unwrap();
                (
                    format!(
                        r#" DefaultNetstreamDriver="gtls"
    DefaultNetstreamDriverCAFile="{d}/ca.pem"
    DefaultNetstreamDriverCertFile="{d}/cert.pem"
    DefaultNetstreamDriverKeyFile="{d}/key.pem""#,
                        d = d.display()
                    ),
                    r#" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon""#,
                    Some(d.join("ca.pem")),
                )
            } else {
                (String::new(), "", None)
            };
            std::fs::write(
                &conf,
                format!(
                    r#"global(workDirectory="{dir}"{global})
module(load="imtcp"{module})
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="record" type="string" string="%msgid% %msg%\n")
action(type="omfile" file="{out}" template="record")
"#,
                    dir = dir.path().display(),
                    out = out.display()
                ),
            )
            .unwrap();
            let mut child = tokio::process::Command::new(RSYSLOGD)
                .arg("-n")
                .arg("-f")
                .arg(&conf)
                .arg("-i")
                .arg(dir.path().join("pid"))
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            // Ready when it accepts connections; gone when the port was taken meanwhile.
            let ready = tokio::time::timeout(PATIENCE, async {
                loop {
                    if let Ok(Some(_)) = child.try_wait() {
                        return false;
                    }
                    if tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                    {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap();
            if ready {
                return Rsyslog {
                    child,
                    port,
                    out,
                    ca,
                    _dir: dir,
                };
            }
        }
        panic!("rsyslogd did not start on any of 10 ports");
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Waits until `read()` holds every one of `ids`.
async fn wait_for_all(what: &str, ids: &[String], read: impl Fn() -> String) {
    let all = tokio::time::timeout(PATIENCE, async {
        loop {
            let text = read();
            if ids.iter().all(|id| text.contains(id.as_str())) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(all.is_ok(), "{what} lacks records: {}", read());
}

/// Waits until rsyslog's file holds every one of `ids`, then checks each line: the record's ID
/// (hex digits) as the MSGID, the record as JSON.
async fn rsyslog_received(syslog: &Rsyslog, ids: &[String], action: &str) {
    let out = syslog.out.clone();
    wait_for_all("rsyslog's file", ids, || {
        std::fs::read_to_string(&out).unwrap_or_default()
    })
    .await;
    let received = std::fs::read_to_string(&out).unwrap();
    for line in received.lines() {
        let (msgid, msg) = line.split_once(' ').unwrap();
        let record: Value = serde_json::from_str(msg).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(
            record["id"].as_str().unwrap().replace('-', ""),
            msgid,
            "{line}"
        );
        assert_eq!(record["log"], "audit");
        assert_eq!(record["action"], action);
    }
}

/// The IDs of the audit log's newest records.
async fn audit_ids(edge: &Edge) -> Vec<String> {
    let page: Value = serde_json::from_str(
        &edge
            .admin_ok(&["logs", "audit", "--json", "--limit", "100"])
            .await,
    )
    .unwrap();
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn audit_records_reach_rsyslog_over_tls_checked_against_its_ca() {
    let syslog = Rsyslog::start(true).await;
    let ca = syslog.ca.clone().unwrap();
    let target = format!("tls://127.0.0.1:{}", syslog.port);
    let edge = Edge::start(&[
        "--siem-syslog",
        &target,
        "--siem-syslog-ca",
        ca.to_str().unwrap(),
    ])
    .await;
    for i in 0..3 {
        edge.group(&format!("g{i}")).await;
    }
    let ids = audit_ids(&edge).await;
    assert_eq!(ids.len(), 3);
    rsyslog_received(&syslog, &ids, "group.create").await;
}

#[tokio::test]
async fn audit_records_reach_rsyslog_over_tcp_and_a_rotating_file() {
    let syslog = Rsyslog::start(false).await;
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("siem.jsonl");
    let target = format!("tcp://127.0.0.1:{}", syslog.port);
    let edge = Edge::start(&[
        "--siem-syslog",
        &target,
        "--siem-file",
        file.to_str().unwrap(),
        "--siem-file-max-bytes",
        "2000",
        "--siem-file-keep",
        "5",
    ])
    .await;
    for i in 0..12 {
        edge.group(&format!("g{i}")).await;
    }
    let ids = audit_ids(&edge).await;
    assert_eq!(ids.len(), 12);
    rsyslog_received(&syslog, &ids, "group.create").await;

    // The file has them all across its rotations, each line a whole record.
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", file.display()));
    let read_all = || {
        let mut text = std::fs::read_to_string(&file).unwrap_or_default();
        for n in 1..=5 {
            text.push_str(&std::fs::read_to_string(rotated(n)).unwrap_or_default());
        }
        text
    };
    wait_for_all("the SIEM file", &ids, read_all).await;
    assert!(rotated(1).exists(), "the file never rotated");
    for n in 0..=5 {
        let path = if n == 0 { file.clone() } else { rotated(n) };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            text.len() <= 2000,
            "{} has {} bytes",
            path.display(),
            text.len()
        );
        for line in text.lines() {
            let _: Value = serde_json::from_str(line).unwrap();
        }
    }
}

/// An HTTPS webhook receiver with a certificate from its own CA: answers 503 while `down`,
/// otherwise takes the batch and keeps every record's ID.
struct Receiver {
    addr: std::net::SocketAddr,
    ca: PathBuf,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Receiver {
    async fn start() -> Receiver {
        use http_body_util::BodyExt;
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let ca = postern_pki::Ca::load_or_create(
            &dir.path().join("ca.pem"),
            &dir.path().join("ca-key.pem"),
            "webhook test CA",
        )
        .unwrap();
        let (chain, key) = ca.issue_server(&["127.0.0.1".to_owned()]).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(postern_pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, r, i) = (down.clone(), refused.clone(), ids.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let (d, r, i) = (d.clone(), r.clone(), i.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (d, r, i) = (d.clone(), r.clone(), i.clone());
                            async move {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let status = if d.load(Ordering::SeqCst) {
                                    r.fetch_add(1, Ordering::SeqCst);
                                    503
                                } else {
                                    let batch: Value = serde_json::from_slice(&body).unwrap();
                                    let mut ids = i.lock().unwrap();
                                    for rec in batch["records"].as_array().unwrap() {
                                        ids.push(rec["id"].as_str().unwrap().to_owned());
                                    }
                                    200
                                };
                                let mut resp = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"{}"),
                                ));
                                *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            ca: dir.path().join("ca.pem"),
            down,
            refused,
            ids,
            _dir: dir,
        }
    }
}

#[tokio::test]
async fn a_webhook_down_while_the_edge_restarts_still_gets_every_record() {
    use std::sync::atomic::Ordering;
    let receiver = Receiver::start().await;
    let url = format!("https://127.0.0.1:{}/ingest", receiver.addr.port());
    let flags = [
        "--siem-webhook",
        url.as_str(),
        "--siem-webhook-ca",
        receiver.ca.to_str().unwrap(),
    ];
    let edge = Edge::start(&flags).await;
    for i in 0..5 {
        edge.group(&format!("before{i}")).await;
    }
    // The exporter tries while the receiver is down...
    let tried = tokio::time::timeout(PATIENCE, async {
        while receiver.refused.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(tried.is_ok(), "the edge never tried the webhook");
    // ...and the edge stops (killed, no drain) and starts again on the same state.
    let (dir, mut child) = (edge.dir, edge.child);
    child.kill().await.unwrap();
    let edge = Edge::start_in(dir, &flags).await;
    for i in 0..5 {
        edge.group(&format!("after{i}")).await;
    }
    receiver.down.store(false, Ordering::SeqCst);
    let page: Value = serde_json::from_str(
        &edge
            .admin_ok(&["logs", "audit", "--json", "--limit", "100"])
            .await,
    )
    .unwrap();
    let want: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(want.len(), 10);
    let ids = receiver.ids.clone();
    wait_for_all("the webhook", &want, move || ids.lock().unwrap().join(" ")).await;
}
