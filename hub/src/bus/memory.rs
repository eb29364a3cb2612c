//! The embedded in-process bus: the default for one machine and for newcomers.
//!
//! It keeps the [`Bus`](super::Bus) and [`SideChannel`](super::SideChannel)
//! contracts inside one process: one global `seq`, per-topic `prev`, `ts`,
//! retention per namespace (a count: the namespace's depth, `retained` or
//! `retained_secs × expected_rate` when more, as the stream's per-subject
//! limit), `Nats-Msg-Id` style de-duplication, an
//! epoch that changes at every start (nothing survives a restart, so old
//! `since` values must not recover), and broadcast channels for the side
//! channel.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tribune_protocol::Topic;

use super::{
    After, Bus, BusMessage, BusResult, BusStatus, ControlFeed, Epoch, LiveFeed, SideChannel,
    StatsFeed,
};

/// Stream name used in the embedded bus's epoch, like the NATS stream's.
const STREAM: &str = "TRIBUNE";

/// The embedded bus. Cheap to share behind an `Arc`.
pub struct MemoryBus {
    inner: Mutex<Inner>,
    status: watch::Sender<BusStatus>,
    /// Retained depth per namespace; `default_retained` for others.
    retention: HashMap<String, u32>,
    default_retained: u32,
    duplicate_window: Duration,
    stats: broadcast::Sender<(String, Bytes)>,
    control: broadcast::Sender<Bytes>,
    inbound: broadcast::Sender<(Topic, Bytes)>,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    topics: HashMap<Topic, TopicLog>,
    /// `msg_id` → (seq, stored at), pruned as the window passes.
    dedupe: HashMap<String, (u64, Instant)>,
    dedupe_order: VecDeque<(Instant, String)>,
}

#[derive(Default)]
struct TopicLog {
    messages: VecDeque<BusMessage>,
    live: Vec<mpsc::UnboundedSender<BusMessage>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryBus {
    /// A bus retaining `retention[namespace]` messages per topic.
    pub fn new(retention: HashMap<String, u32>, duplicate_window: Duration) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let default_retained = retention.values().copied().max().unwrap_or(100);
        let (status, _) = watch::channel(BusStatus {
            connected: true,
            epoch: Epoch::new(STREAM, created),
            generation: 1,
            writable: true,
        });
        Self {
            inner: Mutex::new(Inner::default()),
            status,
            retention,
            default_retained,
            duplicate_window,
            stats: broadcast::channel(1024).0,
            control: broadcast::channel(256).0,
            inbound: broadcast::channel(1024).0,
        }
    }

    /// Fans' publications (`<prefix>.in.<topic>` on NATS); for integrations and tests.
    pub fn inbound(&self) -> broadcast::Receiver<(Topic, Bytes)> {
        self.inbound.subscribe()
    }

    fn retained(&self, topic: &Topic) -> usize {
        self.retention
            .get(topic.namespace())
            .copied()
            .unwrap_or(self.default_retained) as usize
    }

    fn store(
        &self,
        topic: &Topic,
        data: Bytes,
        msg_id: Option<String>,
        retracts: Option<u64>,
    ) -> u64 {
        let retained = self.retained(topic);
        let mut inner = self.inner.lock();
        let now = Instant::now();
        while let Some((at, _)) = inner.dedupe_order.front() {
            if now.duration_since(*at) < self.duplicate_window {
                break;
            }
            let (_, id) = inner.dedupe_order.pop_front().expect("front exists");
            inner.dedupe.remove(&id);
        }
        if let Some((seq, _)) = msg_id.as_ref().and_then(|id| inner.dedupe.get(id)) {
            return *seq;
        }
        inner.seq += 1;
        let seq = inner.seq;
        if let Some(id) = msg_id {
            inner.dedupe.insert(id.clone(), (seq, now));
            inner.dedupe_order.push_back((now, id));
        }
        let log = inner.topics.entry(topic.clone()).or_default();
        let msg = BusMessage {
            topic: topic.clone(),
            seq,
            prev: log.messages.back().map_or(0, |m| m.seq),
            ts: now_ms(),
            data,
            retracts,
        };
        log.live.retain(|tx| tx.unbounded_send(msg.clone()).is_ok());
        log.messages.push_back(msg);
        while log.messages.len() > retained {
            log.messages.pop_front();
        }
        seq
    }
}

