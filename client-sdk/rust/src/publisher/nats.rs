//! The editors' [`Publisher`] on NATS JetStream and its settings
//! ([`PublisherBuilder`]): publications to `<prefix>.fan.<topic>` with a
//! `Nats-Msg-Id`, sent again with the same id when the ack does not come,
//! retraction markers, and JetStream's errors said as [`PublishError`]s.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind as JsPublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use serde::Serialize;
use tribune_protocol::{RETRACT_HEADER, retract_msg_id, validate_topic};

use super::check::{MAX_PAYLOAD_BYTES, check_publication};
use super::connect::connect_nats;
use super::ids::{IdOrigin, MsgIds, content_message_id, unique_message_id};
use crate::error::{ConnectError, PublishError, PublishErrorKind};

/// Subject prefix of the bus (PROTOCOL.md section 10).
pub const DEFAULT_PREFIX: &str = "tribune";

/// A publication stored by the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The stream sequence: the `seq` fans will see.
    pub seq: u64,
    /// Nothing new was stored: an earlier publication with the same message
    /// id (an explicit or content-derived one) is in the stream, and `seq` is
    /// its seq. Never set for a default (unique) id, whose only possible
    /// earlier copy is this publication's own first attempt.
    pub duplicate: bool,
    /// The `Nats-Msg-Id` used.
    pub msg_id: String,
    /// How many times it was sent: more than 1 when acks timed out and it was
    /// retried with the same id.
    pub attempts: u32,
}

/// Settings of a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    prefix: String,
    /// Where ids come from when the caller gives none.
    msg_ids: MsgIds,
    max_payload: usize,
    attempts: u32,
    ack_timeout: Duration,
    connect_timeout: Duration,
    /// Trust only this CA for a TLS NATS instead of the platform's roots.
    ca_file: Option<PathBuf>,
    /// Certificate and key (PEM) for a NATS that verifies its clients.
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for PublisherBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.into(),
            msg_ids: MsgIds::Unique,
            max_payload: MAX_PAYLOAD_BYTES,
            attempts: 3,
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            client_cert: None,
        }
    }
}

impl PublisherBuilder {
    /// Subject prefix, when the hubs use another than `tribune`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where the `Nats-Msg-Id` of [`Publisher::publish`] and
    /// [`Publisher::publish_json`] comes from. Default [`MsgIds::Unique`];
    /// [`MsgIds::FromContent`] stores a repeated payload once.
    pub fn msg_ids(mut self, msg_ids: MsgIds) -> Self {
        self.msg_ids = msg_ids;
        self
    }

    /// Payload limit, when the hubs are configured with another.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// How many times a publication is sent before giving up on timeouts
    /// (same message id every time). Default 3.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Wait for the stream's ack, per attempt. Default 5 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Bound of the first connection to NATS. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// For a NATS with TLS, trust only the CA certificates of this PEM file
    /// instead of the platform's root certificates (a private CA).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// For a NATS that verifies its clients' certificates (`verify: true`):
    /// this client's certificate chain and private key, both PEM.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Connects to NATS (`nats://host:port`, comma-separated for a cluster;
    /// `tls://host:port` insists on TLS, which `nats://` also uses when the
    /// server asks for it).
    pub async fn connect(self, url: &str) -> Result<Publisher, ConnectError> {
        let client = connect_nats(
            url,
            self.connect_timeout,
            self.ca_file.as_ref(),
            self.client_cert.as_ref(),
        )
        .await?;
        Ok(self.client(client))
    }

    /// Uses an existing NATS client (credentials, TLS and the like set by the caller).
    pub fn client(self, client: async_nats::Client) -> Publisher {
        let js = jetstream::ContextBuilder::new()
            .timeout(self.ack_timeout)
            .build(client);
        Publisher {
            js,
            prefix: self.prefix,
            msg_ids: self.msg_ids,
            max_payload: self.max_payload,
            attempts: self.attempts,
        }
    }
}

