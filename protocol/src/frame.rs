//! Every frame of PROTOCOL.md sections 3 (client → hub) and 4 (hub → client).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How a namespace's topics behave (PROTOCOL.md section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each message is the full current state; latest wins.
    State,
    /// Each message is an item; every one is delivered, in order.
    Feed,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::State => "state",
            Mode::Feed => "feed",
        }
    }
}

/// A frame a client sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Publish(Publish),
    Ping(Ping),
    React(React),
    Auth(Auth),
}

/// `subscribe`: start receiving a topic, with history or a resume point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    pub id: u64,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// `"fossil"` asks for delta updates ([`DELTA_FOSSIL`]); the `ack`'s
    /// `delta` says whether they were granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// The spoiler shield (PROTOCOL.md section 13): deliver this
    /// subscription's frames `delay_ms` after the bus stored them
    /// (0 to [`MAX_DELAY_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// The longest `delay_ms` a subscription may ask for: two minutes.
pub const MAX_DELAY_MS: u64 = 120_000;

/// The only delta format (`subscribe`'s `delta`): Fossil's.
pub const DELTA_FOSSIL: &str = "fossil";

/// `unsubscribe`: stop receiving a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsubscribe {
    pub id: u64,
    pub topic: String,
}

/// `publish`: a client's own publication (namespaces with client publishing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish {
    pub id: u64,
    pub topic: String,
    pub data: Box<RawValue>,
}

/// `ping`: an application-level liveness check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    pub id: u64,
}

/// `react`: one reaction to a topic, aggregated into `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct React {
    pub id: u64,
    pub topic: String,
    pub reaction: String,
}

/// `auth`: sets the connection's token when it has none (first-frame login,
/// no token in the URL) or replaces it (refresh).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Auth {
    pub id: u64,
    pub token: String,
}

/// Never prints the token: frames end up in debug logs.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ClientFrame {
    /// The request id every client frame carries.
    pub fn id(&self) -> u64 {
        match self {
            ClientFrame::Subscribe(f) => f.id,
            ClientFrame::Unsubscribe(f) => f.id,
            ClientFrame::Publish(f) => f.id,
            ClientFrame::Ping(f) => f.id,
            ClientFrame::React(f) => f.id,
            ClientFrame::Auth(f) => f.id,
        }
    }
}

/// A frame the hub sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome(Welcome),
    Ack(Ack),
    Message(Message),
    Error(Error),
    Pong(Pong),
    Drain(Drain),
    Stats(Stats),
    Gap(Gap),
    Unsubscribed(Unsubscribed),
    Retract(Retract),
}

/// `welcome`: the first frame on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    pub node: String,
    pub conn: String,
    pub heartbeat_ms: u64,
    /// The handshake token's `exp` (Unix seconds), when it had a token with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// `error`: a refused request, or a problem not tied to one (`id` null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Error {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

/// `pong`: the answer to `ping`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub id: u64,
}

/// `drain`: the node is shutting down; reconnect after a random delay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    pub retry_ms: u64,
}

/// `ack`: the answer to a request; subscriptions carry the topic's position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Latest seq of the topic when the subscription started, 0 if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Present when the subscription asked to resume with `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// Present when the subscription asked for deltas: whether its messages
    /// may carry them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<bool>,
    /// For `auth`: the new token's `exp` (Unix seconds), absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// `message`: one publication on a topic, the payload byte for byte.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub topic: String,
    pub seq: u64,
    pub prev: u64,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// `data` is a JSON string holding the Fossil delta from the previous
    /// message of the subscription (its `prev`) to this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
    pub data: Box<RawValue>,
}

/// `stats`: live audience and reaction figures of one topic, across all nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub topic: String,
    pub audience: u64,
    pub reactions: BTreeMap<String, u64>,
    pub window_ms: u64,
}

/// `gap`: messages of a `feed` topic that this subscription will never
/// receive (aged out of the bus before the hub could repair, or unreadable).
/// Every message with `after < seq < before` is lost; the message with seq
/// `before` follows, and its `prev` is what the bus knows, not `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub topic: String,
    pub after: u64,
    pub before: u64,
}

