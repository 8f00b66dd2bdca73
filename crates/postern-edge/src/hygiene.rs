//! Header hygiene between the user and the tunnel: pure functions over header maps.
//!
//! **Invariant:** nothing the user sends can set a header that only the edge may set (reserved
//! `postern-*` tunnel headers, `x-postern-*` identity headers, `X-Request-Id`): every variant of
//! those names is removed before the edge adds its own.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use postern_proto::hop::{remove_where, strip_hop_by_hop};
use postern_proto::tunnel::is_edge_only_header;

/// Other forwarding headers a client could use to lie to an app about its address, scheme or
/// host; the edge sets `X-Forwarded-*` itself and drops these.
const SPOOFABLE: [HeaderName; 6] = [
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-client-ip"),
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether only the edge may set a header of this name, in any spelling.
fn is_edge_only(name: &HeaderName) -> bool {
    is_edge_only_header(name.as_str()) || is_request_id_variant(name.as_str())
}

fn is_request_id_variant(name: &str) -> bool {
    name.len() == "x-request-id".len()
        && name
            .bytes()
            .zip("x-request-id".bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// The most `X-Forwarded-For` entries read from the right when looking for the client.
pub const MAX_FORWARDED_HOPS: usize = 16;

/// The client's address: the peer's, unless the peer is a trusted proxy (`--trusted-proxy`);
/// then the rightmost `X-Forwarded-For` address that is not a trusted proxy. Never a value an
/// untrusted peer chose: an entry that does not parse, or more than [`MAX_FORWARDED_HOPS`] of
/// trusted ones, stops the walk at the last trusted hop.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    let mut client = peer.to_canonical();
    if trusted.is_empty() || !is_trusted(&client) {
        return client;
    }
    // Every X-Forwarded-For line, as one list, read from the right.
    let lines: Vec<&[u8]> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let entries = lines
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(|b| *b == b','))
        .take(MAX_FORWARDED_HOPS);
    for entry in entries {
        let Some(ip) = std::str::from_utf8(entry).ok().and_then(parse_forwarded_ip) else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

/// What the edge knows about the user's request that the app should learn.
pub struct Forwarded<'a> {
    /// The client's address (see [`client_ip`]).
    pub client_ip: IpAddr,
    /// The address of the connection's other end, which `X-Forwarded-For` gets appended: the
    /// client itself, or the trusted proxy in front of the edge.
    pub peer_ip: IpAddr,
    pub external_host: &'a str,
    pub request_id: &'a str,
}

/// Prepares a user's request headers for the tunnel: hop-by-hop and edge-only headers removed,
/// `Host` dropped (the HTTP/2 `:authority` carries it), `X-Forwarded-*` and `X-Request-Id` set.
pub fn prepare_request(headers: &mut HeaderMap, fwd: &Forwarded<'_>) {
    // Room for what the edge adds (forwarding, request ID, tunnel metadata, identity), so the
    // map grows once rather than several times on the way.
    headers.reserve(12);
    strip_hop_by_hop(headers);
    remove_where(headers, |name| {
        is_edge_only(name) || SPOOFABLE.contains(name) || name == header::HOST
    });
    fold_cookies(headers);

    let ip = fwd.peer_ip.to_canonical().to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        // Several X-Forwarded-For lines are folded into one, then ours is appended.
        Some(_) => {
            let prior: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            format!("{}, {ip}", prior.join(", "))
        }
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    if let Ok(v) = HeaderValue::from_str(fwd.external_host) {
        headers.insert(X_FORWARDED_HOST, v);
    }
    if let Ok(mut v) = HeaderValue::from_str(fwd.request_id) {
        // Unique to this request: kept out of the tunnel's HPACK table (see HPACK_TABLE_BYTES).
        v.set_sensitive(true);
        headers.insert(X_REQUEST_ID, v);
    }
}

/// Joins cookies an HTTP/2 client sent as separate fields into one `Cookie` header, as RFC 9113
/// (8.2.3) asks of anything that passes them on: an HTTP/1.1 app expects one.
fn fold_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

/// Cleans the trailers of a user's request body: a trailer may not carry what the header block
/// may not (edge-only names, forwarding headers, hop-by-hop fields).
pub fn clean_request_trailers(trailers: &mut HeaderMap) {
    strip_hop_by_hop(trailers);
    let forwarding = [
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        header::HOST,
    ];
    remove_where(trailers, |name| {
        is_edge_only(name) || SPOOFABLE.contains(name) || forwarding.contains(name)
    });
}

/// Prepares the app's response headers for the user: hop-by-hop and reserved headers removed.
pub fn prepare_response(headers: &mut HeaderMap, request_id: &str) {
    strip_hop_by_hop(headers);
    postern_proto::StreamMeta::strip(headers);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn check(input: &[(&str, &str)], expected: &[(&str, &str)]) {
        let mut h = headers(input);
        prepare_request(
            &mut h,
            &Forwarded {
                client_ip: "192.0.2.7".parse().unwrap(),
                peer_ip: "192.0.2.7".parse().unwrap(),
                external_host: "app.example",
                request_id: "rid",
            },
        );
        let mut got: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        got.sort();
        let base = [
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "rid"),
        ];
        let mut want: Vec<(String, String)> = expected
            .iter()
            .chain(base.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !want.iter().any(|(k, _)| k == "x-forwarded-for") {
            want.push(("x-forwarded-for".into(), "192.0.2.7".into()));
        }
        want.sort();
        assert_eq!(got, want, "input {input:?}");
    }

    #[test]
    fn request_hygiene() {
        check(&[("accept", "*/*")], &[("accept", "*/*")]);
        check(&[("host", "app.example")], &[]);
        check(
            &[("connection", "keep-alive, x-secret"), ("x-secret", "1")],
            &[],
        );
        check(
            &[("keep-alive", "timeout=5"), ("proxy-authorization", "x")],
            &[],
        );
        check(&[("upgrade", "h2c"), ("transfer-encoding", "chunked")], &[]);
        check(&[("te", "trailers")], &[("te", "trailers")]);
        check(&[("te", "gzip")], &[]);
        check(
            &[("x-postern-user", "admin"), ("X_Postern_User", "admin")],
            &[],
        );
        check(
            &[("postern-app", "1"), ("postern_config_version", "1")],
            &[],
        );
        check(
            &[("x-request-id", "forged"), ("x_request_id", "forged")],
            &[],
        );
        check(
            &[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-for", "10.0.0.2"),
            ],
            &[("x-forwarded-for", "10.0.0.1, 10.0.0.2, 192.0.2.7")],
        );
        check(
            &[("x-forwarded-host", "evil"), ("x-forwarded-proto", "http")],
            &[],
        );
        check(&[("cookie", "a=b")], &[("cookie", "a=b")]);
        check(
            &[
                ("forwarded", "for=10.1.2.3;host=admin.internal"),
                ("x-real-ip", "10.1.2.3"),
            ],
            &[],
        );
        check(
            &[("x-forwarded-port", "80"), ("x-forwarded-prefix", "/admin")],
            &[],
        );
    }

    #[test]
    fn trailers_carry_nothing_the_headers_may_not() {
        let mut t = headers(&[
            ("x-postern-user", "admin"),
            ("X_Request_Id", "forged"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("postern-app", "1"),
            ("x-checksum", "ok"),
        ]);
        clean_request_trailers(&mut t);
        assert_eq!(t.len(), 1);
        assert_eq!(t["x-checksum"], "ok");
    }

    #[test]
    fn response_hygiene() {
        let mut h = headers(&[
            ("connection", "close"),
            ("postern-error", "x"),
            ("content-type", "text/plain"),
            ("transfer-encoding", "chunked"),
        ]);
        prepare_response(&mut h, "rid");
        assert_eq!(h.len(), 2);
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["x-request-id"], "rid");
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_added() {
        let trusted: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let with = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(X_FORWARDED_FOR, HeaderValue::from_str(l).unwrap());
            }
            h
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("10.0.0.5");
        let client = |peer: IpAddr, lines: &[&str]| client_ip(peer, &with(lines), &trusted);
        // An untrusted peer is the client, whatever it says.
        assert_eq!(
            client(ip("203.0.113.9"), &["198.51.100.1"]),
            ip("203.0.113.9")
        );
        // No trusted proxies configured: the peer, always.
        assert_eq!(client_ip(proxy, &with(&["198.51.100.1"]), &[]), proxy);
        // Behind trusted proxies: the rightmost untrusted entry; a client's own forged entries
        // to its left are not believed.
        assert_eq!(
            client(proxy, &["6.6.6.6, 198.51.100.1, 10.0.0.2"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client(proxy, &["6.6.6.6", "198.51.100.1", "10.1.1.1"]),
            ip("198.51.100.1")
        );
        // Ports and brackets, IPv4-mapped IPv6.
        assert_eq!(client(proxy, &["198.51.100.1:4711"]), ip("198.51.100.1"));
        assert_eq!(client(proxy, &["[2001:db8::7]:443"]), ip("2001:db8::7"));
        assert_eq!(
            client(ip("::ffff:10.0.0.5"), &["198.51.100.1"]),
            ip("198.51.100.1")
        );
        // Garbage stops the walk at the last trusted hop; so does a missing header.
        assert_eq!(client(proxy, &["198.51.100.1, junk"]), proxy);
        assert_eq!(client(proxy, &["198.51.100.1, 10.0.0.3, "]), proxy);
        assert_eq!(client(proxy, &[]), proxy);
        // All trusted: the leftmost read. Too many hops: the last one read.
        assert_eq!(client(proxy, &["10.0.0.9"]), ip("10.0.0.9"));
        let long = vec!["10.0.0.1"; 40].join(",");
        assert_eq!(
            client(proxy, &[&format!("198.51.100.1,{long}")]),
            ip("10.0.0.1")
        );
    }
}
