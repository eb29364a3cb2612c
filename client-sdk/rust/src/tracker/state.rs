//! The continuity state of one subscription ([`Tracker`]): its fields, how
//! it is made, what it tells about itself, and its [`Phase`] on the hub.

use std::time::Duration;

use tribune_protocol::Mode;

/// The continuity state of one subscription, across connections.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    /// The topic, for the frames this tracker writes.
    pub(super) topic: String,
    /// The history the application asked for; used again on resumes that fail.
    pub(super) history: Option<u32>,
    /// Learnt from the first `ack`; decides whether gaps matter.
    pub(super) mode: Option<Mode>,
    /// The bus epoch that `position` and `floor` belong to.
    pub(super) epoch: Option<String>,
    /// The seq the next message's `prev` may reach without a gap, and the
    /// `since` of a resume: the last seq delivered, or the `ack`'s seq.
    pub(super) position: Option<u64>,
    /// The highest seq delivered in `epoch`; anything at or below is a duplicate.
    pub(super) floor: Option<u64>,
    /// A hole the hub announced and the application was told about, not yet
    /// passed: its `before` message is let through whatever its `prev`. Kept
    /// across reconnections within the epoch, so that the same `gap` frame in
    /// a resume's replay is not reported twice.
    pub(super) hole: Option<Hole>,
    /// What the hub knows of this subscription on the current connection.
    pub(super) phase: Phase,
    /// Ask for Fossil delta updates (not on a known feed).
    pub(super) delta: bool,
    /// The spoiler shield's `delay_ms`, sent in every `subscribe`.
    pub(super) delay_ms: Option<u64>,
}

/// Whether, and how, the hub currently knows this subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not subscribed on the current connection: not sent yet, or the
    /// connection dropped. The next connection subscribes it again.
    Idle,
    /// `subscribe` sent with request `id`; messages before its `ack` belong to
    /// an older subscription and are ignored.
    Pending { id: u64, since: Option<u64> },
    /// Acknowledged: messages are checked and delivered.
    Live,
    /// Unsubscribed on purpose because the application's buffer overflowed on
    /// a feed; renewed with `since` once the application has caught up.
    Suspended,
}

/// A hole announced by a `gap` frame and reported to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hole {
    /// The seq the next message continues from: the message with this seq
    /// follows the hole, whatever its `prev`.
    pub(super) before: u64,
}

impl Tracker {
    /// A new subscription; `since` is the application's own resume point.
    pub(crate) fn new(topic: String, history: Option<u32>, since: Option<(u64, String)>) -> Self {
        let (position, epoch, floor) = match since {
            Some((seq, epoch)) => (Some(seq), Some(epoch), Some(seq)),
            None => (None, None, None),
        };
        Self {
            topic,
            history,
            mode: None,
            epoch,
            position,
            floor,
            hole: None,
            phase: Phase::Idle,
            delta: false,
            delay_ms: None,
        }
    }

    /// Asks for every `subscribe` to be delivered `delay` late.
    pub(crate) fn delayed(mut self, delay: Option<Duration>) -> Self {
        self.delay_ms = delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Asks for delta updates in every `subscribe` of a `state` topic.
    pub(crate) fn asking_delta(mut self, delta: bool) -> Self {
        self.delta = delta;
        self
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    pub(crate) fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The bus epoch of the position held.
    pub(crate) fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The resume point: `since` of the next subscribe.
    #[cfg(test)]
    pub(crate) fn position(&self) -> Option<u64> {
        self.position
    }
}
