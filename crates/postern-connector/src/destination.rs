//! The connector's own destination policy: which addresses it connects to for an app.
//!
//! The edge names each app's internal URL. The connector does not take that on trust: a wrong or
//! compromised edge (or an admin's mistake) must not turn it into a way into the machine's cloud
//! metadata service. Without `--allow-destination`, link-local addresses (169.254.0.0/16,
//! fe80::/10) and the cloud metadata addresses are refused and everything else is allowed
//! (loopback and private ranges included: the quickstart's demo app is on loopback). With
//! `--allow-destination CIDR|HOST` rules, only what a rule matches is allowed, and link-local and
//! metadata addresses only when a CIDR rule names them (a network inside their range, or the
//! address itself): a broad rule such as `0.0.0.0/0` or a host name that resolves there does not.
//!
//! **Invariant:** the policy judges the *resolved* address, right before connecting: the
//! resolver's addresses are filtered and the connection is made only to those kept, so a name
//! that resolves to a refused address, or rebinds to one between two lookups, never gets through.
//! An IP literal never reaches the resolver and is judged by [`Guarded`] instead.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Cloud metadata services, each reached at a fixed address from inside a VM: AWS, GCP, Azure,
/// OpenStack and most others (169.254.169.254), AWS over IPv6 (fd00:ec2::254), Alibaba Cloud
/// (100.100.100.200) and Azure's platform endpoint (168.63.129.16). Their answers include the
/// machine's cloud credentials.
pub const METADATA_ADDRESSES: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
];

/// Link-local networks: never an app's home, and where metadata services and other
/// machine-local services live.
const LINK_LOCAL: [Net; 2] = [
    Net {
        addr: IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)),
        prefix: 16,
    },
    Net {
        addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        prefix: 10,
    },
];

/// A network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// True when every address of `self` is inside `outer`.
    fn within(&self, outer: &Net) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.addr)
    }
}

/// One `--allow-destination` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// An address or network (`10.0.0.5`, `10.0.0.0/8`, `fd00::/8`).
    Net(Net),
    /// A host name, as it appears in internal URLs (`intranet.example`).
    Host(String),
    /// Every name under a domain (`*.corp.example`; not `corp.example` itself).
    Subdomains(String),
}

/// Why a `--allow-destination` value cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a destination: {reason}; use an address, a network (10.0.0.0/8, fd00::/8), a host name or *.domain")]
pub struct BadRule {
    value: String,
    reason: &'static str,
}

impl FromStr for Rule {
    type Err = BadRule;

    fn from_str(s: &str) -> Result<Rule, BadRule> {
        let bad = |reason| BadRule {
            value: s.to_owned(),
            reason,
        };
        let trimmed = s.trim();
        if let Some((addr, prefix)) = trimmed.split_once('/') {
            let addr =
                parse_ip(addr).ok_or_else(|| bad("the part before '/' is not an address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("the prefix length is out of range"))?;
            return Ok(Rule::Net(Net { addr, prefix }));
        }
        if let Some(addr) = parse_ip(trimmed) {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Rule::Net(Net { addr, prefix }));
        }
        let host = trimmed.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, host),
        };
        let valid = !name.is_empty()
            && name.len() <= postern_proto::text::MAX_HOSTNAME_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && !name.starts_with('.')
            && !name.contains("..");
        if !valid {
            return Err(bad("host names are letters, digits, '-', '_' and '.'"));
        }
        Ok(if wildcard {
            Rule::Subdomains(name)
        } else {
            Rule::Host(name)
        })
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
}

/// Why the policy refused an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A cloud metadata service's address.
    Metadata,
    /// A link-local address.
    LinkLocal,
    /// Not matched by any `--allow-destination` rule.
    NotAllowed,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Metadata => "cloud metadata address",
            Refused::LinkLocal => "link-local address",
            Refused::NotAllowed => "not in --allow-destination",
        }
    }
}

