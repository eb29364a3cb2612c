//! One relay per topic with local subscribers: ordering, gap repair, the
//! topic's recent messages, and encode-once fan-out.
//!
//! The relay task is the only writer of a topic's state. It receives the
//! bus's live messages, skips duplicates (`seq` not above what it has seen),
//! repairs gaps (`prev` above what it has seen: the bus stored something the
//! live feed did not deliver) from the bus's history before going on, drops
//! payloads that are not JSON or too large, encodes each message **once** and
//! queues the same bytes to every subscriber's outbox without awaiting them.
//!
//! The cache holds the namespace's retention (`retained` latest messages, or
//! the `retained_secs` window when that is more, within a byte cap), so `history`
//! and resume (`since` + `epoch`) are served from memory: the bus is read once
//! per relay life, by the first subscriber (others arriving meanwhile wait for
//! the same read: request coalescing), and again only to repair a gap.
//!
//! `prev` in the frames the relay sends is the `seq` of the message it sent
//! before on this topic, so a payload it refused never breaks a client's chain.
//!
//! Delta updates (`state` topics of namespaces with `delta`): each message's
//! Fossil delta from the message before is made **once**, when the message
//! is cached, and goes to every subscriber that asked for deltas and holds
//! that message (it is "primed": its replay ended on the newest message, or
//! it got the previous live one). Everyone else gets the full frame, which
//! primes it; a subscriber whose outbox conflates gets the full frame too
//! (the outbox swaps it in), and a hole is never crossed by a delta.
//!
//! A hole is never silent (PROTOCOL.md section 5). When stored messages can
//! no longer be delivered (removed from the bus before the repair read them,
//! or unreadable after retrying), the next message goes out with the `prev`
//! the bus gave it, never one that claims continuity, and on `feed` topics
//! after a `gap` frame naming the lost range. The cache keeps the hole with
//! that message, so replays say it in place and a `state` resume never
//! answers `recovered: true` across it.
//!
//! Files: this one, the shared handle ([`Relay`]: joins, replays, fan-out
//! under one lock); `task`, the relay's task ([`RelayTask`]: history load,
//! live feed, gap repair, holes); `cache`, the retained messages and the
//! resume rules; `retract`, retraction markers and the frames of what they
//! retract; `delay`, the spoiler shield's delay lines, one per delay value
//! (PROTOCOL.md section 13).

mod cache;
mod delay;
#[cfg(test)]
mod delay_tests;
mod retract;
mod task;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use slab::Slab;
use tokio::sync::{mpsc, watch};
use tribune_protocol::{Ack, Mode, ServerFrame, Topic, encode_server};

use crate::bus::{BusMessage, Epoch};
use crate::error::{JoinError, JoinErrorKind};
use crate::metrics::Metrics;
use crate::outbox::{Frame, Outbox, Pushed};
use cache::{Cache, Cached, Replayed};
use delay::{DelayLine, LineSub};

pub use cache::Retention;

pub use task::RelayTask;

/// How long a resume from ahead of this node waits for the relay to catch
/// up; past it (a `since` the stream never stored), it answers `recovered: false`.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(2);

/// Marks an outbox conflation key as a topic's `stats` rather than its messages.
const STATS_KEY: u32 = 1 << 31;

/// Where a relay is in its life; subscribers wait for `Ready`.
#[derive(Debug, Clone)]
pub enum Load {
    Loading,
    Ready,
    Failed(JoinError),
}

/// Instructions from the registry and the relay's subscribers.
#[derive(Debug)]
pub enum Control {
    /// The last subscriber left: start the linger.
    Idle,
    /// The bus's last stored `seq` of this topic, from a periodic or
    /// post-reconnect check.
    Check(u64),
    /// The bus's epoch changed: every `seq` this relay knows is void.
    Reset,
}

