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
//! The cache holds the namespace's `retained` latest messages, so `history`
//! and resume (`since` + `epoch`) are served from memory: the bus is read once
//! per relay life, by the first subscriber (others arriving meanwhile wait for
//! the same read: request coalescing), and again only to repair a gap.
//!
//! `prev` in the frames the relay sends is the `seq` of the message it sent
//! before on this topic, so a payload it refused never breaks a client's chain.
//!
//! A hole is never silent (PROTOCOL.md section 5). When stored messages can
//! no longer be delivered (removed from the bus before the repair read them,
//! or unreadable after retrying), the next message goes out with the `prev`
//! the bus gave it, never one that claims continuity, and on `feed` topics
//! after a `gap` frame naming the lost range. The cache keeps the hole with
//! that message, so replays say it in place and a `state` resume never
//! answers `recovered: true` across it.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use slab::Slab;
use tokio::sync::{mpsc, watch};
use tribune_protocol::{Ack, Gap, Mode, ServerFrame, Topic, encode_message, encode_server};

use crate::bus::{Bus, BusMessage, Epoch, LiveFeed};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::outbox::{Frame, Outbox, Pushed};

/// How long a resume from ahead of this node waits for the relay to catch
/// up; past it (a `since` the stream never stored), it answers `recovered: false`.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(2);

/// Marks an outbox conflation key as a topic's `stats` rather than its messages.
const STATS_KEY: u32 = 1 << 31;

/// How many messages one repair read asks for.
const REPAIR_BATCH: u32 = 256;

/// How long a gap's repair insists when reads do not yet show the missing
/// messages (a lagging replica) before taking them as aged out.
const REPAIR_PATIENCE: Duration = Duration::from_secs(3);

/// How long a repair retries failing reads while a live message waits
/// behind the hole; past it the hole is announced and the feed goes on.
const UNREADABLE_PATIENCE: Duration = Duration::from_secs(10);

/// Failing reads a periodic check retries before leaving the repair to the
/// next check (nothing is known lost yet, so nothing is announced).
const CHECK_READ_TRIES: u32 = 3;

/// Unrepairable holes are logged at most once a second across the node: a
/// hostile bus could otherwise flood the log.
static HOLE_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

/// Where a relay is in its life; subscribers wait for `Ready`.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    Loading,
    Ready,
    Failed(String),
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
    retained: usize,
    max_payload: usize,
    state: Mutex<RelayState>,
    load: watch::Sender<Load>,
    ctl: mpsc::UnboundedSender<Control>,
    metrics: Arc<Metrics>,
}

struct RelayState {
    subscribers: Slab<Arc<Outbox>>,
    cache: VecDeque<Cached>,
    /// `seq` of the last message forwarded (0: none yet).
    last_seq: u64,
    epoch: Epoch,
    /// Set when the relay leaves the registry; joins must look again.
    closed: bool,
}

/// A forwarded message, as live and (lazily) as replay frame.
struct Cached {
    seq: u64,
    prev: u64,
    live: Frame,
    /// Length of the live frame before `,"data":`, where `"replay":true` goes.
    head: usize,
    replay: OnceLock<Frame>,
    /// The `gap` frame that preceded this message: messages before it were
    /// lost. Replays send it in place; a `state` resume across it is not
    /// recovered.
    gap: Option<Frame>,
}

impl Cached {
    fn new(topic: &str, seq: u64, prev: u64, ts: u64, data: &[u8]) -> Self {
        let bytes = encode_message(topic, seq, prev, ts, false, data);
        let head = bytes.len() - data.len() - r#","data":}"#.len();
        Self {
            seq,
            prev,
            live: frame_from(bytes),
            head,
            replay: OnceLock::new(),
            gap: None,
        }
    }

    /// Whether a replay starting at this entry after `since` (None: a
    /// history replay, the client holds nothing before) crosses its hole.
    fn hole_crossed(&self, first: bool, since: Option<u64>) -> bool {
        self.gap.is_some() && !(first && since.is_none_or(|s| s == self.prev))
    }

    fn replay_frame(&self) -> Frame {
        self.replay
            .get_or_init(|| {
                let live = self.live.as_str();
                frame_from_string(format!(
                    "{},\"replay\":true{}",
                    &live[..self.head],
                    &live[self.head..]
                ))
            })
            .clone()
    }
}

fn frame_from(bytes: Vec<u8>) -> Frame {
    // Payloads were validated as JSON, hence UTF-8, before encoding.
    frame_from_string(String::from_utf8(bytes).expect("validated JSON is UTF-8"))
}

fn frame_from_string(s: String) -> Frame {
    Frame::from(s)
}

