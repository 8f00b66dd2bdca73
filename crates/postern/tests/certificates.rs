//! The local CA's certificates on demand: only for names the edge serves, whatever strangers ask.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::Edge;

/// How a TLS handshake for `name` to `addr` ended: the leaf certificate's DNS names, or the error.
async fn leaf_names(edge: &Edge, addr: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    let config = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()])
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let server_name =
        rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            // Tell the server's refusal (an alert: no certificate for the name) from a
            // certificate the client would not accept.
            match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::AlertReceived(alert)) => format!("alert: {alert:?}"),
                _ => format!("other: {e}"),
            }
        })?;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| e.to_string())?
        .ok_or("no SAN")?;
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect())
}

fn assert_refused(got: Result<Vec<String>, String>, name: &str) {
    match got {
        Err(e) => assert!(
            e.starts_with("alert:"),
            "{name}: not refused by the edge: {e}"
        ),
        Ok(names) => panic!("{name} got a certificate for {names:?}"),
    }
}

#[tokio::test]
async fn only_served_names_get_certificates_even_under_a_random_sni_flood() {
    // The flood and the checks share one loopback address; the per-address handshake rate (which
    // would refuse both) is off, so what is tested is which names get certificates.
    let edge = Edge::start(&["--tls-name", "edge.example", "--handshakes-per-ip", "0"]).await;
    edge.group("g").await;
    edge.publish("pub", "pub.localhost", "http://127.0.0.1:9/", "g", &[])
        .await;
    let public = edge.public;
    assert_eq!(
        leaf_names(&edge, public, "pub.localhost").await,
        Ok(vec!["pub.localhost".to_owned()])
    );
    // The identity provider's host is served too.
    assert_eq!(
        leaf_names(&edge, public, "login.localhost").await,
        Ok(vec!["login.localhost".to_owned()])
    );
    // A name given with --tls-name is in the default certificate, on the connector listener too.
    for addr in [public, edge.connector] {
        let names = leaf_names(&edge, addr, "edge.example").await.unwrap();
        assert!(names.contains(&"edge.example".to_owned()), "{names:?}");
    }

    // Thousands of strangers' names, from several clients at once: every handshake is refused,
    // and the published app keeps getting its own certificate all along.
    let edge = Arc::new(edge);
    let flood: Vec<_> = (0..4)
        .map(|client| {
            let edge = edge.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    let name = format!("r{}-{client}-{i}.localhost", rand::random::<u32>());
                    assert_refused(leaf_names(&edge, edge.public, &name).await, &name);
                }
            })
        })
        .collect();
    let mut checks = 0;
    while !flood.iter().all(|f| f.is_finished()) || checks == 0 {
        assert_eq!(
            leaf_names(&edge, public, "pub.localhost").await,
            Ok(vec!["pub.localhost".to_owned()]),
            "during the flood"
        );
        checks += 1;
    }
    for f in flood {
        f.await.unwrap();
    }
    eprintln!("the published app got its certificate {checks} times during the flood");

    // A newly published app gets one at once; an unknown name, and an unpublished app, none.
    edge.publish("new", "new.localhost", "http://127.0.0.1:9/", "g", &[])
        .await;
    assert_eq!(
        leaf_names(&edge, public, "new.localhost").await,
        Ok(vec!["new.localhost".to_owned()])
    );
    assert_refused(
        leaf_names(&edge, public, "unknown.localhost").await,
        "unknown.localhost",
    );
    edge.admin_ok(&["app", "delete", "new"]).await;
    assert_refused(
        leaf_names(&edge, public, "new.localhost").await,
        "new.localhost",
    );
    assert_refused(
        leaf_names(&edge, edge.connector, "pub2.localhost").await,
        "pub2.localhost on the connector listener",
    );
}

/// Writes a pair the CA issued for `name` as the operator's files, as certbot does (new files
/// renamed into place); returns the leaf.
fn operator_pair(ca: &postern_pki::Ca, name: &str, dir: &std::path::Path) -> Vec<u8> {
    let (chain, key) = ca.issue_server(&[name.to_owned()]).unwrap();
    let chain_pem: String = chain
        .iter()
        .map(|c| common::to_pem("CERTIFICATE", c))
        .collect();
    for (file, text) in [
        ("chain.pem", chain_pem),
        ("key.pem", common::to_pem("PRIVATE KEY", key.secret_der())),
    ] {
        std::fs::write(dir.join("next"), text).unwrap();
        std::fs::rename(dir.join("next"), dir.join(file)).unwrap();
    }
    chain[0].to_vec()
}

/// A TLS connection to `addr` for `name`, trusting `ca_pem`, and the leaf it was shown.
async fn connect(
    addr: SocketAddr,
    name: &str,
    ca_pem: &str,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    let config = postern_pki::client_config(ca_pem, vec![b"http/1.1".to_vec()]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, leaf)
}

/// Waits until a new connection is shown `leaf`.
async fn wait_for_leaf(addr: SocketAddr, name: &str, ca_pem: &str, leaf: &[u8], why: &str) {
    let shown = async {
        loop {
            if connect(addr, name, ca_pem).await.1 == leaf {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(common::READY_TIMEOUT, shown)
        .await
        .unwrap_or_else(|_| panic!("the new certificate was not served after {why}"));
}

/// The operator's certificate is reloaded on SIGHUP and when its files change, with no restart:
/// new connections get the new one and a connection opened before goes on working.
#[tokio::test]
async fn the_operator_certificate_reloads_on_sighup_and_when_its_files_change() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = postern_pki::Ca::load_or_create(
        &dir.path().join("own-ca.pem"),
        &dir.path().join("own-ca-key.pem"),
        "own",
    )
    .unwrap();
    let name = "tls.localhost";
    let first = operator_pair(&ca, name, dir.path());
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let edge = Edge::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let (mut before, shown) = connect(edge.public, name, ca.cert_pem()).await;
    assert_eq!(shown, first);

    let second = operator_pair(&ca, name, dir.path());
    common::signal(edge.pid(), "HUP");
    wait_for_leaf(edge.public, name, ca.cert_pem(), &second, "SIGHUP").await;

    // The connection from before the reload still serves requests.
    before
        .write_all(b"GET /robots.txt HTTP/1.1\r\nHost: tls.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    before.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));

    // A renewal with no signal is picked up when the files change.
    let third = operator_pair(&ca, name, dir.path());
    wait_for_leaf(
        edge.public,
        name,
        ca.cert_pem(),
        &third,
        "the files changed",
    )
    .await;
}