/// An editor's publisher: JSON payloads to `tribune.fan.<topic>` on NATS
/// JetStream, each acknowledged by the stream.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    /// `<prefix>.fan.<topic>` is the subject.
    prefix: String,
    /// Where ids come from when the caller gives none.
    msg_ids: MsgIds,
    max_payload: usize,
    attempts: u32,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("prefix", &self.prefix)
            .field("msg_ids", &self.msg_ids)
            .field("max_payload", &self.max_payload)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn builder() -> PublisherBuilder {
        PublisherBuilder::default()
    }

    /// Connects to NATS with the default settings.
    pub async fn connect(url: &str) -> Result<Publisher, ConnectError> {
        Self::builder().connect(url).await
    }

    /// Publishes `data` serialized to JSON, with an id per
    /// [`PublisherBuilder::msg_ids`] (by default a new one: always stored).
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        data: &T,
    ) -> Result<Published, PublishError> {
        let json = serde_json::to_vec(data).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidJson, topic.to_string(), e)
        })?;
        self.publish_json(topic, json).await
    }

    /// Publishes a payload that is already JSON (checked here), with an id
    /// per [`PublisherBuilder::msg_ids`] (by default a new one: always stored).
    pub async fn publish_json(
        &self,
        topic: &str,
        json: impl Into<Bytes>,
    ) -> Result<Published, PublishError> {
        let json = json.into();
        match self.msg_ids {
            MsgIds::Unique => {
                let id = unique_message_id();
                self.send(topic, json, &id, IdOrigin::ThisPublication).await
            }
            MsgIds::FromContent => {
                let id = content_message_id(topic, &json);
                self.send(topic, json, &id, IdOrigin::Shared).await
            }
        }
    }

    /// Publishes with the caller's message id: a publication repeated with
    /// the same id within the stream's duplicate window is stored once
    /// (answered with the first one's seq, marked duplicate).
    pub async fn publish_with_id(
        &self,
        topic: &str,
        json: impl Into<Bytes>,
        msg_id: &str,
    ) -> Result<Published, PublishError> {
        self.send(topic, json.into(), msg_id, IdOrigin::Shared)
            .await
    }

    /// Sends until the stream acks, every attempt with the same id.
    async fn send(
        &self,
        topic: &str,
        json: Bytes,
        msg_id: &str,
        origin: IdOrigin,
    ) -> Result<Published, PublishError> {
        check_publication(topic, &json, self.max_payload)?;
        let subject = format!("{}.fan.{topic}", self.prefix);
        let mut last_timeout = None;
        for attempt in 1..=self.attempts {
            match self.send_once(&subject, json.clone(), msg_id).await {
                Ok(ack) => {
                    return Ok(Published {
                        seq: ack.sequence,
                        // A unique id the stream already holds was stored by
                        // an earlier attempt of this very call, whose ack was
                        // lost: for the caller that is a new publication.
                        duplicate: ack.duplicate && origin == IdOrigin::Shared,
                        msg_id: msg_id.to_string(),
                        attempts: attempt,
                    });
                }
                Err(e) if e.kind() == JsPublishErrorKind::TimedOut => {
                    // The message may have been stored and only the ack lost:
                    // the same id makes the retry idempotent.
                    tracing::debug!(%subject, attempt, "publish ack timed out, retrying");
                    last_timeout = Some(e);
                }
                Err(e) => return Err(map_js_error(topic, e)),
            }
        }
        Err(PublishError::with_source(
            PublishErrorKind::TimedOut,
            format!("{topic}: no ack after {} attempts", self.attempts),
            last_timeout.expect("at least one attempt"),
        ))
    }

    async fn send_once(
        &self,
        subject: &str,
        json: Bytes,
        msg_id: &str,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        let publish = PublishMessage::build().payload(json).message_id(msg_id);
        self.js
            .send_publish(subject.to_string(), publish)
            .await?
            .await
    }

    /// Retracts the message `seq` of `topic` (a clip taken down): stores a
    /// retraction marker, an empty message with the header
    /// [`RETRACT_HEADER`] naming `seq` (PROTOCOL.md section 13), and
    /// answers the marker's own seq. Hubs stop serving the message and tell
    /// live fans. Retracting the same message again within the duplicate
    /// window stores nothing new. Meant for `feed` topics: on a `state`
    /// topic hubs ignore (and count) the marker, the correction there is
    /// the next state.
    pub async fn retract(&self, topic: &str, seq: u64) -> Result<Published, PublishError> {
        validate_topic(topic).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidTopic, topic.to_string(), e)
        })?;
        if seq == 0 {
            return Err(PublishError::new(
                PublishErrorKind::InvalidJson,
                format!("{topic}: seq 0 names no message"),
            ));
        }
        let subject = format!("{}.fan.{topic}", self.prefix);
        let msg_id = retract_msg_id(topic, seq);
        let mut last_timeout = None;
        for attempt in 1..=self.attempts {
            let publish = PublishMessage::build()
                .payload(Bytes::new())
                .message_id(&msg_id)
                .header(RETRACT_HEADER, seq.to_string().as_str());
            let sent = match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(ack) => {
                    return Ok(Published {
                        seq: ack.sequence,
                        duplicate: ack.duplicate,
                        msg_id,
                        attempts: attempt,
                    });
                }
                Err(e) if e.kind() == JsPublishErrorKind::TimedOut => last_timeout = Some(e),
                Err(e) => return Err(map_js_error(topic, e)),
            }
        }
        Err(PublishError::with_source(
            PublishErrorKind::TimedOut,
            format!("{topic}: no ack after {} attempts", self.attempts),
            last_timeout.expect("at least one attempt"),
        ))
    }
}

fn map_js_error(topic: &str, e: jetstream::context::PublishError) -> PublishError {
    let kind = match e.kind() {
        JsPublishErrorKind::StreamNotFound => PublishErrorKind::NoStream,
        JsPublishErrorKind::MaxPayloadExceeded => PublishErrorKind::PayloadTooLarge,
        JsPublishErrorKind::TimedOut => PublishErrorKind::TimedOut,
        _ => PublishErrorKind::Transport,
    };
    PublishError::with_source(kind, topic.to_string(), e)
}
