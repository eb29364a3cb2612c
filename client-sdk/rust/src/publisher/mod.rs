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
//!
//! Files: `check.rs`, what a publication must be before it leaves;
//! `ids.rs`, message ids (unique or from content); `nats.rs`, the
//! [`Publisher`] on JetStream and its settings, with acks, retries and
//! retractions; `connect.rs`, its connection to NATS (TLS files, errors);
//! `hub.rs`, the [`HubPublisher`] over HTTP.

mod check;
mod connect;
mod hub;
mod ids;
mod nats;

pub use check::{MAX_PAYLOAD_BYTES, check_publication};
pub use hub::HubPublisher;
pub use ids::{MsgIds, content_message_id, unique_message_id};
pub use nats::{DEFAULT_PREFIX, Published, Publisher, PublisherBuilder};
