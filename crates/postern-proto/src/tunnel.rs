//! What travels on a tunnel stream besides the user's own request.
//!
//! The edge is the HTTP/2 client and the connector the HTTP/2 server on a TLS 1.3 connection that
//! the connector dialled. Each user request is one stream. The edge adds a few reserved
//! `postern-*` headers (the app, the config version it routed with, the request ID); the connector
//! consumes them and never forwards them. Client-sent headers with these names are stripped at the
//! edge before the edge adds its own, so a user can never address an app or forge a request ID.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Version of the tunnel protocol. It is carried in the ALPN identifier, so an edge and a
/// connector that do not speak the same version fail at the TLS handshake with a clear error
/// instead of misreading each other's streams.
pub const PROTOCOL_VERSION: u32 = 1;

/// ALPN identifier of the tunnel protocol (reversed-role HTTP/2 over mutual TLS).
pub const TUNNEL_ALPN: &[u8] = b"postern-tunnel/1";

/// The HPACK dynamic table each end of a tunnel offers the other (RFC 7541; HTTP/2's default is
/// 4 KiB). Every request of a signed-in user carries the same identity headers, half a kilobyte
/// of them with the assertion: a table that holds many users' headers sends each as a one- or
/// two-byte index instead of a literal to encode and decode again. Values unique to one request
/// (its ID) are marked never-indexed, so they do not push the shared ones out.
pub const HPACK_TABLE_BYTES: u32 = 64 * 1024;

/// The published app a stream is for, by its ID.
pub const HEADER_APP: HeaderName = HeaderName::from_static("postern-app");
/// The config version the edge routed this stream with.
pub const HEADER_CONFIG_VERSION: HeaderName = HeaderName::from_static("postern-config-version");
/// The request ID the edge gave the user's request.
pub const HEADER_REQUEST_ID: HeaderName = HeaderName::from_static("postern-request-id");
/// Set by the connector on a response it produced itself, naming why it refused or failed.
pub const HEADER_ERROR: HeaderName = HeaderName::from_static("postern-error");
/// Carries the `Sec-WebSocket-Key` of an upgrade: RFC 8441 streams have none, but the connector
/// performs a real HTTP/1.1 upgrade to the app and needs the user's key for it.
pub const HEADER_WS_KEY: HeaderName = HeaderName::from_static("postern-ws-key");
/// Carries the app's `Sec-WebSocket-Accept` back to the edge, which answers the user's upgrade
/// with it.
pub const HEADER_WS_ACCEPT: HeaderName = HeaderName::from_static("postern-ws-accept");

/// Prefix of every reserved tunnel header.
const RESERVED_PREFIX: &str = "postern-";
/// Prefix of the identity headers that only the edge may set for the app.
const IDENTITY_PREFIX: &str = "x-postern-";

/// True for a header name that only the edge may set: reserved tunnel headers and identity headers,
/// in any case and with `_` in place of `-` (some servers treat the two alike).
pub fn is_edge_only_header(name: &str) -> bool {
    let matches = |prefix: &str| {
        name.len() >= prefix.len()
            && name
                .bytes()
                .zip(prefix.bytes())
                .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    };
    matches(RESERVED_PREFIX) || matches(IDENTITY_PREFIX)
}

/// True for a reserved tunnel header (`postern-*`), which the connector consumes and never forwards.
pub fn is_reserved_header(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

/// The reserved metadata of one tunnel stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMeta {
    pub app: crate::AppId,
    pub config_version: u64,
    pub request_id: String,
}

