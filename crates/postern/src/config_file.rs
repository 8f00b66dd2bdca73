//! `postern edge --config FILE`: every edge flag as a TOML key, every flag as an environment
//! variable, one precedence.
//!
//! A key is a flag's long name without `--` (`max-connections = 20000`, `tls-name = ["a", "b"]`,
//! `access-log-query = true`); `_` may stand for `-`. `POSTERN_<FLAG>` (upper case, `_` for `-`;
//! comma-separated for repeatable flags) overrides the file, and a flag overrides both. The file
//! is read through the same command-line definition, so a value means what the flag means and is
//! refused for the same reasons, with the file and line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::Spanned;

/// Largest config file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Flags that are about the file itself, not settings in it.
const NOT_IN_FILE: &[&str] = &["config", "check-config", "help", "version"];

/// The environment variable of a flag: `POSTERN_` and the long name in upper case.
pub fn env_name(long: &str) -> String {
    format!("POSTERN_{}", long.replace('-', "_").to_ascii_uppercase())
}

/// The command line with every edge flag also read from its environment variable; repeatable
/// flags take several values separated by commas there.
pub fn with_env(cli: Command) -> Command {
    cli.mut_subcommand("edge", |edge| {
        edge.mut_args(|arg| match arg.get_long() {
            Some(long) if arg.get_env().is_none() && !NOT_IN_FILE.contains(&long) => {
                let name = env_name(long);
                let arg = arg.env(name);
                if matches!(arg.get_action(), ArgAction::Append) {
                    arg.value_delimiter(',')
                } else {
                    arg
                }
            }
            _ => arg,
        })
    })
}

/// Why the command line and config file were refused.
pub enum Refused {
    /// clap's own answer (usage errors, and `--help` and `--version`, which it prints), with
    /// the config file whose settings were added, if any.
    Clap(clap::Error, Option<PathBuf>),
    /// The config file itself: unreadable, not TOML, an unknown key or a bad value (with its
    /// line).
    File(anyhow::Error),
}

/// Parses the command line with the config file's settings added under the flags and the
/// environment; also returns, for each setting the file gave, where (`FILE:LINE`).
pub fn parse(
    cli: &Command,
    args: Vec<OsString>,
) -> Result<(ArgMatches, BTreeMap<String, String>), Refused> {
    // A first, lenient look finds --config and what the flags and environment set; rules that
    // span sources (--tls-cert needs --tls-key) are checked once the file is added.
    let strict = |all: Vec<OsString>, file: Option<PathBuf>| {
        cli.clone()
            .try_get_matches_from(all)
            .map_err(|e| Refused::Clap(e, file))
    };
    let Ok(loose) = cli.clone().ignore_errors(true).try_get_matches_from(&args) else {
        return strict(args, None).map(|m| (m, BTreeMap::new()));
    };
    let Some(("edge", edge)) = loose.subcommand() else {
        return strict(args, None).map(|m| (m, BTreeMap::new()));
    };
    // `edge restore` runs no edge: the settings of a file named in POSTERN_CONFIG are not its own.
    let Some(path) = edge
        .get_one::<PathBuf>("config")
        .filter(|_| edge.subcommand().is_none())
        .cloned()
    else {
        return strict(args, None).map(|m| (m, BTreeMap::new()));
    };
    let edge_cmd = cli.find_subcommand("edge").expect("the edge command");
    let (extra, from_file) = settings(edge_cmd, edge, &path).map_err(Refused::File)?;
    let all = args.into_iter().chain(extra).collect();
    strict(all, Some(path)).map(|m| (m, from_file))
}

