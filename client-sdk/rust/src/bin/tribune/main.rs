//! `tribune`: tail topics from a hub, publish to them as an editor.
//!
//! ```text
//! tribune tail <topic>... [--url WS_URL] [--since SEQ --epoch E] [--history N] [--json] [--count N] [--ca-file PEM]
//! tribune publish <topic> [--data JSON | --file F | -] (--nats URL | --hub URL) [--id ID | --id-from-content]
//!                 [--ca-file PEM] [--tls-cert PEM --tls-key PEM]
//! tribune retract <topic> <seq> (--nats URL | --hub URL) [--key K] [--ca-file PEM]
//! tribune token --topics T[,T...] [--ttl 1h] [--sub S] [--aud A] [--secret-file F | --secret S]
//! tribune disconnect (--user U | --conn C [--node N]) --hub URL --key K
//! tribune revoke (--jti J | --user U [--before UNIX]) [--until UNIX] --hub URL --key K
//! ```
//!
//! TLS: `wss://`/`https://` hubs and `tls://` NATS are verified against the
//! system's root certificates, or only against `--ca-file` when given.
//!
//! Exit codes: 0 done, 1 the hub or the bus failed, 2 bad input (topic,
//! JSON, size, arguments), each with one line on stderr.
//!
//! Layout: this file parses the command line and maps failures to exit
//! codes; each subcommand lives in its own file (`tail.rs`, `publish.rs`,
//! `retract.rs`, `token.rs`, `operator.rs` for the server API).

mod operator;
mod publish;
mod retract;
mod tail;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tribune",
    version,
    about = "Tail and publish Tribune topics, mint test tokens, disconnect and revoke"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the messages of topics as they arrive.
    Tail(tail::TailArgs),
    /// Publish JSON messages to a topic (NATS JetStream, or a hub's /v1/publish).
    Publish(publish::PublishArgs),
    /// Retract a published message of a feed topic (hubs stop serving it, fans drop it).
    Retract(retract::RetractArgs),
    /// Mint an HS256 fan token for development and tests (the secret is the hub's).
    Token(token::TokenArgs),
    /// Close a user's connections on every node, or one connection (server API).
    Disconnect(operator::DisconnectArgs),
    /// Revoke a token by jti, or a user's tokens issued before a time (server API).
    Revoke(operator::RevokeArgs),
}

/// A failure with its exit code.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

pub(crate) fn runtime(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIBUNE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tribune: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Tail(args) => tail::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Retract(args) => retract::run(args).await,
            Command::Token(args) => token::run(args),
            Command::Disconnect(args) => operator::disconnect(args).await,
            Command::Revoke(args) => operator::revoke(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("tribune: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
