//! Fuzz targets for the tunnel's stream metadata: the reserved `postern-*` headers the connector
//! reads from every stream the edge opens (`postern_proto::tunnel`).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use postern_proto::tunnel::{is_edge_only_header, is_reserved_header, HEADER_ERROR};
use postern_proto::{AppId, StreamMeta, TunnelRefusal};

/// Header names and values random inputs spell header lines from: the reserved headers in their
/// valid, boundary and malformed forms, among others.
const NAMES: &[&str] = &[
    "postern-app",
    "postern-config-version",
    "postern-request-id",
    "postern-error",
    "Postern-App",
    "postern-ws-key",
    "x-postern-user",
    "X_Postern_User",
    "postern_app",
    "xpostern-user",
    "host",
];
const VALUES: &[&str] = &[
    "1",
    "42",
    "0",
    "18446744073709551615",
    "18446744073709551616",
    "00000000000000000001",
    "+1",
    "-1",
    " 1",
    "",
    "abc",
    "9f8c2d4e6a1b3c5d7e9f0a1b2c3d4e5f",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "unknown-app",
    "path-outside-app",
    "x\ty",
];

/// Header lines (`name: value`, one per line): the input itself when it is text with a colon (the
/// corpus), otherwise lines spelled from pairs of input bytes. Lines that are not a valid header
/// are skipped, as hyper would never hand them over.
fn headers_from(input: &[u8]) -> HeaderMap {
    let spelled: Vec<u8>;
    let input = match std::str::from_utf8(input) {
        Ok(text) if text.contains(':') => input,
        _ => {
            spelled = input
                .chunks_exact(2)
                .flat_map(|pair| {
                    let name = NAMES[usize::from(pair[0]) % NAMES.len()];
                    let value = VALUES[usize::from(pair[1]) % VALUES.len()];
                    format!("{name}: {value}\n").into_bytes()
                })
                .collect();
            &spelled
        }
    };
    let mut headers = HeaderMap::new();
    for line in input.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// The format, from its definition: each of the three headers exactly once; the app and the
/// config version 1 to 20 ASCII digits that fit a u64; the request ID 1 to 64 visible ASCII
/// characters.
fn model(headers: &HeaderMap) -> Option<StreamMeta> {
    let one = |name: &str| {
        let mut values = headers.get_all(name).iter();
        let first = values.next()?;
        values.next().is_none().then_some(first.as_bytes())
    };
    let number = |bytes: &[u8]| {
        if bytes.is_empty() || bytes.len() > 20 || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(bytes).ok()?.parse::<u64>().ok()
    };
    let app = number(one("postern-app")?)?;
    let config_version = number(one("postern-config-version")?)?;
    let id = one("postern-request-id")?;
    let visible = |b: &u8| (0x20..0x7f).contains(b) || *b == b'\t';
    if id.is_empty() || id.len() > 64 || !id.iter().all(visible) {
        return None;
    }
    Some(StreamMeta {
        app: AppId(app),
        config_version,
        request_id: String::from_utf8(id.to_vec()).ok()?,
    })
}

/// Which names only the edge may set, from their definition: `postern-*` and `x-postern-*` in any
/// case, with `_` for `-` (some servers treat the two alike).
fn edge_only_model(name: &str) -> bool {
    let folded = name.to_ascii_lowercase().replace('_', "-");
    folded.starts_with("postern-") || folded.starts_with("x-postern-")
}

#[test]
fn fuzz_tunnel_meta_decode() {
    bolero::check!().for_each(|input: &[u8]| {
        // Names as a client sends them, before any normalisation: the hygiene rules see these.
        for line in input.split(|&b| b == b'\n') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            if let Ok(name) = std::str::from_utf8(name) {
                assert_eq!(is_edge_only_header(name), edge_only_model(name), "{name:?}");
                assert_eq!(
                    is_reserved_header(name),
                    name.to_ascii_lowercase().starts_with("postern-"),
                    "{name:?}"
                );
            }
        }
        let mut headers = headers_from(input);
        let decoded = StreamMeta::decode(&headers);
        assert_eq!(
            decoded.as_ref().ok(),
            model(&headers).as_ref(),
            "{headers:?}"
        );
        if let Ok(meta) = decoded {
            let mut again = HeaderMap::new();
            meta.encode(&mut again);
            assert_eq!(StreamMeta::decode(&again), Ok(meta));
        }
        // What the connector answers with: a refusal it names parses back to exactly that name.
        for value in headers.get_all(HEADER_ERROR) {
            if let Some(refusal) = value.to_str().ok().and_then(TunnelRefusal::parse) {
                assert_eq!(refusal.as_str().as_bytes(), value.as_bytes());
            }
        }
        // Every reserved header is also edge-only (a client can never send one to an app).
        for name in headers.keys() {
            if is_reserved_header(name.as_str()) {
                assert!(is_edge_only_header(name.as_str()), "{name}");
            }
        }
        // Compared by name: a header map keeps the order of each name's values, not of names.
        let by_name = |mut list: Vec<(HeaderName, HeaderValue)>| {
            list.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            list
        };
        let kept: Vec<(HeaderName, HeaderValue)> = headers
            .iter()
            .filter(|(name, _)| !is_reserved_header(name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        StreamMeta::strip(&mut headers);
        let left: Vec<(HeaderName, HeaderValue)> = headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        assert_eq!(
            by_name(left),
            by_name(kept),
            "strip removes the reserved headers and nothing else"
        );
    });
}

#[test]
fn fuzz_tunnel_meta_round_trip() {
    bolero::check!().with_type::<(u64, u64, String)>().for_each(
        |(app, config_version, request_id)| {
            let meta = StreamMeta {
                app: AppId(*app),
                config_version: *config_version,
                request_id: request_id.clone(),
            };
            let mut headers = HeaderMap::new();
            meta.encode(&mut headers);
            let valid_id = !request_id.is_empty()
                && request_id.len() <= 64
                && request_id
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) || b == b'\t');
            match StreamMeta::decode(&headers) {
                Ok(decoded) => {
                    assert!(valid_id, "{request_id:?} must not decode");
                    assert_eq!(decoded, meta);
                }
                Err(e) => assert!(!valid_id, "{meta:?} did not round-trip: {e}"),
            }
        },
    );
}
