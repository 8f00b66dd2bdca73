//! End-to-end tests of the edge, the connector and the tunnel, with real processes on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::backends::{self, seen, Pattern};
use common::{Edge, READY_TIMEOUT};

/// An edge with one group `g`, the test app published at `host`, and one connector.
async fn published(host: &str, extra: &[&str]) -> (Edge, backends::App, common::Connector) {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("app", host, &app.url(), "g", extra).await;
    let c = edge.connector("g").await;
    (edge, app, c)
}

#[tokio::test]
async fn robots_txt_is_answered_by_the_edge() {
    let (edge, app, _c) = published("robots.localhost", &[]).await;
    let client = edge.client("robots.localhost");
    let resp = client
        .get(edge.url("robots.localhost", "/robots.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "User-agent: *\nDisallow: /\n");
    assert_eq!(
        app.hits.load(Ordering::Relaxed),
        0,
        "robots.txt must not reach the app"
    );
    // Any other path does reach it.
    let resp = client
        .get(edge.url("robots.localhost", "/robots.txt.bak"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn unknown_host_gets_a_404_page_with_the_request_id() {
    let edge = Edge::start(&[]).await;
    // A name the edge does not serve gets no certificate, so the page is reached through a name
    // it does (the listener's default `localhost`) with the unknown host in `Host`.
    let tls = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve("localhost", edge.public)
        .build()
        .unwrap();
    let url = edge.url("localhost", "/");
    let get = |accept: &'static str| {
        client
            .get(&url)
            .header("host", format!("nothing.localhost:{}", edge.public.port()))
            .header("accept", accept)
            .send()
    };
    let resp = get("text/html").await.unwrap();
    assert_eq!(resp.status(), 404);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let page = resp.text().await.unwrap();
    assert!(page.contains("No app is published here"), "{page}");
    assert!(page.contains("nothing.localhost"));
    assert!(page.contains(&rid));

    let resp = get("application/json").await.unwrap();
    assert_eq!(resp.status(), 404);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["code"], "unknown_app");
    assert_eq!(json["error"]["request_id"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn header_hygiene() {
    let (edge, _app, _c) = published("hygiene.localhost", &[]).await;
    // HTTP/1.1, so hop-by-hop headers really travel to the edge.
    let client = edge.client_with("hygiene.localhost", vec![b"http/1.1".to_vec()]);
    let resp = client
        .get(edge.url("hygiene.localhost", "/echo?q=1"))
        .header("x-postern-user", "forged")
        .header("X_Postern_Email", "forged")
        .header("postern-app", "999")
        .header("postern_request_id", "forged")
        .header("x-request-id", "forged")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-host", "evil.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("cookie", "a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["uri"], "/echo?q=1");
    for name in [
        "x-postern-user",
        "x_postern_email",
        "postern-app",
        "postern_request_id",
        "x-hop",
        "keep-alive",
        "postern-config-version",
    ] {
        assert!(
            seen(&json, name).is_empty(),
            "{name} reached the app: {json}"
        );
    }
    assert_eq!(seen(&json, "x-request-id"), vec![rid]);
    assert_eq!(
        seen(&json, "x-forwarded-for"),
        vec!["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(seen(&json, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        seen(&json, "x-forwarded-host"),
        vec![format!("hygiene.localhost:{}", edge.public.port())]
    );
    assert_eq!(seen(&json, "cookie"), vec!["a=b"]);
    // The app sees its own internal host by default.
    assert_eq!(seen(&json, "host"), vec![_app.addr.to_string()]);
}

#[tokio::test]
async fn preserve_host_sends_the_external_host() {
    let (edge, _app, _c) = published("keep.localhost", &["--preserve-host"]).await;
    let client = edge.client("keep.localhost");
    let json: serde_json::Value = client
        .get(edge.url("keep.localhost", "/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        seen(&json, "host"),
        vec![format!("keep.localhost:{}", edge.public.port())]
    );
}

/// The connector keeps its connections to an app open between requests, and across a config
/// change that leaves the app's origin as it was.
#[tokio::test]
async fn requests_to_an_app_share_kept_connections() {
    let (edge, app, _c) = published("kept.localhost", &[]).await;
    let client = edge.client("kept.localhost");
    let get = |path: &'static str| client.get(edge.url("kept.localhost", path)).send();
    for _ in 0..20 {
        assert_eq!(get("/").await.unwrap().status(), 200);
    }
    // A response read to its end frees the connection for the next request, downloads too.
    let body = get("/download?bytes=300000").await.unwrap().bytes().await;
    assert_eq!(body.unwrap().len(), 300_000);
    assert_eq!(get("/").await.unwrap().status(), 200);
    assert_eq!(app.connections.load(Ordering::Relaxed), 1);

    // Another app published: a new config for the connector, the same connection for this app.
    let other = backends::app().await;
    edge.publish("other", "other.localhost", &other.url(), "g", &[])
        .await;
    let resp = edge
        .client("other.localhost")
        .get(edge.url("other.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get("/").await.unwrap().status(), 200);
    assert_eq!(app.connections.load(Ordering::Relaxed), 1);
    assert_eq!(app.hits.load(Ordering::Relaxed), 23);
}

/// 1 GiB each way through the tunnel, checked end to end by SHA-256, with the edge's and the
/// connector's memory sampled throughout.
#[tokio::test]
async fn large_bodies_stream_both_ways_with_flat_memory() {
    const LEN: u64 = 1 << 30;
    let (edge, _app, c) = published("big.localhost", &[]).await;
    let client = edge.client("big.localhost");
    let pids = [edge.pid(), c.pid()];
    let baseline: Vec<u64> = pids.iter().map(|p| common::rss_bytes(*p)).collect();
    assert!(baseline.iter().all(|b| *b > 0));
    let peak = Arc::new(std::sync::Mutex::new(baseline.clone()));
    let samples = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let (peak, samples) = (peak.clone(), samples.clone());
        tokio::spawn(async move {
            loop {
                for (i, p) in pids.iter().enumerate() {
                    let rss = common::rss_bytes(*p);
                    let mut peak = peak.lock().unwrap();
                    peak[i] = peak[i].max(rss);
                }
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let resp = client
        .post(edge.url("big.localhost", "/upload"))
        .body(reqwest::Body::wrap_stream(Pattern::new(LEN)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["len"], LEN);
    assert_eq!(json["sha256"], Pattern::sha256(LEN));

    let mut resp = client
        .get(edge.url("big.localhost", &format!("/download?bytes={LEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    let mut got = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        got += chunk.len() as u64;
        sha2::Digest::update(&mut h, &chunk);
    }
    assert_eq!(got, LEN);
    assert_eq!(
        backends::hex(&sha2::Digest::finalize(h)),
        Pattern::sha256(LEN)
    );

    sampler.abort();
    assert!(
        samples.load(Ordering::Relaxed) > 10,
        "memory was not sampled during the transfer"
    );
    let peak = peak.lock().unwrap().clone();
    for (i, name) in ["edge", "connector"].iter().enumerate() {
        let growth = peak[i].saturating_sub(baseline[i]);
        eprintln!(
            "{name}: RSS {} MiB before, peak {} MiB while moving 1 GiB each way",
            baseline[i] >> 20,
            peak[i] >> 20
        );
        // Flow-control windows bound what is in flight; 1 GiB moved, well under 1/10 of it held.
        assert!(
            growth < 96 << 20,
            "{name} grew by {} MiB moving 1 GiB",
            growth >> 20
        );
    }
}

#[tokio::test]
async fn chunked_bodies_and_trailers_survive() {
    use http_body_util::BodyExt;
    let (edge, _app, _c) = published("trailers.localhost", &[]).await;
    // A raw HTTP/2 client, since trailers are invisible to most client libraries.
    let tls = edge.tls_to_public("trailers.localhost", b"h2").await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-request-trailer", "from-client".parse().unwrap());
    let frames = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(
            b"chunk one ",
        ))),
        Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"chunk two",
        ))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let req = http::Request::builder()
        .method("POST")
        .uri(edge.url("trailers.localhost", "/trailers"))
        .header("te", "trailers")
        .header("trailer", "x-request-trailer")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("response trailers were lost");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(trailers["x-saw-request-trailer"], "from-client");
    assert_eq!(&collected.to_bytes()[..], b"part one, part two");
}

#[tokio::test]
async fn websocket_echoes_both_ways_and_closes_cleanly() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let edge = Edge::start(&[]).await;
    let ws = backends::websocket_echo().await;
    edge.group("g").await;
    edge.publish("ws", "ws.localhost", &format!("http://{ws}/"), "g", &[])
        .await;
    let _c = edge.connector("g").await;

    // WebSocket over HTTP/1.1, as browsers open it.
    let tls = edge.tls_to_public("ws.localhost", b"http/1.1").await;
    let url = format!("wss://ws.localhost:{}/socket", edge.public.port());
    let (mut socket, resp) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..100 {
        let text = format!("message {i}");
        socket.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(text));
    }
    let blob: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    socket.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::binary(blob));
    socket.close(None).await.unwrap();
    // The close handshake completes: the stream ends without an error.
    let rest = tokio::time::timeout(READY_TIMEOUT, async {
        let mut rest = Vec::new();
        while let Some(m) = socket.next().await {
            rest.push(m);
        }
        rest
    })
    .await
    .expect("close did not complete");
    assert!(
        rest.iter().all(|m| matches!(m, Ok(Message::Close(_)))),
        "{rest:?}"
    );
}

#[tokio::test]
async fn two_connectors_share_the_load() {
    let (edge, _app, c1) = published("share.localhost", &[]).await;
    let c2 = edge.connector("g").await;
    let client = edge.client("share.localhost");
    for _ in 0..200 {
        let resp = client
            .get(edge.url("share.localhost", "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let list: serde_json::Value =
        serde_json::from_str(&edge.admin_ok(&["connector", "list", "--json"]).await).unwrap();
    let requests = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["requests"]
            .as_u64()
            .unwrap()
    };
    let (r1, r2) = (requests(&c1.id), requests(&c2.id));
    assert_eq!(r1 + r2, 200);
    // Random choice between equally idle tunnels: each connector carries a fair share.
    assert!(r1 >= 40 && r2 >= 40, "unbalanced: {r1} and {r2}");
}

#[tokio::test]
async fn failover_between_two_connectors_loses_no_request() {
    let (edge, _app, c1) = published("failover.localhost", &[]).await;
    let c2 = edge.connector("g").await;
    let client = edge.client("failover.localhost");
    let url = edge.url("failover.localhost", "/");
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed_after_failover = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..8 {
        // Half the workers hold requests open at the app, so some are in flight on the connector
        // that dies: those must end with a 502, never hang.
        let url = if worker % 2 == 0 {
            format!("{url}slow?ms=300")
        } else {
            url.clone()
        };
        let (client, url, killed, failed, done, stop) = (
            client.clone(),
            url,
            killed.clone(),
            failed_after_failover.clone(),
            done.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut in_flight_at_kill = 0;
            while !stop.load(Ordering::Relaxed) {
                let after_failover = killed.load(Ordering::SeqCst);
                let resp = client.get(&url).send().await;
                let ok = matches!(&resp, Ok(r) if r.status() == 200);
                if !ok {
                    if after_failover {
                        failed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        // In flight on the killed connector: it must fail fast with a 502.
                        assert_eq!(resp.unwrap().status(), 502);
                        in_flight_at_kill += 1;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            in_flight_at_kill
        }));
    }
    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            tokio::time::timeout(READY_TIMEOUT, async {
                while done.load(Ordering::Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("load stalled");
        }
    };
    wait_for(100).await;
    let mut c1 = c1;
    c1.child.start_kill().unwrap();
    c1.child.wait().await.unwrap();
    // The failover is done once the edge has dropped the dead connector's tunnels.
    edge.wait_tunnels(&c1.id, 0).await;
    killed.store(true, Ordering::SeqCst);
    let before = done.load(Ordering::Relaxed);
    wait_for(before + 300).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed_in_flight = 0;
    for w in workers {
        failed_in_flight += tokio::time::timeout(READY_TIMEOUT, w)
            .await
            .expect("a request hung")
            .unwrap();
    }
    eprintln!("requests in flight on the killed connector that got a 502: {failed_in_flight}");
    assert_eq!(
        failed_after_failover.load(Ordering::Relaxed),
        0,
        "requests failed after the failover"
    );
    drop(c2);
}

#[tokio::test]
async fn requests_queue_for_a_connector_then_get_a_clear_502() {
    let edge = Edge::start(&["--queue-timeout", "2s"]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish("app", "queue.localhost", &app.url(), "g", &[])
        .await;
    let client = edge.client("queue.localhost");

    // Nobody comes: a 502 page that says so.
    let resp = client
        .get(edge.url("queue.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("No connector is online for this app"),
        "{page}"
    );

    // A connector comes while the request waits: it is served.
    let edge = Edge::start_in(
        {
            // Reuse the state (apps, groups) with a longer queue.
            let dir = edge.dir;
            drop(edge.child);
            dir
        },
        &["--queue-timeout", "60s"],
    )
    .await;
    let client = edge.client("queue.localhost");
    let waiting = tokio::spawn({
        let url = edge.url("queue.localhost", "/");
        async move { client.get(url).send().await.unwrap().status() }
    });
    let _c = edge.connector("g").await;
    assert_eq!(waiting.await.unwrap(), 200);
}

#[tokio::test]
async fn backend_failures_have_their_own_pages() {
    let edge = Edge::start(&[]).await;
    let closed = backends::closed_port().await;
    let hole = backends::black_hole().await;
    edge.group("g").await;
    edge.publish(
        "down",
        "down.localhost",
        &format!("http://{closed}/"),
        "g",
        &[],
    )
    .await;
    edge.publish(
        "slow",
        "slow.localhost",
        &format!("http://{hole}/"),
        "g",
        &["--backend-timeout", "1s"],
    )
    .await;
    let _c = edge.connector("g").await;

    let resp = edge
        .client("down.localhost")
        .get(edge.url("down.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("The app cannot be reached"));

    let resp = edge
        .client("slow.localhost")
        .get(edge.url("slow.localhost", "/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["code"], "backend_timeout");
}

#[tokio::test]
async fn https_backends_are_verified_unless_the_app_says_otherwise() {
    let edge = Edge::start(&[]).await;
    let tls_app = backends::tls_app().await;
    edge.group("g").await;
    edge.publish(
        "strict",
        "strict.localhost",
        &format!("https://{tls_app}/"),
        "g",
        &[],
    )
    .await;
    edge.publish(
        "lax",
        "lax.localhost",
        &format!("https://{tls_app}/"),
        "g",
        &["--insecure-skip-backend-tls-verify"],
    )
    .await;
    let _c = edge.connector("g").await;
    let resp = edge
        .client("strict.localhost")
        .get(edge.url("strict.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        502,
        "a self-signed backend certificate must be refused by default"
    );
    let resp = edge
        .client("lax.localhost")
        .get(edge.url("lax.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello over tls");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let (edge, _app, c) = published("drain.localhost", &[]).await;
    let client = edge.client("drain.localhost");
    // Edge first: the slow request started before SIGTERM completes.
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), edge.url("drain.localhost", "/slow?ms=1500"));
        async move { client.get(url).send().await.unwrap() }
    });
    wait_until(|| _app.hits.load(Ordering::Relaxed) >= 1).await;
    common::signal(c.pid(), "TERM");
    let resp = slow.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "slow done");
    let mut c = c;
    let status = tokio::time::timeout(READY_TIMEOUT, c.child.wait())
        .await
        .expect("connector did not exit")
        .unwrap();
    assert!(status.success(), "connector exited with {status}");

    let c2 = edge.connector("g").await;
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), edge.url("drain.localhost", "/slow?ms=1500"));
        async move { client.get(url).send().await.unwrap() }
    });
    wait_until(|| _app.hits.load(Ordering::Relaxed) >= 2).await;
    common::signal(edge.pid(), "TERM");
    let resp = slow.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut edge = edge;
    let status = tokio::time::timeout(READY_TIMEOUT, edge.child.wait())
        .await
        .expect("edge did not exit")
        .unwrap();
    assert!(status.success(), "edge exited with {status}");
    drop(c2);
}

async fn wait_until(f: impl Fn() -> bool) {
    tokio::time::timeout(READY_TIMEOUT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition never held");
}

#[tokio::test]
async fn forged_trailers_are_cleaned_like_headers() {
    use http_body_util::BodyExt;
    let (edge, _app, _c) = published("trailers2.localhost", &[]).await;
    // HTTP/1.1 chunked, with trailers naming headers only the edge may set.
    let tls = edge.tls_to_public("trailers2.localhost", b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-request-trailer", "kept".parse().unwrap());
    trailers.insert("x-postern-user", "admin".parse().unwrap());
    let frames = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(b"body"))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let req = http::Request::builder()
        .method("POST")
        .uri("/trailers")
        .header(
            "host",
            format!("trailers2.localhost:{}", edge.public.port()),
        )
        .header("te", "trailers")
        .header("trailer", "x-request-trailer, x-postern-user")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers over HTTP/1.1 were lost");
    // The app reports the trailers it saw: the ordinary one arrived, the forged one did not.
    assert_eq!(trailers["x-saw-request-trailer"], "kept");
    assert_eq!(
        trailers["x-saw-postern-trailer"], "no",
        "a forged trailer reached the app"
    );
}

#[tokio::test]
async fn a_slow_upload_is_not_a_slow_app() {
    let (edge, _app, _c) = published("upload.localhost", &["--backend-timeout", "1s"]).await;
    let client = edge.client("upload.localhost");
    // 3 s to send the body, with an app timeout of 1 s: the timer starts once the body is sent.
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 6 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1000])),
            i + 1,
        ))
    });
    let resp = client
        .post(edge.url("upload.localhost", "/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["len"], 6000);
}

#[tokio::test]
async fn dot_segments_cannot_leave_an_apps_base_path() {
    let edge = Edge::start(&[]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.publish(
        "based",
        "based.localhost",
        &format!("http://{}/app/", app.addr),
        "g",
        &[],
    )
    .await;
    let _c = edge.connector("g").await;
    // HTTP/1.1 over raw TLS, so the path goes out exactly as written: every way an app server
    // may read a path as climbing out of /app/ (encoded, `;` parameters as Tomcat reads them,
    // encoded backslashes, repeated slashes, double encoding, IIS's %u, overlong UTF-8, NUL).
    for path in [
        "/../secret",
        "/%2e%2e/secret",
        "/x/./y",
        "/..;/secret",
        "/..;jsessionid=1/secret",
        "/%2e%2e;/secret",
        "/..%2fsecret",
        "/..%5csecret",
        "//..//secret",
        "/%252e%252e/secret",
        "/%u002e%u002e/secret",
        "/%c0%ae%c0%ae/secret",
        "/..%00/secret",
        "/.../secret",
    ] {
        let status = raw_get(&edge, "based.localhost", path).await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(
        app.hits.load(Ordering::Relaxed),
        0,
        "a refused path reached the app"
    );
    for path in ["/fine", "/a;v=1/b", "/caf%C3%A9", "/x?next=../../up"] {
        assert_eq!(raw_get(&edge, "based.localhost", path).await, 200, "{path}");
    }
    assert_eq!(app.hits.load(Ordering::Relaxed), 4);
}

/// The connector connects only where its own destination policy allows, whatever internal URL
/// the edge names: by default not to the cloud metadata address; with `--allow-destination`,
/// only to what a rule names (here not to a loopback port outside it). Refusals get their own
/// page, which names the cause and not the address; the connector logs the address.
#[tokio::test]
async fn the_connector_refuses_destinations_its_policy_does_not_allow() {
    let edge = Edge::start(&[]).await;
    let on_loopback = backends::app().await;
    let on_other_loopback = backends::app_on("127.0.0.2").await;
    let by_name_port = on_loopback.addr.port();
    edge.group("open").await;
    edge.group("listed").await;
    let metadata = "http://169.254.169.254/latest/meta-data/";
    for (name, internal, group) in [
        ("meta", metadata.to_owned(), "open"),
        ("loop", on_loopback.url(), "open"),
        ("meta2", metadata.to_owned(), "listed"),
        ("outside", on_loopback.url(), "listed"),
        ("allowed", on_other_loopback.url(), "listed"),
        (
            "named",
            format!("http://localhost:{by_name_port}/"),
            "listed",
        ),
    ] {
        edge.publish(name, &format!("{name}.localhost"), &internal, group, &[])
            .await;
    }
    let (_open, open_log) = edge.connector_logged("open", &[]).await;
    let (_listed, listed_log) = edge
        .connector_logged(
            "listed",
            &[
                "--allow-destination",
                "127.0.0.2/32",
                "--allow-destination",
                "localhost",
            ],
        )
        .await;

    let get = |name: &'static str, json: bool| {
        let host = format!("{name}.localhost");
        let req = edge.client(&host).get(edge.url(&host, "/"));
        let req = if json {
            req.header("accept", "application/json")
        } else {
            req
        };
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    for name in ["meta", "meta2", "outside"] {
        let (status, body) = get(name, true).await;
        assert_eq!(status, 502, "{name}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["code"], "destination_refused", "{name}");
        assert_eq!(json["error"]["retryable"], false, "{name}");
        let (status, page) = get(name, false).await;
        assert_eq!(status, 502);
        assert!(
            page.contains("The connector is not allowed to connect to this app's address"),
            "{name}: {page}"
        );
        assert!(page.contains("--allow-destination"), "{page}");
        for secret in ["169.254", "127.0.0.1", &by_name_port.to_string()] {
            assert!(
                !page.contains(secret),
                "{name}: the page shows {secret}: {page}"
            );
        }
    }
    assert_eq!(on_loopback.hits.load(Ordering::Relaxed), 0);
    for name in ["loop", "allowed", "named"] {
        let (status, body) = get(name, true).await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    assert_eq!(on_loopback.hits.load(Ordering::Relaxed), 2);
    assert_eq!(on_other_loopback.hits.load(Ordering::Relaxed), 1);

    // Each connector's log names the address it refused and why.
    open_log
        .wait_for(&["destination refused", "169.254.169.254", "cloud metadata"])
        .await;
    listed_log
        .wait_for(&["destination refused", "169.254.169.254", "cloud metadata"])
        .await;
    listed_log
        .wait_for(&[
            "destination refused",
            "127.0.0.1",
            "not in --allow-destination",
        ])
        .await;
    assert!(
        !open_log.has(&["destination refused", "127.0.0.1"]),
        "the default policy refused loopback"
    );

    // A bad rule is refused at start with the fix.
    let out = tokio::process::Command::new(common::BIN)
        .args([
            "connector",
            "run",
            "--state",
            "/nonexistent",
            "--allow-destination",
            "10.0.0.0/33",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a destination"), "{stderr}");
}

/// Sends `GET path` as written over HTTP/1.1 and returns the status code.
async fn raw_get(edge: &Edge, host: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = edge.tls_to_public(host, b"http/1.1").await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp).await;
    let head = String::from_utf8_lossy(&resp);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
