//! Where one subscription stands in its topic: continuity checks and resume
//! bookkeeping, as pure logic (no socket, no clock) so it is unit-tested alone.
//!
//! The rules come from PROTOCOL.md section 5:
//! - per topic, `seq` grows; a message at or below the last one delivered is a
//!   duplicate (a resume may overlap) and is dropped;
//! - on a `feed`, a message's `prev` must not be above the position held (the
//!   last seq delivered, or the `ack`'s seq): a higher `prev` means messages
//!   were missed, and the subscription is renewed with `since`. A *lower*
//!   `prev` is history that aged out on the bus: removal, not loss;
//! - a resume (`since` + `epoch`) answered `recovered: false` on a feed is an
//!   explicit gap for the application; on a `state` topic it is not, because
//!   the replay ends on the latest state anyway;
//! - a `gap` frame (`after`, `before`) on a feed is the hub saying that the
//!   bus lost what lies between: it is reported to the application, and the
//!   message `before` that follows is let through whatever its `prev` (the
//!   bus's, which may be anything below `before`). Its `after` must be the
//!   position held: a higher one means something was missed before the hole,
//!   a discontinuity like any other.
//! - a `retract` frame (PROTOCOL.md section 13) takes a place in the chain
//!   like a message: `at` is its seq, `prev` its prev; it is judged and
//!   advanced past the same way, so the next message's `prev` (the
//!   retraction's `at`) is no gap.

use std::time::Duration;

use tribune_protocol::{Ack, Gap, Message, Mode, Retract, Subscribe};

/// The continuity state of one subscription, across connections.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    /// The topic, for the frames this tracker writes.
    topic: String,
    /// The history the application asked for; used again on resumes that fail.
    history: Option<u32>,
    /// Learnt from the first `ack`; decides whether gaps matter.
    mode: Option<Mode>,
    /// The bus epoch that `position` and `floor` belong to.
    epoch: Option<String>,
    /// The seq the next message's `prev` may reach without a gap, and the
    /// `since` of a resume: the last seq delivered, or the `ack`'s seq.
    position: Option<u64>,
    /// The highest seq delivered in `epoch`; anything at or below is a duplicate.
    floor: Option<u64>,
    /// A hole the hub announced and the application was told about, not yet
    /// passed: its `before` message is let through whatever its `prev`. Kept
    /// across reconnections within the epoch, so that the same `gap` frame in
    /// a resume's replay is not reported twice.
    hole: Option<Hole>,
    /// What the hub knows of this subscription on the current connection.
    phase: Phase,
    /// Ask for Fossil delta updates (not on a known feed).
    delta: bool,
    /// The spoiler shield's `delay_ms`, sent in every `subscribe`.
    delay_ms: Option<u64>,
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

/// What to do with one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// In order: hand it to the application, then call [`Tracker::advance`].
    Deliver,
    /// Already delivered (overlap of a resume): drop.
    Duplicate,
    /// Not for the current subscription (before its `ack`, or suspended): drop.
    Ignore,
    /// Messages were missed on a feed: renew the subscription with `since`.
    Gap,
}

