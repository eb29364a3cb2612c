//! What the tracker's judgements answer: the [`Verdict`] on a message, the
//! [`GapVerdict`] on a `gap` frame, and the [`AckOutcome`] of an `ack` (with
//! the [`LostRange`] of a resume the bus could not serve).

/// What to do with one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// In order: hand it to the application, then call [`Tracker::advance`](crate::tracker::Tracker::advance).
    Deliver,
    /// Already delivered (overlap of a resume): drop.
    Duplicate,
    /// Not for the current subscription (before its `ack`, or suspended): drop.
    Ignore,
    /// Messages were missed on a feed: renew the subscription with `since`.
    Gap,
}

/// What to do with one `gap` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GapVerdict {
    /// Tell the application that every message with `after_seq < seq <
    /// before_seq` is lost; the message `before_seq` is let through.
    Report { after_seq: u64, before_seq: u64 },
    /// Old news (already passed, or already reported), not a feed, or not for
    /// the current subscription: drop.
    Ignore,
    /// The hole starts above the position held: messages before it were
    /// missed. Renew the subscription with `since`, as for a `prev` gap.
    Renew,
}

/// A feed resume that the bus could not serve: messages were lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LostRange {
    /// The last seq the subscription held (the `since` that failed).
    pub(crate) after_seq: u64,
    /// The bus epoch changed: seqs before and after are not comparable.
    pub(crate) epoch_changed: bool,
    /// The new epoch.
    pub(crate) epoch: Option<String>,
}

/// What an `ack` changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckOutcome {
    /// Set when a feed resume was answered `recovered: false`.
    pub(crate) lost: Option<LostRange>,
    /// Whether this ack answered a resume (`since` was sent).
    pub(crate) resumed: bool,
}