/// Why the reserved metadata of a stream could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    #[error("the stream has no {0} header")]
    Missing(&'static str),
    #[error("the {0} header is not valid")]
    Invalid(&'static str),
}

impl StreamMeta {
    /// Adds the metadata to a request's headers, replacing any earlier values.
    pub fn encode(&self, headers: &mut HeaderMap) {
        headers.insert(HEADER_APP, HeaderValue::from(self.app.0));
        headers.insert(
            HEADER_CONFIG_VERSION,
            HeaderValue::from(self.config_version),
        );
        if let Ok(mut v) = HeaderValue::from_str(&self.request_id) {
            // Unique to this request: never worth a place in the tunnel's HPACK table.
            v.set_sensitive(true);
            headers.insert(HEADER_REQUEST_ID, v);
        }
    }

    /// Reads the metadata from a stream's headers. Exactly one value of each is accepted.
    pub fn decode(headers: &HeaderMap) -> Result<StreamMeta, MetaError> {
        let app = single(headers, &HEADER_APP, "postern-app")?;
        let app = parse_u64(app).ok_or(MetaError::Invalid("postern-app"))?;
        let version = single(headers, &HEADER_CONFIG_VERSION, "postern-config-version")?;
        let version = parse_u64(version).ok_or(MetaError::Invalid("postern-config-version"))?;
        let id = single(headers, &HEADER_REQUEST_ID, "postern-request-id")?;
        let id = id
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .ok_or(MetaError::Invalid("postern-request-id"))?;
        Ok(StreamMeta {
            app: crate::AppId(app),
            config_version: version,
            request_id: id.to_owned(),
        })
    }

    /// Removes every reserved header from a header map.
    pub fn strip(headers: &mut HeaderMap) {
        crate::hop::remove_where(headers, |k| is_reserved_header(k.as_str()));
    }
}

fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<&'a HeaderValue, MetaError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(MetaError::Missing(label))?;
    if values.next().is_some() {
        return Err(MetaError::Invalid(label));
    }
    Ok(first)
}

fn parse_u64(v: &HeaderValue) -> Option<u64> {
    let s = v.to_str().ok()?;
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Why the connector answered a stream itself instead of with the app's response. The connector
/// puts it in [`HEADER_ERROR`]; the edge turns it into the user's error page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelRefusal {
    /// The stream named an app that is not in the connector's config.
    UnknownApp,
    /// The stream's reserved metadata was missing or malformed.
    BadMetadata,
    /// The app's internal URL could not be reached (refused, DNS, TLS).
    BackendUnreachable,
    /// The app did not answer within its timeout.
    BackendTimeout,
    /// The path would leave the app's base path (dot segments).
    PathOutsideApp,
    /// The app answered a WebSocket upgrade without switching protocols.
    UpgradeRefused,
    /// The app's response head or trailers were larger than a tunnel carries
    /// ([`crate::limits::MAX_RESPONSE_HEAD_BYTES`]).
    ResponseHeadTooLarge,
    /// The connector's destination policy refused every address of the app's internal URL
    /// (link-local and cloud metadata addresses, or outside its `--allow-destination`).
    DestinationRefused,
}

