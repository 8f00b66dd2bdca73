//! How large anything the provider accepts from the network may be, in one place: the sign-in
//! form, the authorization request, the directory's names. A value past its limit is refused
//! before any work is spent on it (a protocol field gets the RFC's `invalid_request`), except
//! where it is only recorded (a sign-in event), where it is truncated ([`truncate`]).

/// RFC 5321 section 4.5.3.1.3: a path is at most 256 octets with its angle brackets, so an
/// address is at most 254. Also the longest `login_hint`, which names an email.
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest password accepted at sign-in or set by an administrator. Argon2id would take more,
/// but no passphrase a person types is longer, and a longer one is pasted noise or an attack.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The whole query of an authorization request: the sum of the fields below with room to spare.
/// Past it the request is refused before its parameters are even parsed.
pub const MAX_AUTHORIZE_QUERY_BYTES: usize = 8 * 1024;
/// Client IDs this provider issues are 26 characters.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// A redirect URI (at registration and in requests); 2 KiB is the longest URL every browser
/// and proxy is known to carry.
pub const MAX_REDIRECT_URI_BYTES: usize = 2048;
/// The client's `state`, returned to it verbatim. Relying parties put a random value or a
/// sealed return address there; 2 KiB holds either.
pub const MAX_STATE_BYTES: usize = 2048;
/// The `nonce`, copied into the ID token: a random value, 512 bytes is generous.
pub const MAX_NONCE_BYTES: usize = 512;
/// The requested `scope` (at the authorization and the device authorization endpoints).
pub const MAX_SCOPE_BYTES: usize = 1024;
/// A PKCE S256 challenge is 43 characters (RFC 7636 section 4.2).
pub const MAX_CODE_CHALLENGE_BYTES: usize = 128;
/// An `id_token_hint` at logout: an ID token this provider signed, a kilobyte or two with many
/// groups.
pub const MAX_ID_TOKEN_HINT_BYTES: usize = 8 * 1024;
/// Every other parameter the provider reads (`prompt`, `max_age`, `acr_values`,
/// `response_type`, …): short keywords.
pub const MAX_KEYWORD_PARAM_BYTES: usize = 256;

/// Longest display name an administrator gives a user, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Longest client name, in characters (shown on the sign-in page).
pub const MAX_CLIENT_NAME_CHARS: usize = 100;
/// Redirect URIs (and post-logout redirect URIs) one client may register.
pub const MAX_REDIRECT_URIS: usize = 16;

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether `c` may not appear in a name: control characters (a line break, a terminal escape)
/// and the invisible characters that reorder text (bidirectional overrides and isolates, line
/// and paragraph separators), which would let a name display as something it is not.
pub fn is_forbidden_in_names(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        let cases: &[(&str, usize, &str)] = &[
            ("abc", 5, "abc"),
            ("abc", 2, "ab"),
            ("é", 1, ""),
            ("aé", 2, "a"),
            ("aéb", 3, "aé"),
            ("", 0, ""),
        ];
        for (s, max, expected) in cases {
            assert_eq!(truncate(s, *max), *expected, "{s:?} to {max}");
        }
    }

    #[test]
    fn names_refuse_controls_and_reordering() {
        for c in [
            '\n', '\r', '\t', '\u{1b}', '\u{7f}', '\u{202e}', '\u{2066}', '\u{2028}',
        ] {
            assert!(is_forbidden_in_names(c), "{c:?}");
        }
        for c in ['a', 'é', ' ', '-', '漢', '\u{1F600}'] {
            assert!(!is_forbidden_in_names(c), "{c:?}");
        }
    }
}
