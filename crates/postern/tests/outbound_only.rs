//! The connector needs no inbound port: it and the app it publishes run in a network namespace
//! whose firewall refuses every new connection from outside, and users still reach the app
//! through the edge, over the tunnel the connector dialled out.
//!
//! Topology (one run; names and addresses derive from the test's process id, so parallel runs
//! never meet):
//!
//! ```text
//!  root namespace                              namespace postern-PID (the internal network)
//!  ┌───────────────────────────────┐          ┌──────────────────────────────────────────┐
//!  │ edge: public + admin 127.0.0.1 │          │ nftables input: established, lo, else    │
//!  │ connector listener 10.x.y.1 ───┼── veth ──┼─ 10.x.y.2   reject (admin-prohibited)     │
//!  │ test: user client, probes      │          │ connector (dials out), app on 0.0.0.0    │
//!  └───────────────────────────────┘          └──────────────────────────────────────────┘
//! ```
//!
//! It needs root (namespaces, veth, nftables) and the `ip`, `ss`, `nft`, `sysctl` and `node`
//! commands (`scripts/install-deps.sh` installs them); without them it fails saying so.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;

use common::{Edge, BIN, READY_TIMEOUT};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The firewall of the internal network: replies to connections its hosts opened and loopback
/// pass; every other packet in is refused with an ICMP "administratively prohibited", so a probe
/// can tell the firewall's refusal (host unreachable) from a closed port (connection reset).
const FIREWALL: &str = "
table inet postern_outbound_only {
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        iif lo accept
        reject with icmpx type admin-prohibited
    }
}
";

/// The internal app: a plain HTTP server on every address of its namespace (so only the firewall
/// keeps outsiders away), answering with the path it was asked for. It prints its port when ready.
const APP: &str = r#"
const http = require("http");
const server = http.createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ app: "inside", path: req.url }));
});
server.listen(0, "0.0.0.0", () => console.log(`listening ${server.address().port}`));
"#;

/// A network namespace joined to the root one by a veth pair, removed on drop (also when the test
/// fails half-way).
struct Namespace {
    name: String,
    host_veth: String,
    host_ip: Ipv4Addr,
    inside_ip: Ipv4Addr,
}

impl Namespace {
    async fn create() -> Namespace {
        let pid = std::process::id();
        // One /30 of 10.0.0.0/8 per process id (Linux ids are below 2^22): the edge's end and the
        // namespace's end.
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (pid % (1 << 22)) * 4;
        let ns = Namespace {
            name: format!("postern-{pid}"),
            host_veth: format!("pst{pid}h"),
            host_ip: Ipv4Addr::from(base + 1),
            inside_ip: Ipv4Addr::from(base + 2),
        };
        let inside_veth = format!("pst{pid}n");
        // Leftovers of an earlier run with the same id (killed before its cleanup) go first.
        ns.remove();
        run(&["ip", "netns", "add", &ns.name]).await;
        run(&[
            "ip",
            "link",
            "add",
            &ns.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &inside_veth,
        ])
        .await;
        run(&["ip", "link", "set", &inside_veth, "netns", &ns.name]).await;
        let host_cidr = format!("{}/30", ns.host_ip);
        let inside_cidr = format!("{}/30", ns.inside_ip);
        run(&["ip", "addr", "add", &host_cidr, "dev", &ns.host_veth]).await;
        run(&["ip", "link", "set", &ns.host_veth, "up"]).await;
        ns.exec_ok(&["ip", "addr", "add", &inside_cidr, "dev", &inside_veth])
            .await;
        ns.exec_ok(&["ip", "link", "set", &inside_veth, "up"]).await;
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]).await;
        // The firewall answers each probe with an ICMP error; the kernel's default rate limit on
        // those (per namespace) would make a probe wait for its SYN to be retried.
        ns.exec_ok(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"])
            .await;
        ns.firewall().await;
        ns
    }

    async fn firewall(&self) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().expect("nft's stdin");
            stdin.write_all(FIREWALL.as_bytes()).await.unwrap();
        }
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "nft could not load the firewall: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command inside the namespace.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    async fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn remove(&self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the pair; the
        // explicit delete covers a pair whose other end never moved into the namespace.
        for args in [
            &["netns", "del", self.name.as_str()][..],
            &["link", "del", self.host_veth.as_str()][..],
        ] {
            let _ = std::process::Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.remove();
    }
}

async fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// This test changes the machine's network configuration, which only root may do. It refuses to
/// pass without it, since a skipped proof proves nothing.
fn require_root_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("unknown");
    assert_eq!(
        euid, "0",
        "outbound_only needs root: it creates a network namespace, a veth pair and nftables \
         rules. Run it as root (CI does, through .ci/run)."
    );
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("ss", "iproute2"),
        ("sysctl", "procps"),
        ("node", "nodejs"),
    ] {
        let found = std::process::Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "outbound_only needs `{tool}`: run scripts/install-deps.sh (apt-get install {package})"
        );
    }
}

/// Starts the app inside the namespace and waits for its port.
async fn start_app(ns: &Namespace) -> (Child, u16) {
    let mut child = ns
        .command(&["node", "-e", APP])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the app (node) in the namespace");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(p) = line.strip_prefix("listening ") {
                return p.trim().parse::<u16>().unwrap();
            }
        }
        panic!("the app exited before listening");
    })
    .await
    .expect("the app did not start");
    (child, port)
}

