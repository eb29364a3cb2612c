//! Publishing as an editor: [`Publisher`] on NATS JetStream (the normal
//! path, PROTOCOL.md section 10) and [`HubPublisher`] through a hub's
//! `POST /v1/publish` (integrations, tests, the embedded bus). Both also
//! retract a published message (`retract`, PROTOCOL.md section 13).
//!
//! Both check a publication before it leaves: a valid topic, a payload that
//! is one JSON value, at most [`MAX_PAYLOAD_BYTES`]. The hub would count and
//! drop anything else; refusing it here tells the editor instead.
//!
//! # Message ids and retries
//!
//! Every NATS publication carries a `Nats-Msg-Id`. The stream stores a
//! message id once within its duplicate window (120 s by default) and
//! answers a repeat with the seq already stored, marked duplicate.
//!
//! - By default each publication gets a new UUIDv7 ([`MsgIds::Unique`]):
//!   every call is stored, even when its payload equals an earlier one
//!   (`live`, `paused`, `live` are three messages, and fans see all three).
//! - The caller may give the id ([`Publisher::publish_with_id`]): a
//!   publication repeated with the same id (a script re-run after a crash)
//!   is stored once.
//! - On request ([`PublisherBuilder::msg_ids`] with [`MsgIds::FromContent`])
//!   the id is derived from topic and payload by [`content_message_id`], so
//!   the same payload on the same topic within the window is stored once,
//!   whichever process sends it. Only for publishers that want exactly that:
//!   an update equal to one a minute ago is then not stored (the answer says
//!   `duplicate`). The derivation is pinned, so that processes and versions
//!   agree:
//!
//! ```text
//! "t1-" + lowercase hex of the first 16 bytes of SHA-256(topic ‖ 0x00 ‖ payload)
//! ```
//!
//! When the ack does not come in time the publication is sent again with
//! the same id, so a retry never stores it twice; the seq returned is the
//! stored one, and [`Published::attempts`] says how many sends it took.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind as JsPublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use serde::Serialize;
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};
use tribune_protocol::frame::{HttpError, PublishRequest, PublishResponse, RetractRequest};
use tribune_protocol::{RETRACT_HEADER, retract_msg_id, validate_topic};

use crate::error::{ConnectError, ConnectErrorKind, PublishError, PublishErrorKind};
use crate::tls;

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

/// How a [`Publisher`] picks the `Nats-Msg-Id` of a publication without an
/// explicit id (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsgIds {
    /// A new UUIDv7 for every publication, kept across its retries: every
    /// publication is stored, whatever its payload. The default.
    #[default]
    Unique,
    /// Derived from topic and payload by [`content_message_id`]: a payload
    /// equal to one stored on the topic within the stream's duplicate window
    /// is not stored again (its earlier seq is returned, marked duplicate).
    FromContent,
}

