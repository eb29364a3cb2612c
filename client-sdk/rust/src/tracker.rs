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
//!   the replay ends on the latest state anyway.

use tribune_protocol::{Ack, Message, Mode, Subscribe};

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
    /// What the hub knows of this subscription on the current connection.
    phase: Phase,
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
            phase: Phase::Idle,
        }
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

    #[cfg(test)]
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
        if self.phase != Phase::Live {
            return Verdict::Ignore;
        }
        if self.floor.is_some_and(|floor| msg.seq <= floor) {
            return Verdict::Duplicate;
        }
        if self.mode == Some(Mode::Feed) && self.position.is_some_and(|pos| msg.prev > pos) {
            return Verdict::Gap;
        }
        Verdict::Deliver
    }

    /// Records that the message with this seq reached the application.
    pub(crate) fn advance(&mut self, seq: u64) {
        self.position = Some(seq);
        self.floor = Some(self.floor.map_or(seq, |f| f.max(seq)));
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

    #[test]
    fn refusal_only_matches_the_pending_request() {
        let mut tr = Tracker::new(T.into(), None, None);
        tr.subscribe_frame(4);
        assert!(!tr.on_refused(3));
        assert!(tr.on_refused(4));
        assert_eq!(tr.phase(), &Phase::Idle);
    }
}
