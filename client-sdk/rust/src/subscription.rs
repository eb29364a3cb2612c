//! What the application holds for one topic: the [`Subscription`] stream of
//! [`Event`]s. Its options and first answer come from `command.rs`, its
//! bounded queue and its events from `queue.rs`; they are re-exported here,
//! where the application looks for them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tribune_protocol::Mode;

use crate::command::Command;
pub use crate::command::{SubscribeInfo, SubscribeOptions};
use crate::error::{UnsubscribeError, UnsubscribeErrorKind};
pub use crate::queue::Event;
use crate::queue::SubQueue;

/// A live subscription to one topic: a [`Stream`] of [`Event`]s.
///
/// It survives reconnections: the client renews it on every new connection
/// with `since`/`epoch`, so the stream goes on as if nothing happened, or says
/// [`Event::Gap`] when a feed lost messages. Dropping it unsubscribes.
pub struct Subscription {
    /// The topic, for the application and for `unsubscribe`.
    topic: String,
    /// Identifies this subscription to the connection task, so that a stale
    /// handle never unsubscribes a newer subscription to the same topic.
    key: u64,
    /// Events from the connection task.
    queue: Arc<SubQueue>,
    /// Commands to the connection task (unsubscribe, catch-up).
    commands: mpsc::UnboundedSender<Command>,
    /// The first `ack`.
    info: SubscribeInfo,
    /// Bound of `unsubscribe`'s wait for the hub.
    request_timeout: Duration,
    /// Set once unsubscribed, so that `Drop` does not send it twice.
    done: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        topic: String,
        key: u64,
        queue: Arc<SubQueue>,
        commands: mpsc::UnboundedSender<Command>,
        info: SubscribeInfo,
        request_timeout: Duration,
    ) -> Self {
        Self {
            topic,
            key,
            queue,
            commands,
            info,
            request_timeout,
            done: false,
        }
    }

    pub(crate) fn set_info(&mut self, info: SubscribeInfo) {
        self.info = info;
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// What the hub said when the subscription started.
    pub fn info(&self) -> &SubscribeInfo {
        &self.info
    }

    /// `state` or `feed`.
    pub fn mode(&self) -> Mode {
        self.info.mode
    }

    /// The current bus epoch (it changes when the bus was recreated).
    pub fn epoch(&self) -> String {
        self.queue
            .epoch()
            .unwrap_or_else(|| self.info.epoch.clone())
    }

    /// Events received and not yet taken.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Stops the subscription and waits for the hub's `ack` (immediately
    /// when disconnected). Locally it is gone at once, whatever the outcome.
    pub async fn unsubscribe(mut self) -> Result<(), UnsubscribeError> {
        self.done = true;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Unsubscribe {
                topic: self.topic.clone(),
                key: self.key,
                reply: Some(tx),
            })
            .map_err(|_| UnsubscribeError::new(UnsubscribeErrorKind::Closed, &self.topic))?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(UnsubscribeError::new(
                UnsubscribeErrorKind::Closed,
                &self.topic,
            )),
            Err(_) => Err(UnsubscribeError::new(
                UnsubscribeErrorKind::TimedOut,
                &self.topic,
            )),
        }
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let (poll, caught_up) = self.queue.poll_pop(cx);
        if caught_up {
            // A closed channel means the client is gone; the stream then ends
            // by itself, nothing to report here.
            let _ = self.commands.send(Command::CaughtUp {
                topic: self.topic.clone(),
                key: self.key,
            });
        }
        poll
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Unsubscribe {
                topic: std::mem::take(&mut self.topic),
                key: self.key,
                reply: None,
            });
        }
    }
}
