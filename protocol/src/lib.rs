//! Tribune wire protocol, version 1 (`PROTOCOL.md`).
//!
//! The types here are shared by the hub, the Rust SDK and the load-test
//! harness, so that a frame means the same thing on both ends of the socket.
//!
//! Layout:
//! - [`topic`]: the one topic validator (section 2) and the `Topic` name type.
//! - [`frame`]: every client → hub and hub → client frame (sections 3 and 4),
//!   the error codes and the namespace modes.
//! - [`codec`]: decoding client frames with the error a client is owed, and the
//!   encode-once fast path for `message` frames.
//! - [`delta`]: Fossil deltas between two payloads of a `state` topic, made
//!   valid UTF-8 (the hub makes them, the SDKs apply them).
//! - [`close`]: WebSocket close codes (section 6) and what a client does after each.
//!
//! Golden frames live in `protocol/vectors/*.json`; the tests here and the JS
//! SDK's tests decode and re-encode the same files.

pub mod close;
pub mod codec;
pub mod delta;
pub mod frame;
pub mod topic;

pub use close::CloseCode;
pub use codec::{
    DecodeError, MessageView, decode_client, encode_delta, encode_message, encode_replay,
    encode_server, message_view,
};
pub use frame::{
    Ack, Auth, Drain, Error, Gap, Message, Ping, Pong, Publish, React, Retract, Stats, Subscribe,
    Unsubscribe, Unsubscribed, Welcome,
};
pub use frame::{ClientFrame, DELTA_FOSSIL, ErrorCode, MAX_DELAY_MS, Mode, ServerFrame};
pub use topic::{Topic, TopicError, validate_topic};

/// The NATS header that makes a message stored on a topic a retraction
/// marker; its value is the retracted seq (PROTOCOL.md section 13).
pub const RETRACT_HEADER: &str = "Tribune-Retract";

/// The `Nats-Msg-Id` of a retraction marker: the same for every retraction
/// of one message, from any editor or hub, so the stream stores it once per
/// duplicate window.
pub fn retract_msg_id(topic: &str, seq: u64) -> String {
    format!("tribune-retract:{topic}:{seq}")
}

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol a client may offer; the hub echoes it.
pub const SUBPROTOCOL: &str = "tribune.v1";

/// Path of the WebSocket endpoint.
pub const WS_PATH: &str = "/v1/ws";

/// Path of the retained messages' pages on the public listener (PROTOCOL.md
/// section 12).
pub const HISTORY_PATH: &str = "/v1/history";