/// Where a resume at `since` starts in the cache, if every message after it
/// is still there (PROTOCOL.md section 3: recovery is all or nothing).
fn resume_point(cache: &VecDeque<Cached>, latest: u64, since: u64) -> Option<usize> {
    if since == latest {
        return Some(cache.len());
    }
    if since > latest {
        return None;
    }
    if let Some(pos) = cache.iter().position(|c| c.seq == since) {
        return Some(pos + 1);
    }
    match cache.front() {
        Some(first) if first.prev == since => Some(0),
        _ => None,
    }
}

impl Relay {
    /// Creates a relay and its task; the caller inserts the relay in the
    /// registry and spawns the task.
    pub fn new(
        id: u32,
        topic: Topic,
        mode: Mode,
        retained: u32,
        max_payload: usize,
        epoch: Epoch,
        metrics: Arc<Metrics>,
    ) -> (Arc<Relay>, mpsc::UnboundedReceiver<Control>) {
        let (ctl, rx) = mpsc::unbounded_channel();
        let relay = Arc::new(Relay {
            id,
            topic,
            mode,
            retained: retained as usize,
            max_payload,
            state: Mutex::new(RelayState {
                subscribers: Slab::new(),
                cache: VecDeque::new(),
                last_seq: 0,
                epoch,
                closed: false,
            }),
            load: watch::channel(Load::Loading).0,
            ctl,
            metrics,
        });
        (relay, rx)
    }

