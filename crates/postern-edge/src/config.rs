//! The edge's validated runtime configuration.
//!
//! The binary parses flags and the environment into this struct; nothing here is optional at run
//! time that the edge needs to start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long a request waits for a connector of its group to come online before the user gets a
/// 502. Long enough to ride out a connector restart, short enough that a user is not left staring
/// at a spinner.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many requests may wait for a connector at once, across all groups; past it they fail at
/// once, so a long outage cannot pile up unbounded memory.
pub const DEFAULT_MAX_QUEUED: usize = 4096;
/// How long a connector's client certificate is valid. Connectors renew at 180 days.
pub const DEFAULT_CONNECTOR_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long shutdown waits for in-flight requests before closing connections.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the operator's certificate files are checked for a change (SIGHUP reloads at once).
pub const CERT_RECHECK: Duration = Duration::from_secs(5);
/// How long a registration token is valid unless the admin asks otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The built-in identity provider's host on the public listener (its issuer is
/// `https://HOST[:PORT]`); `login.localhost` serves a single machine out of the box.
pub const DEFAULT_IDP_HOST: &str = "login.localhost";
/// The most `--tls-name`s an edge takes: a handful of names connectors and admins dial, with
/// room to spare; the default certificate carries them all.
pub const MAX_TLS_NAMES: usize = 64;
/// How long a connector's config long-poll is held open when nothing changes.
pub const CONFIG_POLL_TIMEOUT: Duration = Duration::from_secs(25);