/// `retract`: an editor retracted the message `seq` of `topic` (PROTOCOL.md
/// section 13). The retraction takes a place of its own in the topic's
/// chain: `at` is its own seq (what a client holds after it) and `prev`
/// the seq of the frame before it, as a message's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retract {
    pub topic: String,
    /// The retracted message.
    pub seq: u64,
    /// This retraction's own place in the topic's chain.
    pub at: u64,
    pub prev: u64,
    /// When the bus stored the retraction, Unix milliseconds.
    pub ts: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

/// `unsubscribed`: the hub ended a subscription (a refreshed token no
/// longer grants its topic, or an operator removed it); `code` says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    pub topic: String,
    pub code: ErrorCode,
}

/// Error codes of PROTOCOL.md section 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    BadTopic,
    UnknownNamespace,
    Forbidden,
    TooManySubscriptions,
    RateLimited,
    PayloadTooLarge,
    Unavailable,
    /// HTTP refusals only (401 before the upgrade).
    Unauthorized,
    /// HTTP refusals only (429/503 before the upgrade, 404 on HTTP routes).
    NotFound,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::BadTopic,
        ErrorCode::UnknownNamespace,
        ErrorCode::Forbidden,
        ErrorCode::TooManySubscriptions,
        ErrorCode::RateLimited,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::UnknownNamespace => "unknown_namespace",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of an HTTP refusal: `{"error":{"code","message"}}` (section 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpError {
    pub error: HttpErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl HttpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: HttpErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

/// Body of `POST /v1/publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    pub topic: String,
    pub data: Box<RawValue>,
}

/// Answer of `POST /v1/publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResponse {
    pub seq: u64,
}

/// Body of `POST /v1/retract`: retract message `seq` of `topic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetractRequest {
    pub topic: String,
    pub seq: u64,
}

/// Decodes a tagged frame in two steps: serde's internally tagged enums buffer
/// their content, which loses `RawValue` payloads, so the `type` is read first
/// and the body struct is then decoded from the same text.
fn split_tag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(Box<RawValue>, String), D::Error> {
    #[derive(Deserialize)]
    struct Tag {
        #[serde(rename = "type")]
        kind: String,
    }
    let raw = Box::<RawValue>::deserialize(d)?;
    let tag: Tag = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
    Ok((raw, tag.kind))
}

fn body<T: serde::de::DeserializeOwned, E: serde::de::Error>(raw: &RawValue) -> Result<T, E> {
    serde_json::from_str(raw.get()).map_err(E::custom)
}

impl<'de> Deserialize<'de> for ClientFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (raw, kind) = split_tag(d)?;
        Ok(match kind.as_str() {
            "subscribe" => ClientFrame::Subscribe(body(&raw)?),
            "unsubscribe" => ClientFrame::Unsubscribe(body(&raw)?),
            "publish" => ClientFrame::Publish(body(&raw)?),
            "ping" => ClientFrame::Ping(body(&raw)?),
            "react" => ClientFrame::React(body(&raw)?),
            "auth" => ClientFrame::Auth(body(&raw)?),
            other => {
                return Err(serde::de::Error::custom(format_args!(
                    "unknown frame type '{other}'"
                )));
            }
        })
    }
}

impl<'de> Deserialize<'de> for ServerFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (raw, kind) = split_tag(d)?;
        Ok(match kind.as_str() {
            "welcome" => ServerFrame::Welcome(body(&raw)?),
            "ack" => ServerFrame::Ack(body(&raw)?),
            "message" => ServerFrame::Message(body(&raw)?),
            "error" => ServerFrame::Error(body(&raw)?),
            "pong" => ServerFrame::Pong(body(&raw)?),
            "drain" => ServerFrame::Drain(body(&raw)?),
            "stats" => ServerFrame::Stats(body(&raw)?),
            "gap" => ServerFrame::Gap(body(&raw)?),
            "unsubscribed" => ServerFrame::Unsubscribed(body(&raw)?),
            "retract" => ServerFrame::Retract(body(&raw)?),
            other => {
                return Err(serde::de::Error::custom(format_args!(
                    "unknown frame type '{other}'"
                )));
            }
        })
    }
}
