//! Server-rendered pages: plain HTML forms that work without JavaScript, each field labelled,
//! in the order a keyboard user tabs through them. Every value from outside is escaped.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}
label{display:block;margin-top:1rem;font-weight:600}
input[type=email],input[type=password],input[type=text]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}
button{margin-top:1.25rem;padding:.6rem 1.2rem;font-size:1rem}
.error{color:#a00000;border-left:4px solid #a00000;padding-left:.75rem}
code,.secret{font-family:ui-monospace,monospace;word-break:break-all}
.or{margin-top:1.5rem;color:#555}
ul.passkeys{padding-left:1.2rem}ul.passkeys form{display:inline}ul.passkeys button{margin:0 0 0 .5rem;padding:.2rem .6rem;font-size:.9rem}
:focus{outline:3px solid #1a5fb4;outline-offset:2px}";

/// A whole page with the provider's security headers: never cached, never framed, no scripts.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_with_script(status, title, body, false)
}

/// A page that may run the provider's own passkey script (`/static/passkey.js`, and nothing
/// else: no inline script, no other origin). Everything but passkeys works without it.
pub fn page_with_script(status: StatusCode, title: &str, body: &str, passkey: bool) -> Response {
    let script = if passkey {
        "<script src=\"/static/passkey.js\" defer></script>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} – Postern</title><style>{STYLE}</style>{script}</head>\
         <body><main>{body}</main></body></html>\n",
        escape(title)
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if passkey {
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
        } else {
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        }),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A page that explains a problem and what to do; never a redirect.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let request = crate::request_id()
        .map(|id| format!("<p>Request ID: <code>{}</code></p>", escape(&id)))
        .unwrap_or_default();
    page(
        status,
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>{request}",
            escape(title),
            escape(message)
        ),
    )
}

/// Adds `Retry-After` (whole seconds, at least one) to a refusal that asks the caller to come
/// back later (429, 503).
pub fn with_retry_after(mut resp: Response, after: std::time::Duration) -> Response {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

/// Hidden fields every form carries: the CSRF token and the pending request.
pub fn hidden(csrf: &str, req: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"req\" value=\"{}\">",
        escape(csrf),
        escape(req)
    )
}

/// An error paragraph announced to screen readers, or nothing.
pub fn alert(error: Option<&str>) -> String {
    error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                escape(e)
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