/// What a subscriber asks for when it joins.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub id: u64,
    pub history: Option<u32>,
    pub since: Option<(u64, String)>,
    /// The `subscribe` named a delta format: `Some(true)` for Fossil,
    /// `Some(false)` for one this hub does not speak (answered `false`).
    pub delta: Option<bool>,
    /// The spoiler shield: frames go out `delay_ms` after their `ts` (0:
    /// live). Validated by the session (at most `MAX_DELAY_MS`).
    pub delay_ms: u64,
}

/// What a relay takes from its namespace and the node's limits.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub mode: Mode,
    /// The namespace offers delta updates (used on `state` topics only).
    pub delta: bool,
    /// The namespace's retention.
    pub retained: u32,
    /// What the cache keeps: count, time window, depth and bytes.
    pub retention: Retention,
    /// Payloads above this many bytes are dropped.
    pub max_payload: usize,
}

/// One page of `GET /v1/history` (PROTOCOL.md section 12).
pub struct HistoryPage {
    pub epoch: Epoch,
    /// Replay frames oldest first, each hole's `gap` frame before the
    /// message after it.
    pub frames: Vec<Frame>,
    /// The `before` of the next (older) page: the oldest message of this
    /// one, when older messages are retained.
    pub before: Option<u64>,
}

/// The relay closed between lookup and join; the caller looks again.
#[derive(Debug)]
pub struct RelayClosed;

/// A topic's relay, shared by the registry and its subscribers' sessions.
pub struct Relay {
    /// Small id, unique on this node, that outboxes use to conflate frames.
    pub id: u32,
    pub topic: Topic,
    pub mode: Mode,
    /// Whether subscribers may get delta updates (a `state` namespace with
    /// `delta`).
    delta: bool,
    /// The most messages the cache keeps: what the history load reads, and
    /// the deepest `history` of a subscribe (the cache holds the retention).
    depth: usize,
    /// Payloads above this many bytes are dropped (PROTOCOL.md section 8).
    max_payload: usize,
    /// Everything joins and the task change together, under one lock.
    state: Mutex<RelayState>,
    /// The task's progress through its history load.
    load: watch::Sender<Load>,
    /// The last `seq` forwarded, for resumes waiting to catch up.
    forwarded: watch::Sender<u64>,
    /// Instructions to the task.
    ctl: mpsc::UnboundedSender<Control>,
    metrics: Arc<Metrics>,
}

/// One subscriber of the relay.
struct Subscriber {
    outbox: Arc<Outbox>,
    /// It asked for deltas and the topic has them.
    delta: bool,
    /// It holds the newest message sent on the topic, so the next one may
    /// go to it as a delta.
    primed: bool,
    /// Its delay (0: live); a delayed subscriber gets its frames from the
    /// delay line of that value, never from `forward`.
    delay_ms: u64,
}

struct RelayState {
    subscribers: Slab<Subscriber>,
    cache: Cache,
    /// The delay lines, by delay value (only values with subscribers).
    lines: HashMap<u64, DelayLine>,
    /// `seq` of the last message forwarded (0: none yet).
    last_seq: u64,
    epoch: Epoch,
    /// Set when the relay leaves the registry; joins must look again.
    closed: bool,
}

impl Relay {
    /// Creates a relay and its task; the caller inserts the relay in the
    /// registry and spawns the task.
    pub fn new(
        id: u32,
        topic: Topic,
        settings: Settings,
        epoch: Epoch,
        metrics: Arc<Metrics>,
    ) -> (Arc<Relay>, mpsc::UnboundedReceiver<Control>) {
        let Settings {
            mode,
            delta,
            retained,
            retention,
            max_payload,
        } = settings;
        let (ctl, rx) = mpsc::unbounded_channel();
        let relay = Arc::new(Relay {
            id,
            topic,
            mode,
            delta: delta && mode == Mode::State,
            depth: retention.depth.max(retained as usize),
            max_payload,
            state: Mutex::new(RelayState {
                subscribers: Slab::new(),
                cache: Cache::new(retention),
                lines: HashMap::new(),
                last_seq: 0,
                epoch,
                closed: false,
            }),
            load: watch::channel(Load::Loading).0,
            forwarded: watch::channel(0).0,
            ctl,
            metrics,
        });
        (relay, rx)
    }

