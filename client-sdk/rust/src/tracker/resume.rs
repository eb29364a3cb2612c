//! A subscription's life on the hub: the `subscribe` frame (fresh or a
//! resume with `since` and `epoch`), its `ack` (recovered or not, a new
//! epoch), a refusal, a dropped connection, and the suspension of a feed
//! whose application fell behind.

use tribune_protocol::{Ack, Mode, Subscribe};

use super::state::{Phase, Tracker};
use super::verdicts::{AckOutcome, LostRange};

impl Tracker {
    /// The `subscribe` frame for request `id`: a resume with `since` and
    /// `epoch` when a position is known, else a fresh one with the history the
    /// application asked for. Moves to [`Phase::Pending`].
    pub(crate) fn subscribe_frame(&mut self, id: u64) -> Subscribe {
        let resume = match (&self.epoch, self.position) {
            (Some(epoch), Some(since)) => Some((since, epoch.clone())),
            _ => None,
        };
        let history = match (&resume, self.mode) {
            // A state subscription must end on the latest state even when the
            // resume fails: the fallback replay needs at least one message.
            (Some(_), Some(Mode::State)) => Some(self.history.unwrap_or(1).max(1)),
            _ => self.history,
        };
        self.phase = Phase::Pending {
            id,
            since: resume.as_ref().map(|(s, _)| *s),
        };
        let (since, epoch) = match resume {
            Some((s, e)) => (Some(s), Some(e)),
            None => (None, None),
        };
        Subscribe {
            id,
            topic: self.topic.clone(),
            history,
            since,
            epoch,
            delta: (self.delta && self.mode != Some(Mode::Feed))
                .then(|| tribune_protocol::DELTA_FOSSIL.to_string()),
            delay_ms: self.delay_ms,
        }
    }

    /// Applies the `ack` of this subscription's pending `subscribe`. `None`
    /// when the ack is not for it (an older request).
    pub(crate) fn on_ack(&mut self, ack: &Ack) -> Option<AckOutcome> {
        let Phase::Pending { id, since } = self.phase else {
            return None;
        };
        if id != ack.id {
            return None;
        }
        if ack.mode.is_some() {
            self.mode = ack.mode;
        }
        let ack_seq = ack.seq.unwrap_or(0);
        let same_epoch = self.epoch.is_some() && self.epoch == ack.epoch;
        let mut lost = None;
        match since {
            Some(since) if ack.recovered == Some(true) => {
                // Exactly the messages after `since` follow.
                self.position = Some(since);
                self.floor = Some(self.floor.unwrap_or(since).max(since));
            }
            Some(since) => {
                if self.mode == Some(Mode::Feed) {
                    lost = Some(LostRange {
                        after_seq: since,
                        epoch_changed: !same_epoch,
                        epoch: ack.epoch.clone(),
                    });
                }
                // The hub replays as for `history`, then goes live after its
                // own position. Within one epoch what was delivered stays
                // delivered; across epochs seqs restart and mean nothing.
                self.position = Some(ack_seq);
                if !same_epoch {
                    self.floor = None;
                }
            }
            None => {
                self.position = Some(ack_seq);
                self.floor = None;
            }
        }
        if ack.epoch.is_some() {
            self.epoch = ack.epoch.clone();
        }
        // A hole reported in this epoch stays pending while the position is
        // still before it: the replay may announce it again.
        let hole_ahead = matches!(
            (self.hole, self.position),
            (Some(hole), Some(pos)) if pos < hole.before
        );
        if !(same_epoch && hole_ahead) {
            self.hole = None;
        }
        self.phase = Phase::Live;
        Some(AckOutcome {
            lost,
            resumed: since.is_some(),
        })
    }

    /// The pending `subscribe` with request `id` was refused. Returns whether
    /// it was this subscription's.
    pub(crate) fn on_refused(&mut self, id: u64) -> bool {
        if matches!(self.phase, Phase::Pending { id: p, .. } if p == id) {
            self.phase = Phase::Idle;
            true
        } else {
            false
        }
    }

    /// The connection dropped: the next one subscribes again (unless suspended).
    pub(crate) fn on_disconnect(&mut self) {
        if self.phase != Phase::Suspended {
            self.phase = Phase::Idle;
        }
    }

    /// The application's buffer overflowed on a feed: stop until it catches up.
    pub(crate) fn suspend(&mut self) {
        self.phase = Phase::Suspended;
    }

    /// The application caught up: subscribe again (with `since`). Returns
    /// whether the subscription was suspended.
    pub(crate) fn unsuspend(&mut self) -> bool {
        if self.phase == Phase::Suspended {
            self.phase = Phase::Idle;
            true
        } else {
            false
        }
    }
}
