//! `tribune`: tail topics from a hub, publish to them as an editor.
//!
//! ```text
//! tribune tail <topic>... [--url WS_URL] [--since SEQ --epoch E] [--history N] [--json] [--count N]
//! tribune publish <topic> [--data JSON | --file F | -] (--nats URL | --hub URL)
//! ```
//!
//! Exit codes: 0 done, 1 the hub or the bus failed, 2 bad input (topic,
//! JSON, size, arguments), each with one line on stderr.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use tribune_client::{
    Client, ConnectionEvent, Event, HubPublisher, MAX_PAYLOAD_BYTES, PublishErrorKind, Publisher,
    SubscribeOptions, publisher::check_publication,
};
use tribune_protocol::{ServerFrame, encode_server, validate_topic};

#[derive(Debug, Parser)]
#[command(name = "tribune", version, about = "Tail and publish Tribune topics")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the messages of topics as they arrive.
    Tail(Tail),
    /// Publish JSON messages to a topic (NATS JetStream, or a hub's /v1/publish).
    Publish(PublishArgs),
}

#[derive(Debug, Args)]
struct Tail {
    /// Topics, e.g. results.lausanne2020.speed-skating.mixed-team-sprint.
    #[arg(required = true)]
    topics: Vec<String>,
    /// The hub (ws://, http:// or a full /v1/ws URL).
    #[arg(long, env = "TRIBUNE_URL", default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Resume after this seq (needs --epoch).
    #[arg(long, requires = "epoch")]
    since: Option<u64>,
    /// The epoch of --since.
    #[arg(long, requires = "since")]
    epoch: Option<String>,
    /// Replay the latest N retained messages first.
    #[arg(long)]
    history: Option<u32>,
    /// One JSON object a line: the hub's `message` frames, plus `gap` and `stats`.
    #[arg(long)]
    json: bool,
    /// Also print live audience and reaction figures.
    #[arg(long)]
    stats: bool,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// A JWT for namespaces that need one.
    #[arg(long, env = "TRIBUNE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// The topic, e.g. clips.lausanne2020.speed-skating.
    topic: String,
    /// `-`: read JSON lines from stdin, one message a line (also the default
    /// without --data and --file).
    #[arg(value_name = "-", conflicts_with_all = ["data", "file"])]
    stdin: Option<String>,
    /// One message, as JSON text.
    #[arg(long, conflicts_with = "file")]
    data: Option<String>,
    /// One message: the JSON content of this file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// NATS URL: publish to the JetStream stream (the editors' path).
    #[arg(long, env = "TRIBUNE_NATS", conflicts_with = "hub")]
    nats: Option<String>,
    /// Hub internal listener URL (http://HOST:9090): publish through its POST /v1/publish.
    #[arg(long, env = "TRIBUNE_HUB")]
    hub: Option<String>,
    /// Nats-Msg-Id of a single message (default: derived from topic and payload).
    #[arg(long)]
    id: Option<String>,
    /// The hub's publish key (only with --hub).
    #[arg(long, env = "TRIBUNE_PUBLISH_KEY", hide_env_values = true)]
    key: Option<String>,
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn runtime(message: impl Into<String>) -> Failure {
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
            Command::Tail(args) => tail(args).await,
            Command::Publish(args) => publish(args).await,
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

async fn tail(args: Tail) -> Result<(), Failure> {
    for topic in &args.topics {
        validate_topic(topic).map_err(|e| usage(format!("invalid topic '{topic}': {e}")))?;
    }
    let mut builder = Client::builder(&args.url);
    if let Some(token) = &args.token {
        builder = builder.token(token);
    }
    let client = builder.connect().await.map_err(|e| match e.kind() {
        tribune_client::ConnectErrorKind::InvalidUrl => usage(e.to_string()),
        _ => runtime(e.to_string()),
    })?;
    let mut events = client.events();
    let mut subs = futures::stream::SelectAll::new();
    for topic in &args.topics {
        let mut options = SubscribeOptions::new();
        if let Some(n) = args.history {
            options = options.history(n);
        }
        if let (Some(since), Some(epoch)) = (args.since, &args.epoch) {
            options = options.since(since, epoch.clone());
        }
        let sub = client
            .subscribe_with(topic.clone(), options)
            .await
            .map_err(|e| match e.kind() {
                tribune_client::SubscribeErrorKind::InvalidTopic => usage(e.to_string()),
                _ => runtime(e.to_string()),
            })?;
        let info = sub.info();
        eprintln!(
            "tribune: {topic}: {} topic, epoch {}, seq {}{}",
            info.mode.as_str(),
            info.epoch,
            info.seq,
            match info.recovered {
                Some(true) => ", resumed",
                Some(false) => ", not recovered",
                None => "",
            }
        );
        subs.push(sub);
    }
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    loop {
        tokio::select! {
            event = subs.next() => {
                let Some(event) = event else { return Ok(()) };
                let line = match event {
                    Event::Message(msg) => {
                        printed += 1;
                        if args.json {
                            Some(encode_server(&ServerFrame::Message(msg)))
                        } else {
                            Some(format!("{} #{} {}", msg.topic, msg.seq, msg.data.get()))
                        }
                    }
                    Event::Gap { topic, after_seq, before_seq, epoch_changed, epoch } => {
                        if args.json {
                            Some(serde_json::json!({
                                "type": "gap", "topic": topic, "after_seq": after_seq,
                                "before_seq": before_seq, "epoch_changed": epoch_changed, "epoch": epoch,
                            }).to_string())
                        } else {
                            let lost = match before_seq {
                                Some(before) => format!("messages after #{after_seq} and before #{before} were lost on the bus"),
                                None => format!("messages after #{after_seq} are no longer retained"),
                            };
                            eprintln!("tribune: {topic}: {lost}{}",
                                if epoch_changed { " (the bus epoch changed)" } else { "" });
                            None
                        }
                    }
                    Event::Stats(stats) if args.stats => {
                        if args.json {
                            Some(encode_server(&ServerFrame::Stats(stats)))
                        } else {
                            let reactions: Vec<String> =
                                stats.reactions.iter().map(|(r, n)| format!("{r} {n}")).collect();
                            Some(format!("{} · {} watching · {}", stats.topic, stats.audience, reactions.join(" ")))
                        }
                    }
                    Event::Closed { reason, .. } => return Err(runtime(reason)),
                    _ => None,
                };
                if let Some(line) = line {
                    // A closed stdout (`| head`) ends the tail quietly.
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        return Ok(());
                    }
                }
                if args.count.is_some_and(|n| printed >= n) {
                    client.close().await;
                    return Ok(());
                }
            }
            Some(event) = events.next() => match event {
                ConnectionEvent::Disconnected { reason, retry_in: Some(d) } => {
                    eprintln!("tribune: {reason}; reconnecting in {} ms", d.as_millis());
                }
                ConnectionEvent::Connected { node, .. } => eprintln!("tribune: connected to {node}"),
                ConnectionEvent::Closed { reason } => return Err(runtime(reason.to_string())),
                _ => {}
            },
        }
    }
}

/// Reads the messages to publish, all checked before anything is sent.
fn read_messages(args: &PublishArgs) -> Result<Vec<String>, Failure> {
    let messages = if let Some(data) = &args.data {
        vec![data.clone()]
    } else if let Some(path) = &args.file {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        vec![text.trim().to_string()]
    } else {
        if let Some(other) = args.stdin.as_deref().filter(|s| *s != "-") {
            return Err(usage(format!(
                "unexpected argument '{other}' (use --data, --file or -)"
            )));
        }
        let mut lines = Vec::new();
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.map_err(|e| usage(format!("stdin line {}: {e}", n + 1)))?;
            if !line.trim().is_empty() {
                lines.push((n + 1, line));
            }
        }
        for (n, line) in &lines {
            check(&args.topic, line)
                .map_err(|f| usage(format!("stdin line {n}: {}", f.message)))?;
        }
        return Ok(lines.into_iter().map(|(_, l)| l).collect());
    };
    for message in &messages {
        check(&args.topic, message)?;
    }
    Ok(messages)
}

