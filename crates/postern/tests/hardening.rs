//! Unauthenticated clients cannot knock the edge over: oversized heads, clients that stop reading,
//! silent connections, floods of requests and malformed bodies each get a clear refusal and harm
//! nobody else. Every test here runs the real edge, connector and app on loopback.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::backends;
use common::{Edge, READY_TIMEOUT};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// An edge started with `flags`, one group `g`, the test app published at `host`, one connector.
async fn published(host: &str, flags: &[&str]) -> (Edge, backends::App, common::Connector) {
    let edge = Edge::start(flags).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("app", host, &app.url(), "g", &[]).await;
    let c = edge.connector("g").await;
    (edge, app, c)
}

/// Sends raw HTTP/1.1 bytes and returns the status code and the whole answer (the request should
/// ask for `Connection: close`, or the edge closes the connection itself).
async fn raw(edge: &Edge, host: &str, request: &[u8]) -> (u16, String) {
    let mut tls = edge.tls_to_public(host, b"http/1.1").await;
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(READY_TIMEOUT, tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the edge did not answer or close");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// Reads a download to its end and returns how many bytes came and whether it ended cleanly.
async fn drain(resp: reqwest::Response) -> (u64, bool) {
    let mut resp = resp;
    let mut total = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => total += c.len() as u64,
            Ok(None) => return (total, true),
            Err(_) => return (total, false),
        }
    }
}

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn an_oversized_request_head_gets_431_and_no_other_stream_is_harmed() {
    let (edge, _app, _c) = published("heads.localhost", &[]).await;
    let client = edge.client("heads.localhost");
    let url = |p: &str| edge.url("heads.localhost", p);

    // A download in flight on the tunnel the oversized requests would have gone down.
    let size = 64 * MIB;
    let download = client
        .get(url(&format!("/download?bytes={size}")))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let download = tokio::spawn(drain(download));

    let big = "a".repeat(100 * 1024);
    let mut many = String::new();
    for i in 0..150 {
        many.push_str(&format!("x-many-{i}: {i}\r\n"));
    }
    let cookie = format!("Cookie: session={}\r\n", "c".repeat(60 * 1024));
    // Up to twice the limit the edge reads the head and answers with its page; past that it
    // stops reading and answers a bare 431.
    for (what, headers, page) in [
        ("one 100 KB header", format!("x-big: {big}\r\n"), false),
        ("150 headers", many, true),
        ("a 60 KB cookie", cookie, true),
    ] {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: heads.localhost\r\n{headers}Connection: close\r\n\r\n"
        );
        let (status, answer) = raw(&edge, "heads.localhost", req.as_bytes()).await;
        assert_eq!(status, 431, "{what}");
        assert_eq!(
            answer.contains("request_head_too_large"),
            page,
            "{what}: {answer}"
        );
    }
    // Over HTTP/2 the limit is the same; the stream is refused, the connection and tunnel live on.
    let h2 = edge.client_with("heads.localhost", vec![b"h2".to_vec()]);
    let refused = h2.get(url("/")).header("x-big", &big).send().await;
    match refused {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(!e.is_timeout(), "the oversized HTTP/2 request hung: {e}"),
    }
    // A large head that is within the limit still goes through.
    let fits = client
        .get(url("/"))
        .header("x-fits", "f".repeat(24 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);

    // An app that answers with a head too large for the tunnel gets a clear 502, not a dead tunnel.
    let resp = client
        .get(url("/big-head?bytes=70000"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "response_head_too_large");
    // One within the limit passes (over HTTP/1.1: HTTP/2 clients refuse heads over 16 KiB).
    let h1 = edge.client_with("heads.localhost", vec![b"http/1.1".to_vec()]);
    let resp = h1.get(url("/big-head?bytes=30000")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-big"].len(), 30000);

    let (got, clean) = tokio::time::timeout(Duration::from_secs(120), download)
        .await
        .expect("the download stalled")
        .unwrap();
    assert!(
        clean && got == size,
        "the download in flight was cut at {got} of {size} bytes"
    );
    assert_eq!(client.get(url("/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn clients_that_stop_reading_cannot_stall_the_connector_group() {
    let (edge, app, _c) = published("stall.localhost", &["--stall-timeout", "2s"]).await;
    let size = 256 * MIB;
    let path = format!("/download?bytes={size}");

    // Twelve HTTP/1.1 clients send a request for a large download and never read.
    let mut stalled = Vec::new();
    for _ in 0..12 {
        let mut tls = edge.tls_to_public("stall.localhost", b"http/1.1").await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: stall.localhost\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        stalled.push(tls);
    }
    // And one HTTP/2 client opens twenty such streams and never reads any of them.
    let tls = edge.tls_to_public("stall.localhost", b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(backends::executor(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut h2_stalled = Vec::new();
    for _ in 0..20 {
        let req = http::Request::get(edge.url("stall.localhost", &path))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        h2_stalled.push(sender.send_request(req).await.unwrap());
    }
    // Every stalled request has reached the app, so their data is filling the tunnel.
    let until = tokio::time::Instant::now() + READY_TIMEOUT;
    while app.hits.load(std::sync::atomic::Ordering::Relaxed) < 32 {
        assert!(
            tokio::time::Instant::now() < until,
            "requests did not reach the app"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Everyone else is served, small and large alike.
    let client = edge.client("stall.localhost");
    for _ in 0..20 {
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            client.get(edge.url("stall.localhost", "/")).send(),
        )
        .await
        .expect("a normal request stalled behind clients that do not read")
        .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let full = client
        .get(edge.url("stall.localhost", &format!("/download?bytes={}", 8 * MIB)))
        .send()
        .await
        .unwrap();
    assert_eq!(drain(full).await, (8 * MIB, true));

    // The stalled clients are cut off after the stall timeout: their streams end, so the app
    // stops sending (the connector drops each download)...
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.downloads.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "{} stalled downloads were never cut off",
            app.downloads.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and each connection ends early.
    for mut tls in stalled {
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "a client that stopped reading was never cut off"
        );
        assert!(total < size, "the stalled download was not cut short");
    }
    // And the HTTP/2 streams are reset: reading them now ends in an error, not the whole body.
    for resp in h2_stalled {
        let mut body = resp.into_body();
        let mut total = 0u64;
        let outcome = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.into_data().map_or(0, |d| d.len() as u64),
                    Err(_) => return false,
                }
            }
            true
        })
        .await
        .expect("a stalled HTTP/2 stream was never reset");
        assert!(!outcome && total < size, "stream completed: {total} bytes");
    }
}

#[tokio::test]
async fn silent_connections_are_closed_and_never_starve_the_admin_or_connector_listeners() {
    let (edge, _app, _c) = published(
        "silent.localhost",
        &[
            "--max-connections",
            "200",
            "--max-connections-per-ip",
            "40",
            "--request-head-timeout",
            "2s",
        ],
    )
    .await;
    let fds_before = fd_count(edge.pid());

    // Twenty addresses each open more silent TLS connections than they may hold.
    let mut tasks = tokio::task::JoinSet::new();
    for host in 2..22u8 {
        for _ in 0..50 {
            let from = IpAddr::from([127, 0, 0, host]);
            let edge_public = edge.public;
            let ca = edge.ca_pem();
            tasks.spawn(async move {
                let socket = TcpSocket::new_v4().ok()?;
                socket.bind(SocketAddr::new(from, 0)).ok()?;
                let tcp = socket.connect(edge_public).await.ok()?;
                let config = postern_pki::client_config(&ca, vec![b"http/1.1".to_vec()]).ok()?;
                let name = rustls::pki_types::ServerName::try_from("silent.localhost").ok()?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .ok()?;
                Some((from, tls))
            });
        }
    }
    let mut held = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(conn) = r.unwrap() {
            held.push(conn);
        }
    }
    // Neither one address nor everyone together got more than their share.
    assert!(held.len() <= 200, "{} connections held", held.len());
    for host in 2..22u8 {
        let from = IpAddr::from([127, 0, 0, host]);
        let n = held.iter().filter(|(ip, _)| *ip == from).count();
        assert!(n <= 40, "{from} holds {n} connections");
    }

    // While the public listener is full, the admin API answers and a new connector registers
    // and opens its tunnels.
    assert!(edge.admin_ok(&["app", "list"]).await.contains("silent"));
    let _second = edge.connector("g").await;

    // The edge closes every silent connection after the head deadline.
    for (_, mut tls) in held {
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent connection was never closed");
    }
    // The public listener serves again, and the edge's descriptors are back where they were.
    let client = edge.client("silent.localhost");
    let resp = client
        .get(edge.url("silent.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let until = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let now = fd_count(edge.pid());
        if now <= fds_before + 16 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the edge holds {now} descriptors, {fds_before} before the flood"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_flood_from_one_address_gets_429_with_retry_after_and_others_are_served() {
    let (edge, app, _c) = published(
        "flood.localhost",
        &["--requests-per-ip", "5", "--requests-per-app", "50"],
    )
    .await;
    let flooder = reqwest::Client::builder()
        .use_preconfigured_tls(
            postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap(),
        )
        .resolve("flood.localhost", edge.public)
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let url = edge.url("flood.localhost", "/");
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let resp = flooder.get(&url).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry >= 1);
            assert!(resp.text().await.unwrap().contains("rate_limited"));
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // A burst of twice the rate, plus what refilled while the flood ran.
    assert!((10..20).contains(&ok), "{ok} of 30 admitted: {statuses:?}");
    assert!(statuses.contains(&429));
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::Relaxed), ok);
    // Another address is served.
    let other = edge.client("flood.localhost");
    assert_eq!(other.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn malformed_and_stalled_request_bodies_are_the_clients_error() {
    let (edge, _app, _c) = published("bodies.localhost", &["--stall-timeout", "1s"]).await;
    // Chunked framing that breaks off into garbage.
    let req = b"POST /upload HTTP/1.1\r\nHost: bodies.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n";
    let (status, text) = raw(&edge, "bodies.localhost", req).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bad_request_body"), "{text}");

    // A body that promises more than it sends, and then goes quiet.
    let mut tls = edge.tls_to_public("bodies.localhost", b"http/1.1").await;
    tls.write_all(
        b"POST /upload HTTP/1.1\r\nHost: bodies.localhost\r\nContent-Length: 100000\r\n\r\nonly this much",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(READY_TIMEOUT, tls.read_to_end(&mut answer))
        .await
        .expect("the edge kept waiting for a stalled body")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_body_stalled"), "{text}");

    // A well-formed upload still works.
    let client = edge.client("bodies.localhost");
    let resp = client
        .post(edge.url("bodies.localhost", "/upload"))
        .body(vec![7u8; 300_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A reqwest client speaking `alpn` from `from` to `host` on the edge's public listener.
fn client_from(edge: &Edge, host: &str, from: IpAddr, alpn: &[u8]) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .use_preconfigured_tls(
            postern_pki::client_config(&edge.ca_pem(), vec![alpn.to_vec()]).unwrap(),
        )
        .resolve(host, edge.public)
        .local_address(from);
    if alpn == b"h2" {
        builder.http2_prior_knowledge()
    } else {
        builder
    }
    .build()
    .unwrap()
}

#[tokio::test]
async fn one_address_holds_only_so_many_requests_in_flight() {
    let host = "inflight.localhost";
    let (edge, app, _c) = published(host, &["--requests-in-flight-per-ip", "8"]).await;
    // One address starts eight large downloads over HTTP/2 and reads none of them.
    let greedy = client_from(&edge, host, IpAddr::from([127, 0, 0, 3]), b"h2");
    let url = edge.url(host, &format!("/download?bytes={}", 256 * MIB));
    let mut held = Vec::new();
    for _ in 0..8 {
        let resp = greedy.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    // The ninth (on a connection of its own: the first one's window is full of unread data) is
    // refused at the edge, before it reaches the app, with the reason.
    let again = || client_from(&edge, host, IpAddr::from([127, 0, 0, 3]), b"http/1.1");
    let resp = again().get(edge.url(host, "/")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let page = resp.text().await.unwrap();
    assert!(page.contains("8 requests in flight"), "{page}");
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::Relaxed), 8);
    // Another address is served meanwhile.
    let other = client_from(&edge, host, IpAddr::from([127, 0, 0, 4]), b"http/1.1");
    assert_eq!(
        other
            .get(edge.url(host, "/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Once the downloads end, the address is served again.
    drop((held, greedy));
    let until = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let status = again()
            .get(edge.url(host, "/"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the address stayed refused after its downloads ended: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An app that closes a WebSocket frees the user's connection, even when the client never
/// closes its own side: the edge gives the client the stall timeout to follow, then drops it.
#[tokio::test]
async fn a_websocket_the_app_closes_gives_its_place_back() {
    use futures_util::StreamExt;
    // Four places per address (the connector's tunnels and config poll take three of 127.0.0.1's).
    let edge = Edge::start(&["--max-connections-per-ip", "4", "--stall-timeout", "1s"]).await;
    // A WebSocket app that says goodbye at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                    let _ = ws.close(None).await;
                }
            });
        }
    });
    edge.group("g").await;
    edge.publish("bye", "bye.localhost", &format!("http://{app}/"), "g", &[])
        .await;
    let _c = edge.connector("g").await;
    let from = IpAddr::from([127, 0, 0, 32]);
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let mut socket = websocket_from(&edge, from, "bye.localhost").await;
        // The app's close arrives; the client keeps its socket open and says nothing more.
        let ended = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "the app's close never reached the client");
        sockets.push(socket);
    }
    wait_admitted(
        &edge,
        from,
        "bye.localhost",
        "WebSockets the app closed still hold the address's places",
    )
    .await;
    drop(sockets);
}

/// An HTTP/2 client that never answers the edge's closing PING is dropped after the head
/// timeout, not kept until HTTP/2 keep-alive gives up on it.
#[tokio::test]
async fn an_http2_client_that_ignores_the_close_is_dropped() {
    let (edge, _app, _c) = published("h2.localhost", &["--request-head-timeout", "1s"]).await;
    let mut tls = edge.tls_to_public("h2.localhost", b"h2").await;
    // The connection preface and an empty SETTINGS frame, then nothing: no request, and no
    // answer to anything the edge sends (its SETTINGS, GOAWAY and PING).
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(READY_TIMEOUT, tls.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a silent HTTP/2 client was kept open");
}

/// Reads one HTTP/1.1 response with a `content-length` body from `io`; its status code.
async fn read_response(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> u16 {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before a response");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    while got.len() < head_end + len {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed within a response");
        got.extend_from_slice(&buf[..n]);
    }
    head[9..12].parse().unwrap()
}

/// An HTTP/1.1 connection at rest between requests stays open for the idle timeout, not just the
/// head timeout; a request head that begins to arrive must still be complete within the head
/// timeout.
#[tokio::test]
async fn keep_alive_connections_rest_for_the_idle_timeout_and_heads_stay_bounded() {
    let (edge, _app, _c) = published(
        "rest.localhost",
        &["--request-head-timeout", "1s", "--idle-timeout", "60s"],
    )
    .await;
    let mut tls = edge.tls_to_public("rest.localhost", b"http/1.1").await;
    let get = b"GET / HTTP/1.1\r\nHost: rest.localhost\r\n\r\n";
    tls.write_all(get).await.unwrap();
    assert_eq!(read_response(&mut tls).await, 200);
    // At rest for longer than the head timeout: the connection serves the next request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls.write_all(get).await.unwrap();
    assert_eq!(read_response(&mut tls).await, 200);
    // A head that starts and stops is cut off after the head timeout, unanswered.
    tls.write_all(b"GET / HTTP/1.1\r\nHost: rest.loc")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(READY_TIMEOUT, tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a late request head was never cut off");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

/// A TLS connection to the edge's public listener from `from` (any 127.0.0.0/8 address).
async fn tls_from(
    edge: &Edge,
    from: IpAddr,
    host: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    try_tls_from(edge, from, host, alpn).await.unwrap()
}

/// [`tls_from`], failing when the edge turns the connection away.
async fn try_tls_from(
    edge: &Edge,
    from: IpAddr,
    host: &str,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(edge.public).await?;
    let config = postern_pki::client_config(&edge.ca_pem(), vec![alpn.to_vec()]).unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// A WebSocket to `host` from `from`, on a TLS connection of its own.
async fn websocket_from(
    edge: &Edge,
    from: IpAddr,
    host: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = tls_from(edge, from, host, b"http/1.1").await;
    let url = format!("wss://{host}:{}/socket", edge.public.port());
    let (socket, resp) = tokio_tungstenite::client_async(&url, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    socket
}

/// Waits until the edge admits a new connection from `from`; fails with `why` if it never does.
async fn wait_admitted(edge: &Edge, from: IpAddr, host: &str, why: &str) {
    let until = tokio::time::Instant::now() + READY_TIMEOUT;
    while try_tls_from(edge, from, host, b"http/1.1").await.is_err() {
        assert!(tokio::time::Instant::now() < until, "{why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An open WebSocket keeps the place its connection took: the connection limits count
/// WebSockets for as long as they are open, not only until their upgrade.
#[tokio::test]
async fn open_websockets_count_against_the_connection_limits() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let edge = Edge::start(&["--max-connections-per-ip", "3"]).await;
    let ws = backends::websocket_echo().await;
    edge.group("g").await;
    edge.publish("ws", "ws.localhost", &format!("http://{ws}/"), "g", &[])
        .await;
    let _c = edge.connector("g").await;
    let from = IpAddr::from([127, 0, 0, 31]);
    let mut sockets = Vec::new();
    for i in 0..3 {
        let mut socket = websocket_from(&edge, from, "ws.localhost").await;
        let text = format!("socket {i}");
        socket.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(text));
        sockets.push(socket);
    }
    // While the three are open, a fourth connection from the address is turned away.
    assert!(
        try_tls_from(&edge, from, "ws.localhost", b"http/1.1")
            .await
            .is_err(),
        "a fourth connection was admitted beside three open WebSockets"
    );
    // One closes: its place is free again.
    let mut first = sockets.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    drop(first);
    wait_admitted(
        &edge,
        from,
        "ws.localhost",
        "a closed WebSocket never gave its place back",
    )
    .await;
}

#[tokio::test]
async fn stalled_clients_from_many_addresses_share_one_budget() {
    // A stall timeout far beyond the test: only the budget of 8 stalled streams can act.
    let (edge, app, _c) = published(
        "budget.localhost",
        &[
            "--stall-timeout",
            "10m",
            "--stalled-streams",
            "8",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let path = format!("/download?bytes={}", 64 * MIB);
    // Four addresses, ten downloads each over HTTP/2 with a window of zero: the edge can never
    // send them a byte, so it never takes a frame from the tunnel for them.
    let mut stalled = Vec::new();
    let mut conns = Vec::new();
    for host in 2..6u8 {
        let tls = tls_from(
            &edge,
            IpAddr::from([127, 0, 0, host]),
            "budget.localhost",
            b"h2",
        )
        .await;
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(backends::executor())
            .initial_stream_window_size(0)
            .adaptive_window(false)
            .handshake(TokioIo::new(tls))
            .await
            .unwrap();
        conns.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        for _ in 0..10 {
            let req = http::Request::get(edge.url("budget.localhost", &path))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            stalled.push(sender.send_request(req).await.unwrap());
        }
        conns.push(tokio::spawn(async move {
            // Keeps the connection (and its streams) open.
            let _sender = sender;
            std::future::pending::<()>().await;
        }));
    }
    // Past the grace, all but the 8 most recent stalled streams are reset at the tunnel: the
    // connector sees its downloads dropped, long before the stall timeout.
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let live = app.downloads.load(std::sync::atomic::Ordering::Relaxed);
        if live <= 8 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{live} stalled downloads still hold the tunnel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everyone else is served, small and large alike.
    let client = edge.client("budget.localhost");
    let full = client
        .get(edge.url("budget.localhost", &format!("/download?bytes={}", 8 * MIB)))
        .send()
        .await
        .unwrap();
    assert_eq!(drain(full).await, (8 * MIB, true));
    // The resets are counted by cause.
    let (_, exposition) = common::plain_get(edge.metrics.unwrap(), "/metrics").await;
    let reset: f64 = exposition
        .lines()
        .find_map(|l| {
            l.strip_prefix("postern_stalled_streams_reset_total{cause=\"stall_budget\"} ")
        })
        .unwrap_or_else(|| panic!("no budget resets counted: {exposition}"))
        .parse()
        .unwrap();
    assert!(reset >= 32.0, "{reset} resets counted");
    drop(stalled);
    for c in conns {
        c.abort();
    }
}

#[tokio::test]
async fn a_slow_request_body_reaches_the_app_only_once_it_has_arrived() {
    let (edge, app, _c) = published("slowbody.localhost", &["--stall-timeout", "3s"]).await;
    let hits = || app.hits.load(std::sync::atomic::Ordering::Relaxed);
    let before = hits();
    // Half a form, then a pause: the app has not heard of the request.
    let mut tls = edge.tls_to_public("slowbody.localhost", b"http/1.1").await;
    let body = "x".repeat(1000);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: slowbody.localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body.as_bytes()[..500]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        hits(),
        before,
        "the app was sent a request whose body had not arrived"
    );
    // The rest: the request goes through whole.
    tls.write_all(&body.as_bytes()[500..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(READY_TIMEOUT, tls.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(hits(), before + 1);

    // A body that keeps trickling past the stall timeout in all is refused, 408, and the app
    // never hears of it.
    let mut tls = edge.tls_to_public("slowbody.localhost", b"http/1.1").await;
    tls.write_all(head.as_bytes()).await.unwrap();
    let trickle = async {
        for _ in 0..10 {
            if tls.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(READY_TIMEOUT, trickle).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_body_stalled"), "{text}");
    assert_eq!(hits(), before + 1);
}

/// Sends `request` on a new plain connection to `addr` and reads until the edge closes it.
async fn plain_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(READY_TIMEOUT, tcp.read_to_end(&mut answer))
        .await
        .expect("the plain HTTP listener kept the connection open")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// `--http-listen` redirects requests for served hosts to the same URL over HTTPS (308, one
/// request per connection), names any other host in a 404, refuses a request with no host and
/// an oversized head, and closes a silent connection at the head timeout.
#[tokio::test]
async fn plain_http_redirects_served_hosts_to_https_and_nothing_else() {
    let edge = Edge::start(&[
        "--http-listen",
        "127.0.0.1:0",
        "--request-head-timeout",
        "1s",
    ])
    .await;
    let http = edge.http.expect("the HTTP listener's address");
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("wiki", "wiki.localhost", &app.url(), "g", &[])
        .await;
    let port = edge.public.port();

    let answer = plain_exchange(
        http,
        b"POST /page?q=1 HTTP/1.1\r\nHost: WIKI.localhost:80\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains(&format!(
            "location: https://wiki.localhost:{port}/page?q=1\r\n"
        )),
        "{answer}"
    );
    let answer = plain_exchange(http, b"GET / HTTP/1.1\r\nHost: login.localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");

    let answer = plain_exchange(http, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(
        answer.contains("no app is published at evil.example") && answer.contains("request ID: "),
        "{answer}"
    );
    assert!(
        !answer.to_ascii_lowercase().contains("location:"),
        "{answer}"
    );
    let answer = plain_exchange(http, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    let huge = format!(
        "GET / HTTP/1.1\r\nHost: wiki.localhost\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = plain_exchange(http, huge.as_bytes()).await;
    assert!(
        !answer.contains(" 308 "),
        "an oversized head was redirected: {answer:.80}"
    );

    // A connection that sends nothing is closed at the head timeout.
    let mut silent = tokio::net::TcpStream::connect(http).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(READY_TIMEOUT, silent.read(&mut buf))
        .await
        .expect("a silent connection was kept open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
