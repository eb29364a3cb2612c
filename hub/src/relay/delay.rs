//! The spoiler shield (PROTOCOL.md section 13): subscriptions with
//! `delay_ms` D get their topic's frames at the bus's `ts` + D.
//!
//! One [`DelayLine`] per relay and delay value, not per fan: it holds the
//! frames of the last D of the topic (the relay's cached frames, shared,
//! not copies), and one timer task per line releases each when it is due
//! to every subscriber of that delay, in order, under the relay's lock (so
//! a join sees either a frame replayed or held, never both nor neither).
//!
//! - **Order.** Frames are released head first: a frame is never passed by
//!   a later one, and none leaves before its `ts` + D (by this node's
//!   clock), so none is early.
//! - **Memory.** A line holds at most [`MAX_HELD`] frames and
//!   [`MAX_HELD_BYTES`] bytes. Past either, its oldest held frame is
//!   dropped (never released early), counted in
//!   `tribune_delay_dropped_total`, and the next released message follows
//!   a `gap` frame naming what was lost: the rule of holes (section 5).
//! - **Retractions.** A message retracted while held is released as its
//!   `retract` frame: a delayed fan never sees a taken-down item.
//! - **Stats** are held too (due D after they were sent), so audience and
//!   reaction bursts do not run ahead of the delayed stream.
//! - **Joins.** A line starts from the relay's cache: what is due goes out
//!   as replay, the rest is held; its position (`ack.seq` of a delayed
//!   subscription) is the last frame due.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::cache::{Cache, Cached, gap_frame};
use crate::metrics::Metrics;
use crate::outbox::{Frame, Outbox};

/// Frames one line may hold; past it the oldest is dropped, with a `gap`.
pub(super) const MAX_HELD: usize = 20_000;

/// Bytes one line may hold (frames are shared with the cache, so this
/// bounds what a line keeps alive beyond it).
pub(super) const MAX_HELD_BYTES: usize = 64 << 20;

/// The longest a line's task sleeps before looking again, so that it
/// notices a closed relay or a removed line without a wake-up.
pub(super) const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One held frame.
enum Held {
    /// A message or a retraction, with the `gap` before it.
    Entry {
        seq: u64,
        due: u64,
        gap: Option<Frame>,
        frame: Frame,
    },
    /// A `stats` frame.
    Stats { due: u64, frame: Frame },
}

impl Held {
    fn due(&self) -> u64 {
        match self {
            Held::Entry { due, .. } | Held::Stats { due, .. } => *due,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Held::Entry { gap, frame, .. } => frame.len() + gap.as_ref().map_or(0, Frame::len),
            Held::Stats { frame, .. } => frame.len(),
        }
    }
}

/// A subscriber of a line.
pub(super) struct LineSub {
    /// Its key among the relay's subscribers.
    pub(super) key: usize,
    pub(super) outbox: Arc<Outbox>,
    /// It resumed ahead of the line: messages up to this seq are skipped.
    pub(super) after: u64,
}

/// The frames of one topic held for one delay, and who gets them.
pub(super) struct DelayLine {
    topic: Arc<str>,
    delay_ms: u64,
    held: VecDeque<Held>,
    bytes: usize,
    /// [`MAX_HELD`] (tests lower it).
    max_held: usize,
    /// The `seq` of the last message released (or dropped at the cap): the
    /// position of a subscription that joins now.
    released: u64,
    /// Held frames were dropped at the cap after this seq: the next
    /// message released follows a `gap` frame.
    hole_after: Option<u64>,
    /// The subscribers of this delay.
    pub(super) subs: Vec<LineSub>,
    /// Wakes the line's task when a frame arrives in an empty line.
    pub(super) wake: Arc<Notify>,
}

impl DelayLine {
    /// A line starting from the relay's cache at `now`: entries already due
    /// are its past (the position is the last of them), the others held.
    /// `last_seq`: the relay's position, for an empty cache.
    pub(super) fn new(
        topic: &str,
        delay_ms: u64,
        cache: &Cache,
        last_seq: u64,
        now: u64,
        metrics: &Metrics,
    ) -> Self {
        let cut = due_cut(cache, delay_ms, now);
        let released = position(cache, cut, last_seq);
        let mut line = Self {
            topic: Arc::from(topic),
            delay_ms,
            held: VecDeque::new(),
            bytes: 0,
            max_held: MAX_HELD,
            released,
            hole_after: None,
            subs: Vec::new(),
            wake: Arc::new(Notify::new()),
        };
        for c in cache.range(cut..cache.len()) {
            line.hold_entry(c, metrics);
        }
        line
    }

    /// The seq a subscription joining now starts after.
    pub(super) fn position(&self) -> u64 {
        self.released
    }

    /// The index of the first cached entry this line holds (or has not
    /// released yet): replays stop there.
    pub(super) fn cut(&self, cache: &Cache) -> usize {
        cache.index_after(self.released)
    }

    /// Holds a message or retraction the relay just cached; counts drops.
    pub(super) fn hold_entry(&mut self, c: &Cached, metrics: &Metrics) {
        let held = Held::Entry {
            seq: c.seq,
            due: c.ts.saturating_add(self.delay_ms),
            gap: c.gap.clone(),
            frame: c.live.clone(),
        };
        self.push(held, metrics);
    }

