//! Hop-by-hop headers, which describe one connection and never cross a proxy. Both the edge (user
//! side) and the connector (app side) strip them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), plus the proxy ones
/// that belong to a hop. `Trailer` is end-to-end: HTTP/1.1 needs it to send trailers at all.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. `Upgrade` goes too:
/// the edge carries upgrades itself. `TE: trailers` is kept, as HTTP/2 allows and gRPC needs.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    // The names `Connection` lists, one hashed remove each: comparing them with every header
    // present would cost a hostile head of thousands of tokens their product.
    for name in listed {
        headers.remove(name);
    }
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(name) || name == header::UPGRADE
    });
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes every header whose name `drop` picks, in one pass over the names. Requests seldom
/// carry any of the names a proxy removes: looking at each name present costs less than hashing
/// each absent one to remove it.
pub fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let doomed: Vec<HeaderName> = headers.keys().filter(|k| drop(k)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}
