//! What every Postern binary does at start and stop: log lines on standard error, and waiting
//! for the signal to stop.

/// Log line format on standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, coloured only on a terminal.
    Text,
    /// One JSON object a line.
    Json,
}

/// The log flag every Postern binary takes.
#[derive(clap::Args)]
pub struct LogArgs {
    /// Log line format on standard error: `text` (coloured only on a terminal) or `json` (one
    /// object a line).
    #[arg(long, global = true, value_enum, env = "POSTERN_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Logs to standard error, as text or JSON lines, filtered by `POSTERN_LOG` (default `info`, or
/// `warn` when `quiet`); colours only when it is a terminal, so a log file or journal never
/// holds escape codes.
pub fn init_logging(quiet: bool, format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_env("POSTERN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// The async runtime: on one core a single-threaded runtime does the same work without
/// cross-thread wake-ups and work-stealing queues; with more cores, one worker per core.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
