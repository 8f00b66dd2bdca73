//! `postern-connector`: the connector alone, for the hosts next to the internal apps. The same
//! commands as `postern connector ...`, without the edge, the identity provider or the admin CLI
//! linked in.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern_connector::cli::ConnectorCommand;

#[derive(Parser)]
#[command(
    name = "postern-connector",
    version,
    about = "The Postern connector: dials out to the edge and forwards requests to internal apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: postern_obs::process::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Connector(ConnectorCommand),
    /// The version and the commit this binary was built from.
    Version,
}

/// jemalloc, as in `postern`: idle pages go back to the system.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Version = cli.command {
        println!(
            "postern-connector {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            env!("POSTERN_COMMIT")
        );
        return ExitCode::SUCCESS;
    }
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    postern_obs::process::init_logging(false, cli.log.log_format);
    let runtime = match postern_obs::process::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern-connector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Command::Connector(command) = cli.command else {
        return ExitCode::SUCCESS;
    };
    match runtime.block_on(postern_connector::cli::run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "postern-connector: {}",
                postern_proto::text::escape(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}
