//! W3C Trace Context (`traceparent`, <https://www.w3.org/TR/trace-context/>): accept a valid
//! incoming one, otherwise start a new trace; every hop gets a new parent ID under the same trace
//! ID, so the trace ID and the request ID follow one request edge → connector → app.
//!
//! Pure: randomness comes in as arguments.

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The header that travels with it; dropped when the incoming `traceparent` is not used.
pub const TRACESTATE: &str = "tracestate";
/// The longest `traceparent` read. Version 00 is exactly 55 characters; a future version may
/// append fields, but nothing a peer sends is read without a bound.
pub const MAX_TRACEPARENT_BYTES: usize = 256;
/// Length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const V00_LEN: usize = 55;

/// A trace context: the trace this request belongs to, the span that sent it, and the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceContext {
    /// Reads an incoming `traceparent`; `None` when absent, too long or invalid per the
    /// specification (bad version `ff`, all-zero IDs, upper-case or non-hex digits, a version-00
    /// header with trailing data).
    pub fn parse(value: &[u8]) -> Option<TraceContext> {
        if value.len() < V00_LEN || value.len() > MAX_TRACEPARENT_BYTES {
            return None;
        }
        if !value.is_ascii() {
            return None;
        }
        let s = std::str::from_utf8(value).ok()?;
        fn hex(part: &str, len: usize) -> Option<&str> {
            (part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then_some(part)
        }
        let version = u8::from_str_radix(hex(&s[0..2], 2)?, 16).ok()?;
        if version == 0xff || &s[2..3] != "-" || &s[35..36] != "-" || &s[52..53] != "-" {
            return None;
        }
        // Version 00 is exactly 55 characters; a later version may add fields after a dash.
        if (version == 0 && s.len() != V00_LEN) || (s.len() > V00_LEN && &s[55..56] != "-") {
            return None;
        }
        let trace_id = u128::from_str_radix(hex(&s[3..35], 32)?, 16).ok()?;
        let parent_id = u64::from_str_radix(hex(&s[36..52], 16)?, 16).ok()?;
        let flags = u8::from_str_radix(hex(&s[53..55], 2)?, 16).ok()?;
        (trace_id != 0 && parent_id != 0).then_some(TraceContext {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The context this hop sends on: the incoming trace with a new parent ID (this hop's span),
    /// or a new trace with `trace_id` when there was no valid one. Zero IDs are replaced, as the
    /// specification forbids them.
    pub fn next_hop(incoming: Option<TraceContext>, trace_id: u128, span_id: u64) -> TraceContext {
        let span_id = span_id.max(1);
        match incoming {
            Some(tc) => TraceContext {
                parent_id: span_id,
                // Only the sampled bit is defined for version 00.
                flags: tc.flags & 0x01,
                ..tc
            },
            None => TraceContext {
                trace_id: trace_id.max(1),
                parent_id: span_id,
                flags: 0,
            },
        }
    }

    /// The trace ID as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id.to_be_bytes())
    }

    /// The version-00 header value.
    pub fn header(&self) -> String {
        let mut out = String::with_capacity(V00_LEN);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id.to_be_bytes());
        out.push('-');
        push_hex(&mut out, &self.parent_id.to_be_bytes());
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }
}

/// Lower-case hex digits of `bytes`, most significant first: a request ID (`hex(&id.to_be_bytes())`
/// is `format!("{id:032x}")`) without the formatting machinery, which costs a thousand
/// instructions per ID on every request.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn check(input: &str, expected: Option<(u128, u64, u8)>) {
        let got = TraceContext::parse(input.as_bytes()).map(|t| (t.trace_id, t.parent_id, t.flags));
        assert_eq!(got, expected, "{input:?}");
    }

    #[test]
    fn parses_per_the_specification() {
        let ok = Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 0x01));
        check(VALID, ok);
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ok.map(|(t, p, _)| (t, p, 0)),
        );
        // A later version may carry more fields after a dash.
        check(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            ok,
        );
        check("", None);
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            None,
        );
        check(&format!("{VALID}-extra"), None);
        check(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            None,
        );
        check(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        );
        check(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            None,
        );
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            None,
        );
        check(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            None,
        );
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            None,
        );
        check(
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        );
        check(
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        );
        check(
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            None,
        );
        check(&format!("01-{}", "a".repeat(MAX_TRACEPARENT_BYTES)), None);
    }

    #[test]
    fn each_hop_keeps_the_trace_and_takes_a_new_parent() {
        let incoming = TraceContext::parse(VALID.as_bytes());
        let next = TraceContext::next_hop(incoming, 7, 9);
        assert_eq!(
            next.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000009-01"
        );
        let fresh = TraceContext::next_hop(None, 0xabc, 0);
        assert_eq!(
            fresh.header(),
            "00-00000000000000000000000000000abc-0000000000000001-00"
        );
        assert_eq!(TraceContext::parse(fresh.header().as_bytes()), Some(fresh));
    }

    #[test]
    fn hex_matches_format() {
        for id in [
            0u128,
            1,
            0xab,
            u128::MAX,
            0x4bf92f3577b34da6a3ce929d0e0e4736,
            1 << 127,
        ] {
            assert_eq!(hex(&id.to_be_bytes()), format!("{id:032x}"));
        }
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x0f, 0xf0]), "0ff0");
    }
}