/// How long a client has to complete its TLS handshake: slow handshakes hold a file descriptor and
/// a half-built TLS state.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may wait before its first request head is complete, and how long
/// any HTTP/1.1 request head may take to arrive (slowloris).
pub const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection with no request in flight stays open (nginx's `keepalive_timeout` is 75
/// s; browsers reopen cheaply).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a response may make no progress because the client does not read it (nginx's
/// `send_timeout` is 60 s), and how long a request body may send nothing: past it the stream is
/// reset, so a client that stops reading cannot hold a tunnel's flow-control window or a file
/// descriptor.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one client address (an IPv6 /64) may hold open on one listener. Generous enough
/// for many users behind one NAT, small enough that one host cannot take the edge's file
/// descriptors.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Connections the public listener holds at most. The edge raises its file-descriptor limit at
/// start and keeps this below it, with room left for the connector and admin listeners.
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Connections the admin listener holds at most: its own budget, so a public flood never stops
/// the admin API from answering. Lowered to a sixteenth of the file-descriptor limit.
pub const ADMIN_MAX_CONNECTIONS: usize = 1_024;
/// Connections the connector listener holds at most: tunnels and control calls (about three per
/// connector). Lowered to an eighth of the file-descriptor limit.
pub const CONNECTOR_MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept for the store, logs and outbound calls (issuers, SIEM), beside the
/// listeners. Lowered to a sixteenth of the file-descriptor limit.
pub const OTHER_FDS: usize = 1_024;
/// Connections the plain-HTTP redirect listener (`--http-listen`) holds at most: each answers
/// one request and closes.
pub const HTTP_MAX_CONNECTIONS: usize = 1_024;
/// TLS handshakes one client address may start per second (with a burst of five times as many):
/// a handshake costs the edge a key exchange and a signature.
pub const DEFAULT_HANDSHAKES_PER_IP: u32 = 100;
/// Requests one client address may send per second on the public listener, with a burst of twice
/// as many; 0 turns the limit off. Entra application proxy throttles at 500 per app.
pub const DEFAULT_REQUESTS_PER_IP: u32 = 500;
/// Requests one client address may have in flight through tunnels at once (each held until its
/// response ends; a WebSocket for as long as it is open). 128 streams of 2 MiB fill half of one
/// tunnel's 512 MiB connection window, so one address can never block a tunnel, and keep that
/// address's share of the app's connections bounded. 0 turns the limit off.
pub const DEFAULT_REQUESTS_IN_FLIGHT_PER_IP: usize = 128;
/// Responses whose clients have read nothing for [`crate::body::STALL_GRACE`] that may hold
/// tunnel window at once, across the edge; past it the longest-stalled are reset. Each holds up
/// to a stream window (2 MiB), so 128 hold at most half of one tunnel's 512 MiB connection window
/// however many addresses they come from. 0 leaves only `stall_timeout`.
pub const DEFAULT_STALLED_STREAMS: usize = (postern_proto::limits::TUNNEL_CONNECTION_WINDOW_BYTES
    / postern_proto::limits::TUNNEL_STREAM_WINDOW_BYTES
    / 2) as usize;
/// Requests per second one app accepts from everyone together (burst twice as many); 0, the
/// default, leaves apps unlimited.
pub const DEFAULT_REQUESTS_PER_APP: u32 = 0;

/// What one client, and everyone together, may ask of the edge's listeners.
#[derive(Clone, Debug)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub request_head_timeout: Duration,
    pub idle_timeout: Duration,
    pub stall_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// 0 turns the limit off.
    pub handshakes_per_ip: u32,
    /// 0 turns the limit off.
    pub requests_per_ip: u32,
    /// 0 turns the limit off.
    pub requests_per_app: u32,
    /// 0 turns the limit off.
    pub requests_in_flight_per_ip: usize,
    /// 0 turns the budget off.
    pub stalled_streams: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            request_head_timeout: DEFAULT_REQUEST_HEAD_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            handshakes_per_ip: DEFAULT_HANDSHAKES_PER_IP,
            requests_per_ip: DEFAULT_REQUESTS_PER_IP,
            requests_per_app: DEFAULT_REQUESTS_PER_APP,
            requests_in_flight_per_ip: DEFAULT_REQUESTS_IN_FLIGHT_PER_IP,
            stalled_streams: DEFAULT_STALLED_STREAMS,
        }
    }
}

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Where state, keys, the CA certificate and the admin token live.
    pub data_dir: PathBuf,
    /// The commit this build came from, for `/v1/version` (`unknown` when not known).
    pub commit: &'static str,
    /// Public HTTPS listener for users.
    pub listen: SocketAddr,
    /// Listener connectors dial (mutual TLS 1.3).
    pub connector_listen: SocketAddr,
    /// Admin API listener (HTTPS); keep it on loopback or a management network.
    pub admin_listen: SocketAddr,
    /// Plain HTTP that redirects to HTTPS (port 80), if any.
    pub http_listen: Option<SocketAddr>,
    /// A configured certificate chain and key (PEM) for the public and connector listeners;
    /// `None` to issue certificates from the edge's local CA.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    /// Admin token to accept instead of generating one (from `POSTERN_BOOTSTRAP_TOKEN`).
    pub bootstrap_token: Option<Secret>,
    pub queue_timeout: Duration,
    pub max_queued: usize,
    pub connector_cert_validity: Duration,
    /// Tells connectors to renew their certificates at this age when it is shorter than their
    /// own `--renew-after` (the default leaves the choice to them: 180 days).
    pub connector_renew_after: Option<Duration>,
    pub drain_timeout: Duration,
    /// Host name (lower-case, no port) on which the public listener serves the built-in identity
    /// provider.
    pub idp_host: String,
    pub limits: Limits,
    /// Extra names the local CA's certificates cover besides published apps' hosts and the
    /// identity provider's: the names connectors and admins dial the edge by (lower-case).
    pub tls_names: Vec<String>,
    /// Where the audit and sign-in logs are exported (none by default).
    pub siem: crate::siem::SiemConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP); `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the access log goes (JSON lines); `None` writes none.
    pub access_log: Option<postern_obs::access::Destination>,
    /// Whether the access log shows query strings (they may carry secrets).
    pub access_log_query: bool,
    /// ASN databases (MaxMind format), for the network a sign-in comes from.
    pub asn_db: Vec<PathBuf>,
    /// Location databases (MaxMind format), searched in order; none locates nothing.
    pub geoip_db: Vec<PathBuf>,
    /// Proxies in front of the public listener whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A file of anonymizing networks (Tor exits, VPNs: one address or CIDR per line), reloaded
    /// when it changes; `None` lists none.
    pub anonymizer_list: Option<PathBuf>,
    /// A directory of leaked-password hash ranges (`XXXXX` files of `SUFFIX:COUNT` lines, as
    /// Have I Been Pwned publishes them) the built-in provider checks passwords against.
    pub leaked_passwords: Option<PathBuf>,
}

impl EdgeConfig {
    /// A config with every default, listening on the given addresses.
    pub fn new(
        data_dir: PathBuf,
        listen: SocketAddr,
        connector_listen: SocketAddr,
        admin_listen: SocketAddr,
    ) -> EdgeConfig {
        EdgeConfig {
            data_dir,
            commit: "unknown",
            listen,
            connector_listen,
            admin_listen,
            http_listen: None,
            tls_cert: None,
            bootstrap_token: None,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            max_queued: DEFAULT_MAX_QUEUED,
            connector_cert_validity: DEFAULT_CONNECTOR_CERT_VALIDITY,
            connector_renew_after: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            idp_host: DEFAULT_IDP_HOST.to_owned(),
            limits: Limits::default(),
            tls_names: Vec::new(),
            siem: Default::default(),
            metrics_listen: None,
            access_log: None,
            access_log_query: false,
            geoip_db: Vec::new(),
            asn_db: Vec::new(),
            trusted_proxies: Vec::new(),
            anonymizer_list: None,
            leaked_passwords: None,
        }
    }
}

/// Checks a `--tls-name`: a DNS name (letters, digits, `-`, dot-separated labels of at most 63
/// characters, 253 in all) or an IP address; returns it lower-case.
pub fn parse_tls_name(s: &str) -> Result<String, String> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let name = s.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{s:?} is not a host name or IP address; use e.g. edge.example.com"
        ));
    }
    Ok(name)
}

/// A secret whose `Debug` and `Display` print a mask, so no log line can leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"********\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("********")
    }
}

/// Parses a `--trusted-proxy`: a CIDR, or one address (as its /32 or /128).
pub fn parse_trusted_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is neither a CIDR (10.0.0.0/8) nor an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_names() {
        for (input, expected) in [
            ("Edge.Example.com", Ok("edge.example.com")),
            ("edge.example.com.", Ok("edge.example.com")),
            ("localhost", Ok("localhost")),
            ("10.0.0.5", Ok("10.0.0.5")),
            ("::1", Ok("::1")),
            ("", Err(())),
            ("a..b", Err(())),
            ("-a.example", Err(())),
            ("a_b.example", Err(())),
            ("*.example.com", Err(())),
            ("https://edge.example.com", Err(())),
        ] {
            let got = parse_tls_name(input);
            match expected {
                Ok(name) => assert_eq!(got.as_deref(), Ok(name), "{input:?}"),
                Err(()) => assert!(got.unwrap_err().contains("not a host name"), "{input:?}"),
            }
        }
        assert!(parse_tls_name(&format!("{}.example", "a".repeat(64))).is_err());
    }
}
