//! What handles ask of the connection task: the [`Command`]s that
//! [`Client`](crate::Client) and [`Subscription`](crate::Subscription) send it,
//! with what a subscribe request carries ([`SubscribeOptions`]) and answers
//! ([`SubscribeInfo`]).
//!
//! It sits below both the handles and the task, so that neither imports the
//! other to talk.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tribune_protocol::Mode;

use crate::error::{PingError, PublishError, ReactError, SubscribeError, UnsubscribeError};
use crate::queue::SubQueue;

/// A request from a handle to the connection task.
pub(crate) enum Command {
    Subscribe {
        topic: String,
        key: u64,
        options: SubscribeOptions,
        queue: Arc<SubQueue>,
        reply: oneshot::Sender<Result<SubscribeInfo, SubscribeError>>,
    },
    Unsubscribe {
        topic: String,
        key: u64,
        reply: Option<oneshot::Sender<Result<(), UnsubscribeError>>>,
    },
    /// The application drained an overflowed feed subscription.
    CaughtUp {
        topic: String,
        key: u64,
    },
    Publish {
        topic: String,
        data: Box<RawValue>,
        reply: oneshot::Sender<Result<(), PublishError>>,
    },
    React {
        topic: String,
        reaction: String,
        reply: oneshot::Sender<Result<(), ReactError>>,
    },
    Ping {
        reply: oneshot::Sender<Result<Duration, PingError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    /// The app's lifecycle (mobile apps): see [`Lifecycle`].
    Lifecycle(Lifecycle),
}

/// What an app tells the connection about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// The network changed (Wi-Fi to cellular, back from a tunnel): the
    /// socket may be dead without a word; check it at once.
    NetworkChanged,
    /// The app went to the background: close, and stay away until `Resume`.
    Pause,
    /// The app is back: reconnect at once if paused or waiting, else check
    /// the socket as for `NetworkChanged`.
    Resume,
}

/// Options of [`Client::subscribe_with`](crate::Client::subscribe_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Replay the latest N retained messages first (hub default: 1 for
    /// `state`, 0 for `feed`).
    pub history: Option<u32>,
    /// Resume after this seq of this epoch (from an earlier session): the hub
    /// replays everything after it, or the stream starts with [`Event::Gap`](crate::Event::Gap)
    /// on a feed.
    pub since: Option<(u64, String)>,
    /// Ask for full messages only: no delta updates on `state` topics (by
    /// default the SDK asks for Fossil deltas and rebuilds every payload
    /// before it reaches the application, so the choice is only about bytes
    /// on the wire and CPU).
    pub full_messages: bool,
    /// The spoiler shield: the hub delivers this subscription's messages,
    /// retractions, gaps and stats this long after the bus stored them
    /// (`delay_ms`, up to two minutes; PROTOCOL.md section 13).
    pub delay: Option<Duration>,
}

impl SubscribeOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replay the latest `n` retained messages.
    pub fn history(mut self, n: u32) -> Self {
        self.history = Some(n);
        self
    }

    /// Resume after `seq` of `epoch`.
    pub fn since(mut self, seq: u64, epoch: impl Into<String>) -> Self {
        self.since = Some((seq, epoch.into()));
        self
    }

    /// Full messages only, no delta updates.
    pub fn full_messages(mut self) -> Self {
        self.full_messages = true;
        self
    }

    /// Deliver everything `delay` after the bus stored it (whole
    /// milliseconds; the hub refuses more than two minutes).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// What the hub said when the subscription started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeInfo {
    /// `state` or `feed`, from the namespace.
    pub mode: Mode,
    /// The bus epoch: with a seq, the resume point of a later session.
    pub epoch: String,
    /// The latest seq of the topic when the subscription started (0 if none).
    pub seq: u64,
    /// Present when `since` was given: whether everything after it was replayed.
    pub recovered: Option<bool>,
}
