//! `postern`: one binary for the edge, the connector, the quickstart and the admin CLI. This file
//! parses arguments and calls into the library crates; nothing else.

mod admin;
mod config_file;
mod demo;
mod quickstart;
mod quickstart_users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use postern_edge::config as limits;

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "Publish internal web apps without opening an inbound port"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: postern_obs::process::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the public edge: user HTTPS, the connector listener and the admin API.
    Edge(Box<EdgeArgs>),
    /// Register or run a connector next to the internal apps.
    #[command(subcommand)]
    Connector(postern_connector::cli::ConnectorCommand),
    /// Manage an edge through its admin API.
    Admin(admin::AdminArgs),
    /// Everything in one process with no config: an edge, a demo app and a connector.
    Quickstart(quickstart::QuickstartArgs),
    /// The version and the commit this binary was built from.
    Version,
    /// Print a shell completion script: `postern completions bash > /etc/bash_completion.d/postern`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for every command to a directory (postern.1, postern-edge.1, ...).
    Man {
        #[arg(long)]
        out: PathBuf,
    },
}

/// What this binary is: `postern version` and the edge's `/v1/version`.
const COMMIT: &str = env!("POSTERN_COMMIT");

#[derive(Subcommand)]
enum EdgeAction {
    /// Restore a backup (`postern admin backup`) into a new data directory; then start the edge
    /// on it with --data DIR.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create; it must hold no edge's data.
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct EdgeArgs {
    #[command(subcommand)]
    action: Option<EdgeAction>,
    /// A TOML file of settings, each key a flag's name without `--` (`max-connections = 20000`);
    /// every flag is also read from `POSTERN_<FLAG>`. Flags override the environment, which
    /// overrides the file.
    #[arg(long, value_name = "FILE", env = "POSTERN_CONFIG")]
    config: Option<PathBuf>,
    /// Check the settings and the files they name, print those not at their default with where
    /// each came from, and exit without starting.
    #[arg(long)]
    check_config: bool,
    /// Directory for state, keys, the CA certificate (ca.pem) and the admin token.
    #[arg(long, default_value = "postern-data")]
    data: PathBuf,
    /// Public HTTPS listener for users.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Listener that connectors dial (mutual TLS 1.3).
    #[arg(long, default_value = "0.0.0.0:8444")]
    connector_listen: SocketAddr,
    /// Admin API listener (HTTPS). Keep it on loopback or a management network.
    #[arg(long, default_value = "127.0.0.1:8445")]
    admin_listen: SocketAddr,
    /// Certificate chain (PEM) for the public and connector listeners; without it the edge issues
    /// certificates from its local CA (DATA/ca.pem).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long a request waits for a connector of its app's group to come online, or for room
    /// on its tunnels.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    queue_timeout: Duration,
    /// How many requests may wait for a connector at once (all groups together); past it,
    /// requests that find no connector fail at once with 503.
    #[arg(long, default_value_t = postern_edge::config::DEFAULT_MAX_QUEUED)]
    max_queued: usize,
    /// How long shutdown waits for in-flight requests.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Tell connectors to renew their certificates at this age when it is shorter than their own
    /// --renew-after (e.g. 30d).
    #[arg(long, value_parser = postern_connector::cli::positive_duration)]
    connector_renew_after: Option<Duration>,
    /// Host name on which the public listener serves the built-in OpenID Connect provider
    /// (its issuer is https://HOST, with the listener's port unless it is 443).
    #[arg(long, default_value = postern_edge::config::DEFAULT_IDP_HOST)]
    idp_host: String,
    /// A name connectors or admins dial this edge by (e.g. edge.example.com), for the local CA's
    /// certificates; repeat for several. Published apps' hosts and --idp-host need none: without
    /// --tls-cert, only those, loopback, the listeners' addresses and these names get a
    /// certificate, and any other name's handshake fails.
    #[arg(long = "tls-name", value_name = "NAME", value_parser = postern_edge::config::parse_tls_name)]
    tls_names: Vec<String>,
    /// Plain HTTP on this address (e.g. 0.0.0.0:80) that redirects every request for a served host
    /// to HTTPS (308); without it, the edge listens for no plain HTTP.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Serve /metrics (Prometheus), /healthz and /readyz over plain HTTP on this address (keep it
    /// on loopback or a management network); without it, none are served.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Write one JSON line per request to this file (appended), or to standard output with `-`.
    #[arg(long, value_name = "FILE|-")]
    access_log: Option<postern_obs::access::Destination>,
    /// Show query strings in the access log (they may carry secrets; off by default).
    #[arg(long, requires = "access_log")]
    access_log_query: bool,
    /// A MaxMind-format location database (.mmdb: GeoLite2/GeoIP2 City or Country, or the flat
    /// ip-location-db builds); repeat for several (e.g. IPv4 and IPv6), searched in order. Sign-ins
    /// then record where they came from. A database without countries is refused at start.
    #[arg(long, value_name = "FILE")]
    geoip_db: Vec<PathBuf>,
    /// A MaxMind-format ASN database (.mmdb: GeoLite2-ASN, or the ip-location-db ASN builds);
    /// repeatable. Identity protection then counts a network (autonomous system) the user never
    /// signed in from as unfamiliar. A database without autonomous_system_number is refused.
    #[arg(long, value_name = "FILE")]
    asn_db: Vec<PathBuf>,
    /// A proxy or load balancer in front of the public listener (CIDR or address; repeatable):
    /// for requests from it, the client is the rightmost X-Forwarded-For address that is not a
    /// trusted proxy (for rate limits, logs, locations). Without it, the peer is the client.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = postern_edge::config::parse_trusted_proxy)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// A file of anonymizing networks (Tor exit nodes, VPN and hosting ranges): one address or
    /// CIDR per line, `#` comments. Sign-ins from them raise the anonymizedIPAddress detection
    /// and every request from them has medium sign-in risk. Reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    anonymizer_list: Option<PathBuf>,
    /// A directory of leaked-password hash ranges as Have I Been Pwned publishes them (files
    /// named by the first five hex digits of the SHA-1, lines `SUFFIX:COUNT`): a built-in
    /// provider sign-in whose password is in it raises leakedCredentials (high user risk).
    #[arg(long, value_name = "DIR")]
    leaked_passwords: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    siem: SiemArgs,
}

/// Export of the audit and sign-in logs to a SIEM (at least once; each record has a stable `id`).
#[derive(clap::Args)]
struct SiemArgs {
    /// Append every record as a JSON line to FILE (rotated by size).
    #[arg(long, value_name = "FILE")]
    siem_file: Option<PathBuf>,
    /// Rotate --siem-file when it would grow past this many bytes.
    #[arg(long, default_value_t = postern_edge::siem::DEFAULT_FILE_MAX_BYTES)]
    siem_file_max_bytes: u64,
    /// Rotated files kept (FILE.1 … FILE.N).
    #[arg(long, default_value_t = postern_edge::siem::DEFAULT_FILE_KEEP)]
    siem_file_keep: u32,
    /// Send every record to syslog, RFC 5424 with octet counting: tcp://HOST:PORT or tls://HOST:PORT.
    #[arg(long, value_name = "URL")]
    siem_syslog: Option<String>,
    /// CA certificate (PEM) of a tls:// syslog server (default: the system's web roots).
    #[arg(long, value_name = "FILE")]
    siem_syslog_ca: Option<PathBuf>,
    /// POST records as JSON batches to this HTTPS URL, retrying with backoff.
    #[arg(long, value_name = "URL")]
    siem_webhook: Option<String>,
    /// CA certificate (PEM) of the webhook (default: the system's web roots).
    #[arg(long, value_name = "FILE")]
    siem_webhook_ca: Option<PathBuf>,
}

impl SiemArgs {
    fn config(self) -> anyhow::Result<postern_edge::siem::SiemConfig> {
        let read = |flag: &str, p: Option<PathBuf>| -> anyhow::Result<Option<String>> {
            p.map(|p| {
                std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {flag} {}", p.display()))
            })
            .transpose()
        };
        use postern_edge::siem::{FileSink, SiemConfig, SyslogSink, WebhookSink};
        Ok(SiemConfig {
            file: self.siem_file.map(|path| FileSink {
                path,
                max_bytes: self.siem_file_max_bytes,
                keep: self.siem_file_keep,
            }),
            syslog: match self.siem_syslog {
                Some(t) => Some(SyslogSink::parse(
                    &t,
                    read("--siem-syslog-ca", self.siem_syslog_ca)?,
                )?),
                None => None,
            },
            webhook: match self.siem_webhook {
                Some(url) => Some(WebhookSink {
                    url: url::Url::parse(&url)
                        .with_context(|| format!("--siem-webhook {url:?} is not a URL"))?,
                    ca_pem: read("--siem-webhook-ca", self.siem_webhook_ca)?,
                }),
                None => None,
            },
        })
    }
}

/// What one client, and everyone together, may ask of the edge.
#[derive(Args)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// How long a client has to complete its TLS handshake.
    #[arg(long, default_value_t = limits::DEFAULT_HANDSHAKE_TIMEOUT.into(), value_parser = seconds)]
    handshake_timeout: humantime::Duration,
    /// How long a new connection may take to send its first request head, and any HTTP/1.1
    /// request head to be complete after its first bytes.
    #[arg(long, default_value_t = limits::DEFAULT_REQUEST_HEAD_TIMEOUT.into(), value_parser = seconds)]
    request_head_timeout: humantime::Duration,
    /// How long a connection with no request in flight stays open.
    #[arg(long, default_value_t = limits::DEFAULT_IDLE_TIMEOUT.into(), value_parser = seconds)]
    idle_timeout: humantime::Duration,
    /// How long a response may wait for a client that does not read it, or a request body for
    /// a client that does not send it, before the stream is reset.
    #[arg(long, default_value_t = limits::DEFAULT_STALL_TIMEOUT.into(), value_parser = seconds)]
    stall_timeout: humantime::Duration,
    /// Connections the public listener holds at most (kept below the file-descriptor limit).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS, value_parser = at_least_one)]
    max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold on each listener.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_IP, value_parser = at_least_one)]
    max_connections_per_ip: usize,
    /// TLS handshakes one client address may start per second (bursts of five times as many);
    /// 0 turns the limit off.
    #[arg(long, default_value_t = limits::DEFAULT_HANDSHAKES_PER_IP)]
    handshakes_per_ip: u32,
    /// Requests one client address may send per second (bursts of twice as many); 0 turns the
    /// limit off.
    #[arg(long, default_value_t = limits::DEFAULT_REQUESTS_PER_IP)]
    requests_per_ip: u32,
    /// Requests per second each app accepts from everyone together (bursts of twice as many);
    /// 0 leaves apps unlimited.
    #[arg(long, default_value_t = limits::DEFAULT_REQUESTS_PER_APP)]
    requests_per_app: u32,
    /// Requests one client address may have in flight through tunnels at once (a WebSocket
    /// counts while open); 0 turns the limit off.
    #[arg(long, default_value_t = limits::DEFAULT_REQUESTS_IN_FLIGHT_PER_IP)]
    requests_in_flight_per_ip: usize,
    /// Responses whose clients have read nothing for 2 s that may hold tunnel window at once
    /// (each up to 2 MiB), from all addresses together; past it the longest-stalled are reset.
    /// 0 leaves only --stall-timeout.
    #[arg(long, default_value_t = limits::DEFAULT_STALLED_STREAMS)]
    stalled_streams: usize,
}

