//! A relay's recent messages, each encoded once as a live frame, (lazily)
//! as a replay frame and, on topics with delta updates, once as a delta
//! from the message before, with the holes announced before them.
//! `history`, resume and `GET /v1/history` are served from here.
//! Retraction markers are entries too (their frames are `retract` frames,
//! made in `retract.rs`), and a retracted message keeps its place in the
//! chain with its frames swapped for a `retract` frame: its payload is never
//! sent again.
//!
//! What is kept ([`Retention`]): the namespace's `retained` latest messages,
//! or every message of the last `retained_secs` when that is more, never
//! more than `depth` messages (`retained_secs × expected_rate`, what the
//! stream keeps per subject) nor more than `bytes`. The window is measured
//! from the newest message's `ts` (the bus's clock, so a hub whose clock is
//! ahead trims nothing early): when a fan comes back, the newest message is
//! no later than now, so everything after `now − retained_secs` is still
//! here. A quiet topic is not trimmed until its next message: it keeps
//! more, never less. The newest message is always kept, whatever its size.

use std::collections::VecDeque;
use std::sync::OnceLock;

use tribune_protocol::{
    Gap, ServerFrame, delta, encode_delta, encode_message, encode_replay, encode_server,
    message_view,
};

use crate::outbox::Frame;

/// Bytes counted per cached message besides its frames: the entry, the
/// frames' shared headers and allocations (measured order of magnitude, kept
/// generous so that the byte cap bounds the real memory).
const ENTRY_OVERHEAD: u64 = 160;

/// One forwarded message.
pub(super) struct Cached {
    pub(super) seq: u64,
    pub(super) prev: u64,
    /// The bus's storage time (Unix ms): what time retention measures, and
    /// when a delayed subscription gets it (`ts + delay`).
    pub(super) ts: u64,
    /// Bytes charged to the cache at push ([`Cached::cost`]), given back
    /// when it leaves: a retraction swaps its frames for smaller ones, and
    /// the cap's count must not drift.
    pub(super) charged: u64,
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
            ts,
            live: Frame::from(live),
            replay: OnceLock::new(),
            delta: None,
            gap: hole_after.map(|after| gap_frame(topic, after, seq)),
            retracts: None,
            retracted: false,
            charged: 0,
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