/// A hole announced by a `gap` frame and reported to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hole {
    /// The seq the next message continues from: the message with this seq
    /// follows the hole, whatever its `prev`.
    before: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    const T: &str = "clips.lausanne2020.speed-skating";

    fn msg(seq: u64, prev: u64) -> Message {
        Message {
            topic: T.into(),
            seq,
            prev,
            ts: 1,
            replay: false,
            data: RawValue::from_string(format!("{{\"n\":{seq}}}")).unwrap(),
            delta: false,
        }
    }

    fn ack(id: u64, mode: Mode, epoch: &str, seq: u64, recovered: Option<bool>) -> Ack {
        Ack {
            id,
            topic: Some(T.into()),
            mode: Some(mode),
            epoch: Some(epoch.into()),
            seq: Some(seq),
            recovered,
            delta: None,
            expires_at: None,
        }
    }

    /// Feeds messages and returns the seqs delivered, stopping at a gap.
    fn feed(tr: &mut Tracker, msgs: &[Message]) -> (Vec<u64>, Option<u64>) {
        let mut out = Vec::new();
        for m in msgs {
            match tr.check(m) {
                Verdict::Deliver => {
                    tr.advance(m.seq);
                    out.push(m.seq);
                }
                Verdict::Gap => return (out, Some(m.seq)),
                Verdict::Duplicate | Verdict::Ignore => {}
            }
        }
        (out, None)
    }

    #[test]
    fn a_retraction_takes_its_place_in_the_chain() {
        let mut tr =
            Tracker::new(T.into(), None, None).delayed(Some(std::time::Duration::from_secs(30)));
        assert_eq!(tr.subscribe_frame(1).delay_ms, Some(30_000));
        tr.on_ack(&ack(1, Mode::Feed, "E1", 10, None)).unwrap();
        let r = Retract {
            topic: T.into(),
            seq: 10,
            at: 12,
            prev: 10,
            ts: 1,
            replay: false,
        };
        assert_eq!(tr.check_retract(&r), Verdict::Deliver);
        tr.advance(r.at);
        assert_eq!(tr.position(), Some(12));
        assert_eq!(tr.check(&msg(13, 12)), Verdict::Deliver, "no gap after it");
        assert_eq!(tr.check_retract(&r), Verdict::Duplicate);
        let after_a_miss = Retract {
            at: 20,
            prev: 15,
            ..r.clone()
        };
        assert_eq!(tr.check_retract(&after_a_miss), Verdict::Gap);
    }

    #[test]
    fn fresh_feed_with_history_then_live() {
        let mut tr = Tracker::new(T.into(), Some(3), None);
        let f = tr.subscribe_frame(1);
        assert_eq!((f.history, f.since, f.epoch), (Some(3), None, None));
        let out = tr.on_ack(&ack(1, Mode::Feed, "E1", 30, None)).unwrap();
        assert_eq!(
            out,
            AckOutcome {
                lost: None,
                resumed: false
            }
        );
        // Replays: the first one's prev is unknown to the node (0).
        let (got, gap) = feed(
            &mut tr,
            &[
                msg(10, 0),
                msg(20, 10),
                msg(30, 20),
                msg(41, 30),
                msg(45, 41),
            ],
        );
        assert_eq!(got, [10, 20, 30, 41, 45]);
        assert_eq!(gap, None);
        assert_eq!(tr.position(), Some(45));
    }

    #[test]
    fn prev_above_position_is_a_gap_and_resubscribes_with_since() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::Feed, "E1", 5, None)).unwrap();
        let (got, gap) = feed(&mut tr, &[msg(6, 5), msg(9, 8)]);
        assert_eq!(got, [6]);
        assert_eq!(gap, Some(9));
        let f = tr.subscribe_frame(2);
        assert_eq!((f.since, f.epoch.as_deref()), (Some(6), Some("E1")));
        // Until the new ack, messages of the old subscription are ignored.
        assert_eq!(tr.check(&msg(10, 9)), Verdict::Ignore);
        // An ack of another request changes nothing.
        assert!(tr.on_ack(&ack(1, Mode::Feed, "E1", 10, None)).is_none());
        let out = tr
            .on_ack(&ack(2, Mode::Feed, "E1", 10, Some(true)))
            .unwrap();
        assert_eq!(
            out,
            AckOutcome {
                lost: None,
                resumed: true
            }
        );
        let (got, _) = feed(&mut tr, &[msg(8, 6), msg(9, 8), msg(10, 9), msg(12, 10)]);
        assert_eq!(got, [8, 9, 10, 12]);
    }

    #[test]
    fn the_first_gap_check_uses_the_ack_seq() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::Feed, "E1", 5, None)).unwrap();
        assert_eq!(tr.check(&msg(8, 7)), Verdict::Gap);
        assert_eq!(tr.check(&msg(8, 5)), Verdict::Deliver);
    }

    #[test]
    fn lower_prev_is_removal_not_loss() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::Feed, "E1", 50, None)).unwrap();
        let (got, gap) = feed(&mut tr, &[msg(51, 50), msg(60, 0), msg(61, 40)]);
        assert_eq!(got, [51, 60, 61]);
        assert_eq!(gap, None);
    }

    #[test]
    fn recovered_resume_drops_overlap() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::Feed, "E1", 0, None)).unwrap();
        feed(&mut tr, &[msg(1, 0), msg(2, 1), msg(3, 2)]);
        tr.on_disconnect();
        assert_eq!(tr.phase(), &Phase::Idle);
        let f = tr.subscribe_frame(7);
        assert_eq!(
            (f.since, f.epoch.as_deref(), f.history),
            (Some(3), Some("E1"), None)
        );
        tr.on_ack(&ack(7, Mode::Feed, "E1", 5, Some(true))).unwrap();
        let (got, gap) = feed(&mut tr, &[msg(2, 1), msg(3, 2), msg(4, 3), msg(5, 4)]);
        assert_eq!(got, [4, 5]);
        assert_eq!(gap, None);
    }

    #[test]
    fn unrecovered_feed_resume_is_an_explicit_gap() {
        let mut tr = Tracker::new(T.into(), Some(2), None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::Feed, "E1", 3, None)).unwrap();
        feed(&mut tr, &[msg(3, 0), msg(4, 3)]);
        tr.on_disconnect();
        tr.subscribe_frame(2);
        let out = tr
            .on_ack(&ack(2, Mode::Feed, "E1", 20, Some(false)))
            .unwrap();
        assert_eq!(
            out.lost,
            Some(LostRange {
                after_seq: 4,
                epoch_changed: false,
                epoch: Some("E1".into())
            })
        );
        // The fallback replay (history 2) then live; nothing twice.
        let (got, gap) = feed(&mut tr, &[msg(4, 3), msg(20, 0), msg(21, 20)]);
        assert_eq!(got, [20, 21]);
        assert_eq!(gap, None);
    }

    #[test]
    fn epoch_change_resets_the_duplicate_floor() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::Feed, "E1", 0, None)).unwrap();
        feed(&mut tr, &[msg(100, 0), msg(101, 100)]);
        tr.on_disconnect();
        let f = tr.subscribe_frame(2);
        assert_eq!(f.since, Some(101));
        let out = tr
            .on_ack(&ack(2, Mode::Feed, "E2", 0, Some(false)))
            .unwrap();
        let lost = out.lost.unwrap();
        assert!(lost.epoch_changed);
        assert_eq!(lost.epoch.as_deref(), Some("E2"));
        assert_eq!(tr.epoch(), Some("E2"));
        // Seqs restart in the new epoch: small ones are new, not duplicates.
        let (got, _) = feed(&mut tr, &[msg(1, 0), msg(2, 1)]);
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn state_topics_conflate_without_gaps() {
        let mut tr = Tracker::new(T.into(), Some(0), None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::State, "E1", 10, None)).unwrap();
        // Skipped states are conflation, not loss.
        let (got, gap) = feed(
            &mut tr,
            &[msg(12, 10), msg(19, 15), msg(19, 15), msg(25, 22)],
        );
        assert_eq!(got, [12, 19, 25]);
        assert_eq!(gap, None);
        tr.on_disconnect();
        let f = tr.subscribe_frame(2);
        // The resume asks for at least the latest state even though the
        // application asked for no history.
        assert_eq!((f.since, f.history), (Some(25), Some(1)));
        let out = tr
            .on_ack(&ack(2, Mode::State, "E2", 3, Some(false)))
            .unwrap();
        assert_eq!(out.lost, None);
        let (got, _) = feed(&mut tr, &[msg(3, 0)]);
        assert_eq!(got, [3]);
    }

    #[test]
    fn application_since_resumes_from_the_first_subscribe() {
        let mut tr = Tracker::new(T.into(), None, Some((812, "E1".into())));
        let f = tr.subscribe_frame(1);
        assert_eq!((f.since, f.epoch.as_deref()), (Some(812), Some("E1")));
        tr.on_ack(&ack(1, Mode::Feed, "E1", 820, Some(true)))
            .unwrap();
        let (got, gap) = feed(&mut tr, &[msg(812, 800), msg(815, 812), msg(820, 815)]);
        assert_eq!(got, [815, 820]);
        assert_eq!(gap, None);
    }

    #[test]
    fn suspend_survives_disconnects_until_unsuspended() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::Feed, "E1", 0, None)).unwrap();
        feed(&mut tr, &[msg(1, 0)]);
        tr.suspend();
        assert_eq!(tr.check(&msg(2, 1)), Verdict::Ignore);
        tr.on_disconnect();
        assert_eq!(tr.phase(), &Phase::Suspended);
        assert!(tr.unsuspend());
        assert!(!tr.unsuspend());
        assert_eq!(tr.phase(), &Phase::Idle);
        assert_eq!(tr.subscribe_frame(3).since, Some(1));
    }

    fn gap(after: u64, before: u64) -> Gap {
        Gap {
            topic: T.into(),
            after,
            before,
        }
    }

    /// A live feed subscription that delivered up to `at`.
    fn live_feed_at(at: u64) -> Tracker {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(1);
        tr.on_ack(&ack(1, Mode::Feed, "E1", at, None)).unwrap();
        tr
    }

    #[test]
    fn announced_hole_lets_the_next_message_through_whatever_its_prev() {
        let mut tr = live_feed_at(5);
        assert_eq!(feed(&mut tr, &[msg(6, 5)]), (vec![6], None));
        assert_eq!(
            tr.on_gap(&gap(6, 9)),
            GapVerdict::Report {
                after_seq: 6,
                before_seq: 9
            }
        );
        // 9's prev is the bus's (8 is inside the hole, above the position):
        // no renewal. After it, `prev` is checked again.
        let (got, renew) = feed(&mut tr, &[msg(9, 8), msg(10, 9), msg(13, 12)]);
        assert_eq!((got, renew), (vec![9, 10], Some(13)));
    }

    #[test]
    fn the_hole_passes_only_its_before_message() {
        let mut tr = live_feed_at(6);
        tr.on_gap(&gap(6, 9));
        assert_eq!(tr.check(&msg(11, 10)), Verdict::Gap);
        assert_eq!(tr.check(&msg(9, 7)), Verdict::Deliver);
    }

    #[test]
    fn gap_starting_above_the_position_renews_with_since() {
        let mut tr = live_feed_at(6);
        assert_eq!(tr.on_gap(&gap(7, 9)), GapVerdict::Renew);
        // Nothing was recorded: 9 is a discontinuity too.
        assert_eq!(tr.check(&msg(9, 8)), Verdict::Gap);
        assert_eq!(tr.subscribe_frame(2).since, Some(6));
    }

    #[test]
    fn gap_overlapping_what_was_delivered_reports_from_the_position() {
        let mut tr = live_feed_at(5);
        feed(&mut tr, &[msg(7, 5)]);
        assert_eq!(
            tr.on_gap(&gap(5, 9)),
            GapVerdict::Report {
                after_seq: 7,
                before_seq: 9
            }
        );
        // Already passed: old news.
        assert_eq!(tr.on_gap(&gap(3, 7)), GapVerdict::Ignore);
        assert_eq!(tr.on_gap(&gap(3, 6)), GapVerdict::Ignore);
    }

    #[test]
    fn gap_frames_are_ignored_on_state_topics_and_outside_live() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(1);
        // Before the ack: it belongs to an older subscription.
        assert_eq!(tr.on_gap(&gap(0, 9)), GapVerdict::Ignore);
        tr.on_ack(&ack(1, Mode::State, "E1", 6, None)).unwrap();
        assert_eq!(tr.on_gap(&gap(6, 9)), GapVerdict::Ignore);
        assert_eq!(tr.on_gap(&gap(7, 9)), GapVerdict::Ignore);

        let mut tr = live_feed_at(6);
        tr.suspend();
        assert_eq!(tr.on_gap(&gap(6, 9)), GapVerdict::Ignore);
    }

    #[test]
    fn the_same_gap_in_a_resume_replay_is_reported_once() {
        let mut tr = live_feed_at(6);
        assert!(matches!(tr.on_gap(&gap(6, 9)), GapVerdict::Report { .. }));
        // The connection drops before 9 arrives; the resume's replay
        // announces the hole again, at its place.
        tr.on_disconnect();
        assert_eq!(tr.subscribe_frame(2).since, Some(6));
        tr.on_ack(&ack(2, Mode::Feed, "E1", 9, Some(true))).unwrap();
        assert_eq!(tr.on_gap(&gap(6, 9)), GapVerdict::Ignore);
        assert_eq!(feed(&mut tr, &[msg(9, 8), msg(10, 9)]), (vec![9, 10], None));
        // A later replay that overlaps it again: passed, old news.
        assert_eq!(tr.on_gap(&gap(6, 9)), GapVerdict::Ignore);
    }

    #[test]
    fn a_new_epoch_forgets_the_announced_hole() {
        let mut tr = live_feed_at(6);
        tr.on_gap(&gap(6, 9));
        tr.on_disconnect();
        tr.subscribe_frame(2);
        tr.on_ack(&ack(2, Mode::Feed, "E2", 0, Some(false)))
            .unwrap();
        // Seq 9 of the new epoch is an ordinary message: its prev counts.
        assert_eq!(tr.check(&msg(9, 8)), Verdict::Gap);
    }

    #[test]
    fn refusal_only_matches_the_pending_request() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(4);
        assert!(!tr.on_refused(3));
        assert!(tr.on_refused(4));
        assert_eq!(tr.phase(), &Phase::Idle);
    }
}
