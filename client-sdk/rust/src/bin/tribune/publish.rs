//! `tribune publish`: check JSON messages, then publish them on NATS
//! JetStream (the editors' path) or through a hub's `POST /v1/publish`.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use clap::Args;
use tribune_client::{
    ConnectErrorKind, HubPublisher, MAX_PAYLOAD_BYTES, MsgIds, PublishErrorKind, Publisher,
    publisher::check_publication,
};
use tribune_protocol::validate_topic;

use crate::{Failure, runtime, usage};

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
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
    /// Nats-Msg-Id of a single message: running the command again with the
    /// same id within the stream's duplicate window (120 s by default)
    /// stores nothing new and prints `<seq> (duplicate)`. Default: a new
    /// id per message, so every message is stored.
    #[arg(long, conflicts_with = "id_from_content")]
    id: Option<String>,
    /// Derive each Nats-Msg-Id from topic and payload: a payload equal to
    /// one stored on the topic within the duplicate window is not stored
    /// again (`<seq> (duplicate)`). Only for re-runnable scripts; an update
    /// that returns to an earlier state would be dropped.
    #[arg(long)]
    id_from_content: bool,
    /// For TLS (a tls:// NATS, an https:// hub): trust only the CA
    /// certificates of this PEM file instead of the system's root certificates.
    #[arg(long, env = "TRIBUNE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// For a NATS that verifies client certificates: this client's
    /// certificate chain (PEM; needs --tls-key).
    #[arg(long, requires = "tls_key", conflicts_with = "hub")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The hub's publish key (only with --hub).
    #[arg(long, env = "TRIBUNE_PUBLISH_KEY", hide_env_values = true)]
    key: Option<String>,
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

/// Bad flags (URL, certificate files) are the user's to fix: exit 2.
fn connect_failure(e: tribune_client::ConnectError) -> Failure {
    match e.kind() {
        ConnectErrorKind::InvalidUrl | ConnectErrorKind::TlsConfig => usage(e.to_string()),
        _ => runtime(e.to_string()),
    }
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

pub(crate) async fn run(args: PublishArgs) -> Result<(), Failure> {
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
            let msg_ids = if args.id_from_content {
                MsgIds::FromContent
            } else {
                MsgIds::Unique
            };
            let mut builder = Publisher::builder().msg_ids(msg_ids);
            if let Some(ca) = &args.ca_file {
                builder = builder.ca_file(ca);
            }
            if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                builder = builder.client_cert(cert, key);
            }
            let publisher = builder.connect(nats).await.map_err(connect_failure)?;
            for message in messages {
                let stored = match &args.id {
                    Some(id) => publisher.publish_with_id(&args.topic, message, id).await,
                    None => publisher.publish_json(&args.topic, message).await,
                }
                .map_err(fail)?;
                if stored.duplicate {
                    // Not an error (the id asked for exactly this), but the
                    // editor must not believe something new went out.
                    eprintln!(
                        "tribune: {}: message id {} was already stored as seq {}: nothing new published",
                        args.topic, stored.msg_id, stored.seq
                    );
                }
                let _ = writeln!(
                    out,
                    "{}{}",
                    stored.seq,
                    if stored.duplicate { " (duplicate)" } else { "" }
                );
            }
        }
        (None, Some(hub)) => {
            if args.id.is_some() || args.id_from_content {
                return Err(usage("--id and --id-from-content only apply to --nats"));
            }
            let publisher = match &args.ca_file {
                Some(ca) => HubPublisher::with_ca_file(hub, ca),
                None => HubPublisher::new(hub),
            };
            let mut publisher = publisher.map_err(connect_failure)?;
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
