//! `tribune tail`: print the messages of topics as they arrive, with gaps
//! and reconnections reported on stderr.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use futures::StreamExt;
use tribune_client::{Client, ConnectionEvent, Event, SubscribeOptions};
use tribune_protocol::{ServerFrame, encode_server, validate_topic};

use crate::{Failure, runtime, usage};

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
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
    /// For a wss:// hub: trust only the CA certificates of this PEM file
    /// instead of the system's root certificates (a private or test CA).
    #[arg(long, env = "TRIBUNE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// A JWT for namespaces that need one.
    #[arg(long, env = "TRIBUNE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub(crate) async fn run(args: TailArgs) -> Result<(), Failure> {
    for topic in &args.topics {
        validate_topic(topic).map_err(|e| usage(format!("invalid topic '{topic}': {e}")))?;
    }
    let mut builder = Client::builder(&args.url);
    if let Some(token) = &args.token {
        builder = builder.token(token);
    }
    if let Some(ca) = &args.ca_file {
        builder = builder.ca_file(ca);
    }
    let client = builder.connect().await.map_err(|e| match e.kind() {
        tribune_client::ConnectErrorKind::InvalidUrl
        | tribune_client::ConnectErrorKind::TlsConfig => usage(e.to_string()),
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
                    Event::Retract { topic, seq, at } => {
                        if args.json {
                            Some(serde_json::json!({
                                "type": "retract", "topic": topic, "seq": seq, "at": at,
                            }).to_string())
                        } else {
                            Some(format!("{topic} #{seq} retracted (#{at})"))
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
