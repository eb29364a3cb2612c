//! Publishing as an editor: [`Publisher`] on NATS JetStream (the normal
//! path, PROTOCOL.md section 10) and [`HubPublisher`] through a hub's
//! `POST /v1/publish` (integrations, tests, the embedded bus).
//!
//! Both check a publication before it leaves: a valid topic, a payload that
//! is one JSON value, at most [`MAX_PAYLOAD_BYTES`]. The hub would count and
//! drop anything else; refusing it here tells the editor instead.
//!
//! # Message ids and retries
//!
//! Every NATS publication carries a `Nats-Msg-Id`, so that the stream stores
//! a retried publication once (within its duplicate window, 120 s by
//! default). The caller may supply the id ([`Publisher::publish_with_id`]);
//! otherwise it is derived from the content by [`message_id`]:
//!
//! ```text
//! "t1-" + lowercase hex of the first 16 bytes of SHA-256(topic ‖ 0x00 ‖ payload)
//! ```
//!
//! The same payload published twice on the same topic within the window is
//! therefore stored once: harmless for `state` topics (same board), and what
//! a retry wants. An editor that means to repeat an identical message must
//! give its own id. On a timeout the publication is sent again with the same
//! id, so a retry never duplicates; the seq returned is the stored one.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind as JsPublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use serde::Serialize;
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};
use tribune_protocol::frame::{HttpError, PublishRequest, PublishResponse};
use tribune_protocol::validate_topic;

use crate::error::{ConnectError, ConnectErrorKind, PublishError, PublishErrorKind};

/// Largest payload the hub forwards (PROTOCOL.md section 8).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Subject prefix of the bus (PROTOCOL.md section 10).
pub const DEFAULT_PREFIX: &str = "tribune";

/// Checks a publication: topic rules, size, one JSON value.
pub fn check_publication(
    topic: &str,
    payload: &[u8],
    max_bytes: usize,
) -> Result<(), PublishError> {
    validate_topic(topic).map_err(|e| {
        PublishError::with_source(PublishErrorKind::InvalidTopic, topic.to_string(), e)
    })?;
    if payload.len() > max_bytes {
        return Err(PublishError::new(
            PublishErrorKind::PayloadTooLarge,
            format!("{topic}: {} bytes, the limit is {max_bytes}", payload.len()),
        ));
    }
    serde_json::from_slice::<IgnoredAny>(payload).map_err(|e| {
        PublishError::with_source(PublishErrorKind::InvalidJson, format!("{topic}: {e}"), e)
    })?;
    Ok(())
}

/// The `Nats-Msg-Id` derived from a publication's content (see the module doc).
pub fn message_id(topic: &str, payload: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(topic.as_bytes());
    hash.update([0u8]);
    hash.update(payload);
    let digest = hash.finalize();
    let mut id = String::with_capacity(3 + 32);
    id.push_str("t1-");
    for byte in &digest[..16] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// A publication stored by the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The stream sequence: the `seq` fans will see.
    pub seq: u64,
    /// The stream already held this message id: stored once, this is its seq.
    pub duplicate: bool,
    /// The `Nats-Msg-Id` used.
    pub msg_id: String,
}

/// Settings of a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    prefix: String,
    max_payload: usize,
    attempts: u32,
    ack_timeout: Duration,
    connect_timeout: Duration,
}

