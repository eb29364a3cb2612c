//! Tribune client SDK: live results and clips for fan apps, publishing for
//! editors, and the `tribune` command-line tool.
//!
//! # Quick start
//!
//! ```no_run
//! use futures::StreamExt;
//! use tribune_client::{Client, Event, SubscribeOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("ws://127.0.0.1:8080").connect().await?;
//!
//! // A state topic: the latest board first, then every update.
//! let mut board = client
//!     .subscribe("results.lausanne2020.speed-skating.mixed-team-sprint")
//!     .await?;
//! // A feed: every clip once, in order, across reconnections.
//! let mut clips = client
//!     .subscribe_with("clips.lausanne2020.speed-skating", SubscribeOptions::new().history(10))
//!     .await?;
//! client.react("results.lausanne2020.speed-skating.mixed-team-sprint", "🔥").await?;
//!
//! loop {
//!     tokio::select! {
//!         Some(event) = board.next() => match event {
//!             Event::Message(msg) => println!("board #{}: {}", msg.seq, msg.data),
//!             Event::Stats(stats) => println!("{} watching", stats.audience),
//!             _ => {}
//!         },
//!         Some(event) = clips.next() => match event {
//!             Event::Message(msg) => println!("clip #{}: {}", msg.seq, msg.data),
//!             Event::Gap { after_seq, before_seq: Some(before), .. } => {
//!                 println!("clips between #{after_seq} and #{before} were lost")
//!             }
//!             Event::Gap { after_seq, .. } => println!("clips after #{after_seq} were lost"),
//!             Event::Closed { reason, .. } => break println!("ended: {reason}"),
//!             _ => {}
//!         },
//!         else => break,
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! An editor publishes on NATS:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let publisher = tribune_client::Publisher::connect("nats://127.0.0.1:4222").await?;
//! let stored = publisher
//!     .publish("clips.lausanne2020.speed-skating", &serde_json::json!({"kind": "clip", "id": "c-42"}))
//!     .await?;
//! println!("stored as seq {}", stored.seq);
//! # Ok(())
//! # }
//! ```
//!
//! Each publication gets its own `Nats-Msg-Id` (a UUIDv7, kept by its
//! retries), so an update equal to an earlier one is still delivered;
//! [`Publisher::publish_with_id`] and [`MsgIds::FromContent`] store a repeat
//! once (see [`publisher`]).
//!
//! # TLS and tokens
//!
//! `wss://` and `https://` hubs and `tls://` NATS are verified against the
//! system's root certificates, or only against a CA file:
//! [`ClientBuilder::ca_file`], [`PublisherBuilder::ca_file`] (and
//! [`PublisherBuilder::client_cert`] for a NATS that verifies clients),
//! [`HubPublisher::with_ca_file`]. Namespaces with `token = true` want a JWT:
//! [`ClientBuilder::token`]; `tribune token` mints one for development.
//! The crate's README has more, with the CLI.
//!
//! # Guarantees
//!
//! - A `feed` subscription yields every message once and in order, or an
//!   explicit [`Event::Gap`] where the bus lost what was missed (no longer
//!   retained at a resume, or aged out or unreadable before the hub could
//!   repair its own hole). After a reconnection (any node) it resumes with
//!   `since`/`epoch`; a `prev` that shows a hole makes it resubscribe with
//!   `since` on the spot; a hole the hub announces (`gap`) is reported and
//!   the subscription goes on from the message after it.
//! - A `state` subscription always ends on the latest state; superseded
//!   states may be skipped.
//! - Reconnection follows PROTOCOL.md section 6: full-jitter exponential
//!   backoff, no retry after 1000/1008, at once after 4008, and after a
//!   `drain` at a random instant in `[0, retry_ms)`.
//! - Errors are [`Error<Kind>`](Error), one kind enum per operation: callers
//!   `match err.kind()`.
//!
//! # Layout
//!
//! - [`client`]: the [`Client`] handle and its [`ClientBuilder`].
//! - `command`: what handles ask of the connection task, and the options and
//!   answer of a subscribe request.
//! - `connection`: the task that owns the socket; handles send it commands,
//!   the app's lifecycle signals (`network_changed`, `pause`, `resume`) among them.
//! - `connector`: one handshake, and when to reconnect (close codes, drain, backoff).
//! - `tls`: which servers are trusted over TLS (platform roots or a CA
//!   file) for `wss://` and `https://` hubs, and what a TLS failure means.
//! - `backoff`: full-jitter exponential backoff, pure.
//! - `tracker`: per-subscription continuity (`prev`, duplicates, gaps) and
//!   resume bookkeeping, pure.
//! - `queue`: a subscription's [`Event`]s and the bounded queue that carries
//!   them from the task to the application (conflation, feed suspension).
//! - [`subscription`]: the [`Subscription`] stream, with its [`Event`]s and
//!   options re-exported.
//! - [`events`]: connection states and events for the application.
//! - [`publisher`]: the editors' [`Publisher`] (NATS JetStream) and [`HubPublisher`] (HTTP).
//! - [`error`]: `Error<Kind>` and the kinds.
//! - `src/bin/tribune/`: the CLI (`tribune tail`, `tribune publish`, `tribune token`).

mod backoff;
pub mod client;
mod command;
mod connection;
mod connector;
mod delta;
pub mod error;
pub mod events;
pub mod publisher;
mod queue;
pub mod subscription;
mod tls;
mod token;
mod tracker;

pub use client::{Client, ClientBuilder};
pub use error::{
    ConnectError, ConnectErrorKind, Error, PingError, PingErrorKind, PublishError,
    PublishErrorKind, ReactError, ReactErrorKind, SubscribeError, SubscribeErrorKind,
    UnsubscribeError, UnsubscribeErrorKind,
};
pub use events::{ConnectionEvent, ConnectionEvents, ConnectionState, DisconnectReason};
pub use publisher::{
    HubPublisher, MAX_PAYLOAD_BYTES, MsgIds, Published, Publisher, PublisherBuilder,
    content_message_id, unique_message_id,
};
pub use subscription::{Event, SubscribeInfo, SubscribeOptions, Subscription};
pub use token::TokenFuture;
pub use tribune_protocol::{ErrorCode, Message, Mode, Stats};

// The README's examples are compiled with the doc tests, so that they keep
// matching the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