/// A new `Nats-Msg-Id` for one publication: a UUIDv7, so ids sort by the
/// time they were made, which helps when reading the stream or logs.
pub fn unique_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The `Nats-Msg-Id` derived from a publication's content (see the module
/// doc); used with [`MsgIds::FromContent`].
pub fn content_message_id(topic: &str, payload: &[u8]) -> String {
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
        let mut options =
            async_nats::ConnectOptions::new().connection_timeout(self.connect_timeout);
        // Files are checked here, so that a wrong path is reported as such
        // and not as a failed handshake.
        if let Some(ca) = &self.ca_file {
            tls::check_ca_file(ca)?;
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            tls::check_client_identity(cert, key)?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options.connect(url).await.map_err(|e| {
            // async-nats reports a refused certificate as I/O; say what it is.
            if let Some(tls_error) = tls::tls_failure_in_chain(&e) {
                let detail = format!("{url}: {}", tls::explain(tls_error));
                return ConnectError::with_source(ConnectErrorKind::Tls, detail, e);
            }
            let kind = match e.kind() {
                async_nats::ConnectErrorKind::ServerParse => ConnectErrorKind::InvalidUrl,
                async_nats::ConnectErrorKind::TimedOut => ConnectErrorKind::TimedOut,
                async_nats::ConnectErrorKind::Authentication
                | async_nats::ConnectErrorKind::AuthorizationViolation => {
                    ConnectErrorKind::Unauthorized
                }
                async_nats::ConnectErrorKind::Tls => ConnectErrorKind::Tls,
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

/// Whether anyone but this call can have used a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdOrigin {
    /// Made for this publication: only its own attempts carry it.
    ThisPublication,
    /// The caller's or derived from content: earlier publications may carry it.
    Shared,
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
    /// accepted and mapped). An `https://` hub must have a certificate that
    /// the platform's roots trust.
    pub fn new(url: &str) -> Result<Self, ConnectError> {
        Self::build(url, None)
    }

    /// A publisher for an `https://` hub whose certificate chains to one of
    /// the CA certificates of this PEM file (only those are trusted).
    pub fn with_ca_file(url: &str, ca_file: impl AsRef<Path>) -> Result<Self, ConnectError> {
        Self::build(url, Some(ca_file.as_ref()))
    }

    fn build(url: &str, ca_file: Option<&Path>) -> Result<Self, ConnectError> {
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
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if scheme == "https" || ca_file.is_some() {
            let config = tls::client_config(ca_file)?;
            http = http.use_preconfigured_tls(rustls::ClientConfig::clone(&config));
        }
        let http = http
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
        self.answer(topic, request).await
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

    /// Retracts the message `seq` of `topic` through the hub's `POST
    /// /v1/retract` (same key as publishing); returns the retraction's own
    /// seq. A `state` topic is refused (`bad_request`, HTTP 409).
    pub async fn retract(&self, topic: &str, seq: u64) -> Result<u64, PublishError> {
        validate_topic(topic).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidTopic, topic.to_string(), e)
        })?;
        let mut endpoint = self.endpoint.clone();
        endpoint.set_path("/v1/retract");
        let body = RetractRequest {
            topic: topic.to_string(),
            seq,
        };
        let mut request = self.http.post(endpoint).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        self.answer(topic, request).await
    }

    /// Sends a request to the hub and reads its `{"seq"}` answer or refusal.
    async fn answer(
        &self,
        topic: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<u64, PublishError> {
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                PublishErrorKind::TimedOut
            } else {
                PublishErrorKind::Transport
            };
            // reqwest's own text does not say why a connection failed; a TLS
            // refusal is worth spelling out (and its fix).
            let detail = match tls::tls_failure_in_chain(&e) {
                Some(tls_error) => format!("{}: {}", self.endpoint, tls::explain(tls_error)),
                None => format!("{}", self.endpoint),
            };
            PublishError::with_source(kind, detail, e)
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
    fn unique_ids_differ_and_are_uuid_v7() {
        let a = unique_message_id();
        let b = unique_message_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 7, "{a}");
        // Time-ordered: within a process each id sorts after the one before
        // (hyphenated lowercase hex sorts like the bytes).
        let later = unique_message_id();
        assert!(a < b && b < later, "{a} {b} {later}");
    }

    #[test]
    fn content_ids_are_deterministic_and_content_bound() {
        let a = content_message_id("clips.a.b", b"{\"n\":1}");
        assert_eq!(a, content_message_id("clips.a.b", b"{\"n\":1}"));
        assert_ne!(a, content_message_id("clips.a.b", b"{\"n\":2}"));
        assert_ne!(a, content_message_id("clips.a.c", b"{\"n\":1}"));
        // The separator keeps topic and payload apart: "a.b" + "c" ≠ "a.bc" + "".
        assert_ne!(
            content_message_id("x.ab", b"c"),
            content_message_id("x.a", b"bc")
        );
        assert!(a.starts_with("t1-") && a.len() == 35, "{a}");
        // Pinned: the derivation is part of the contract (retries across
        // processes and versions must agree). Computed independently:
        // python3 -c 'import hashlib;print(hashlib.sha256(b"x.y\x00{}").hexdigest()[:32])'
        assert_eq!(
            content_message_id("x.y", b"{}"),
            "t1-b61f707121a61495f140645963e8f586"
        );
    }
}
