//! The tracker's unit tests: fresh subscriptions and resumes, `prev` gaps,
//! epochs, state topics, suspension, retractions and `gap` frames.

use serde_json::value::RawValue;
use tribune_protocol::{Ack, Gap, Message, Mode, Retract};

use super::verdicts::{AckOutcome, LostRange};
use super::*;

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