    /// Waits until the relay has read its history (or failed to).
    pub async fn ready(&self) -> Result<(), String> {
        let mut rx = self.load.subscribe();
        let state = rx
            .wait_for(|l| *l != Load::Loading)
            .await
            .map(|l| l.clone())
            .unwrap_or(Load::Failed("relay stopped".into()));
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
    pub fn join(&self, outbox: &Arc<Outbox>, req: &JoinRequest) -> Result<usize, RelayClosed> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(RelayClosed);
        }
        let latest = st.last_seq;
        let default_history = match self.mode {
            Mode::State => 1,
            Mode::Feed => 0,
        };
        let depth = (req.history.unwrap_or(default_history) as usize)
            .min(self.retained)
            .min(st.cache.len());
        let history_start = st.cache.len() - depth;
        let state = self.mode == Mode::State;
        let (recovered, start, since) = match &req.since {
            None => (None, history_start, None),
            Some((since, epoch)) => {
                let point = (epoch == st.epoch.as_str())
                    .then(|| resume_point(&st.cache, latest, *since))
                    .flatten()
                    // A state topic has no gap frames: a resume across a hole
                    // is not recovered (the replay still ends on the latest).
                    .filter(|&p| {
                        !state
                            || !st
                                .cache
                                .range(p..)
                                .enumerate()
                                .any(|(i, c)| c.hole_crossed(i == 0, Some(*since)))
                    });
                match point {
                    Some(p) => (Some(true), p, Some(*since)),
                    None => (Some(false), history_start, None),
                }
            }
        };
        let ack = ServerFrame::Ack(Ack {
            id: req.id,
            topic: Some(self.topic.to_string()),
            mode: Some(self.mode),
            epoch: Some(st.epoch.to_string()),
            seq: Some(latest),
            recovered,
        });
        outbox.push_control(Frame::from(encode_server(&ack)));
        for (i, cached) in st.cache.range(start..).enumerate() {
            if let Some(gap) = &cached.gap
                && !state
                && cached.hole_crossed(i == 0, since)
            {
                outbox.push_message(self.id, false, gap.clone());
            }
            outbox.push_message(self.id, state, cached.replay_frame());
        }
        Ok(st.subscribers.insert(outbox.clone()))
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
            epoch == st.epoch.as_str() && *since > st.last_seq
        };
        if !behind {
            return;
        }
        self.control(Control::Check(*since));
        let deadline = Instant::now() + CATCH_UP_PATIENCE;
        while Instant::now() < deadline {
            if self.state.lock().last_seq >= *since {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `ack` of a subscription that already exists on a connection.
    pub fn ack_existing(&self, id: u64) -> Frame {
        let st = self.state.lock();
        Frame::from(encode_server(&ServerFrame::Ack(Ack {
            id,
            topic: Some(self.topic.to_string()),
            mode: Some(self.mode),
            epoch: Some(st.epoch.to_string()),
            seq: Some(st.last_seq),
            recovered: None,
        })))
    }

    /// Removes a subscriber; the last one out starts the linger.
    pub fn leave(&self, key: usize) {
        let mut st = self.state.lock();
        st.subscribers.try_remove(key);
        if st.subscribers.is_empty() {
            drop(st);
            self.control(Control::Idle);
        }
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
        let st = self.state.lock();
        for (_, outbox) in st.subscribers.iter() {
            outbox.push_message(self.id | STATS_KEY, true, frame.clone());
        }
        st.subscribers.len()
    }

    fn is_ready(&self) -> bool {
        *self.load.borrow() == Load::Ready
    }

    /// Forwards one validated message to the cache and every subscriber;
    /// with `hole_after`, messages after that seq and before this one were
    /// lost, and `feed` subscribers get a `gap` frame first.
    fn forward(&self, msg: &BusMessage, prev: u64, hole_after: Option<u64>) {
        let mut cached = Cached::new(self.topic.as_str(), msg.seq, prev, msg.ts, &msg.data);
        cached.gap = hole_after.map(|after| {
            Frame::from(encode_server(&ServerFrame::Gap(Gap {
                topic: self.topic.to_string(),
                after,
                before: msg.seq,
            })))
        });
        let gap = cached.gap.clone().filter(|_| self.mode == Mode::Feed);
        let frame = cached.live.clone();
        let state = self.mode == Mode::State;
        let mut st = self.state.lock();
        st.cache.push_back(cached);
        while st.cache.len() > self.retained {
            st.cache.pop_front();
        }
        st.last_seq = msg.seq;
        let mut conflated = 0;
        for (_, outbox) in st.subscribers.iter() {
            if let Some(gap) = &gap
                && outbox.push_message(self.id, false, gap.clone()) == Pushed::Overflowed
            {
                self.metrics.slow_consumers.inc();
                continue;
            }
            match outbox.push_message(self.id, state, frame.clone()) {
                Pushed::Queued | Pushed::Closed => {}
                Pushed::Conflated(n) => conflated += n,
                Pushed::Overflowed => {
                    self.metrics.slow_consumers.inc();
                }
            }
        }
        let delivered = st.subscribers.len();
        drop(st);
        self.metrics.deliveries.inc_by(delivered as u64);
        if conflated > 0 {
            self.metrics.conflated.inc_by(conflated as u64);
        }
    }

    /// Closes every subscriber's connection and refuses new joins.
    fn shut(&self, code: tribune_protocol::CloseCode) {
        let mut st = self.state.lock();
        st.closed = true;
        for (_, outbox) in st.subscribers.iter() {
            outbox.close(code, false);
        }
    }
}

/// Whether a payload may be forwarded: JSON, within the size limit.
fn payload_ok(data: &Bytes, max: usize, metrics: &Metrics) -> bool {
    if data.len() > max {
        metrics.dropped("too_large");
        return false;
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_err() {
        metrics.dropped("invalid_json");
        return false;
    }
    true
}

/// Called once when a relay ends, to take it out of the registry.
pub type OnEnd = Box<dyn FnOnce(&Arc<Relay>) + Send>;

/// The relay's task: loads history, then forwards live messages until the
/// linger after the last subscriber ends it.
pub struct RelayTask {
    pub relay: Arc<Relay>,
    pub bus: Arc<dyn Bus>,
    pub ctl: mpsc::UnboundedReceiver<Control>,
    pub linger: Duration,
    /// Called once when the relay ends, to take it out of the registry.
    pub on_end: OnEnd,
    /// Last `seq` seen from the bus on this topic, forwarded or not.
    last_seen: u64,
    /// Last `seq` forwarded: the `prev` of the next frame.
    last_forwarded: u64,
    /// Messages after `last_forwarded` were lost: the next message forwarded
    /// carries the bus's `prev` and, on a feed, follows a `gap` frame.
    hole: bool,
}

/// What a repair learnt besides the messages it forwarded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Repaired {
    /// The bus said messages were removed before they could be read.
    hole: bool,
    /// Reads kept failing; the repair gave up for now.
    unreadable: bool,
}

impl RelayTask {
    pub fn new(
        relay: Arc<Relay>,
        bus: Arc<dyn Bus>,
        ctl: mpsc::UnboundedReceiver<Control>,
        linger: Duration,
        on_end: OnEnd,
    ) -> Self {
        Self {
            relay,
            bus,
            ctl,
            linger,
            on_end,
            last_seen: 0,
            last_forwarded: 0,
            hole: false,
        }
    }

    pub async fn run(mut self) {
        let feed = match self.load().await {
            Ok(feed) => feed,
            Err(why) => {
                tracing::warn!(topic = %self.relay.topic, %why, "relay could not load");
                self.relay.state.lock().closed = true;
                self.relay.load.send_replace(Load::Failed(why));
                (self.on_end)(&self.relay);
                return;
            }
        };
        self.relay.load.send_replace(Load::Ready);
        self.forward_loop(feed).await;
        self.relay.state.lock().closed = true;
        (self.on_end)(&self.relay);
    }

    /// Opens the live feed first, then reads the retained history: a message
    /// stored in between shows up in both and the duplicate is skipped.
    async fn load(&mut self) -> Result<LiveFeed, String> {
        let topic = self.relay.topic.clone();
        let feed = self.bus.live(&topic).await.map_err(|e| e.to_string())?;
        self.relay.metrics.history_requests.inc();
        let history = self
            .bus
            .last(&topic, self.relay.retained as u32)
            .await
            .map_err(|e| e.to_string())?;
        let mut st = self.relay.state.lock();
        let mut prev = history.first().map_or(0, |m| m.prev);
        for msg in history {
            self.last_seen = msg.seq;
            self.relay.metrics.bus_messages.inc();
            if !payload_ok(&msg.data, self.relay.max_payload, &self.relay.metrics) {
                continue;
            }
            st.cache.push_back(Cached::new(
                topic.as_str(),
                msg.seq,
                prev,
                msg.ts,
                &msg.data,
            ));
            prev = msg.seq;
            st.last_seq = msg.seq;
        }
        self.last_forwarded = st.last_seq;
        Ok(feed)
    }

    async fn forward_loop(&mut self, mut feed: LiveFeed) {
        let linger = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(linger);
        let mut lingering = self.relay.audience() == 0;
        if lingering {
            linger
                .as_mut()
                .reset(tokio::time::Instant::now() + self.linger);
        }
        loop {
            tokio::select! {
                ctl = self.ctl.recv() => match ctl {
                    Some(Control::Idle) => {
                        if self.relay.audience() == 0 {
                            lingering = true;
                            linger.as_mut().reset(tokio::time::Instant::now() + self.linger);
                        }
                    }
                    Some(Control::Check(last)) => {
                        if last > self.last_seen {
                            self.repair(None).await;
                        }
                    }
                    Some(Control::Reset) | None => {
                        self.relay.shut(tribune_protocol::CloseCode::DRAINING);
                        return;
                    }
                },
                msg = feed.next() => match msg {
                    Some(msg) => self.on_live(msg).await,
                    None => {
                        // The bus ended the subscription: open it again, then
                        // read what may have been stored in between.
                        feed = loop {
                            match self.bus.live(&self.relay.topic).await {
                                Ok(f) => break f,
                                Err(e) => {
                                    tracing::warn!(topic = %self.relay.topic, error = %e, "live feed lost");
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                }
                            }
                        };
                        self.repair(None).await;
                    }
                },
                () = &mut linger, if lingering => {
                    let st = self.relay.state.lock();
                    if st.subscribers.is_empty() {
                        return;
                    }
                    lingering = false;
                }
            }
        }
    }

    async fn on_live(&mut self, msg: BusMessage) {
        if msg.seq <= self.last_seen {
            return;
        }
        if msg.prev > self.last_seen {
            // The stream stored something the live feed missed. A read may be
            // answered by a replica that lags: insist for a while before
            // taking the hole for messages that are gone, unless the bus
            // already said they were removed.
            let deadline = Instant::now() + REPAIR_PATIENCE;
            let mut wait = Duration::from_millis(20);
            loop {
                let repaired = self.repair(Some(msg.seq)).await;
                if msg.prev <= self.last_seen || repaired.hole {
                    break;
                }
                if repaired.unreadable || Instant::now() >= deadline {
                    self.lost("the stream did not give them back in time");
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(500));
            }
        }
        self.process(msg);
    }

    /// Messages after `last_forwarded` can no longer be delivered: the next
    /// message forwarded says so. Counted and logged once per hole.
    fn lost(&mut self, why: &str) {
        if self.hole {
            return;
        }
        self.hole = true;
        let mode = self.relay.mode.as_str();
        self.relay.metrics.gap_unrepairable(mode);
        if let Some(held_back) = HOLE_LOG.allow() {
            tracing::warn!(topic = %self.relay.topic, mode, after = self.last_forwarded,
                seen = self.last_seen, held_back, "messages lost, fans are told: {why}");
        }
    }

    fn process(&mut self, msg: BusMessage) {
        self.last_seen = msg.seq;
        self.relay.metrics.bus_messages.inc();
        if !payload_ok(&msg.data, self.relay.max_payload, &self.relay.metrics) {
            return;
        }
        // Across a hole, `prev` is the bus's: never a claim of continuity.
        let (prev, hole_after) = if std::mem::take(&mut self.hole) {
            (msg.prev, Some(self.last_forwarded))
        } else {
            (self.last_forwarded, None)
        };
        self.relay.forward(&msg, prev, hole_after);
        self.last_forwarded = msg.seq;
    }

    /// Reads what the bus stored after `last_seen` (up to `until`, exclusive)
    /// and forwards it. Failing reads are retried: while a live message waits
    /// (`until`), for [`UNREADABLE_PATIENCE`]; for a periodic check, a few
    /// times, the next check trying again. A read that says messages were
    /// removed marks the hole, announced with the next message forwarded.
    async fn repair(&mut self, until: Option<u64>) -> Repaired {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let (mut failures, mut repaired_any) = (0u32, false);
        let mut outcome = Repaired::default();
        loop {
            self.relay.metrics.history_requests.inc();
            let read = match self
                .bus
                .after(&self.relay.topic, self.last_seen, REPAIR_BATCH)
                .await
            {
                Ok(read) => read,
                Err(e) => {
                    failures += 1;
                    let give_up = match until {
                        Some(_) => started.elapsed() >= UNREADABLE_PATIENCE,
                        None => failures >= CHECK_READ_TRIES,
                    };
                    if give_up {
                        tracing::warn!(topic = %self.relay.topic, error = %e, "gap repair failed, giving up for now");
                        outcome.unreadable = true;
                        break;
                    }
                    tracing::debug!(topic = %self.relay.topic, error = %e, "gap repair failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if read.hole {
                outcome.hole = true;
                self.lost("removed from the bus before the repair");
            }
            let full = read.messages.len() == REPAIR_BATCH as usize;
            let mut reached = false;
            for msg in read.messages {
                if until.is_some_and(|u| msg.seq >= u) {
                    reached = true;
                    break;
                }
                if msg.seq > self.last_seen {
                    repaired_any = true;
                    self.process(msg);
                }
            }
            if reached || !full {
                break;
            }
        }
        if repaired_any {
            self.relay.metrics.gaps_repaired.inc();
            self.relay
                .metrics
                .gap_repair_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        outcome
    }
}

impl Relay {
    /// Whether the relay serves subscribers now (registry checks skip loading ones).
    pub fn serving(&self) -> bool {
        self.is_ready() && !self.state.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(items: &[(u64, u64)]) -> VecDeque<Cached> {
        items
            .iter()
            .map(|&(seq, prev)| Cached::new("clips.a", seq, prev, 1, b"{}"))
            .collect()
    }

    #[test]
    fn resume_point_rules() {
        let c = cache(&[(5, 3), (8, 5), (9, 8)]);
        assert_eq!(resume_point(&c, 9, 9), Some(3), "up to date");
        assert_eq!(resume_point(&c, 9, 8), Some(2));
        assert_eq!(resume_point(&c, 9, 5), Some(1));
        assert_eq!(
            resume_point(&c, 9, 3),
            Some(0),
            "the message before the oldest kept"
        );
        assert_eq!(resume_point(&c, 9, 2), None, "aged out");
        assert_eq!(
            resume_point(&c, 9, 4),
            None,
            "never a message of this topic"
        );
        assert_eq!(resume_point(&c, 9, 10), None, "from the future");
        assert_eq!(
            resume_point(&VecDeque::new(), 0, 0),
            Some(0),
            "empty topic, nothing missed"
        );
    }

    /// A feed relay on `topic` running over `bus`, with one subscriber's
    /// outbox joined (its `ack` queued first).
    async fn feed_subscriber(
        bus: Arc<dyn Bus>,
        topic: &Topic,
        max_payload: usize,
    ) -> (Arc<Outbox>, Arc<Metrics>) {
        let (_, outbox, metrics) = subscriber(bus, topic, Mode::Feed, max_payload).await;
        (outbox, metrics)
    }

    /// A relay of `mode` on `topic` running over `bus` (caching 100), with
    /// one subscriber's outbox joined (its `ack` queued first).
    async fn subscriber(
        bus: Arc<dyn Bus>,
        topic: &Topic,
        mode: Mode,
        max_payload: usize,
    ) -> (Arc<Relay>, Arc<Outbox>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let epoch = bus.status().borrow().epoch.clone();
        let (relay, ctl) = Relay::new(
            1,
            topic.clone(),
            mode,
            100,
            max_payload,
            epoch,
            metrics.clone(),
        );
        let task = RelayTask::new(
            relay.clone(),
            bus,
            ctl,
            Duration::from_secs(60),
            Box::new(|_| {}),
        );
        tokio::spawn(task.run());
        relay.ready().await.unwrap();
        let outbox = Arc::new(Outbox::new(1 << 20, 1024));
        relay
            .join(
                &outbox,
                &JoinRequest {
                    id: 1,
                    history: Some(0),
                    ..Default::default()
                },
            )
            .unwrap();
        (relay, outbox, metrics)
    }

    /// Invalid JSON and oversized payloads from the (real, embedded) bus are
    /// counted and dropped; the `prev` chain clients see stays whole.
    #[tokio::test]
    async fn invalid_payloads_are_dropped_and_chain_kept() {
        use crate::bus::memory::MemoryBus;
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(
            std::collections::HashMap::from([("clips".to_string(), 100)]),
            Duration::from_secs(60),
        ));
        let topic = Topic::new("clips.relay.test").unwrap();
        let (outbox, metrics) = feed_subscriber(bus.clone(), &topic, 32).await;
        let good1 = bus
            .publish(&topic, Bytes::from_static(b"{\"a\":1}"), None)
            .await
            .unwrap();
        bus.publish(&topic, Bytes::from_static(b"{broken"), None)
            .await
            .unwrap();
        bus.publish(&topic, Bytes::from(format!("\"{}\"", "x".repeat(64))), None)
            .await
            .unwrap();
        let good2 = bus
            .publish(&topic, Bytes::from_static(b"[2]"), None)
            .await
            .unwrap();
        let mut frames = Vec::new();
        for _ in 0..100 {
            let mut batch = VecDeque::new();
            outbox.take(&mut batch);
            frames.extend(batch.into_iter().map(|q| q.frame.as_str().to_string()));
            if frames.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let messages: Vec<serde_json::Value> = frames[1..]
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        assert_eq!(messages.len(), 2, "{frames:?}");
        assert_eq!(
            (messages[0]["seq"].as_u64(), messages[0]["prev"].as_u64()),
            (Some(good1), Some(0))
        );
        assert_eq!(
            (messages[1]["seq"].as_u64(), messages[1]["prev"].as_u64()),
            (Some(good2), Some(good1))
        );
        let text = metrics.render();
        assert!(
            text.contains("tribune_payloads_dropped_total{reason=\"invalid_json\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tribune_payloads_dropped_total{reason=\"too_large\"} 1"),
            "{text}"
        );
    }

    /// A bus whose live feed misses the seqs in `drop_live` (missed
    /// republishes) and whose next `lagging_reads` history reads come from a
    /// lagging replica (nothing yet).
    struct LaggingBus {
        inner: crate::bus::memory::MemoryBus,
        drop_live: Arc<Mutex<std::collections::HashSet<u64>>>,
        lagging_reads: std::sync::atomic::AtomicUsize,
    }

    impl LaggingBus {
        /// Drops nothing and lags nowhere until a test says so; keeps 100
        /// messages per topic.
        fn new() -> Arc<LaggingBus> {
            Self::keeping(100)
        }

        /// Like [`LaggingBus::new`], keeping `retained` messages per topic.
        fn keeping(retained: u32) -> Arc<LaggingBus> {
            Arc::new(LaggingBus {
                inner: crate::bus::memory::MemoryBus::new(
                    std::collections::HashMap::from([
                        ("clips".to_string(), retained),
                        ("results".to_string(), retained),
                    ]),
                    Duration::from_secs(60),
                ),
                drop_live: Arc::default(),
                lagging_reads: std::sync::atomic::AtomicUsize::new(0),
            })
        }

        /// The live feed misses the `count` messages from `next_seq` on.
        fn drop_live_from(&self, next_seq: u64, count: u64) {
            self.drop_live.lock().extend(next_seq..next_seq + count);
        }
    }

    impl Bus for LaggingBus {
        fn kind(&self) -> &'static str {
            "lagging"
        }
        fn status(&self) -> watch::Receiver<crate::bus::BusStatus> {
            self.inner.status()
        }
        fn live(
            &self,
            topic: &Topic,
        ) -> futures::future::BoxFuture<'_, crate::bus::BusResult<LiveFeed>> {
            use futures::FutureExt;
            let topic = topic.clone();
            async move {
                let feed = self.inner.live(&topic).await?;
                let dropped = self.drop_live.clone();
                Ok(feed
                    .filter(move |m| futures::future::ready(!dropped.lock().contains(&m.seq)))
                    .boxed())
            }
            .boxed()
        }
        fn last(
            &self,
            topic: &Topic,
            n: u32,
        ) -> futures::future::BoxFuture<'_, crate::bus::BusResult<Vec<BusMessage>>> {
            self.inner.last(topic, n)
        }
        fn after(
            &self,
            topic: &Topic,
            after: u64,
            limit: u32,
        ) -> futures::future::BoxFuture<'_, crate::bus::BusResult<crate::bus::After>> {
            use futures::FutureExt;
            let lagging = self.lagging_reads.load(std::sync::atomic::Ordering::SeqCst);
            if lagging > 0 {
                self.lagging_reads
                    .store(lagging - 1, std::sync::atomic::Ordering::SeqCst);
                return futures::future::ready(Ok(crate::bus::After::default())).boxed();
            }
            self.inner.after(topic, after, limit)
        }
        fn last_seqs<'a>(
            &'a self,
            topics: &'a [Topic],
        ) -> futures::future::BoxFuture<
            'a,
            crate::bus::BusResult<std::collections::HashMap<Topic, u64>>,
        > {
            self.inner.last_seqs(topics)
        }
        fn publish(
            &self,
            topic: &Topic,
            data: Bytes,
            msg_id: Option<String>,
        ) -> futures::future::BoxFuture<'_, crate::bus::BusResult<u64>> {
            self.inner.publish(topic, data, msg_id)
        }
    }

    async fn drain_frames(outbox: &Outbox, want: usize) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        for _ in 0..300 {
            let mut batch = VecDeque::new();
            outbox.take(&mut batch);
            frames.extend(
                batch
                    .into_iter()
                    .map(|q| serde_json::from_str(q.frame.as_str()).unwrap()),
            );
            if frames.len() >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        frames
    }

    /// A gap whose first repair read comes back short is retried, never
    /// forwarded with a hole.
    #[tokio::test]
    async fn gap_repair_insists_on_a_lagging_read() {
        let bus = LaggingBus::new();
        let topic = Topic::new("clips.relay.gap").unwrap();
        let (outbox, metrics) = feed_subscriber(bus.clone(), &topic, 1 << 20).await;
        let s1 = bus
            .publish(&topic, Bytes::from_static(b"1"), None)
            .await
            .unwrap();
        bus.drop_live_from(s1 + 1, 1);
        bus.lagging_reads
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let s2 = bus
            .publish(&topic, Bytes::from_static(b"2"), None)
            .await
            .unwrap();
        let s3 = bus
            .publish(&topic, Bytes::from_static(b"3"), None)
            .await
            .unwrap();
        assert_eq!(s2, s1 + 1);
        let frames = drain_frames(&outbox, 4).await;
        let seqs: Vec<(u64, u64)> = frames[1..]
            .iter()
            .map(|m| (m["seq"].as_u64().unwrap(), m["prev"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            seqs,
            vec![(s1, 0), (s2, s1), (s3, s2)],
            "the missed message was repaired in order"
        );
        let text = metrics.render();
        assert!(text.contains("tribune_gaps_repaired_total 1"), "{text}");
    }

    /// A fan resuming from a node that was ahead of this one recovers: the
    /// relay reads what it had not seen yet instead of answering
    /// `recovered: false` and replaying what the fan already holds.
    #[tokio::test]
    async fn resume_from_ahead_catches_up_and_recovers() {
        let bus = LaggingBus::new();
        let topic = Topic::new("clips.relay.ahead").unwrap();
        let metrics = Arc::new(Metrics::new());
        let epoch = bus.status().borrow().epoch.clone();
        let (relay, ctl) = Relay::new(
            1,
            topic.clone(),
            Mode::Feed,
            100,
            1 << 20,
            epoch.clone(),
            metrics,
        );
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        tokio::spawn(
            RelayTask::new(
                relay.clone(),
                dyn_bus,
                ctl,
                Duration::from_secs(60),
                Box::new(|_| {}),
            )
            .run(),
        );
        relay.ready().await.unwrap();
        let s1 = bus
            .publish(&topic, Bytes::from_static(b"1"), None)
            .await
            .unwrap();
        // The live feed misses the next one: this node is behind the stream.
        bus.drop_live_from(s1 + 1, 1);
        let s2 = bus
            .publish(&topic, Bytes::from_static(b"2"), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let req = JoinRequest {
            id: 7,
            history: None,
            since: Some((s2, epoch.to_string())),
        };
        relay.catch_up(&req).await;
        let outbox = Arc::new(Outbox::new(1 << 20, 1024));
        relay.join(&outbox, &req).unwrap();
        let frames = drain_frames(&outbox, 1).await;
        assert_eq!(frames[0]["recovered"], true, "{:?}", frames[0]);
        assert_eq!(frames[0]["seq"], s2);
        assert_eq!(
            frames.len(),
            1,
            "nothing the fan holds is replayed: {frames:?}"
        );
        let s3 = bus
            .publish(&topic, Bytes::from_static(b"3"), None)
            .await
            .unwrap();
        let frames = drain_frames(&outbox, 1).await;
        assert_eq!(
            (frames[0]["seq"].as_u64(), frames[0]["prev"].as_u64()),
            (Some(s3), Some(s2))
        );
    }

    /// Publishes `n` messages on `topic`; their seqs.
    async fn publish_n(bus: &LaggingBus, topic: &Topic, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for i in 0..n {
            seqs.push(
                bus.publish(topic, Bytes::from(format!("{i}")), None)
                    .await
                    .unwrap(),
            );
        }
        seqs
    }

    fn kinds(frames: &[serde_json::Value]) -> Vec<(String, u64, u64)> {
        frames
            .iter()
            .map(|f| {
                let t = f["type"].as_str().unwrap().to_string();
                match t.as_str() {
                    "gap" => (
                        t,
                        f["after"].as_u64().unwrap(),
                        f["before"].as_u64().unwrap(),
                    ),
                    "message" => (t, f["seq"].as_u64().unwrap(), f["prev"].as_u64().unwrap()),
                    _ => (t, f["seq"].as_u64().unwrap_or(0), 0),
                }
            })
            .collect()
    }

    /// Messages the live feed missed and the bus removed before the repair:
    /// one `gap` names them, and the next message carries the bus's `prev`
    /// (its real predecessor), not the seq before the hole. A resume across
    /// the hole replays the `gap` in place; so does a history replay.
    #[tokio::test]
    async fn unrepairable_hole_yields_one_gap_and_the_true_prev() {
        let bus = LaggingBus::keeping(3);
        let topic = Topic::new("clips.relay.hole").unwrap();
        let (relay, outbox, metrics) = subscriber(bus.clone(), &topic, Mode::Feed, 1 << 20).await;
        let s1 = publish_n(&bus, &topic, 1).await[0];
        assert_eq!(drain_frames(&outbox, 2).await.len(), 2, "ack and s1");
        // Five messages the live feed misses; the bus keeps only 3 per topic,
        // so when the next live message shows the hole, s2 and s3 are gone.
        bus.drop_live_from(s1 + 1, 5);
        let missed = publish_n(&bus, &topic, 5).await;
        let s7 = publish_n(&bus, &topic, 1).await[0];
        let frames = drain_frames(&outbox, 4).await;
        assert_eq!(
            kinds(&frames),
            vec![
                ("gap".into(), s1, missed[3]),
                ("message".into(), missed[3], missed[2]),
                ("message".into(), missed[4], missed[3]),
                ("message".into(), s7, missed[4]),
            ],
            "{frames:?}"
        );
        assert_eq!(frames[0]["topic"], topic.as_str());
        let text = metrics.render();
        assert!(
            text.contains("tribune_gaps_unrepairable_total{mode=\"feed\"} 1"),
            "{text}"
        );
        let epoch = bus.status().borrow().epoch.to_string();
        let resumed = Arc::new(Outbox::new(1 << 20, 1024));
        relay
            .join(
                &resumed,
                &JoinRequest {
                    id: 2,
                    history: None,
                    since: Some((s1, epoch)),
                },
            )
            .unwrap();
        let frames = drain_frames(&resumed, 5).await;
        assert_eq!(frames[0]["recovered"], true, "{frames:?}");
        assert_eq!(
            kinds(&frames[1..]),
            vec![
                ("gap".into(), s1, missed[3]),
                ("message".into(), missed[3], missed[2]),
                ("message".into(), missed[4], missed[3]),
                ("message".into(), s7, missed[4]),
            ]
        );
        let history = Arc::new(Outbox::new(1 << 20, 1024));
        relay
            .join(
                &history,
                &JoinRequest {
                    id: 3,
                    history: Some(3),
                    since: None,
                },
            )
            .unwrap();
        let frames = drain_frames(&history, 4).await;
        assert_eq!(
            kinds(&frames[1..]),
            vec![
                ("message".into(), missed[3], missed[2]),
                ("message".into(), missed[4], missed[3]),
                ("message".into(), s7, missed[4]),
            ],
            "a history replay starting at the hole owes no gap"
        );
    }

    /// A `state` topic sends no `gap` (the next state supersedes), but a
    /// resume across the hole is not `recovered: true`.
    #[tokio::test]
    async fn state_resume_across_a_hole_is_not_recovered() {
        let bus = LaggingBus::keeping(2);
        let topic = Topic::new("results.relay.hole").unwrap();
        let (relay, outbox, metrics) = subscriber(bus.clone(), &topic, Mode::State, 1 << 20).await;
        let s1 = publish_n(&bus, &topic, 1).await[0];
        bus.drop_live_from(s1 + 1, 4);
        let missed = publish_n(&bus, &topic, 4).await;
        let s6 = publish_n(&bus, &topic, 1).await[0];
        let frames = drain_frames(&outbox, 4).await;
        assert!(
            frames.iter().all(|f| f["type"] != "gap"),
            "no gap frame on a state topic: {frames:?}"
        );
        assert_eq!(
            kinds(&frames).last().cloned(),
            Some(("message".into(), s6, missed[3]))
        );
        assert!(
            metrics
                .render()
                .contains("tribune_gaps_unrepairable_total{mode=\"state\"} 1")
        );
        let epoch = bus.status().borrow().epoch.to_string();
        let resumed = Arc::new(Outbox::new(1 << 20, 1024));
        relay
            .join(
                &resumed,
                &JoinRequest {
                    id: 2,
                    history: None,
                    since: Some((s1, epoch.clone())),
                },
            )
            .unwrap();
        let frames = drain_frames(&resumed, 2).await;
        assert_eq!(frames[0]["recovered"], false, "{frames:?}");
        assert_eq!(frames[1]["seq"], s6, "the replay ends on the latest state");
        // A resume after the hole recovers.
        let after = Arc::new(Outbox::new(1 << 20, 1024));
        relay
            .join(
                &after,
                &JoinRequest {
                    id: 3,
                    history: None,
                    since: Some((missed[3], epoch)),
                },
            )
            .unwrap();
        let frames = drain_frames(&after, 2).await;
        assert_eq!(frames[0]["recovered"], true, "{frames:?}");
    }

    #[test]
    fn replay_frame_marks_replay() {
        let c = Cached::new("clips.a", 7, 3, 99, br#"{"x":1}"#);
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
