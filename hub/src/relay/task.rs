//! A relay's task, the only writer of its topic's state: loads the retained
//! history, then forwards the live feed, repairing what it missed from the
//! bus and saying what it could not repair (a hole), until the linger after
//! the last subscriber ends it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::cache::Cached;
use super::{Control, Load, Relay, retract};
use crate::bus::{Bus, BusError, BusMessage, LiveFeed};
use crate::error::{JoinError, JoinErrorKind};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;

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

/// Ignored retraction markers are logged at most once a second across the
/// node: whoever may write to the stream could otherwise flood the log.
static RETRACT_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

/// Live feeds that cannot be opened again (the bus down, the stream's
/// consumers at their limit) are logged at most once a second across the
/// node: every relay retries twice a second.
static REOPEN_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

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
    /// A new live feed opened and the read of what was stored before it
    /// failed: the feed's first message may claim no `prev` (the contract
    /// allows 0), so the next live message is checked against the stream
    /// before it is forwarded.
    unverified: bool,
}

/// What a repair learnt besides the messages it forwarded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Repaired {
    /// The bus said messages were removed before they could be read.
    hole: bool,
    /// Reads kept failing; the repair gave up for now.
    unreadable: bool,
    /// The read got to the message it was repairing up to (`until`): it
    /// holds everything stored before it.
    reached: bool,
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
            unverified: false,
        }
    }

    pub async fn run(mut self) {
        let feed = match self.load().await {
            Ok(feed) => feed,
            Err(e) => {
                tracing::warn!(topic = %self.relay.topic, error = %e, "relay could not load");
                self.relay.state.lock().closed = true;
                let why =
                    JoinError::with_source(JoinErrorKind::Unavailable, "history is unavailable", e);
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
    async fn load(&mut self) -> Result<LiveFeed, BusError> {
        let topic = self.relay.topic.clone();
        let feed = self.bus.live(&topic).await?;
        self.relay.metrics.history_requests.inc();
        // The whole retention: the cache trims it by count, time and bytes.
        let history = self.bus.last(&topic, self.relay.depth as u32).await?;
        let mut st = self.relay.state.lock();
        let mut prev = history.first().map_or(0, |m| m.prev);
        for msg in history {
            self.last_seen = msg.seq;
            self.relay.metrics.bus_messages.inc();
            // A retraction stored before this relay started: its target (older,
            // so read before it) loses its payload here and never goes out.
            if let Some(target) = msg.retracts {
                let taken = retract::verdict(self.relay.mode, &mut st.cache, target, msg.seq);
                self.relay.metrics.retraction(taken);
                if taken.is_ok() {
                    if let Some(c) = st.cache.find_mut(target) {
                        c.retract_in_place(topic.as_str());
                    }
                    st.cache.push(Cached::marker(
                        topic.as_str(),
                        target,
                        msg.seq,
                        prev,
                        msg.ts,
                        None,
                    ));
                    prev = msg.seq;
                    st.last_seq = msg.seq;
                }
                continue;
            }
            if !payload_ok(&msg.data, self.relay.max_payload, &self.relay.metrics) {
                continue;
            }
            st.cache.push(Cached::new(
                topic.as_str(),
                msg.seq,
                prev,
                msg.ts,
                &msg.data,
                None,
            ));
            prev = msg.seq;
            st.last_seq = msg.seq;
        }
        self.last_forwarded = st.last_seq;
        drop(st);
        self.relay.forwarded.send_replace(self.last_forwarded);
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
                        // The bus ended the feed: open it again, then read
                        // what may have been stored in between.
                        feed = loop {
                            match self.bus.live(&self.relay.topic).await {
                                Ok(f) => break f,
                                Err(e) => {
                                    if let Some(held_back) = REOPEN_LOG.allow() {
                                        tracing::warn!(topic = %self.relay.topic, error = %e, held_back,
                                            "live feed lost, opening it again");
                                    }
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                }
                            }
                        };
                        self.unverified = self.repair(None).await.unreadable;
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
        // `prev` above what was seen: the stream stored something the live
        // feed missed. Unverified: what was stored before this feed opened
        // could not be read, and the message's `prev` may not say so.
        let verify = std::mem::take(&mut self.unverified);
        if msg.prev > self.last_seen || verify {
            // A read may be answered by a replica that lags: insist for a
            // while before taking the hole for messages that are gone, unless
            // the bus already said they were removed.
            let deadline = Instant::now() + REPAIR_PATIENCE;
            let mut wait = Duration::from_millis(20);
            loop {
                let repaired = self.repair(Some(msg.seq)).await;
                if repaired.hole {
                    break;
                }
                let closed = if verify {
                    repaired.reached
                } else {
                    msg.prev <= self.last_seen
                };
                if closed {
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
        if let Some(target) = msg.retracts {
            self.retraction(&msg, target);
            return;
        }
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

    /// A retraction marker from the bus: taken, it goes out like a message
    /// (after the hole's `gap`, if one is pending); ignored, it is dropped
    /// like an invalid payload, the chain whole and the hole still pending.
    fn retraction(&mut self, msg: &BusMessage, target: u64) {
        let taken = {
            let mut st = self.relay.state.lock();
            retract::verdict(self.relay.mode, &mut st.cache, target, msg.seq)
        };
        self.relay.metrics.retraction(taken);
        if let Err(reason) = taken {
            if let Some(held_back) = RETRACT_LOG.allow() {
                tracing::warn!(topic = %self.relay.topic, target, at = msg.seq, reason,
                    held_back, "retraction marker ignored");
            }
            return;
        }
        let (prev, hole_after) = if std::mem::take(&mut self.hole) {
            (msg.prev, Some(self.last_forwarded))
        } else {
            (self.last_forwarded, None)
        };
        self.relay.forward_retract(msg, target, prev, hole_after);
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
                outcome.reached = reached;
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