impl TunnelRefusal {
    pub const ALL: [TunnelRefusal; 8] = [
        TunnelRefusal::UnknownApp,
        TunnelRefusal::BadMetadata,
        TunnelRefusal::BackendUnreachable,
        TunnelRefusal::BackendTimeout,
        TunnelRefusal::PathOutsideApp,
        TunnelRefusal::UpgradeRefused,
        TunnelRefusal::ResponseHeadTooLarge,
        TunnelRefusal::DestinationRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TunnelRefusal::UnknownApp => "unknown-app",
            TunnelRefusal::BadMetadata => "bad-metadata",
            TunnelRefusal::BackendUnreachable => "backend-unreachable",
            TunnelRefusal::BackendTimeout => "backend-timeout",
            TunnelRefusal::PathOutsideApp => "path-outside-app",
            TunnelRefusal::UpgradeRefused => "upgrade-refused",
            TunnelRefusal::ResponseHeadTooLarge => "response-head-too-large",
            TunnelRefusal::DestinationRefused => "destination-refused",
        }
    }

    pub fn parse(s: &str) -> Option<TunnelRefusal> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The status the connector answers with.
    pub fn status(self) -> http::StatusCode {
        match self {
            TunnelRefusal::UnknownApp => http::StatusCode::MISDIRECTED_REQUEST,
            TunnelRefusal::BadMetadata => http::StatusCode::BAD_REQUEST,
            TunnelRefusal::BackendUnreachable => http::StatusCode::BAD_GATEWAY,
            TunnelRefusal::BackendTimeout => http::StatusCode::GATEWAY_TIMEOUT,
            TunnelRefusal::PathOutsideApp => http::StatusCode::BAD_REQUEST,
            TunnelRefusal::UpgradeRefused | TunnelRefusal::ResponseHeadTooLarge => {
                http::StatusCode::BAD_GATEWAY
            }
            TunnelRefusal::DestinationRefused => http::StatusCode::FORBIDDEN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_edge_only(name: &str, expected: bool) {
        assert_eq!(is_edge_only_header(name), expected, "{name}");
    }

    #[test]
    fn edge_only_headers() {
        check_edge_only("postern-app", true);
        check_edge_only("Postern-App", true);
        check_edge_only("postern_app", true);
        check_edge_only("X-Postern-User", true);
        check_edge_only("x_postern_user", true);
        check_edge_only("X_POSTERN-JWT-ASSERTION", true);
        check_edge_only("x-postern", false);
        check_edge_only("postern", false);
        check_edge_only("x-forwarded-for", false);
        check_edge_only("xpostern-user", false);
        check_edge_only("", false);
    }

    #[test]
    fn meta_round_trips() {
        let meta = StreamMeta {
            app: crate::AppId(42),
            config_version: 7,
            request_id: "abc123".into(),
        };
        let mut headers = HeaderMap::new();
        meta.encode(&mut headers);
        assert_eq!(StreamMeta::decode(&headers), Ok(meta));
        StreamMeta::strip(&mut headers);
        assert!(headers.is_empty());
    }

    fn check_decode(pairs: &[(&str, &str)], expected: Result<(), MetaError>) {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        assert_eq!(
            StreamMeta::decode(&headers).map(|_| ()),
            expected,
            "{pairs:?}"
        );
    }

    #[test]
    fn meta_rejects_bad_input() {
        let ok = [
            ("postern-app", "1"),
            ("postern-config-version", "2"),
            ("postern-request-id", "r"),
        ];
        check_decode(&ok, Ok(()));
        check_decode(&ok[1..], Err(MetaError::Missing("postern-app")));
        check_decode(
            &[("postern-app", "x"), ok[1], ok[2]],
            Err(MetaError::Invalid("postern-app")),
        );
        check_decode(
            &[("postern-app", "-1"), ok[1], ok[2]],
            Err(MetaError::Invalid("postern-app")),
        );
        check_decode(
            &[("postern-app", "99999999999999999999999"), ok[1], ok[2]],
            Err(MetaError::Invalid("postern-app")),
        );
        check_decode(
            &[ok[0], ok[0], ok[1], ok[2]],
            Err(MetaError::Invalid("postern-app")),
        );
        check_decode(
            &[ok[0], ok[1], ("postern-request-id", "")],
            Err(MetaError::Invalid("postern-request-id")),
        );
    }

    #[test]
    fn refusals_round_trip() {
        for r in TunnelRefusal::ALL {
            assert_eq!(TunnelRefusal::parse(r.as_str()), Some(r));
        }
        assert_eq!(TunnelRefusal::parse("nope"), None);
    }

    /// Randomised inputs: decoding never panics, accepts only well-formed metadata, and what it
    /// accepts encodes back to the same values.
    #[test]
    fn decode_survives_random_headers() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let names = [
            "postern-app",
            "postern-config-version",
            "postern-request-id",
            "postern-other",
            "x-y",
        ];
        let alphabet = b"0123456789abcdefXYZ-_ ,;=\t\"\\\x7f\x80\xff";
        for _ in 0..20_000 {
            let mut headers = HeaderMap::new();
            for _ in 0..rng.gen_range(0..6) {
                let name = names[rng.gen_range(0..names.len())];
                let len = rng.gen_range(0..24);
                let value: Vec<u8> = (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect();
                if let Ok(v) = HeaderValue::from_bytes(&value) {
                    headers.append(HeaderName::from_static(name), v);
                }
            }
            if let Ok(meta) = StreamMeta::decode(&headers) {
                let mut again = HeaderMap::new();
                meta.encode(&mut again);
                assert_eq!(StreamMeta::decode(&again), Ok(meta));
            }
        }
    }
}