    /// Waits until the relay has read its history (or failed to).
    pub async fn ready(&self) -> Result<(), JoinError> {
        let mut rx = self.load.subscribe();
        let state = rx
            .wait_for(|l| !matches!(l, Load::Loading))
            .await
            .map(|l| l.clone())
            .unwrap_or(Load::Failed(JoinErrorKind::Restarting.into()));
        match state {
            Load::Failed(why) => Err(why),
            _ => Ok(()),
        }
    }

    pub fn control(&self, c: Control) {
        let _ = self.ctl.send(c);
    }

    /// Adds a subscriber: queues its `ack`, then the replayed messages, then
    /// (from the next forward on) live ones, all under the relay's lock so
    /// that nothing is missed or sent twice between replay and live.
    pub fn join(
        self: &Arc<Self>,
        outbox: &Arc<Outbox>,
        req: &JoinRequest,
    ) -> Result<usize, RelayClosed> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(RelayClosed);
        }
        if req.delay_ms > 0 {
            return Ok(self.join_delayed(&mut st, outbox, req));
        }
        let latest = st.last_seq;
        let state = self.mode == Mode::State;
        let default_history = if state { 1 } else { 0 };
        let depth = (req.history.unwrap_or(default_history) as usize)
            .min(self.depth)
            .min(st.cache.len());
        let history_start = st.cache.len() - depth;
        let resumed = req.since.as_ref().map(|(since, epoch)| {
            let point = st
                .epoch
                .accepts(epoch, *since)
                .then(|| st.cache.resume_point(latest, *since, state))
                .flatten();
            (point, *since)
        });
        let (recovered, start, since) = match resumed {
            None => (None, history_start, None),
            Some((Some(point), since)) => (Some(true), point, Some(since)),
            Some((None, _)) => (Some(false), history_start, None),
        };
        let ack = ServerFrame::Ack(Ack {
            id: req.id,
            topic: Some(self.topic.to_string()),
            mode: Some(self.mode),
            epoch: Some(st.epoch.to_string()),
            seq: Some(latest),
            recovered,
            delta: req.delta.map(|fossil| fossil && self.delta),
            ..Ack::default()
        });
        outbox.push_control(Frame::from(encode_server(&ack)));
        self.replay(&st.cache, outbox, start..st.cache.len(), since);
        let delta = req.delta == Some(true) && self.delta;
        // The replay ended on the newest message: the next may be a delta.
        let primed = delta && start < st.cache.len();
        Ok(st.subscribers.insert(Subscriber {
            outbox: outbox.clone(),
            delta,
            primed,
            delay_ms: 0,
        }))
    }

    /// Queues the replay of the cached entries in `range` to `outbox`.
    fn replay(
        &self,
        cache: &Cache,
        outbox: &Outbox,
        range: std::ops::Range<usize>,
        since: Option<u64>,
    ) {
        let state = self.mode == Mode::State;
        for frame in cache.replay(range, since, !state) {
            match frame {
                Replayed::Gap(gap) => outbox.push_message(self.id, false, gap),
                Replayed::Message(m) => outbox.push_message(self.id, state, m),
            };
        }
    }

    /// [`Relay::join`] with a delay: the topic as it stood `delay_ms` ago.
    /// The `ack` goes at once with the line's position as its `seq`; the
    /// replay (history, or a resume) stops where the line holds, and the
    /// line releases the rest when due. No deltas: every frame is full.
    fn join_delayed(
        self: &Arc<Self>,
        st: &mut RelayState,
        outbox: &Arc<Outbox>,
        req: &JoinRequest,
    ) -> usize {
        let delay = req.delay_ms;
        let RelayState {
            lines,
            cache,
            subscribers,
            epoch,
            last_seq,
            ..
        } = st;
        let line = match lines.entry(delay) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let line = DelayLine::new(
                    self.topic.as_str(),
                    delay,
                    cache,
                    *last_seq,
                    delay::now_ms(),
                    &self.metrics,
                );
                self.metrics.delay_lines.inc();
                tokio::spawn(run_line(Arc::downgrade(self), delay, line.wake.clone()));
                v.insert(line)
            }
        };
        let position = line.position();
        let cut = line.cut(cache);
        let state = self.mode == Mode::State;
        let default_history = if state { 1 } else { 0 };
        let depth = (req.history.unwrap_or(default_history) as usize)
            .min(self.depth)
            .min(cut);
        // A resume is recovered when every message after `since` is still
        // here: those up to the line's position are replayed now, the rest
        // come from the line; a `since` ahead of the line skips what it holds.
        let resumed = req.since.as_ref().map(|(since, e)| {
            let point = (e == epoch.as_str())
                .then(|| cache.resume_point(*last_seq, *since, state))
                .flatten();
            (point, *since)
        });
        let (recovered, range, since, after) = match resumed {
            None => (None, cut - depth..cut, None, 0),
            Some((Some(point), since)) => (Some(true), point.min(cut)..cut, Some(since), since),
            Some((None, _)) => (Some(false), cut - depth..cut, None, 0),
        };
        let ack = ServerFrame::Ack(Ack {
            id: req.id,
            topic: Some(self.topic.to_string()),
            mode: Some(self.mode),
            epoch: Some(epoch.to_string()),
            seq: Some(position),
            recovered,
            delta: req.delta.map(|_| false),
            ..Ack::default()
        });
        outbox.push_control(Frame::from(encode_server(&ack)));
        self.replay(cache, outbox, range, since);
        let key = subscribers.insert(Subscriber {
            outbox: outbox.clone(),
            delta: false,
            primed: false,
            delay_ms: delay,
        });
        line.subs.push(LineSub {
            key,
            outbox: outbox.clone(),
            after,
        });
        key
    }

    /// Releases what the delay line of `delay_ms` holds that is due at
    /// `now`; when its head is due next, or `None` when the line is gone
    /// (its task ends). `wake` names the task's own line: a line made anew
    /// for the same delay after the last one was removed has its own task.
    fn release_line(
        &self,
        delay_ms: u64,
        wake: &Arc<tokio::sync::Notify>,
        now: u64,
    ) -> Option<Option<u64>> {
        let mut st = self.state.lock();
        let RelayState { lines, closed, .. } = &mut *st;
        if *closed {
            for (_, mut line) in lines.drain() {
                line.clear(&self.metrics);
                self.metrics.delay_lines.dec();
            }
            return None;
        }
        let line = lines
            .get_mut(&delay_ms)
            .filter(|line| Arc::ptr_eq(&line.wake, wake))?;
        let state = self.mode == Mode::State;
        let keys = (self.id, self.id | STATS_KEY);
        line.release(now, keys, state, &self.metrics);
        Some(line.next_due())
    }

    /// A resume whose `since` lies beyond what this relay has forwarded
    /// (the fan comes from a node that was a message or two ahead) makes the
    /// relay read the stream, and waits a little for it: the resume then
    /// recovers exactly, instead of replaying as history what the fan holds.
    pub async fn catch_up(&self, req: &JoinRequest) {
        let Some((since, epoch)) = &req.since else {
            return;
        };
        let behind = {
            let st = self.state.lock();
            st.epoch.accepts(epoch, *since) && *since > st.last_seq
        };
        if !behind {
            return;
        }
        let mut forwarded = self.forwarded.subscribe();
        self.control(Control::Check(*since));
        // Past the patience (or with the task gone) the join answers
        // `recovered: false`: the stream never stored that `since`.
        let _ = tokio::time::timeout(
            CATCH_UP_PATIENCE,
            forwarded.wait_for(|last| *last >= *since),
        )
        .await;
    }

    /// The `ack` of a subscription that already exists on a connection
    /// (subscriber `key`); `delta` as in [`JoinRequest`], answered with what
    /// the subscription has.
    pub fn ack_existing(&self, id: u64, key: usize, delta: Option<bool>) -> Frame {
        let st = self.state.lock();
        let granted = st.subscribers.get(key).is_some_and(|s| s.delta);
        Frame::from(encode_server(&ServerFrame::Ack(Ack {
            id,
            topic: Some(self.topic.to_string()),
            mode: Some(self.mode),
            epoch: Some(st.epoch.to_string()),
            seq: Some(st.last_seq),
            delta: delta.map(|_| granted),
            ..Ack::default()
        })))
    }

    /// Removes a subscriber; the last one out of a delay line removes it,
    /// the last one out of the relay starts the linger.
    pub fn leave(&self, key: usize) {
        let mut st = self.state.lock();
        if let Some(sub) = st.subscribers.try_remove(key)
            && sub.delay_ms > 0
            && let Some(line) = st.lines.get_mut(&sub.delay_ms)
        {
            line.subs.retain(|s| s.key != key);
            if line.subs.is_empty() {
                line.clear(&self.metrics);
                line.wake.notify_one();
                st.lines.remove(&sub.delay_ms);
                self.metrics.delay_lines.dec();
            }
        }
        if st.subscribers.is_empty() {
            drop(st);
            self.control(Control::Idle);
        }
    }

    /// The retained messages with `seq < before` (the newest when `None`),
    /// at most `limit` of them; `None` when the relay has closed (its cache
    /// no longer follows the topic: the caller looks again).
    pub fn history_page(&self, before: Option<u64>, limit: usize) -> Option<HistoryPage> {
        let st = self.state.lock();
        if st.closed {
            return None;
        }
        let (start, end, more) = st.cache.page(before, limit);
        Some(HistoryPage {
            epoch: st.epoch.clone(),
            frames: st.cache.history(start, end),
            before: if more && start < end {
                st.cache.seq_at(start)
            } else {
                None
            },
        })
    }

    /// Local subscribers now (the node's audience of this topic).
    pub fn audience(&self) -> usize {
        self.state.lock().subscribers.len()
    }

    /// Queues a `stats` frame to every subscriber. Live figures, never
    /// replayed: a slow client keeps only the newest of each topic (they are
    /// conflated under their own key, so they never evict the topic's
    /// messages), and a stalled state-only client is never closed for them.
    pub fn broadcast_stats(&self, frame: &Frame) -> usize {
        let mut st = self.state.lock();
        for (_, sub) in st.subscribers.iter().filter(|(_, s)| s.delay_ms == 0) {
            sub.outbox
                .push_message(self.id | STATS_KEY, true, frame.clone());
        }
        // Delayed subscribers get them when their delay has passed.
        let now = delay::now_ms();
        for line in st.lines.values_mut() {
            line.hold_stats(frame.clone(), now, &self.metrics);
        }
        st.subscribers.len()
    }

    fn is_ready(&self) -> bool {
        matches!(*self.load.borrow(), Load::Ready)
    }

    /// Whether the relay serves subscribers now (registry checks skip loading ones).
    pub fn serving(&self) -> bool {
        self.is_ready() && !self.state.lock().closed
    }

    /// Forwards one validated message to the cache and every subscriber;
    /// with `hole_after`, messages after that seq and before this one were
    /// lost, and `feed` subscribers get a `gap` frame first.
    fn forward(&self, msg: &BusMessage, prev: u64, hole_after: Option<u64>) {
        let mut cached = Cached::new(
            self.topic.as_str(),
            msg.seq,
            prev,
            msg.ts,
            &msg.data,
            hole_after,
        );
        // The delta is made once here, outside the lock: the task is the
        // only writer, so the newest cached message cannot change meanwhile.
        // Never across a hole: its `prev` is not the message subscribers hold.
        if self.delta && hole_after.is_none() {
            let base = self.state.lock().cache.newest().cloned();
            if let Some(base) = base
                && cached.make_delta(self.topic.as_str(), &base)
            {
                self.metrics.deltas.inc();
            }
        }
        self.fan_out(cached, msg.ts, None);
    }

    /// Forwards a retraction marker the task took (`retract::verdict`):
    /// the cached target's frames become a `retract` frame, and the marker
    /// goes to every subscriber and into the cache in its place.
    fn forward_retract(&self, msg: &BusMessage, target: u64, prev: u64, hole_after: Option<u64>) {
        let cached = Cached::marker(
            self.topic.as_str(),
            target,
            msg.seq,
            prev,
            msg.ts,
            hole_after,
        );
        self.fan_out(cached, msg.ts, Some(target));
    }

    /// Caches `cached` (with `retract`, marking that cached message
    /// retracted first) and queues it, after its `gap`, to every subscriber.
    fn fan_out(&self, cached: Cached, ts: u64, retract: Option<u64>) {
        let seq = cached.seq;
        let gap = cached.gap.clone().filter(|_| self.mode == Mode::Feed);
        let frame = cached.live.clone();
        let delta = cached.delta.clone();
        let state = self.mode == Mode::State;
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if let Some(target) = retract
            && let Some(c) = st.cache.find_mut(target)
        {
            c.retract_in_place(self.topic.as_str());
            // Held and not yet released: a delayed fan never sees it.
            for line in st.lines.values_mut() {
                line.retract(target, &c.live);
            }
        }
        for line in st.lines.values_mut() {
            line.hold_entry(&cached, &self.metrics);
        }
        st.cache.push(cached);
        st.last_seq = seq;
        let mut conflated = 0;
        let mut deltas = 0;
        for (_, sub) in st.subscribers.iter_mut().filter(|(_, s)| s.delay_ms == 0) {
            let outbox = &sub.outbox;
            if let Some(gap) = &gap
                && outbox.push_message(self.id, false, gap.clone()) == Pushed::Overflowed
            {
                // Closed with 4008: counted in `tribune_closes_total` when
                // the connection ends.
                continue;
            }
            let pushed = match &delta {
                Some(d) if sub.primed => {
                    deltas += 1;
                    outbox.push_delta(self.id, d.clone(), frame.clone())
                }
                _ => {
                    sub.primed = sub.delta;
                    outbox.push_message(self.id, state, frame.clone())
                }
            };
            match pushed {
                // Overflowed: closed with 4008, counted when it ends.
                Pushed::Queued | Pushed::Closed | Pushed::Overflowed => {}
                Pushed::Conflated(n) => conflated += n,
            }
        }
        let delivered = st.subscribers.len();
        drop(guard);
        self.forwarded.send_replace(seq);
        self.metrics.delivered(delivered, ts);
        if deltas > 0 {
            self.metrics.delta_deliveries.inc_by(deltas);
        }
        if conflated > 0 {
            self.metrics.frames_conflated.inc_by(conflated as u64);
        }
    }

    /// Closes every subscriber's connection and refuses new joins.
    fn shut(&self, code: tribune_protocol::CloseCode) {
        let mut st = self.state.lock();
        st.closed = true;
        for (_, sub) in st.subscribers.iter() {
            sub.outbox.close(code, false);
        }
    }
}

/// A delay line's timer task: releases due frames until the line is removed
/// or the relay ends (`delay.rs`).
async fn run_line(relay: Weak<Relay>, delay_ms: u64, wake: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let Some(relay) = relay.upgrade() else {
                return;
            };
            match relay.release_line(delay_ms, &wake, delay::now_ms()) {
                Some(next) => next,
                None => return,
            }
        };
        let sleep = next.map_or(delay::MAX_SLEEP, |due| {
            Duration::from_millis(due.saturating_sub(delay::now_ms())).min(delay::MAX_SLEEP)
        });
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = wake.notified() => {}
        }
    }
}