impl Default for PublisherBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.into(),
            max_payload: MAX_PAYLOAD_BYTES,
            attempts: 3,
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl PublisherBuilder {
    /// Subject prefix, when the hubs use another than `tribune`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
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

    /// Connects to NATS (`nats://host:port`, comma-separated for a cluster).
    pub async fn connect(self, url: &str) -> Result<Publisher, ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(self.connect_timeout)
            .connect(url)
            .await
            .map_err(|e| {
                let kind = match e.kind() {
                    async_nats::ConnectErrorKind::ServerParse => ConnectErrorKind::InvalidUrl,
                    async_nats::ConnectErrorKind::TimedOut => ConnectErrorKind::TimedOut,
                    async_nats::ConnectErrorKind::Authentication
                    | async_nats::ConnectErrorKind::AuthorizationViolation => {
                        ConnectErrorKind::Unauthorized
                    }
                    _ => ConnectErrorKind::Io,
                };
                ConnectError::with_source(kind, url.to_string(), e)
            })?;
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
    max_payload: usize,
    attempts: u32,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("prefix", &self.prefix)
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

    /// Publishes `data` serialized to JSON.
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

    /// Publishes a payload that is already JSON (checked here), with the
    /// content-derived message id.
    pub async fn publish_json(
        &self,
        topic: &str,
        json: impl Into<Bytes>,
    ) -> Result<Published, PublishError> {
        let json = json.into();
        let id = message_id(topic, &json);
        self.publish_with_id(topic, json, &id).await
    }

    /// Publishes with the caller's message id.
    pub async fn publish_with_id(
        &self,
        topic: &str,
        json: impl Into<Bytes>,
        msg_id: &str,
    ) -> Result<Published, PublishError> {
        let json = json.into();
        check_publication(topic, &json, self.max_payload)?;
        let subject = format!("{}.fan.{topic}", self.prefix);
        let mut last_timeout = None;
        for attempt in 1..=self.attempts {
            match self.send_once(&subject, json.clone(), msg_id).await {
                Ok(ack) => {
                    return Ok(Published {
                        seq: ack.sequence,
                        duplicate: ack.duplicate,
                        msg_id: msg_id.to_string(),
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

/// Publishing through a hub's `POST /v1/publish` (on its internal
/// listener): for integrations, tests and the embedded bus. The hub wants
/// its `publish_key` ([`HubPublisher::key`]); without one configured it
/// takes publications only from loopback on a `--demo` node.
#[derive(Debug, Clone)]
pub struct HubPublisher {
    http: reqwest::Client,
    /// `http(s)://host:port/v1/publish`.
    endpoint: url::Url,
    /// The hub's publish key, sent as a bearer token.
    key: Option<String>,
    max_payload: usize,
}

impl HubPublisher {
    /// A publisher for the hub at `url` (`http://host:port`; `ws://` is
    /// accepted and mapped).
    pub fn new(url: &str) -> Result<Self, ConnectError> {
        let mut endpoint = url::Url::parse(url).map_err(|e| {
            ConnectError::with_source(ConnectErrorKind::InvalidUrl, url.to_string(), e)
        })?;
        let scheme = match endpoint.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            other => {
                return Err(ConnectError::new(
                    ConnectErrorKind::InvalidUrl,
                    format!("{url}: scheme '{other}' is not http or https"),
                ));
            }
        };
        if endpoint.scheme() != scheme {
            let _ = endpoint.set_scheme(scheme);
        }
        endpoint.set_path("/v1/publish");
        endpoint.set_query(None);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConnectError::with_source(ConnectErrorKind::Io, "HTTP client", e))?;
        Ok(Self {
            http,
            endpoint,
            key: None,
            max_payload: MAX_PAYLOAD_BYTES,
        })
    }

    /// The hub's publish key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Publishes a payload that is already JSON (checked here); returns the seq.
    pub async fn publish_json(&self, topic: &str, json: &str) -> Result<u64, PublishError> {
        check_publication(topic, json.as_bytes(), self.max_payload)?;
        let data = serde_json::value::RawValue::from_string(json.to_string()).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidJson, topic.to_string(), e)
        })?;
        let body = PublishRequest {
            topic: topic.to_string(),
            data,
        };
        let mut request = self.http.post(self.endpoint.clone()).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                PublishErrorKind::TimedOut
            } else {
                PublishErrorKind::Transport
            };
            PublishError::with_source(kind, format!("{}", self.endpoint), e)
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            PublishError::with_source(PublishErrorKind::Transport, topic.to_string(), e)
        })?;
        if status.is_success() {
            let answer: PublishResponse = serde_json::from_str(&text).map_err(|e| {
                PublishError::with_source(
                    PublishErrorKind::Transport,
                    format!("{topic}: unexpected answer {text}"),
                    e,
                )
            })?;
            return Ok(answer.seq);
        }
        match serde_json::from_str::<HttpError>(&text) {
            Ok(err) => Err(PublishError::new(
                PublishErrorKind::Refused(err.error.code),
                format!("{topic}: {} ({status})", err.error.message),
            )),
            Err(_) => Err(PublishError::new(
                PublishErrorKind::Transport,
                format!("{topic}: HTTP {status}: {text}"),
            )),
        }
    }

    /// Publishes `data` serialized to JSON; returns the seq.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        data: &T,
    ) -> Result<u64, PublishError> {
        let json = serde_json::to_string(data).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidJson, topic.to_string(), e)
        })?;
        self.publish_json(topic, &json).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        let ok = br#"{"kind":"clip","id":"c1"}"#;
        assert!(check_publication("clips.a.b", ok, MAX_PAYLOAD_BYTES).is_ok());
        assert!(check_publication("clips.a.b", b"42", MAX_PAYLOAD_BYTES).is_ok());
        let kind = |t: &str, p: &[u8], max| check_publication(t, p, max).unwrap_err().kind();
        assert_eq!(
            kind("clips", ok, MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidTopic
        );
        assert_eq!(
            kind("clips.*", ok, MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidTopic
        );
        assert_eq!(
            kind("clips.a", b"{\"a\":", MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidJson
        );
        assert_eq!(
            kind("clips.a", b"{} {}", MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidJson
        );
        assert_eq!(
            kind("clips.a", b"", MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidJson
        );
        assert_eq!(kind("clips.a", ok, 10), PublishErrorKind::PayloadTooLarge);
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(
            kind("clips.a", big.as_bytes(), MAX_PAYLOAD_BYTES),
            PublishErrorKind::PayloadTooLarge
        );
    }

    #[test]
    fn message_ids_are_deterministic_and_content_bound() {
        let a = message_id("clips.a.b", b"{\"n\":1}");
        assert_eq!(a, message_id("clips.a.b", b"{\"n\":1}"));
        assert_ne!(a, message_id("clips.a.b", b"{\"n\":2}"));
        assert_ne!(a, message_id("clips.a.c", b"{\"n\":1}"));
        // The separator keeps topic and payload apart: "a.b" + "c" ≠ "a.bc" + "".
        assert_ne!(message_id("x.ab", b"c"), message_id("x.a", b"bc"));
        assert!(a.starts_with("t1-") && a.len() == 35, "{a}");
        // Pinned: the derivation is part of the contract (retries across
        // processes and versions must agree). Computed independently:
        // python3 -c 'import hashlib;print(hashlib.sha256(b"x.y\x00{}").hexdigest()[:32])'
        assert_eq!(
            message_id("x.y", b"{}"),
            "t1-b61f707121a61495f140645963e8f586"
        );
    }
}
