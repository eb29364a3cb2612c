//! Topic → relay, for the topics that have local subscribers.
//!
//! The registry creates a topic's relay (and so its bus subscription) for the
//! first local subscriber and lets the relay remove itself after a linger once
//! the last one has left. It also watches the bus: after every reconnect and
//! every `check_interval_ms`, it asks the bus for the last `seq` of all active
//! topics in one batched request per 1,024 topics and tells each relay, so a
//! topic that moved on while the live feed was down is repaired even if no new
//! message arrives; after an epoch change every relay is reset.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tribune_protocol::Topic;

use crate::bus::Bus;
use crate::config::{Config, Namespace};
use crate::error::{JoinError, JoinErrorKind};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::relay::{Control, HistoryPage, JoinRequest, Relay, RelayTask, Retention, Settings};

/// Topics per batched last-sequence request.
const CHECK_BATCH: usize = 1024;

/// First retry of a check that failed right after a reconnect (the server's
/// JetStream may still be recovering its streams); doubles up to the
/// check interval. Waiting for the periodic check instead would leave what
/// the live feed missed unrepaired for seconds, long enough for a busy
/// topic's retention to move past it.
const RECHECK_FIRST: Duration = Duration::from_millis(100);

/// The node's active topics.
pub struct Registry {
    relays: DashMap<Topic, Arc<Relay>>,
    bus: Arc<dyn Bus>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    next_id: AtomicU32,
}