impl Bus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn status(&self) -> watch::Receiver<BusStatus> {
        self.status.subscribe()
    }

    fn live(&self, topic: &Topic) -> BoxFuture<'_, BusResult<LiveFeed>> {
        let (tx, rx) = mpsc::unbounded();
        self.inner
            .lock()
            .topics
            .entry(topic.clone())
            .or_default()
            .live
            .push(tx);
        futures::future::ready(Ok(rx.boxed())).boxed()
    }

    fn last(&self, topic: &Topic, n: u32) -> BoxFuture<'_, BusResult<Vec<BusMessage>>> {
        let inner = self.inner.lock();
        let out = inner.topics.get(topic).map_or_else(Vec::new, |log| {
            let skip = log.messages.len().saturating_sub(n as usize);
            log.messages.iter().skip(skip).cloned().collect()
        });
        futures::future::ready(Ok(out)).boxed()
    }

    fn after(&self, topic: &Topic, after: u64, limit: u32) -> BoxFuture<'_, BusResult<After>> {
        let inner = self.inner.lock();
        let messages: Vec<BusMessage> = inner.topics.get(topic).map_or_else(Vec::new, |log| {
            log.messages
                .iter()
                .filter(|m| m.seq > after)
                .take(limit as usize)
                .cloned()
                .collect()
        });
        // `prev` here is exact (the predecessor when stored): above `after`,
        // that predecessor was evicted, and so was anything before it.
        let hole = messages.first().is_some_and(|m| m.prev > after);
        futures::future::ready(Ok(After { messages, hole })).boxed()
    }

    fn last_seqs<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, BusResult<HashMap<Topic, u64>>> {
        let inner = self.inner.lock();
        let out = topics
            .iter()
            .filter_map(|t| {
                let last = inner.topics.get(t)?.messages.back()?;
                Some((t.clone(), last.seq))
            })
            .collect();
        futures::future::ready(Ok(out)).boxed()
    }

    fn publish(
        &self,
        topic: &Topic,
        data: Bytes,
        msg_id: Option<String>,
    ) -> BoxFuture<'_, BusResult<u64>> {
        let seq = self.store(topic, data, msg_id, None);
        futures::future::ready(Ok(seq)).boxed()
    }

    fn retract(&self, topic: &Topic, seq: u64) -> BoxFuture<'_, BusResult<u64>> {
        let id = tribune_protocol::retract_msg_id(topic.as_str(), seq);
        let at = self.store(topic, Bytes::new(), Some(id), Some(seq));
        futures::future::ready(Ok(at)).boxed()
    }
}

impl SideChannel for MemoryBus {
    fn publish_inbound(&self, topic: &Topic, data: Bytes) -> BoxFuture<'_, BusResult<()>> {
        // Nobody listening is fine: core NATS drops it the same way.
        let _ = self.inbound.send((topic.clone(), data));
        futures::future::ready(Ok(())).boxed()
    }

    fn publish_stats(&self, node: &str, payload: Bytes) -> BoxFuture<'_, BusResult<()>> {
        let _ = self.stats.send((node.to_string(), payload));
        futures::future::ready(Ok(())).boxed()
    }

    fn publish_control(&self, payload: Bytes) -> BoxFuture<'_, BusResult<()>> {
        let _ = self.control.send(payload);
        futures::future::ready(Ok(())).boxed()
    }

    fn control_feed(&self) -> BoxFuture<'_, BusResult<ControlFeed>> {
        let rx = self.control.subscribe();
        let feed = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(item) => return Some((item, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        futures::future::ready(Ok(feed.boxed())).boxed()
    }

    fn stats_feed(&self) -> BoxFuture<'_, BusResult<StatsFeed>> {
        let rx = self.stats.subscribe();
        let feed = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(item) => return Some((item, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        futures::future::ready(Ok(feed.boxed())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite's namespaces: `results` keeps 10, `clips` 100.
    fn bus() -> MemoryBus {
        MemoryBus::new(
            HashMap::from([("results".into(), 10), ("clips".into(), 100)]),
            Duration::from_secs(120),
        )
    }

    /// The conformance suite's maker: nothing to keep alive beside the bus.
    async fn make() -> ((), MemoryBus) {
        ((), bus())
    }

    crate::bus_conformance_tests!(make);

    #[tokio::test]
    async fn epoch_changes_at_every_start() {
        let a = bus().status().borrow().epoch.clone();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let b = bus().status().borrow().epoch.clone();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("TRIBUNE@"));
    }

    #[tokio::test]
    async fn retention_is_per_namespace() {
        let bus = bus();
        let t = Topic::new("results.a.b").unwrap();
        for i in 0..15 {
            bus.publish(&t, Bytes::from(format!("{i}")), None)
                .await
                .unwrap();
        }
        let all = bus.last(&t, 100).await.unwrap();
        assert_eq!(all.len(), 10, "results retain 10");
        assert_eq!(all[0].data, Bytes::from("5"));
    }

    #[tokio::test]
    async fn inbound_is_observable_and_separate() {
        let bus = bus();
        let mut rx = bus.inbound();
        let t = Topic::new("cheers.a").unwrap();
        bus.publish_inbound(&t, Bytes::from("{}")).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), (t.clone(), Bytes::from("{}")));
        assert!(bus.last(&t, 10).await.unwrap().is_empty());
    }
}