/// The policy: the default (no rules) or an allow-list.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    pub fn is_default(&self) -> bool {
        self.rules.is_empty()
    }

    /// The policy in a few words, for the connector's start-up log line.
    pub fn describe(&self) -> String {
        if self.rules.is_empty() {
            return "all but link-local and cloud metadata addresses".to_owned();
        }
        self.rules
            .iter()
            .map(|r| match r {
                Rule::Net(net) => format!("{}/{}", net.addr, net.prefix),
                Rule::Host(h) => h.clone(),
                Rule::Subdomains(d) => format!("*.{d}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the connector may connect to `ip`, reached through the name `host` (`None` for an
    /// IP literal).
    pub fn check(&self, host: Option<&str>, ip: IpAddr) -> Result<(), Refused> {
        let ip = canonical(ip);
        let sensitive = sensitive(ip);
        if self.rules.is_empty() {
            return sensitive.map_or(Ok(()), |(why, _)| Err(why));
        }
        let host = host.map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        for rule in &self.rules {
            let allowed = match (rule, &sensitive) {
                // A sensitive address needs a rule that names it: a network inside its range.
                (Rule::Net(net), Some((_, range))) => net.contains(ip) && net.within(range),
                (Rule::Net(net), None) => net.contains(ip),
                (_, Some(_)) => false,
                (Rule::Host(name), None) => host.as_deref() == Some(name.as_str()),
                (Rule::Subdomains(domain), None) => host.as_deref().is_some_and(|h| {
                    h.strip_suffix(domain.as_str())
                        .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
                }),
            };
            if allowed {
                return Ok(());
            }
        }
        Err(sensitive.map_or(Refused::NotAllowed, |(why, _)| why))
    }

    /// Splits resolved addresses into those the connector may connect to and those refused.
    pub fn split(
        &self,
        host: Option<&str>,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> (Vec<IpAddr>, Vec<(IpAddr, Refused)>) {
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for ip in addrs {
            match self.check(host, ip) {
                Ok(()) => kept.push(ip),
                Err(why) => refused.push((ip, why)),
            }
        }
        (kept, refused)
    }
}

/// IPv4 addresses written as IPv6 (mapped `::ffff:a.b.c.d`, or NAT64 `64:ff9b::a.b.c.d`) reach the
/// IPv4 address: judge that one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., a, b, c, d] = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
        v4 => v4,
    }
}

/// The reason an address is refused by default, with the range a rule must lie in to allow it.
fn sensitive(ip: IpAddr) -> Option<(Refused, Net)> {
    if METADATA_ADDRESSES.contains(&ip) {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        return Some((Refused::Metadata, Net { addr: ip, prefix }));
    }
    LINK_LOCAL
        .iter()
        .find(|net| net.contains(ip))
        .map(|net| (Refused::LinkLocal, *net))
}

/// Every address of a destination was refused by the policy.
#[derive(Debug, thiserror::Error)]
#[error("the destination policy refused {host}: {}", describe(.refused))]
pub struct DestinationRefused {
    pub host: String,
    pub refused: Vec<(IpAddr, Refused)>,
}

fn describe(refused: &[(IpAddr, Refused)]) -> String {
    refused
        .iter()
        .map(|(ip, why)| format!("{ip} ({})", why.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when `err`, or anything in its chain of sources, is a [`DestinationRefused`].
pub fn is_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<DestinationRefused>() {
            return true;
        }
        next = e.source();
    }
    false
}

type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
/// Resolves a host name to its addresses (the system's resolver; tests give their own).
pub type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;

/// The system resolver (`getaddrinfo` on a blocking thread).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// The backend client's resolver: looks a name up and keeps only the addresses the policy
/// allows; when it allows none, fails with [`DestinationRefused`].
#[derive(Clone)]
pub struct Resolver {
    policy: Arc<Policy>,
    lookup: Lookup,
}

impl Resolver {
    pub fn new(policy: Arc<Policy>, lookup: Lookup) -> Resolver {
        Resolver { policy, lookup }
    }

    /// The addresses of `host` the connector may connect to.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, BoxError> {
        let found = (self.lookup)(host.to_owned()).await?;
        let (kept, refused) = self.policy.split(Some(host), found);
        for (ip, why) in &refused {
            // The operator's record of what the edge asked for: the name and where it led.
            tracing::warn!(host = %postern_proto::text::Escaped(host), address = %ip, reason = why.as_str(), "destination refused by the connector's policy");
        }
        if kept.is_empty() && !refused.is_empty() {
            return Err(Box::new(DestinationRefused {
                host: host.to_owned(),
                refused,
            }));
        }
        Ok(kept)
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let kept = this.resolve(name.as_str()).await?;
            // Port 0: the HTTP connector puts the URL's port in.
            Ok(kept
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// The backend client's TCP connector: IP literals (which the HTTP connector never resolves) are
/// judged here; names go to the [`Resolver`].
#[derive(Clone)]
pub struct Guarded {
    inner: HttpConnector<Resolver>,
    policy: Arc<Policy>,
}

impl Guarded {
    pub fn new(inner: HttpConnector<Resolver>, policy: Arc<Policy>) -> Guarded {
        Guarded { inner, policy }
    }
}

impl tower_service::Service<Uri> for Guarded {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(ip) = uri.host().and_then(parse_ip) {
            if let Err(why) = self.policy.check(None, ip) {
                tracing::warn!(address = %ip, reason = why.as_str(), "destination refused by the connector's policy");
                let refused = DestinationRefused {
                    host: ip.to_string(),
                    refused: vec![(ip, why)],
                };
                return Box::pin(async move { Err(Box::new(refused) as BoxError) });
            }
        }
        let connecting = self.inner.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(values: &[&str]) -> Policy {
        Policy::new(values.iter().map(|v| v.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_refuses_link_local_and_metadata_only() {
        let p = Policy::default();
        for (addr, expected) in [
            ("127.0.0.1", Ok(())),
            ("::1", Ok(())),
            ("10.1.2.3", Ok(())),
            ("192.168.0.10", Ok(())),
            ("172.16.0.1", Ok(())),
            ("fd12::1", Ok(())),
            ("93.184.216.34", Ok(())),
            ("169.254.169.254", Err(Refused::Metadata)),
            ("fd00:ec2::254", Err(Refused::Metadata)),
            ("100.100.100.200", Err(Refused::Metadata)),
            ("168.63.129.16", Err(Refused::Metadata)),
            ("169.254.170.2", Err(Refused::LinkLocal)),
            ("169.254.0.1", Err(Refused::LinkLocal)),
            ("fe80::1", Err(Refused::LinkLocal)),
            ("febf::1", Err(Refused::LinkLocal)),
            ("fec0::1", Ok(())),
            ("100.100.100.201", Ok(())),
            // IPv4 written as IPv6 reaches the IPv4 address.
            ("::ffff:169.254.169.254", Err(Refused::Metadata)),
            ("::ffff:169.254.1.1", Err(Refused::LinkLocal)),
            ("64:ff9b::a9fe:a9fe", Err(Refused::Metadata)),
            ("::ffff:127.0.0.1", Ok(())),
        ] {
            assert_eq!(p.check(None, ip(addr)), expected, "{addr}");
            // Reaching it through a name changes nothing.
            assert_eq!(p.check(Some("app.internal"), ip(addr)), expected, "{addr}");
        }
    }

    #[test]
    fn an_allow_list_allows_only_what_it_names() {
        let p = rules(&[
            "10.0.0.0/8",
            "192.168.1.5",
            "fd00::/8",
            "intranet.example",
            "*.corp.example",
        ]);
        for (host, addr, expected) in [
            (None, "10.9.8.7", Ok(())),
            (None, "11.0.0.1", Err(Refused::NotAllowed)),
            (None, "192.168.1.5", Ok(())),
            (None, "192.168.1.6", Err(Refused::NotAllowed)),
            (None, "127.0.0.1", Err(Refused::NotAllowed)),
            (None, "fd12::1", Ok(())),
            (None, "::1", Err(Refused::NotAllowed)),
            (Some("intranet.example"), "127.0.0.1", Ok(())),
            (Some("INTRANET.example."), "8.8.8.8", Ok(())),
            (Some("other.example"), "127.0.0.1", Err(Refused::NotAllowed)),
            (Some("wiki.corp.example"), "172.20.0.1", Ok(())),
            (Some("a.b.corp.example"), "172.20.0.1", Ok(())),
            (Some("corp.example"), "172.20.0.1", Err(Refused::NotAllowed)),
            (
                Some("evilcorp.example"),
                "172.20.0.1",
                Err(Refused::NotAllowed),
            ),
            // A name that is allowed but resolves to a sensitive address is still refused.
            (
                Some("intranet.example"),
                "169.254.169.254",
                Err(Refused::Metadata),
            ),
            (
                Some("wiki.corp.example"),
                "fe80::1",
                Err(Refused::LinkLocal),
            ),
        ] {
            assert_eq!(p.check(host, ip(addr)), expected, "{host:?} {addr}");
        }
    }

    #[test]
    fn sensitive_addresses_need_a_rule_that_names_them() {
        for (rule, addr, expected) in [
            ("0.0.0.0/0", "169.254.169.254", Err(Refused::Metadata)),
            ("0.0.0.0/0", "169.254.3.4", Err(Refused::LinkLocal)),
            ("0.0.0.0/0", "8.8.8.8", Ok(())),
            ("::/0", "fe80::1", Err(Refused::LinkLocal)),
            ("169.0.0.0/8", "169.254.3.4", Err(Refused::LinkLocal)),
            ("169.254.0.0/16", "169.254.3.4", Ok(())),
            ("169.254.3.0/24", "169.254.3.4", Ok(())),
            ("169.254.0.0/16", "169.254.169.254", Err(Refused::Metadata)),
            ("169.254.169.254", "169.254.169.254", Ok(())),
            ("100.64.0.0/10", "100.100.100.200", Err(Refused::Metadata)),
            ("100.100.100.200/32", "100.100.100.200", Ok(())),
            ("fd00:ec2::254", "fd00:ec2::254", Ok(())),
            ("fd00::/8", "fd00:ec2::254", Err(Refused::Metadata)),
        ] {
            assert_eq!(
                rules(&[rule]).check(None, ip(addr)),
                expected,
                "{rule} {addr}"
            );
        }
    }

    #[test]
    fn rules_parse_or_name_the_fix() {
        for (value, expected) in [
            (
                "10.0.0.0/8",
                Some(Rule::Net(Net {
                    addr: ip("10.0.0.0"),
                    prefix: 8,
                })),
            ),
            (
                "10.0.0.5",
                Some(Rule::Net(Net {
                    addr: ip("10.0.0.5"),
                    prefix: 32,
                })),
            ),
            (
                "[::1]",
                Some(Rule::Net(Net {
                    addr: ip("::1"),
                    prefix: 128,
                })),
            ),
            (
                "fd00::/8",
                Some(Rule::Net(Net {
                    addr: ip("fd00::"),
                    prefix: 8,
                })),
            ),
            (
                "Intranet.Example.",
                Some(Rule::Host("intranet.example".into())),
            ),
            (
                "*.corp.example",
                Some(Rule::Subdomains("corp.example".into())),
            ),
            ("10.0.0.0/33", None),
            ("::/129", None),
            ("10.0.0.0/x", None),
            ("nonsense/8", None),
            ("", None),
            ("*.", None),
            ("a..b", None),
            ("host name", None),
            ("a/b/c", None),
            ("evil\n.example", None),
            ("http://x", None),
        ] {
            let got = value.parse::<Rule>();
            match expected {
                Some(rule) => assert_eq!(got, Ok(rule), "{value:?}"),
                None => {
                    let err = got.expect_err(value).to_string();
                    assert!(err.contains("is not a destination"), "{err}");
                }
            }
        }
    }

    fn fake_lookup(answer: &'static [&'static str]) -> Lookup {
        Arc::new(move |_host: String| {
            Box::pin(async move { Ok(answer.iter().map(|a| a.parse().unwrap()).collect()) })
        })
    }

    #[tokio::test]
    async fn resolved_addresses_are_filtered_before_connecting() {
        let default = Arc::new(Policy::default());
        // A name that resolves to the metadata service is refused outright.
        let r = Resolver::new(default.clone(), fake_lookup(&["169.254.169.254"]));
        let err = r.resolve("metadata.google.internal").await.unwrap_err();
        assert!(is_refusal(err.as_ref()), "{err}");
        assert!(err
            .to_string()
            .contains("169.254.169.254 (cloud metadata address)"));
        // A mixed answer keeps only the allowed addresses: the refused one is never dialled.
        let r = Resolver::new(
            default,
            fake_lookup(&["169.254.169.254", "10.0.0.7", "fe80::2"]),
        );
        assert_eq!(
            r.resolve("rebinding.example").await.unwrap(),
            vec![ip("10.0.0.7")]
        );
        // An allow-list judges each answer too.
        let listed = Arc::new(rules(&["10.0.0.0/8"]));
        let r = Resolver::new(listed, fake_lookup(&["127.0.0.1", "10.1.1.1"]));
        assert_eq!(r.resolve("x.example").await.unwrap(), vec![ip("10.1.1.1")]);
    }

    #[tokio::test]
    async fn ip_literals_are_judged_without_a_lookup() {
        let policy = Arc::new(Policy::default());
        let resolver = Resolver::new(policy.clone(), fake_lookup(&[]));
        let mut guarded = Guarded::new(HttpConnector::new_with_resolver(resolver), policy);
        for uri in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "https://[::ffff:169.254.169.254]:8443/",
            "http://169.254.10.10:8080/",
        ] {
            let err = tower_service::Service::call(&mut guarded, uri.parse().unwrap())
                .await
                .expect_err(uri);
            assert!(is_refusal(err.as_ref()), "{uri}: {err}");
        }
    }
}
