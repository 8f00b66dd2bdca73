//! The device a `User-Agent` names: its operating system and browser, for the sign-in log's
//! `deviceDetail` and (later) the client-platform condition. Only well-known product tokens
//! are recognised, in a bounded prefix; anything else is `None`, never guessed.

/// How much of a `User-Agent` is read to name the browser and system: the product tokens that
/// matter come first, and what follows is not parsed.
pub const USER_AGENT_BYTES: usize = 512;
/// The most characters of a version kept (`120.0.6099.109` fits).
const VERSION_CHARS: usize = 16;

/// The operating system and browser a `User-Agent` names, from its first [`USER_AGENT_BYTES`].
/// Only well-known product tokens are recognised; anything else is `None`, never guessed.
pub fn device_detail(ua: &str) -> (Option<String>, Option<String>) {
    let mut end = ua.len().min(USER_AGENT_BYTES);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    let ua = &ua[..end];
    let os = [
        ("Windows", "Windows"),
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iOS"),
        ("CrOS", "ChromeOS"),
        ("Mac OS X", "macOS"),
        ("Macintosh", "macOS"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(token, _)| ua.contains(token))
    .map(|(_, name)| name.to_owned());
    // Order matters: Edge and Opera also say Chrome, Chrome also says Safari.
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("HeadlessChrome/", "Chrome"),
        ("Chrome/", "Chrome"),
        ("Version/", "Safari"),
        ("curl/", "curl"),
    ]
    .into_iter()
    .find_map(|(token, name)| {
        let at = ua.find(token)?;
        let version: String = ua[at + token.len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .take(VERSION_CHARS)
            .collect();
        Some(match version.split('.').next().filter(|v| !v.is_empty()) {
            Some(major) => format!("{name} {major}"),
            None => name.to_owned(),
        })
    });
    (os, browser)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ua: &str, os: Option<&str>, browser: Option<&str>) {
        let (o, b) = device_detail(ua);
        assert_eq!((o.as_deref(), b.as_deref()), (os, browser), "{ua}");
    }

    #[test]
    fn user_agents_name_their_system_and_browser() {
        check(
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            Some("Linux"),
            Some("Firefox 120"),
        );
        check(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.61",
            Some("Windows"),
            Some("Edge 120"),
        );
        check(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
            Some("macOS"),
            Some("Safari 17"),
        );
        check(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Version/17.1 Mobile/15E148 Safari/604.1",
            Some("iOS"),
            Some("Safari 17"),
        );
        check(
            "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/119.0.6045.163 Mobile Safari/537.36",
            Some("Android"),
            Some("Chrome 119"),
        );
        check(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/131.0.0.0 Safari/537.36",
            Some("Linux"),
            Some("Chrome 131"),
        );
        check("curl/8.5.0", None, Some("curl 8"));
        check("reqwest", None, None);
        check("", None, None);
        check("Chrome/", None, Some("Chrome"));
    }

    #[test]
    fn only_the_first_bytes_are_read_and_versions_are_bounded() {
        let late = format!("{}Firefox/120.0", "x".repeat(USER_AGENT_BYTES));
        check(&late, None, None);
        let long = format!("Firefox/{}", "9".repeat(10_000));
        let (_, b) = device_detail(&long);
        assert_eq!(b.unwrap().len(), "Firefox ".len() + VERSION_CHARS);
        // A multi-byte character across the limit is not split.
        let wide = format!("{}é Linux", "x".repeat(USER_AGENT_BYTES - 1));
        check(&wide, None, None);
    }
}
