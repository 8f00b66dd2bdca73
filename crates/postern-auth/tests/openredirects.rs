//! Every payload of the shared open-redirect corpus, as a request path and as a `?rd=` value,
//! must yield a `Location` on the app's own origin.
//!
//! The corpus (`testdata/openredirects.txt` at the repository's root, from oauth2-proxy, MIT) is
//! read at test time. As in oauth2-proxy, each line is also tried after one round of URL query
//! unescaping.

use std::path::PathBuf;

use postern_auth::{AppOrigin, ReturnTo};
use url::Url;

const APP: &str = "https://www.whitelisteddomain.tld";

fn corpus() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/openredirects.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the corpus at {}: {e}", path.display()));
    text.lines().map(str::to_owned).collect()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` on a bad escape.
fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// What a browser would do with a `Location` value: drop tabs and newlines, read backslashes as
/// slashes (both before the query), then parse.
fn as_a_browser_reads_it(location: &str) -> Option<Url> {
    let cleaned: String = location
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let (before_query, query) = match cleaned.split_once('?') {
        Some((b, q)) => (b.replace('\\', "/"), format!("?{q}")),
        None => (cleaned.replace('\\', "/"), String::new()),
    };
    Url::parse(&format!("{before_query}{query}")).ok()
}

/// Why `target` is not safe, or `None` when it is.
fn problem(origin: &AppOrigin, target: &ReturnTo) -> Option<String> {
    let location = target.location(origin);
    let text = location.as_str();
    if !text.starts_with(&format!("{APP}/")) {
        return Some(format!(
            "Location {text:?} does not start with the app's origin and /"
        ));
    }
    let before_query = text.split_once('?').map_or(text, |(path, _)| path);
    if text.chars().any(char::is_control) || before_query.contains('\\') {
        return Some(format!(
            "Location {text:?} holds a control character, or a backslash before its query"
        ));
    }
    if Url::parse(text).map(|u| u.origin()) != Ok(origin.root().origin()) {
        return Some(format!("Location {text:?} parses to another origin"));
    }
    if as_a_browser_reads_it(text).map(|u| u.origin()) != Some(origin.root().origin()) {
        return Some(format!(
            "Location {text:?} reads as another origin in a browser"
        ));
    }
    // The relative form must be safe too, in case it is ever sent as a relative `Location`.
    let relative = target.as_str();
    let mut chars = relative.chars();
    if chars.next() != Some('/') || matches!(chars.next(), Some('/' | '\\')) {
        return Some(format!(
            "relative target {relative:?} is not a single-slash path"
        ));
    }
    let resolved = Url::options().base_url(Some(origin.root())).parse(relative);
    if resolved.map(|u| u.origin()) != Ok(origin.root().origin()) {
        return Some(format!(
            "relative target {relative:?} resolves off the origin"
        ));
    }
    None
}

#[test]
fn the_corpus_resolves() {
    assert_eq!(corpus().len(), 559);
}

#[test]
fn no_payload_leaves_the_app_origin() {
    let origin = AppOrigin::parse(APP).unwrap();
    let mut failures = Vec::new();
    let mut kept = 0;
    for line in corpus() {
        let mut inputs = vec![line.clone()];
        inputs.extend(query_unescape(&line).filter(|u| *u != line));
        for input in inputs {
            for (how, target) in [
                ("as request path", ReturnTo::from_request(&origin, &input)),
                ("as ?rd=", ReturnTo::from_untrusted(&origin, &input)),
            ] {
                if target != ReturnTo::root() {
                    kept += 1;
                }
                if let Some(why) = problem(&origin, &target) {
                    failures.push(format!("{input:?} {how}: {why}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Not a bound to hold, just proof the check saw real targets and not only fallbacks.
    assert!(kept > 0);
}