/// The command-line words for the file's settings that no flag or environment variable set,
/// and the line each came from.
fn settings(
    edge_cmd: &Command,
    edge: &ArgMatches,
    path: &Path,
) -> anyhow::Result<(Vec<OsString>, BTreeMap<String, String>)> {
    let text = read(path)?;
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(1, |span| line_of(&text, span.start));
            anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
        })?;
    let mut extra = Vec::new();
    let mut from_file = BTreeMap::new();
    for (key, value) in &table {
        let line = line_of(&text, key.span().start);
        let at = |what: String| anyhow::anyhow!("{}:{line}: {what}", path.display());
        let long = key.get_ref().replace('_', "-");
        let Some(arg) = edge_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && !NOT_IN_FILE.contains(&long.as_str()))
        else {
            return Err(at(unknown(key.get_ref(), edge_cmd)));
        };
        // A flag or the environment overrides the file.
        if matches!(
            edge.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flags =
            as_flags(arg, &long, value.get_ref()).map_err(|e| at(format!("{long}: {e}")))?;
        // Each setting is checked alone first, so a refusal names its line.
        let mut alone = vec![OsString::from("edge")];
        alone.extend(flags.iter().cloned());
        if let Err(e) = edge_cmd.clone().try_get_matches_from(alone) {
            if e.kind() != clap::error::ErrorKind::MissingRequiredArgument {
                return Err(at(clap_reason(&e)));
            }
        }
        if !flags.is_empty() {
            extra.extend(flags);
            from_file.insert(long, format!("{}:{line}", path.display()));
        }
    }
    Ok((extra, from_file))
}

/// Every edge setting that is not at its default, and where it came from.
pub fn effective(
    edge_cmd: &Command,
    edge: &ArgMatches,
    from_file: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for arg in edge_cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = match (from_file.get(long), edge.value_source(id)) {
            (Some(at), _) => at.clone(),
            (_, Some(ValueSource::CommandLine)) => "flag".to_owned(),
            (_, Some(ValueSource::EnvVariable)) => env_name(long),
            _ => continue,
        };
        let values: Vec<String> = edge
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let shown = match arg.get_action() {
            ArgAction::SetTrue => "true".to_owned(),
            _ if is_secret(long) => "********".to_owned(),
            _ => values.join(", "),
        };
        out.push((long.to_owned(), shown, source));
    }
    out
}

fn is_secret(long: &str) -> bool {
    long.contains("token") || long.contains("secret")
}

fn read(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let cannot = || format!("cannot read --config {}", path.display());
    let file = std::fs::File::open(path).with_context(cannot)?;
    // Bounded by what is read, not by what the metadata says (a FIFO or /proc file has none).
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!(
            "--config {} is larger than {MAX_FILE_BYTES} bytes, the most a config file may hold",
            path.display()
        );
    }
    String::from_utf8(bytes)
        .with_context(|| format!("--config {} is not UTF-8 text", path.display()))
}

/// The command-line words for one setting: `--long=value` for each value, or `--long` for a
/// switch that is on.
fn as_flags(arg: &Arg, long: &str, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let scalar = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            toml::Value::Array(_) | toml::Value::Table(_) => {
                Err("give a single value (a string, number or true/false)".to_owned())
            }
        }
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(vec![format!("--{long}").into()]),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => Err("give true or false".to_owned()),
        (ArgAction::Append, toml::Value::Array(items)) => items
            .iter()
            .map(|v| scalar(v).map(|s| format!("--{long}={s}").into()))
            .collect(),
        (_, toml::Value::Array(_)) => {
            Err("takes one value, not a list (only repeatable flags take lists)".to_owned())
        }
        (_, v) => Ok(vec![format!("--{long}={}", scalar(v)?).into()]),
    }
}

/// Names the unknown key and the nearest setting.
fn unknown(key: &str, edge: &Command) -> String {
    let nearest = edge
        .get_arguments()
        .filter_map(Arg::get_long)
        .filter(|l| !NOT_IN_FILE.contains(l))
        .map(|l| (strsim::levenshtein(key, l), l))
        .min();
    match nearest {
        Some((d, l)) if d <= 3 => {
            format!("unknown setting `{key}`; did you mean `{l}`? (the settings are the `postern edge` flags without `--`)")
        }
        _ => format!("unknown setting `{key}`; the settings are the `postern edge` flags without `--` (see `postern edge --help`)"),
    }
}

/// clap's reason on one line, without its `error: ` prefix, usage and tips.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let reason: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
        .map(str::trim)
        .collect();
    let reason = reason.join(" ");
    reason.strip_prefix("error: ").unwrap_or(&reason).to_owned()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a = 1\nb = 2\n", 0), 1);
        assert_eq!(line_of("a = 1\nb = 2\n", 6), 2);
    }

    #[test]
    fn environment_names_follow_the_flags() {
        assert_eq!(env_name("max-connections"), "POSTERN_MAX_CONNECTIONS");
    }
}
