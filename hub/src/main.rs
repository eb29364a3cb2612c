//! `tribune-hub`: parse the configuration, start tracing, run the node.

use std::process::ExitCode;

use clap::Parser;
use tribune_hub::config::{Cli, Config, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tribune-hub: {e:#}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    // Keys and files of [auth], [tls], [bus] and [stats] are read here too, so --check-config refuses
    // what the node would refuse at start.
    if let Err(e) = tribune_hub::auth::Authenticator::from_config(&config.auth) {
        eprintln!("tribune-hub: auth: {e:#}");
        return ExitCode::from(2);
    }
    if let Err(e) = tribune_hub::check_tls(&config.tls) {
        eprintln!("tribune-hub: {e:#}");
        return ExitCode::from(2);
    }
    if let Err(e) = tribune_hub::check_bus(&config.bus) {
        eprintln!("tribune-hub: {e:#}");
        return ExitCode::from(2);
    }
    if let Err(e) = tribune_hub::check_stats_key(&config.stats) {
        eprintln!("tribune-hub: {e:#}");
        return ExitCode::from(2);
    }
    if cli.check_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    raise_file_limit();
    start_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tribune-hub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.provision_stream {
        return match runtime.block_on(tribune_hub::provision_stream(&config)) {
            Ok(epoch) => {
                println!("stream {} ready, epoch {epoch}", config.bus.stream);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tribune-hub: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if cli.promote_region {
        return match runtime.block_on(tribune_hub::promote_region(&config)) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tribune-hub: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match runtime.block_on(tribune_hub::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tribune-hub: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Every connection is a file: raise the soft limit to the hard one, since
/// container runtimes no longer start processes with a high soft limit.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info,async_nats=warn`).
/// Colour codes only for a person at a terminal: log collectors and files
/// get plain `key=value` lines, or one JSON object per line with
/// `log_format = "json"`.
fn start_logging(format: LogFormat) {
    use std::io::IsTerminal;
    // Without RUST_LOG: the NATS client's own lines only from WARN, as it
    // logs every reconnect attempt at INFO; the hub's watcher says the same
    // once in ten seconds, naming the server.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
