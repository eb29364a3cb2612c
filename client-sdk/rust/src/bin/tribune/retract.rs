//! `tribune retract TOPIC SEQ`: an editor takes a published message down
//! (PROTOCOL.md section 13), on NATS JetStream (a retraction marker on the
//! topic's subject) or through a hub's `POST /v1/retract`. Prints the
//! retraction's own seq.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use tribune_client::{ConnectErrorKind, HubPublisher, PublishErrorKind, Publisher};
use tribune_protocol::validate_topic;

use crate::{Failure, runtime, usage};

#[derive(Debug, Args)]
pub(crate) struct RetractArgs {
    /// The topic, e.g. clips.lausanne2020.speed-skating (a feed topic).
    topic: String,
    /// The seq of the message to retract.
    seq: u64,
    /// NATS URL: store the retraction in the JetStream stream.
    #[arg(long, env = "TRIBUNE_NATS", conflicts_with = "hub")]
    nats: Option<String>,
    /// Hub internal listener URL (http://HOST:9090): retract through its POST /v1/retract.
    #[arg(long, env = "TRIBUNE_HUB")]
    hub: Option<String>,
    /// For TLS: trust only the CA certificates of this PEM file.
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

fn connect_failure(e: tribune_client::ConnectError) -> Failure {
    match e.kind() {
        ConnectErrorKind::InvalidUrl | ConnectErrorKind::TlsConfig => usage(e.to_string()),
        _ => runtime(e.to_string()),
    }
}

pub(crate) async fn run(args: RetractArgs) -> Result<(), Failure> {
    validate_topic(&args.topic)
        .map_err(|e| usage(format!("invalid topic '{}': {e}", args.topic)))?;
    if args.seq == 0 {
        return Err(usage("seq must name a stored message (above 0)"));
    }
    let fail = |e: tribune_client::PublishError| match e.kind() {
        PublishErrorKind::InvalidTopic | PublishErrorKind::Refused(_) => usage(e.to_string()),
        _ => runtime(e.to_string()),
    };
    let at = match (&args.nats, &args.hub) {
        (Some(nats), _) => {
            let mut builder = Publisher::builder();
            if let Some(ca) = &args.ca_file {
                builder = builder.ca_file(ca);
            }
            if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                builder = builder.client_cert(cert, key);
            }
            let publisher = builder.connect(nats).await.map_err(connect_failure)?;
            let stored = publisher
                .retract(&args.topic, args.seq)
                .await
                .map_err(fail)?;
            if stored.duplicate {
                eprintln!(
                    "tribune: {}: seq {} was already retracted (retraction seq {})",
                    args.topic, args.seq, stored.seq
                );
            }
            stored.seq
        }
        (None, Some(hub)) => {
            let publisher = match &args.ca_file {
                Some(ca) => HubPublisher::with_ca_file(hub, ca),
                None => HubPublisher::new(hub),
            };
            let mut publisher = publisher.map_err(connect_failure)?;
            if let Some(key) = &args.key {
                publisher = publisher.key(key);
            }
            publisher
                .retract(&args.topic, args.seq)
                .await
                .map_err(fail)?
        }
        (None, None) => {
            return Err(usage(
                "give --nats URL or --hub URL (or TRIBUNE_NATS / TRIBUNE_HUB)",
            ));
        }
    };
    let _ = writeln!(std::io::stdout().lock(), "{at}");
    Ok(())
}
