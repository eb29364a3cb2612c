//! A relay's recent messages: the namespace's `retained` latest, each
//! encoded once as a live frame, (lazily) as a replay frame and, on topics
//! with delta updates, once as a delta from the message before, with the
//! holes announced before them. `history` and resume are served from here.
//! Retraction markers are entries too (their frames are `retract` frames,
//! made in `retract.rs`), and a retracted message keeps its place in the
//! chain with its frames swapped for a `retract` frame: its payload is never
//! sent again.

use std::collections::VecDeque;
use std::sync::OnceLock;

use tribune_protocol::{
    Gap, ServerFrame, delta, encode_delta, encode_message, encode_replay, encode_server,
    message_view,
};

use crate::outbox::Frame;

/// One forwarded message.
pub(super) struct Cached {
    pub(super) seq: u64,
    pub(super) prev: u64,
    /// The frame live subscribers got, shared by all of them.
    pub(super) live: Frame,
    /// The same with `"replay":true`, made on the first replay.
    pub(super) replay: OnceLock<Frame>,
    /// The same message as a Fossil delta from the message cached before it
    /// (`"delta":true`), for subscribers that hold that one; `None` when the
    /// topic has no deltas or the delta is not smaller.
    pub(super) delta: Option<Frame>,
    /// The `gap` frame that came before this message: messages before it
    /// were lost. Replays send it in place; a `state` resume across it is
    /// not recovered.
    pub(super) gap: Option<Frame>,
    /// A retraction marker: the `seq` it retracts.
    pub(super) retracts: Option<u64>,
    /// A message an editor retracted: its frames are `retract` frames now.
    pub(super) retracted: bool,
    /// When the bus stored it (Unix ms): a delayed subscription gets it at
    /// `ts + delay`.
    pub(super) ts: u64,
}

/// The `gap` frame announcing that messages after `after` and before
/// `before` were lost.
pub(super) fn gap_frame(topic: &str, after: u64, before: u64) -> Frame {
    Frame::from(encode_server(&ServerFrame::Gap(Gap {
        topic: topic.to_string(),
        after,
        before,
    })))
}

impl Cached {
    /// Encodes a message whose payload was validated as JSON; with
    /// `hole_after`, messages after that seq and before this one were lost.
    pub(super) fn new(
        topic: &str,
        seq: u64,
        prev: u64,
        ts: u64,
        data: &[u8],
        hole_after: Option<u64>,
    ) -> Self {
        let live = encode_message(topic, seq, prev, ts, false, data);
        // Validated JSON is UTF-8.
        let live = String::from_utf8(live).expect("validated JSON is UTF-8");
        Self {
            seq,
            prev,
            live: Frame::from(live),
            replay: OnceLock::new(),
            delta: None,
            gap: hole_after.map(|after| gap_frame(topic, after, seq)),
            retracts: None,
            retracted: false,
            ts,
        }
    }

    /// Makes this message's delta frame from `base`, the live frame of the
    /// message cached before it (the one a primed subscriber holds). Kept
    /// only when smaller than the full frame. Returns whether a delta was
    /// computed (once per message per topic: the relay calls this once).
    pub(super) fn make_delta(&mut self, topic: &str, base: &Frame) -> bool {
        let (Some(base), Some(this)) = (
            message_view(base.as_bytes()),
            message_view(self.live.as_bytes()),
        ) else {
            return false;
        };
        // Validated JSON is UTF-8.
        let Ok(target) = std::str::from_utf8(this.data) else {
            return false;
        };
        let Some(d) = delta::make(base.data, target) else {
            return false;
        };
        let frame = encode_delta(topic, self.seq, self.prev, this.ts, &d);
        if frame.len() < self.live.len() {
            let frame = String::from_utf8(frame).expect("a delta is UTF-8 (delta::make)");
            self.delta = Some(Frame::from(frame));
        }
        true
    }

    pub(super) fn replay_frame(&self) -> Frame {
        self.replay
            .get_or_init(|| {
                let replay = encode_replay(self.live.as_str())
                    .expect("live frames are laid out by encode_message");
                Frame::from(replay)
            })
            .clone()
    }