impl LimitArgs {
    fn limits(&self) -> postern_edge::config::Limits {
        postern_edge::config::Limits {
            handshake_timeout: self.handshake_timeout.into(),
            request_head_timeout: self.request_head_timeout.into(),
            idle_timeout: self.idle_timeout.into(),
            stall_timeout: self.stall_timeout.into(),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            handshakes_per_ip: self.handshakes_per_ip,
            requests_per_ip: self.requests_per_ip,
            requests_per_app: self.requests_per_app,
            requests_in_flight_per_ip: self.requests_in_flight_per_ip,
            stalled_streams: self.stalled_streams,
        }
    }
}

/// A count of at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; give a whole number")),
    }
}

/// A timeout of at least 100 ms (`10s`, `1m`, `500ms`).
fn seconds(s: &str) -> Result<humantime::Duration, String> {
    let d: humantime::Duration = s
        .parse()
        .map_err(|e| format!("{e}; use e.g. 10s, 1m or 500ms"))?;
    if Duration::from(d) < Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(d)
}

/// jemalloc, with its background thread (started in `main`) handing pages back to the system about
/// ten seconds after they fall idle: the memory an attack made the edge hold (buffers of clients
/// that stopped reading, say) is returned once the attack ends, where glibc's allocator keeps it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let command = config_file::with_env(Cli::command());
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (matches, from_file) = match config_file::parse(&command, args) {
        Ok(parsed) => parsed,
        Err(config_file::Refused::File(e)) => {
            eprintln!(
                "postern: {}",
                postern_proto::text::escape(&format!("{e:#}"))
            );
            return ExitCode::from(2);
        }
        Err(config_file::Refused::Clap(e, file)) => {
            if let Some(file) = file.filter(|_| e.use_stderr()) {
                eprintln!("postern: with the settings of {}:", file.display());
            }
            e.exit()
        }
    };
    let settings = match matches.subcommand() {
        Some(("edge", edge)) if edge.get_flag("check_config") => Some(config_file::effective(
            command.find_subcommand("edge").expect("the edge command"),
            edge,
            &from_file,
        )),
        _ => None,
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: memory is returned to the system only while allocating: {e}");
    }
    let quiet = matches!(
        cli.command,
        Command::Admin(_) | Command::Version | Command::Completions { .. } | Command::Man { .. }
    );
    postern_obs::process::init_logging(quiet, cli.log.log_format);
    let runtime = match postern_obs::process::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors may quote what the edge answered: shown, never acted on by the terminal.
            eprintln!(
                "postern: {}",
                postern_proto::text::escape(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

/// The settings `postern edge --check-config` shows: name, value, where it came from.
type Settings = Vec<(String, String, String)>;

async fn run(cli: Cli, settings: Option<Settings>) -> anyhow::Result<()> {
    match cli.command {
        Command::Edge(args) => edge(*args, settings).await,
        Command::Connector(cmd) => postern_connector::cli::run(cmd).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::Version => {
            println!(
                "postern {} (commit {COMMIT}, schema {})",
                env!("CARGO_PKG_VERSION"),
                postern_store::SCHEMA_VERSION
            );
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "postern",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { out } => man_pages(&out),
    }
}

/// One man page per command and subcommand, named as `man` finds them (`postern-admin-app.1`).
fn man_pages(out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    fn write(cmd: clap::Command, name: String, out: &std::path::Path) -> anyhow::Result<usize> {
        let cmd = cmd.name(name.clone());
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        let path = out.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        let mut n = 1;
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            n += write(sub.clone(), format!("{name}-{}", sub.get_name()), out)?;
        }
        Ok(n)
    }
    let mut cmd = Cli::command();
    cmd.build();
    let n = write(cmd, "postern".to_owned(), out)?;
    println!("wrote {n} man pages to {}", out.display());
    Ok(())
}

async fn edge(args: EdgeArgs, settings: Option<Settings>) -> anyhow::Result<()> {
    if let Some(EdgeAction::Restore { from, data }) = args.action {
        let files = postern_edge::data::restore(&from, &data).await?;
        println!(
            "restored {} into {} ({}); start the edge with --data {}",
            from.display(),
            data.display(),
            files.join(", "),
            data.display()
        );
        return Ok(());
    }
    let mut config = postern_edge::EdgeConfig::new(
        args.data,
        args.listen,
        args.connector_listen,
        args.admin_listen,
    );
    config.commit = COMMIT;
    config.tls_cert = args.tls_cert.zip(args.tls_key);
    config.queue_timeout = args.queue_timeout;
    config.max_queued = args.max_queued;
    config.drain_timeout = args.drain_timeout;
    config.connector_renew_after = args.connector_renew_after;
    config.idp_host = args.idp_host.to_ascii_lowercase();
    config.limits = args.limits.limits();
    config.tls_names = args.tls_names;
    config.siem = args.siem.config()?;
    config.metrics_listen = args.metrics_listen;
    config.http_listen = args.http_listen;
    config.access_log = args.access_log;
    config.access_log_query = args.access_log_query;
    config.geoip_db = args.geoip_db;
    config.asn_db = args.asn_db;
    config.trusted_proxies = args.trusted_proxies;
    config.anonymizer_list = args.anonymizer_list;
    config.leaked_passwords = args.leaked_passwords;
    config.bootstrap_token = std::env::var("POSTERN_BOOTSTRAP_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(postern_edge::Secret::new);
    if let Some(settings) = settings {
        postern_edge::check(&config)?;
        println!("configuration OK");
        for (name, value, source) in settings {
            println!("  {name} = {value}    ({source})");
        }
        return Ok(());
    }
    // With the access log on standard output, it holds JSON lines only: the banner goes to
    // standard error.
    let banner_to_stderr = matches!(
        config.access_log,
        Some(postern_obs::access::Destination::Stdout)
    );
    let edge = postern_edge::start(config).await?;
    let mut banner = format!(
        "postern edge ready\n  public:    https://{}\n  connector: https://{}\n  admin:     https://{}\n  sign-in:   {}\n  CA:        {}\n",
        edge.public_addr,
        edge.connector_addr,
        edge.admin_addr,
        edge.idp_issuer(),
        edge.ca_path.display()
    );
    if let Some(addr) = edge.metrics_addr {
        banner.push_str(&format!("  metrics:   http://{addr}/metrics\n"));
    }
    if let Some(addr) = edge.http_addr {
        banner.push_str(&format!(
            "  http:      http://{addr} (redirects to HTTPS)\n"
        ));
    }
    if let Some(p) = &edge.admin_token_path {
        banner.push_str(&format!("  admin token: {}\n", p.display()));
    }
    if banner_to_stderr {
        eprint!("{banner}");
    } else {
        print!("{banner}");
    }
    postern_obs::process::terminated().await;
    tracing::info!("shutting down: draining in-flight requests");
    edge.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the README's tables between `from` and `to`: every flag each first cell
    /// names, with the row's default cell.
    fn documented(from: &str, to: &str) -> Vec<(String, String)> {
        let readme = include_str!("../../../README.md");
        let start = readme.find(from).expect("the README section");
        let end = start + readme[start..].find(to).expect("the next README section");
        let mut rows = Vec::new();
        for line in readme[start..end].lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            for word in cells[0].split(['`', ' ', ',']) {
                if let Some(flag) = word.strip_prefix("--") {
                    rows.push((flag.to_owned(), cells.get(1).unwrap_or(&"").to_string()));
                }
            }
        }
        rows
    }

    /// Every flag of `cmd` is in the rows, each default as the code has it; no row names a flag
    /// that does not exist.
    fn matches_definition(cmd: &clap::Command, rows: &[(String, String)], skip: &[&str]) {
        let mut flags = Vec::new();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) || skip.contains(&long) {
                continue;
            }
            flags.push(long.to_owned());
            let row = rows.iter().find(|(f, _)| f == long);
            let (_, default_cell) = row
                .unwrap_or_else(|| panic!("--{long} of `{}` is not in the README", cmd.get_name()));
            for default in arg.get_default_values() {
                let default = default.to_string_lossy();
                if arg.get_action().takes_values() {
                    assert!(
                        default_cell.contains(&format!("`{default}`")),
                        "the README gives --{long} the default {default_cell:?}; the code has {default}"
                    );
                }
            }
        }
        for (flag, _) in rows {
            assert!(
                flags.contains(flag) || skip.contains(&flag.as_str()),
                "the README names --{flag}, which `{}` does not have",
                cmd.get_name()
            );
        }
    }

    #[test]
    fn the_readme_documents_every_edge_flag_with_its_default() {
        let cli = Cli::command();
        let edge = cli.find_subcommand("edge").unwrap();
        let rows = documented(
            "### `postern edge`",
            "### Built-in identity provider limits",
        );
        // --log-format is global, documented in the same table.
        matches_definition(edge, &rows, &["log-format"]);
    }

    #[test]
    fn the_readme_documents_every_connector_flag_with_its_default() {
        let cli = Cli::command();
        let connector = cli.find_subcommand("connector").unwrap();
        let rows = documented("### `postern connector`", "### `postern admin`");
        for sub in ["register", "run"] {
            let cmd = connector.find_subcommand(sub).unwrap();
            let own: Vec<(String, String)> = include_str!("../../../README.md")
                .lines()
                .filter(|l| l.starts_with(&format!("| `{sub} --")))
                .filter_map(|l| {
                    let cells: Vec<&str> = l.split(" | ").collect();
                    let flag = cells[0]
                        .split(['`', ' '])
                        .find_map(|w| w.strip_prefix("--"))?;
                    Some((flag.to_owned(), cells.get(1).unwrap_or(&"").to_string()))
                })
                .collect();
            assert!(own.iter().all(|r| rows.contains(r)));
            matches_definition(cmd, &own, &[]);
        }
    }
}
