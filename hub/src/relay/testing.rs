//! Test support for the relay's tests: a bus that misses live messages and
//! lags on reads ([`LaggingBus`]), and helpers that run a relay with one
//! subscriber and read what its outbox got.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tribune_protocol::{Mode, Topic};

use super::{JoinRequest, Relay, RelayTask, Settings};
use crate::bus::{Bus, BusMessage, LiveFeed};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// A feed relay on `topic` running over `bus`, with one subscriber's
/// outbox joined (its `ack` queued first).
pub(super) async fn feed_subscriber(
    bus: Arc<dyn Bus>,
    topic: &Topic,
    max_payload: usize,
) -> (Arc<Outbox>, Arc<Metrics>) {
    let (_, outbox, metrics) = subscriber(bus, topic, Mode::Feed, max_payload).await;
    (outbox, metrics)
}

/// A relay of `mode` on `topic` running over `bus` (caching 100), with
/// one subscriber's outbox joined (its `ack` queued first).
pub(super) async fn subscriber(
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
        Settings {
            mode,
            delta: mode == Mode::State,
            retained: 100,
            retention: super::Retention::count(100),
            max_payload,
        },
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

/// A bus whose live feed misses the seqs in `drop_live` (missed
/// deliveries), whose next `lagging_reads` history reads come from a
/// lagging replica (nothing yet) and whose next `failing_reads` fail; whose
/// feeds end on [`LaggingBus::end_feeds`] and, with `first_prev_unknown`,
/// give their first message `prev` 0 (as the contract allows).
pub(super) struct LaggingBus {
    inner: crate::bus::memory::MemoryBus,
    pub(super) drop_live: Arc<Mutex<std::collections::HashSet<u64>>>,
    pub(super) lagging_reads: std::sync::atomic::AtomicUsize,
    pub(super) failing_reads: std::sync::atomic::AtomicUsize,
    pub(super) first_prev_unknown: std::sync::atomic::AtomicBool,
    /// Bumped to end every open feed.
    feed_ends: watch::Sender<u64>,
}

impl LaggingBus {
    /// Drops nothing and lags nowhere until a test says so; keeps 100
    /// messages per topic.
    pub(super) fn new() -> Arc<LaggingBus> {
        Self::keeping(100)
    }

    /// Like [`LaggingBus::new`], keeping `retained` messages per topic.
    pub(super) fn keeping(retained: u32) -> Arc<LaggingBus> {
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
            failing_reads: std::sync::atomic::AtomicUsize::new(0),
            first_prev_unknown: std::sync::atomic::AtomicBool::new(false),
            feed_ends: watch::channel(0).0,
        })
    }

    /// Ends every open live feed (the relay opens a new one).
    pub(super) fn end_feeds(&self) {
        self.feed_ends.send_modify(|n| *n += 1);
    }

    /// The live feed misses the `count` messages from `next_seq` on.
    pub(super) fn drop_live_from(&self, next_seq: u64, count: u64) {
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
            let mut ends = self.feed_ends.subscribe();
            let mut unknown = self
                .first_prev_unknown
                .load(std::sync::atomic::Ordering::SeqCst);
            Ok(feed
                .filter(move |m| futures::future::ready(!dropped.lock().contains(&m.seq)))
                .map(move |mut m| {
                    if std::mem::take(&mut unknown) {
                        m.prev = 0;
                    }
                    m
                })
                .take_until(async move {
                    let _ = ends.changed().await;
                })
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
        let failing = self.failing_reads.load(std::sync::atomic::Ordering::SeqCst);
        if failing > 0 {
            self.failing_reads
                .store(failing - 1, std::sync::atomic::Ordering::SeqCst);
            let down = crate::bus::BusError::unavailable("reads fail in this test");
            return futures::future::ready(Err(down)).boxed();
        }
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
    ) -> futures::future::BoxFuture<'a, crate::bus::BusResult<std::collections::HashMap<Topic, u64>>>
    {
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
    fn retract(
        &self,
        topic: &Topic,
        seq: u64,
    ) -> futures::future::BoxFuture<'_, crate::bus::BusResult<u64>> {
        self.inner.retract(topic, seq)
    }
}

pub(super) async fn drain_frames(outbox: &Outbox, want: usize) -> Vec<serde_json::Value> {
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

/// Publishes `n` messages on `topic`; their seqs.
pub(super) async fn publish_n(bus: &LaggingBus, topic: &Topic, n: usize) -> Vec<u64> {
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

pub(super) fn kinds(frames: &[serde_json::Value]) -> Vec<(String, u64, u64)> {
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