    /// Whether a replay that reaches this entry crosses its hole: always,
    /// but for the first entry of a replay whose client holds nothing
    /// before it (`since` None: a history replay) or holds its real
    /// predecessor (`since == prev`).
    fn hole_crossed(&self, first: bool, since: Option<u64>) -> bool {
        self.gap.is_some() && !(first && since.is_none_or(|s| s == self.prev))
    }
}

/// The retained messages of one topic, oldest first.
pub(super) struct Cache {
    entries: VecDeque<Cached>,
    retained: usize,
}

/// One frame of a replay, in order.
pub(super) enum Replayed {
    /// A `gap` frame: the hole before the next message.
    Gap(Frame),
    /// A message's replay frame.
    Message(Frame),
}

impl Cache {
    pub(super) fn new(retained: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            retained,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The newest message's live frame: the base of the next one's delta.
    pub(super) fn newest(&self) -> Option<&Frame> {
        self.entries.back().map(|c| &c.live)
    }

    /// The oldest entry's `seq`.
    pub(super) fn oldest_seq(&self) -> Option<u64> {
        self.entries.front().map(|c| c.seq)
    }

    /// The entry at `index`, oldest first.
    pub(super) fn get(&self, index: usize) -> Option<&Cached> {
        self.entries.get(index)
    }

    /// The entries in `range` (indexes), oldest first.
    pub(super) fn range(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = &Cached> + '_ {
        let end = range.end.min(self.entries.len());
        self.entries.range(range.start.min(end)..end)
    }

    /// The index of the first entry above `seq`.
    pub(super) fn index_after(&self, seq: u64) -> usize {
        self.entries.partition_point(|c| c.seq <= seq)
    }

    /// The entry with `seq`, for a retraction.
    pub(super) fn find_mut(&mut self, seq: u64) -> Option<&mut Cached> {
        let pos = self.entries.binary_search_by_key(&seq, |c| c.seq).ok()?;
        self.entries.get_mut(pos)
    }

    /// Adds the newest message, dropping the oldest past `retained`.
    pub(super) fn push(&mut self, cached: Cached) {
        self.entries.push_back(cached);
        while self.entries.len() > self.retained {
            self.entries.pop_front();
        }
    }

    /// Where a resume at `since` starts, if every message after it is still
    /// here (PROTOCOL.md section 3: recovery is all or nothing). `latest` is
    /// the last seq forwarded. With `strict` (a `state` topic, which has no
    /// `gap` frames), a resume across a hole does not recover either.
    pub(super) fn resume_point(&self, latest: u64, since: u64, strict: bool) -> Option<usize> {
        let point = if since == latest {
            Some(self.entries.len())
        } else if since > latest {
            None
        } else if let Some(pos) = self.entries.iter().position(|c| c.seq == since) {
            Some(pos + 1)
        } else {
            match self.entries.front() {
                Some(first) if first.prev == since => Some(0),
                _ => None,
            }
        }?;
        let crosses = self
            .entries
            .range(point..)
            .enumerate()
            .any(|(i, c)| c.hole_crossed(i == 0, Some(since)));
        (!(strict && crosses)).then_some(point)
    }

    /// The frames replaying the entries in `range` (from the newest on
    /// `..len()`; a delayed subscription stops where its line holds) to a
    /// client that resumed after `since` (None: a history replay), `gap`
    /// frames in place unless `with_gaps` is false (a `state` topic).
    pub(super) fn replay(
        &self,
        range: std::ops::Range<usize>,
        since: Option<u64>,
        with_gaps: bool,
    ) -> impl Iterator<Item = Replayed> + '_ {
        self.range(range).enumerate().flat_map(move |(i, c)| {
            let gap = c
                .gap
                .as_ref()
                .filter(|_| with_gaps && c.hole_crossed(i == 0, since))
                .map(|g| Replayed::Gap(g.clone()));
            gap.into_iter()
                .chain(std::iter::once(Replayed::Message(c.replay_frame())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(items: &[(u64, u64)]) -> Cache {
        let mut c = Cache::new(100);
        for &(seq, prev) in items {
            c.push(Cached::new("clips.a", seq, prev, 1, b"{}", None));
        }
        c
    }

    #[test]
    fn resume_point_rules() {
        let c = cache(&[(5, 3), (8, 5), (9, 8)]);
        assert_eq!(c.resume_point(9, 9, false), Some(3), "up to date");
        assert_eq!(c.resume_point(9, 8, false), Some(2));
        assert_eq!(c.resume_point(9, 5, false), Some(1));
        assert_eq!(
            c.resume_point(9, 3, false),
            Some(0),
            "the message before the oldest kept"
        );
        assert_eq!(c.resume_point(9, 2, false), None, "aged out");
        assert_eq!(
            c.resume_point(9, 4, false),
            None,
            "never a message of this topic"
        );
        assert_eq!(c.resume_point(9, 10, false), None, "from the future");
        assert_eq!(
            cache(&[]).resume_point(0, 0, false),
            Some(0),
            "empty topic, nothing missed"
        );
    }

    #[test]
    fn holes_in_replays_and_strict_resumes() {
        let mut c = cache(&[(5, 3)]);
        c.push(Cached::new("clips.a", 20, 12, 1, b"{}", Some(5)));
        c.push(Cached::new("clips.a", 21, 20, 1, b"{}", None));
        let kinds = |start, since| {
            c.replay(start..usize::MAX, since, true)
                .map(|r| match r {
                    Replayed::Gap(f) => f.as_str().to_string(),
                    Replayed::Message(f) => serde_json::from_str::<serde_json::Value>(f.as_str())
                        .unwrap()["seq"]
                        .to_string(),
                })
                .collect::<Vec<_>>()
        };
        let gap = r#"{"type":"gap","topic":"clips.a","after":5,"before":20}"#;
        assert_eq!(kinds(0, None), ["5", gap, "20", "21"]);
        assert_eq!(
            kinds(1, Some(5)),
            [gap, "20", "21"],
            "resumed right before the hole"
        );
        assert_eq!(kinds(1, None), ["20", "21"], "history starting at the hole");
        assert_eq!(
            kinds(1, Some(12)),
            ["20", "21"],
            "held the real predecessor"
        );
        assert_eq!(c.resume_point(21, 5, false), Some(1));
        assert_eq!(
            c.resume_point(21, 5, true),
            None,
            "state: not across a hole"
        );
        assert_eq!(c.resume_point(21, 20, true), Some(2));
    }

    #[test]
    fn delta_frame_rebuilds_the_payload_and_is_kept_only_when_smaller() {
        let a = format!(r#"{{"rows":["{}",1]}}"#, "Sáblíková ".repeat(20));
        let b = format!(r#"{{"rows":["{}",2]}}"#, "Sáblíková ".repeat(20));
        let first = Cached::new("results.a", 3, 0, 9, a.as_bytes(), None);
        let mut second = Cached::new("results.a", 7, 3, 10, b.as_bytes(), None);
        assert!(second.make_delta("results.a", &first.live));
        let frame = second.delta.clone().unwrap();
        let view = message_view(frame.as_bytes()).unwrap();
        assert_eq!((view.seq, view.prev, view.ts, view.delta), (7, 3, 10, true));
        let d: String = serde_json::from_slice(view.data).unwrap();
        assert_eq!(
            delta::apply(a.as_bytes(), d.as_bytes()).unwrap(),
            b.as_bytes()
        );
        // Nothing in common: the delta is no smaller, the full frame goes.
        let mut other = Cached::new("results.a", 8, 7, 11, br#"{"z":[9,9,9]}"#, None);
        assert!(other.make_delta("results.a", &second.live));
        assert!(other.delta.is_none());
    }

    #[test]
    fn replay_frame_marks_replay() {
        let c = Cached::new("clips.a", 7, 3, 99, br#"{"x":1}"#, None);
        assert_eq!(
            c.live.as_str(),
            r#"{"type":"message","topic":"clips.a","seq":7,"prev":3,"ts":99,"data":{"x":1}}"#
        );
        assert_eq!(
            c.replay_frame().as_str(),
            r#"{"type":"message","topic":"clips.a","seq":7,"prev":3,"ts":99,"replay":true,"data":{"x":1}}"#
        );
    }
}
