//! How the admin CLI prints: JSON for scripts, aligned tables and lines for people.
//!
//! **Invariant:** text for people never carries a control character from the edge's answers (a
//! connector's host name, an audit detail): tables and [`say!`] lines show them escaped
//! (`\n`, `\x1b`), so a stored value cannot forge a line or drive the terminal. JSON escapes
//! them by itself.

use std::time::Duration;

use serde::Serialize;

pub use postern_proto::text::escape as safe;

/// `println!` for people: the whole line with control characters escaped.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::admin::output::safe(&format!($($arg)*)))
    };
}
pub(crate) use say;

pub fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("postern: cannot print JSON: {e}"),
        }
    } else {
        human();
    }
}

pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|c| safe(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn format_time(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

/// A Unix time for a table cell: empty when absent.
pub fn time_cell(unix: Option<i64>) -> String {
    unix.map(format_time).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_for_people_escape_control_characters() {
        assert_eq!(safe("host\n\x1b[31mred"), "host\\n\\x1b[31mred");
        assert_eq!(safe("plain"), "plain");
    }
}