fn check(topic: &str, json: &str) -> Result<(), Failure> {
    check_publication(topic, json.as_bytes(), MAX_PAYLOAD_BYTES).map_err(|e| match e.kind() {
        PublishErrorKind::InvalidTopic => {
            usage(format!("invalid topic '{topic}': {}", source_text(&e)))
        }
        PublishErrorKind::InvalidJson => usage(format!("invalid JSON: {}", source_text(&e))),
        _ => usage(e.to_string()),
    })
}

fn source_text(e: &tribune_client::PublishError) -> String {
    std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string())
}

async fn publish(args: PublishArgs) -> Result<(), Failure> {
    validate_topic(&args.topic)
        .map_err(|e| usage(format!("invalid topic '{}': {e}", args.topic)))?;
    let messages = read_messages(&args)?;
    if args.id.is_some() && messages.len() != 1 {
        return Err(usage("--id needs exactly one message"));
    }
    let fail = |e: tribune_client::PublishError| match e.kind() {
        PublishErrorKind::InvalidTopic
        | PublishErrorKind::InvalidJson
        | PublishErrorKind::PayloadTooLarge => usage(e.to_string()),
        _ => runtime(e.to_string()),
    };
    let mut out = std::io::stdout().lock();
    match (&args.nats, &args.hub) {
        (Some(nats), _) => {
            let publisher = Publisher::connect(nats)
                .await
                .map_err(|e| runtime(e.to_string()))?;
            for message in messages {
                let stored = match &args.id {
                    Some(id) => publisher.publish_with_id(&args.topic, message, id).await,
                    None => publisher.publish_json(&args.topic, message).await,
                }
                .map_err(fail)?;
                let _ = writeln!(
                    out,
                    "{}{}",
                    stored.seq,
                    if stored.duplicate { " (duplicate)" } else { "" }
                );
            }
        }
        (None, Some(hub)) => {
            if args.id.is_some() {
                return Err(usage("--id only applies to --nats"));
            }
            let mut publisher = HubPublisher::new(hub).map_err(|e| usage(e.to_string()))?;
            if let Some(key) = &args.key {
                publisher = publisher.key(key);
            }
            for message in messages {
                let seq = publisher
                    .publish_json(&args.topic, &message)
                    .await
                    .map_err(fail)?;
                let _ = writeln!(out, "{seq}");
            }
        }
        (None, None) => {
            return Err(usage(
                "give --nats URL or --hub URL (or TRIBUNE_NATS / TRIBUNE_HUB)",
            ));
        }
    }
    Ok(())
}
