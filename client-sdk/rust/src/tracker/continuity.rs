//! Continuity of a live subscription (see the module doc of `tracker`):
//! duplicates, `prev` checked against the position held, retractions in the
//! chain, `gap` frames, and the position moved past what was delivered.

use tribune_protocol::{Gap, Message, Mode, Retract};

use super::state::{Hole, Phase, Tracker};
use super::verdicts::{GapVerdict, Verdict};

impl Tracker {
    /// Judges one message of this topic (see the module doc).
    pub(crate) fn check(&self, msg: &Message) -> Verdict {
        self.check_at(msg.seq, msg.prev)
    }

    /// Judges one `retract` frame: its place in the chain is `at`, after
    /// `prev`. Deliver it, then [`Tracker::advance`] to `at`.
    pub(crate) fn check_retract(&self, retract: &Retract) -> Verdict {
        self.check_at(retract.at, retract.prev)
    }

    fn check_at(&self, seq: u64, prev: u64) -> Verdict {
        if self.phase != Phase::Live {
            return Verdict::Ignore;
        }
        if self.floor.is_some_and(|floor| seq <= floor) {
            return Verdict::Duplicate;
        }
        // The message right after an announced hole carries the bus's `prev`,
        // which says nothing about what this subscription holds.
        if self.hole.is_some_and(|h| h.before == seq) {
            return Verdict::Deliver;
        }
        if self.mode == Some(Mode::Feed) && self.position.is_some_and(|pos| prev > pos) {
            return Verdict::Gap;
        }
        Verdict::Deliver
    }

    /// Judges one `gap` frame of this topic (see the module doc).
    pub(crate) fn on_gap(&mut self, gap: &Gap) -> GapVerdict {
        if self.phase != Phase::Live || self.mode != Some(Mode::Feed) {
            return GapVerdict::Ignore;
        }
        let Some(pos) = self.position else {
            return GapVerdict::Ignore;
        };
        if gap.before <= pos || self.hole.is_some_and(|h| h.before == gap.before) {
            return GapVerdict::Ignore;
        }
        if gap.after > pos {
            return GapVerdict::Renew;
        }
        // `after` below the position: the start of the hole was delivered
        // already (an overlap), what is lost for the application starts here.
        self.hole = Some(Hole { before: gap.before });
        GapVerdict::Report {
            after_seq: pos,
            before_seq: gap.before,
        }
    }

    /// Records that the message with this seq reached the application.
    pub(crate) fn advance(&mut self, seq: u64) {
        self.position = Some(seq);
        self.floor = Some(self.floor.map_or(seq, |f| f.max(seq)));
        if self.hole.is_some_and(|h| seq >= h.before) {
            self.hole = None;
        }
    }
}