/// Registers a connector inside the namespace (dialling the edge across the veth) and runs it.
async fn start_connector(edge: &Edge, ns: &Namespace, state: &Path) -> (Child, String) {
    let token = edge.token("inside").await;
    let edge_url = format!("https://{}", edge.connector);
    let state_arg = state.to_str().unwrap();
    let ca = edge.ca_path();
    let ca_arg = ca.to_str().unwrap();
    ns.exec_ok(&[
        BIN,
        "connector",
        "register",
        "--edge",
        &edge_url,
        "--token",
        &token,
        "--state",
        state_arg,
        "--ca-file",
        ca_arg,
    ])
    .await;
    let reg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("registration.json")).unwrap())
            .unwrap();
    let id = reg["connector_id"].as_str().unwrap().to_owned();
    let child = ns
        .command(&[BIN, "connector", "run", "--state", state_arg])
        .env("POSTERN_LOG", "info")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the connector in the namespace");
    edge.wait_tunnels(&id, 2).await;
    (child, id)
}

/// What a connection attempt from outside the namespace ended with.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// The firewall refused it (ICMP administratively prohibited).
    Refused,
    /// Something answered: a listener was reachable from outside.
    Connected,
    /// Anything else (a reset from a closed port, a timeout): the firewall did not act.
    Other(String),
}

async fn probe(addr: SocketAddr) -> Probe {
    match tokio::time::timeout(READY_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Connected,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::HostUnreachable => Probe::Refused,
        Ok(Err(e)) => Probe::Other(e.to_string()),
        Err(_) => Probe::Other("no answer".to_owned()),
    }
}

/// Listening sockets in the namespace, as `ss` prints them (local address, then the process).
async fn listeners(ns: &Namespace) -> Vec<String> {
    let tcp = ns.exec_ok(&["ss", "-Htlnp"]).await;
    let udp = ns.exec_ok(&["ss", "-Hulnp"]).await;
    tcp.lines().chain(udp.lines()).map(str::to_owned).collect()
}

/// The local ports of the namespace's established TCP connections (the connector's tunnels and
/// control calls among them).
async fn connected_ports(ns: &Namespace) -> Vec<u16> {
    let out = ns.exec_ok(&["ss", "-Htn", "state", "established"]).await;
    out.lines()
        // The first address column is the local one (`ss` drops the state column when filtering).
        .filter_map(|l| l.split_whitespace().find(|t| t.contains(':')))
        .filter_map(|local| local.rsplit(':').next()?.parse().ok())
        .collect()
}

async fn get_app(edge: &Edge, path: &str) -> serde_json::Value {
    let resp = edge
        .client("inside.localhost")
        .get(edge.url("inside.localhost", path))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the app through the edge, {path}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_connector_serves_apps_from_a_network_that_refuses_every_inbound_connection() {
    require_root_and_tools();
    let ns = Namespace::create().await;
    let edge_listen = format!("{}:0", ns.host_ip);
    let edge = Edge::start(&["--connector-listen", &edge_listen]).await;
    assert_eq!(edge.connector.ip(), ns.host_ip);

    let (_app, app_port) = start_app(&ns).await;
    edge.group("inside").await;
    edge.publish(
        "inside",
        "inside.localhost",
        &format!("http://127.0.0.1:{app_port}/"),
        "inside",
        &[],
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let (connector, _id) = start_connector(&edge, &ns, &state.path().join("state")).await;
    let connector_pid = connector.id().unwrap();

    // A user reaches the app through the edge.
    let seen = get_app(&edge, "/through/the/tunnel?x=1").await;
    assert_eq!(seen["app"], "inside");
    assert_eq!(seen["path"], "/through/the/tunnel?x=1");

    // Nothing of the connector listens: the namespace's only listener is the app.
    let listening = listeners(&ns).await;
    assert!(
        listening
            .iter()
            .all(|l| !l.contains(&format!("pid={connector_pid},"))),
        "the connector listens: {listening:#?}"
    );
    let app_listener = format!("0.0.0.0:{app_port}");
    assert!(
        listening.iter().any(|l| l.contains(&app_listener)),
        "the app listens on every address of its network, so only the firewall keeps it from \
         outside: {listening:#?}"
    );

    // From outside, every port of the internal network is refused by its firewall: the app's,
    // the ports of the connector's own outbound connections, and any other.
    let mut ports = vec![app_port, 1, 80, 443, 8443, 8444, 65535];
    let tunnel_ports = connected_ports(&ns).await;
    assert!(
        !tunnel_ports.is_empty(),
        "the connector's tunnels are established connections from inside"
    );
    ports.extend(tunnel_ports);
    for port in ports {
        let addr = SocketAddr::from((ns.inside_ip, port));
        assert_eq!(probe(addr).await, Probe::Refused, "{addr} from outside");
    }

    // And users are still served, on the tunnels the connector opened.
    let seen = get_app(&edge, "/still/served").await;
    assert_eq!(seen["path"], "/still/served");
}