impl Registry {
    pub fn new(bus: Arc<dyn Bus>, config: Arc<Config>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            relays: DashMap::new(),
            bus,
            config,
            metrics,
            next_id: AtomicU32::new(1),
        })
    }

    /// Joins `outbox` to the topic's relay, creating it if needed, and waits
    /// for the relay's history (shared by everyone arriving meanwhile).
    pub async fn join(
        self: &Arc<Self>,
        topic: &Topic,
        ns: &Namespace,
        outbox: &Arc<Outbox>,
        req: &JoinRequest,
    ) -> Result<(Arc<Relay>, usize), JoinError> {
        // A relay may close between lookup and join (linger ended): look again.
        for _ in 0..8 {
            let relay = self.relay(topic, ns)?;
            relay.ready().await?;
            relay.catch_up(req).await;
            if let Ok(key) = relay.join(outbox, req) {
                return Ok((relay, key));
            }
            tokio::task::yield_now().await;
        }
        Err(JoinErrorKind::Restarting.into())
    }

    /// A page of the topic's retained messages (`GET /v1/history`), from
    /// its relay: the one serving fans here, or one opened for the request
    /// (its history load is the batched bus read; it lingers like any relay
    /// without fans, so the next pages cost the bus nothing).
    pub async fn history_page(
        self: &Arc<Self>,
        topic: &Topic,
        ns: &Namespace,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, JoinError> {
        // A relay may close between lookup and read (linger ended): look again.
        for _ in 0..8 {
            let relay = self.relay(topic, ns)?;
            relay.ready().await?;
            if let Some(page) = relay.history_page(before, limit) {
                return Ok(page);
            }
            tokio::task::yield_now().await;
        }
        Err(JoinErrorKind::Restarting.into())
    }

    fn relay(self: &Arc<Self>, topic: &Topic, ns: &Namespace) -> Result<Arc<Relay>, JoinError> {
        match self.relays.entry(topic.clone()) {
            Entry::Occupied(e) => Ok(e.get().clone()),
            // The `relays` gauge moves exactly with inserts and removals; the
            // map's own `len` would lock the shard this entry holds.
            Entry::Vacant(_)
                if self.metrics.relays.get() >= self.config.limits.max_relays as i64 =>
            {
                Err(JoinErrorKind::TooManyTopics.into())
            }
            Entry::Vacant(v) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
                let epoch = self.bus.status().borrow().epoch.clone();
                let (relay, ctl) = Relay::new(
                    id,
                    topic.clone(),
                    Settings {
                        mode: ns.mode,
                        delta: ns.delta,
                        retained: ns.retained,
                        retention: Retention {
                            retained: ns.retained as usize,
                            window_ms: u64::from(ns.retained_secs) * 1_000,
                            depth: ns.depth() as usize,
                            bytes: ns.retained_bytes,
                        },
                        max_payload: self.config.limits.max_payload_bytes,
                    },
                    epoch,
                    self.metrics.clone(),
                );
                v.insert(relay.clone());
                self.metrics.relays.inc();
                let registry = Arc::downgrade(self);
                let task = RelayTask::new(
                    relay.clone(),
                    self.bus.clone(),
                    ctl,
                    Duration::from_millis(self.config.relay_linger_ms),
                    Box::new(move |relay: &Arc<Relay>| {
                        if let Some(registry) = registry.upgrade() {
                            let removed = registry
                                .relays
                                .remove_if(&relay.topic, |_, r| Arc::ptr_eq(r, relay));
                            if removed.is_some() {
                                registry.metrics.relays.dec();
                            }
                        }
                    }),
                );
                tokio::spawn(task.run());
                Ok(relay)
            }
        }
    }

    /// The relays serving subscribers now.
    pub fn relays(&self) -> Vec<Arc<Relay>> {
        self.relays.iter().map(|e| e.value().clone()).collect()
    }

    /// Watches the bus and checks active topics; runs for the node's life.
    pub async fn watch_bus(self: Arc<Self>) {
        let mut status = self.bus.status();
        let (mut generation, mut epoch) = {
            let s = status.borrow_and_update();
            self.metrics.bus_connected.set(i64::from(s.connected));
            self.metrics.bus_writable.set(i64::from(s.writable));
            (s.generation, s.epoch.clone())
        };
        let every = Duration::from_millis(self.config.bus.check_interval_ms);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set while a post-reconnect check has not succeeded yet.
        let mut recheck: Option<Duration> = None;
        let retry = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let s = status.borrow_and_update().clone();
                    self.metrics.bus_connected.set(i64::from(s.connected));
                    self.metrics.bus_writable.set(i64::from(s.writable));
                    if s.epoch != epoch {
                        tracing::warn!(old = %epoch, new = %s.epoch, "bus epoch changed: resetting every topic");
                        epoch = s.epoch.clone();
                        for relay in self.relays() {
                            relay.control(Control::Reset);
                        }
                    }
                    if s.generation != generation {
                        generation = s.generation;
                        self.metrics.bus_reconnects.inc();
                        recheck = Some(RECHECK_FIRST);
                        retry.as_mut().reset(tokio::time::Instant::now());
                    }
                }
                () = &mut retry, if recheck.is_some() => {
                    let wait = recheck.unwrap_or(RECHECK_FIRST);
                    recheck = if self.check_all().await {
                        None
                    } else {
                        retry.as_mut().reset(tokio::time::Instant::now() + wait);
                        Some((wait * 2).min(every))
                    };
                }
                _ = tick.tick() => {
                    self.check_all().await;
                }
            }
        }
    }

    /// One batched last-sequence read per 1,024 active topics; each relay
    /// repairs what moved. Whether every read was answered.
    pub async fn check_all(&self) -> bool {
        let relays: Vec<Arc<Relay>> = self.relays().into_iter().filter(|r| r.serving()).collect();
        let mut answered = true;
        for chunk in relays.chunks(CHECK_BATCH) {
            let topics: Vec<Topic> = chunk.iter().map(|r| r.topic.clone()).collect();
            match self.bus.last_seqs(&topics).await {
                Ok(last) => {
                    for relay in chunk {
                        if let Some(seq) = last.get(&relay.topic) {
                            relay.control(Control::Check(*seq));
                        }
                    }
                }
                Err(e) => {
                    answered = false;
                    tracing::debug!(error = %e, "last-sequence check failed");
                }
            }
        }
        answered
    }
}
