//! Text that came from someone else, made safe to keep and to show.
//!
//! A connector (or anyone who can reach the connector listener) reports its host name and version;
//! those values end up in the store, the admin CLI's tables, the audit log and log lines. A
//! newline there forges a line; an ANSI escape rewrites the operator's terminal. So reported
//! values are bounded and refused when they hold a control character ([`check_reported`]), and
//! everything printed for people goes through [`escape`], which shows such characters as visible
//! escapes instead of acting on them.

use std::borrow::Cow;
use std::fmt;

/// Longest host name a connector may report: the longest DNS name (RFC 1035 §2.3.4).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Longest software version a connector may report: a semantic version with a pre-release and
/// build suffix fits many times over.
pub const MAX_VERSION_BYTES: usize = 64;

/// True for a character that changes how text is laid out or displayed rather than being shown:
/// C0 and C1 controls and DEL (newlines, ANSI escapes, CSI), the Unicode line and paragraph
/// separators, and the bidirectional overrides and isolates that reorder what a reader sees.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Why a reported value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{field} is {len} bytes long; at most {max} are accepted")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} holds a control character ({escaped}); send printable text")]
    ControlCharacter {
        field: &'static str,
        escaped: String,
    },
    #[error("{field} is not UTF-8 text")]
    NotUtf8 { field: &'static str },
}

impl TextError {
    /// The field the error is about, as the caller named it.
    pub fn field(&self) -> &'static str {
        match self {
            TextError::TooLong { field, .. }
            | TextError::ControlCharacter { field, .. }
            | TextError::NotUtf8 { field } => field,
        }
    }
}

/// Checks a value someone else reported: at most `max` bytes and no [unsafe
/// character](is_unsafe_char). The length is checked first, so an oversized value costs no scan.
pub fn check_reported(field: &'static str, value: &str, max: usize) -> Result<(), TextError> {
    if value.len() > max {
        return Err(TextError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if let Some(c) = value.chars().find(|c| is_unsafe_char(*c)) {
        return Err(TextError::ControlCharacter {
            field,
            escaped: escape_char(c),
        });
    }
    Ok(())
}

/// Like [`check_reported`], for bytes (a header value): bounded first, then UTF-8, then printable.
pub fn check_reported_bytes<'a>(
    field: &'static str,
    value: &'a [u8],
    max: usize,
) -> Result<&'a str, TextError> {
    if value.len() > max {
        return Err(TextError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    let text = std::str::from_utf8(value).map_err(|_| TextError::NotUtf8 { field })?;
    check_reported(field, text, max)?;
    Ok(text)
}

/// `s` with every [unsafe character](is_unsafe_char) shown as an escape (`\n`, `\x1b`,
/// `\u{202e}`); borrowed when there is none, which is the common case.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe_char(c) {
            out.push_str(&escape_char(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn escape_char(c: char) -> String {
    match c {
        '\n' => "\\n".to_owned(),
        '\r' => "\\r".to_owned(),
        '\t' => "\\t".to_owned(),
        c if (c as u32) < 0x80 => format!("\\x{:02x}", c as u32),
        c => format!("\\u{{{:x}}}", c as u32),
    }
}

/// Formats text with [`escape`]: for log fields that carry what a client sent
/// (`tracing::warn!(hostname = %Escaped(&h), …)`).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_would_act_on_a_terminal() {
        for (input, shown) in [
            ("plain host-1.example", "plain host-1.example"),
            ("a\nb", "a\\nb"),
            ("red\x1b[31m", "red\\x1b[31m"),
            ("cr\rtab\t", "cr\\rtab\\t"),
            ("nul\0del\x7f", "nul\\x00del\\x7f"),
            ("csi\u{9b}31m", "csi\\u{9b}31m"),
            ("rtl\u{202e}txt", "rtl\\u{202e}txt"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("café ünïcode", "café ünïcode"),
            ("back\\slash", "back\\slash"),
            ("", ""),
        ] {
            assert_eq!(escape(input), shown, "{input:?}");
            assert_eq!(Escaped(input).to_string(), shown);
            // What is shown never holds a character that acts on a terminal.
            assert!(!escape(input).chars().any(is_unsafe_char), "{input:?}");
        }
        assert!(matches!(escape("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn reported_values_are_bounded_and_printable() {
        let long = "h".repeat(MAX_HOSTNAME_BYTES + 1);
        let huge = "h".repeat(60 * 1024);
        for (value, expected) in [
            ("host-1", Ok(())),
            ("", Ok(())),
            (&"h".repeat(MAX_HOSTNAME_BYTES)[..], Ok(())),
            (
                &long[..],
                Err(TextError::TooLong {
                    field: "hostname",
                    len: MAX_HOSTNAME_BYTES + 1,
                    max: MAX_HOSTNAME_BYTES,
                }),
            ),
            (
                &huge[..],
                Err(TextError::TooLong {
                    field: "hostname",
                    len: 60 * 1024,
                    max: MAX_HOSTNAME_BYTES,
                }),
            ),
            (
                "host\n\x1b[31m",
                Err(TextError::ControlCharacter {
                    field: "hostname",
                    escaped: "\\n".into(),
                }),
            ),
            (
                "x\u{202e}",
                Err(TextError::ControlCharacter {
                    field: "hostname",
                    escaped: "\\u{202e}".into(),
                }),
            ),
        ] {
            assert_eq!(
                check_reported("hostname", value, MAX_HOSTNAME_BYTES),
                expected,
                "{:?}",
                escape(value)
            );
        }
        assert_eq!(
            check_reported_bytes("h", b"caf\xc3\xa9", 10),
            Ok("caf\u{e9}")
        );
        assert_eq!(
            check_reported_bytes("h", b"\xc2\x9b31m", 10),
            Err(TextError::ControlCharacter {
                field: "h",
                escaped: "\\u{9b}".into()
            })
        );
        assert_eq!(
            check_reported_bytes("h", b"\xff", 10),
            Err(TextError::NotUtf8 { field: "h" })
        );
        assert!(matches!(
            check_reported_bytes("h", &[b'x'; 11], 10),
            Err(TextError::TooLong { len: 11, .. })
        ));
        let e = check_reported("version", "1\x1b", MAX_VERSION_BYTES).unwrap_err();
        assert_eq!(e.field(), "version");
        assert!(e
            .to_string()
            .contains("version holds a control character (\\x1b)"));
    }
}