    /// Holds a `stats` frame sent now.
    pub(super) fn hold_stats(&mut self, frame: Frame, now: u64, metrics: &Metrics) {
        self.push(
            Held::Stats {
                due: now.saturating_add(self.delay_ms),
                frame,
            },
            metrics,
        );
    }

    fn push(&mut self, held: Held, metrics: &Metrics) {
        let was_empty = self.held.is_empty();
        self.bytes += held.bytes();
        self.held.push_back(held);
        metrics.delay_held.inc();
        while self.held.len() > self.max_held || self.bytes > MAX_HELD_BYTES {
            let Some(oldest) = self.held.pop_front() else {
                break;
            };
            self.bytes -= oldest.bytes();
            metrics.delay_held.dec();
            metrics.delay_dropped.inc();
            if let Held::Entry { seq, .. } = oldest {
                self.hole_after.get_or_insert(self.released);
                self.released = seq;
            }
        }
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// A held message was retracted: it leaves as its `retract` frame.
    pub(super) fn retract(&mut self, target: u64, frame: &Frame) {
        for held in &mut self.held {
            if let Held::Entry { seq, frame: f, .. } = held
                && *seq == target
            {
                *f = frame.clone();
            }
        }
    }

    /// When the head is due, if anything is held.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.held.front().map(Held::due)
    }

    /// Releases every frame due at `now`, in order, to this line's
    /// subscribers, under the relay's conflation keys `relay` (messages) and
    /// `stats` (figures); a subscriber skips messages at or below its own
    /// start (`LineSub::after`: a resume from ahead of the line).
    pub(super) fn release(&mut self, now: u64, keys: (u32, u32), state: bool, metrics: &Metrics) {
        let (relay, stats) = keys;
        while self.held.front().is_some_and(|h| h.due() <= now) {
            let held = self.held.pop_front().expect("front exists");
            self.bytes -= held.bytes();
            metrics.delay_held.dec();
            match held {
                Held::Entry {
                    seq, gap, frame, ..
                } => {
                    // A hole from the cap comes first; the message's own gap
                    // (a hole on the bus) is said as the live stream said it.
                    let dropped = self
                        .hole_after
                        .take()
                        .map(|after| gap_frame(&self.topic, after, seq));
                    for sub in &self.subs {
                        if seq <= sub.after {
                            continue;
                        }
                        for g in dropped.iter().chain(gap.iter()).filter(|_| !state) {
                            sub.outbox.push_message(relay, false, g.clone());
                        }
                        sub.outbox.push_message(relay, state, frame.clone());
                    }
                    self.released = seq;
                }
                Held::Stats { frame, .. } => {
                    for sub in &self.subs {
                        sub.outbox.push_message(stats, true, frame.clone());
                    }
                }
            }
        }
    }

    /// Frees what the line holds (it is being removed).
    pub(super) fn clear(&mut self, metrics: &Metrics) {
        metrics.delay_held.dec_by(self.held.len() as i64);
        self.held.clear();
        self.bytes = 0;
    }
}

/// The index of the first cached entry not yet due at `now` with `delay_ms`.
fn due_cut(cache: &Cache, delay_ms: u64, now: u64) -> usize {
    let mut cut = cache.len();
    while cut > 0
        && cache
            .get(cut - 1)
            .is_some_and(|c| c.ts.saturating_add(delay_ms) > now)
    {
        cut -= 1;
    }
    cut
}

/// The position of a line whose first held entry is at `cut`: the entry
/// before it, or (nothing due in the cache) the held entry's `prev`, or the
/// relay's own position for an empty cache.
fn position(cache: &Cache, cut: usize, last_seq: u64) -> u64 {
    if cut > 0 {
        cache.get(cut - 1).map_or(last_seq, |c| c.seq)
    } else {
        cache.get(0).map_or(last_seq, |c| c.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past its cap a line drops its oldest held frame (never releasing it
    /// early), counts it, and says the hole with a `gap`.
    #[test]
    fn the_cap_drops_the_oldest_with_a_gap() {
        let metrics = Metrics::new();
        let cache = Cache::new(super::super::cache::Retention::count(10));
        let mut line = DelayLine::new("clips.a", 1000, &cache, 4, 0, &metrics);
        line.max_held = 2;
        for seq in [5, 6, 7] {
            line.hold_entry(
                &Cached::new("clips.a", seq, seq - 1, 100, b"{}", None),
                &metrics,
            );
        }
        assert_eq!(metrics.delay_dropped.get(), 1);
        assert_eq!(metrics.delay_held.get(), 2);
        assert_eq!(line.next_due(), Some(1100));
        let outbox = Arc::new(Outbox::new(1 << 20, 1024));
        line.subs.push(LineSub {
            key: 0,
            outbox: outbox.clone(),
            after: 0,
        });
        line.release(1099, (1, 2), false, &metrics);
        let mut batch = std::collections::VecDeque::new();
        outbox.take(&mut batch);
        assert!(batch.is_empty(), "nothing early");
        line.release(1100, (1, 2), false, &metrics);
        outbox.take(&mut batch);
        let frames: Vec<&str> = batch.iter().map(|q| q.frame.as_str()).collect();
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(
            frames[0],
            r#"{"type":"gap","topic":"clips.a","after":4,"before":6}"#
        );
        assert!(frames[1].contains(r#""seq":6"#) && frames[2].contains(r#""seq":7"#));
        assert_eq!(metrics.delay_held.get(), 0);
    }
}
