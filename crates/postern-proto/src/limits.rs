//! Size limits on message heads that both ends of a tunnel agree on.
//!
//! An HTTP/2 peer that receives a header block larger than it advertised may answer with a
//! connection error (RFC 9113, section 10.5.1), which would end every other stream on the same
//! tunnel. So the edge refuses an oversized user request itself, and the connector an oversized
//! app response, each measuring the head exactly as the peer will, before anything is sent: a
//! tunnel's own limits can never be reached.

use http::HeaderMap;

/// The largest header list (RFC 9113, section 6.5.2: every field's name and value plus 32 bytes,
/// pseudo-header fields included) that either end of a tunnel accepts, in each direction. Both
/// ends advertise it as `SETTINGS_MAX_HEADER_LIST_SIZE`.
pub const TUNNEL_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// The largest request head a user may send to the edge: 32 KiB, as Cloudflare and nginx's
/// `large_client_header_buffers` allow (4 × 8 KiB). Half the tunnel's limit, which leaves room for
/// what the edge adds (identity headers and assertion, forwarding headers, stream metadata).
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;

/// The most header fields a user request or an app response may carry: hyper's HTTP/1.1
/// default, and far beyond what browsers send.
pub const MAX_HEADER_FIELDS: usize = 100;

/// What the edge's HTTP servers read at most before they stop parsing a request head (twice
/// the limits above). Between the limits and this ceiling the edge answers with its own page
/// naming the cause and a request ID; past it, with a bare 431 and a closed connection, having
/// read no more.
pub const REQUEST_HEAD_CEILING_BYTES: usize = 2 * MAX_REQUEST_HEAD_BYTES;
/// The ceiling on header fields, likewise.
pub const HEADER_FIELDS_CEILING: usize = 2 * MAX_HEADER_FIELDS;

/// The largest response head (or trailer block) an app may send back through a tunnel. The
/// connector answers a larger one with an error of its own instead of passing it on.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 48 * 1024;

/// Tunnel HTTP/2 flow-control windows, the same at both ends. A stream's window is large enough
/// to fill a fast link on one stream (2 MiB in flight: 800 Mbit/s at 20 ms) and bounds what a
/// client that stops reading makes the edge hold. The connection's window is 256 streams' worth,
/// so clients who stop reading cannot block the others before the edge's stall watch resets their
/// streams (`--stall-timeout`).
pub const TUNNEL_STREAM_WINDOW_BYTES: u32 = 2 << 20;
/// Requests (WebSockets included, for as long as they are open) one tunnel carries at once: the
/// connector accepts no more streams than this, and the edge sends no more, so a request beyond
/// it waits for room (up to `--queue-timeout`) instead of waiting unseen inside HTTP/2.
pub const TUNNEL_MAX_STREAMS: u32 = 8192;
/// See [`TUNNEL_STREAM_WINDOW_BYTES`].
pub const TUNNEL_CONNECTION_WINDOW_BYTES: u32 = 512 << 20;
/// The largest HTTP/2 frame either end of a tunnel accepts.
pub const TUNNEL_MAX_FRAME_BYTES: u32 = 256 << 10;

/// Per-field overhead HTTP/2 counts in a header list (RFC 9113, section 6.5.2).
const FIELD_OVERHEAD: usize = 32;

/// The size of a header block as HTTP/2 counts it: each field's name and value plus 32 bytes.
/// `pseudo` lists the pseudo-header values (`:method`, `:path`, ...) as `(name, value)` lengths.
pub fn header_list_bytes(headers: &HeaderMap, pseudo: &[(usize, usize)]) -> usize {
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
        .sum();
    fields
        + pseudo
            .iter()
            .map(|(name, value)| name + value + FIELD_OVERHEAD)
            .sum::<usize>()
}

/// The size of a request head as HTTP/1.1 spells it (the request target, then each field's name,
/// `: `, value and line end), whichever version it came in: what [`MAX_REQUEST_HEAD_BYTES`]
/// limits.
pub fn request_head_bytes(target: &str, headers: &HeaderMap) -> usize {
    target.len()
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
}

/// Whether a header block fits the given byte and field-count limits.
pub fn head_fits(headers: &HeaderMap, pseudo: &[(usize, usize)], max_bytes: usize) -> bool {
    headers.len() <= MAX_HEADER_FIELDS && header_list_bytes(headers, pseudo) <= max_bytes
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn counts_as_http2_does() {
        let mut h = HeaderMap::new();
        h.insert("a", HeaderValue::from_static("bc"));
        h.append("a", HeaderValue::from_static("d"));
        // (1 + 2 + 32) + (1 + 1 + 32) + (":path" 5 + 1 + 32)
        assert_eq!(header_list_bytes(&h, &[(5, 1)]), 35 + 34 + 38);
    }

    #[test]
    fn limits_leave_room_for_what_each_hop_adds() {
        // A user head at the limit, plus the edge's own headers (well under 16 KiB with a signed
        // assertion), stays under what the connector accepts.
        // HTTP/2 counts 28 bytes more a field than HTTP/1.1's `: ` and line end.
        const {
            assert!(
                MAX_REQUEST_HEAD_BYTES + 28 * MAX_HEADER_FIELDS + 16 * 1024
                    <= TUNNEL_MAX_HEADER_LIST_BYTES as usize
            )
        };
        const { assert!(MAX_RESPONSE_HEAD_BYTES + 4 * 1024 <= TUNNEL_MAX_HEADER_LIST_BYTES as usize) };
    }

    #[test]
    fn too_many_fields_do_not_fit() {
        let mut h = HeaderMap::new();
        for i in 0..=MAX_HEADER_FIELDS {
            h.insert(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        assert!(!head_fits(&h, &[], usize::MAX));
    }
}