    /// What this entry may take in memory: the live frame four times (its
    /// replay form is made on the first replay, and each may get its
    /// deflated form, never larger, for clients with permessage-deflate),
    /// the delta and gap frames, and the bookkeeping; counted in full at
    /// push so the cap holds whatever is made later.
    fn cost(&self) -> u64 {
        let frames = 4 * self.live.len()
            + self.delta.as_ref().map_or(0, Frame::len)
            + self.gap.as_ref().map_or(0, Frame::len);
        frames as u64 + ENTRY_OVERHEAD
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

/// What a topic's cache keeps (the module docs say how they combine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The latest this many are kept (within `depth` and `bytes`).
    pub retained: usize,
    /// Every message this recent (ms before the newest) is kept too; 0: none.
    pub window_ms: u64,
    /// Never more messages than this (at least `retained`).
    pub depth: usize,
    /// Never more bytes than this ([`Cached::cost`]), the newest aside.
    pub bytes: u64,
}

impl Retention {
    /// Only a count: `retained` messages, no window, no byte cap.
    #[cfg(test)]
    pub fn count(retained: usize) -> Self {
        Self {
            retained,
            window_ms: 0,
            depth: retained,
            bytes: u64::MAX,
        }
    }
}

/// The retained messages of one topic, oldest first.
pub(super) struct Cache {
    entries: VecDeque<Cached>,
    retention: Retention,
    /// Sum of the entries' [`Cached::cost`].
    bytes: u64,
}

/// One frame of a replay, in order.
pub(super) enum Replayed {
    /// A `gap` frame: the hole before the next message.
    Gap(Frame),
    /// A message's replay frame.
    Message(Frame),
}

impl Cache {
    pub(super) fn new(retention: Retention) -> Self {
        Self {
            entries: VecDeque::new(),
            retention,
            bytes: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The newest message's live frame: the base of the next one's delta.
    pub(super) fn newest(&self) -> Option<&Frame> {
        self.entries.back().map(|c| &c.live)
    }

    /// Bytes the entries may take now ([`Cached::cost`]).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
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

    /// Adds the newest message, then drops the oldest while the retention
    /// allows (module docs): past the depth or the byte cap always; past
    /// `retained` when older than the window.
    pub(super) fn push(&mut self, mut cached: Cached) {
        cached.charged = cached.cost();
        self.bytes += cached.charged;
        let newest_ts = cached.ts;
        self.entries.push_back(cached);
        let r = self.retention;
        while let Some(oldest) = self.entries.front() {
            let len = self.entries.len();
            if len <= 1 {
                break;
            }
            let over_cap = len > r.depth.max(r.retained) || self.bytes > r.bytes;
            let outside_window =
                r.window_ms == 0 || oldest.ts < newest_ts.saturating_sub(r.window_ms);
            if !(over_cap || (len > r.retained && outside_window)) {
                break;
            }
            let gone = self.entries.pop_front().expect("front exists");
            self.bytes -= gone.charged;
        }
    }

    /// The entries with `seq < before` (all when `None`), the newest `limit`
    /// of them: their position, and whether older entries remain.
    pub(super) fn page(&self, before: Option<u64>, limit: usize) -> (usize, usize, bool) {
        let end = match before {
            Some(b) => self.entries.partition_point(|c| c.seq < b),
            None => self.entries.len(),
        };
        let start = end.saturating_sub(limit);
        (start, end, start > 0)
    }

    /// A `GET /v1/history` page: the entries from `start` to `end` as
    /// replay frames, oldest first, each after the `gap` frame of the hole
    /// before it (at the page's start too: the client holds the newer pages,
    /// never the message before the hole).
    pub(super) fn history(&self, start: usize, end: usize) -> Vec<Frame> {
        let mut out = Vec::with_capacity(end.saturating_sub(start));
        for c in self.entries.range(start..end) {
            if let Some(gap) = &c.gap {
                out.push(gap.clone());
            }
            // A page lists messages: a retracted one is left out (its
            // payload never leaves again, and a reader of older pages has
            // no chain to keep), and so is a retraction marker.
            if c.retracted || c.retracts.is_some() {
                continue;
            }
            out.push(c.replay_frame());
        }
        out
    }

    /// The seq of the entry at `index`.
    pub(super) fn seq_at(&self, index: usize) -> Option<u64> {
        self.entries.get(index).map(|c| c.seq)
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
        let mut c = Cache::new(Retention::count(100));
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

    fn seqs(c: &Cache) -> Vec<u64> {
        c.entries.iter().map(|e| e.seq).collect()
    }

    /// `n` messages, one every `every_ms`, the first at `ts0`.
    fn fill(c: &mut Cache, n: u64, ts0: u64, every_ms: u64) {
        for i in 0..n {
            let seq = c.entries.back().map_or(1, |e| e.seq + 1);
            let prev = seq - 1;
            c.push(Cached::new(
                "clips.a",
                seq,
                prev,
                ts0 + i * every_ms,
                b"{}",
                None,
            ));
        }
    }

    #[test]
    fn keeps_the_time_window_beyond_the_count() {
        // 3 by count, or 10 s of history, at most 50.
        let mut c = Cache::new(Retention {
            retained: 3,
            window_ms: 10_000,
            depth: 50,
            bytes: u64::MAX,
        });
        // 40 messages, one a second: the last 10 s are the last 11 (ts
        // 29,000..=39,000 with the newest at 39,000).
        fill(&mut c, 40, 0, 1_000);
        assert_eq!(seqs(&c), (30..=40).collect::<Vec<_>>());
        // A burst: 60 within the window, capped at the depth (the stream's
        // per-subject limit holds no more).
        fill(&mut c, 60, 40_000, 10);
        assert_eq!(c.len(), 50, "never past the depth");
        assert_eq!(seqs(&c).last(), Some(&100));
        // A quiet minute, then one message: the window now holds only it,
        // and the count keeps the last 3.
        fill(&mut c, 1, 120_000, 0);
        assert_eq!(seqs(&c), [99, 100, 101]);
    }

    #[test]
    fn count_alone_without_a_window() {
        let mut c = Cache::new(Retention {
            retained: 5,
            window_ms: 0,
            depth: 5,
            bytes: u64::MAX,
        });
        fill(&mut c, 12, 0, 0);
        assert_eq!(seqs(&c), (8..=12).collect::<Vec<_>>());
    }

    #[test]
    fn byte_cap_bounds_memory_and_keeps_the_newest() {
        let one = Cached::new("clips.a", 30, 29, 29, b"{}", None).cost();
        let mut c = Cache::new(Retention {
            retained: 1_000,
            window_ms: 60_000,
            depth: 1_000,
            bytes: 10 * one,
        });
        fill(&mut c, 30, 0, 1);
        assert_eq!(c.len(), 10, "the byte cap wins over count and window");
        assert!(c.bytes() <= 10 * one);
        assert_eq!(seqs(&c).first(), Some(&21));
        // A message larger than the whole cap: kept alone.
        let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(40 * one as usize));
        c.push(Cached::new("clips.a", 31, 30, 40, big.as_bytes(), None));
        assert_eq!(seqs(&c), [31]);
        assert_eq!(
            c.bytes(),
            c.entries[0].cost(),
            "the count of bytes stays exact"
        );
    }

    #[test]
    fn pages_walk_back_with_gaps_in_place() {
        let mut c = cache(&[(5, 3), (8, 5)]);
        c.push(Cached::new("clips.a", 20, 12, 1, b"{}", Some(8)));
        c.push(Cached::new("clips.a", 21, 20, 1, b"{}", None));
        let (s, e, more) = c.page(None, 2);
        assert_eq!((s, e, more), (2, 4, true));
        let frames: Vec<String> = c
            .history(s, e)
            .iter()
            .map(|f| f.as_str().to_string())
            .collect();
        assert_eq!(
            frames.len(),
            3,
            "the hole's gap frame leads the page: {frames:?}"
        );
        assert!(frames[0].contains(r#""type":"gap""#) && frames[0].contains(r#""after":8"#));
        assert!(frames[1].contains(r#""seq":20"#) && frames[1].contains(r#""replay":true"#));
        assert_eq!(c.seq_at(s), Some(20));
        assert_eq!(c.page(Some(20), 2), (0, 2, false));
        assert_eq!(c.page(Some(6), 50), (0, 1, false));
        assert_eq!(
            c.page(Some(1), 50),
            (0, 0, false),
            "before everything: empty"
        );
    }

    #[test]
    fn history_pages_leave_out_retracted_messages_and_markers() {
        let mut c = Cache::new(Retention::count(100));
        let mut prev = 0;
        for seq in 1..=5 {
            c.push(Cached::new("clips.a", seq, prev, 1, b"{}", None));
            prev = seq;
        }
        c.find_mut(3).unwrap().retract_in_place("clips.a");
        c.push(Cached::marker("clips.a", 3, 6, 5, 1, None));
        let (start, end, more) = c.page(None, 100);
        assert!(!more);
        let texts: Vec<String> = c
            .history(start, end)
            .iter()
            .map(|f| f.as_str().to_string())
            .collect();
        let seqs: Vec<u64> = texts
            .iter()
            .map(|t| {
                serde_json::from_str::<serde_json::Value>(t).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 4, 5], "{texts:?}");
        assert!(texts.iter().all(|t| !t.contains("retract")), "{texts:?}");
    }
}
