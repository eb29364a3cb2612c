//! The NATS JetStream bus (PROTOCOL.md section 10, ARCHITECTURE.md section 4).
//!
//! Subjects, with the prefix `p`: editors publish to `p.fan.<topic>` (stored
//! by the stream), the stream republishes to `p.live.<topic>`, fans'
//! publications go to `p.in.<topic>`, statistics partials to `p.stats.<node>`.
//!
//! One file per job; this one holds the bus's shared state ([`NatsBus`],
//! `Inner`, `Subjects`), the timeout around every call, and the trait
//! implementations, which only delegate:
//! - `connect`: connecting (short ping interval, quick reconnects), refusing
//!   servers older than 2.11 or without JetStream, [`NatsBus::connect`].
//! - `stream`: the JetStream stream: its config, provisioning it when
//!   `bus.manage_stream` (or checking the operator's), what evicts its
//!   messages, the JetStream API, storing a message.
//! - `direct_get`: history reads through the batched direct get (async-nats
//!   has none, so it is written here): `last`, `after` with its hole, `last_seqs`.
//! - `live`: core NATS: a topic's live feed on the republished subject, the
//!   statistics feed, fans' and statistics publications.
//! - `watcher`: the connection watcher: status, epoch and reconnect generation.
//! - `headers`: the headers of stored messages (sequence, storage time).

mod connect;
mod direct_get;
mod headers;
mod live;
mod stream;
mod watcher;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::connection::State;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use serde_json::Value;
use tokio::sync::watch;
use tribune_protocol::Topic;

use super::{
    After, Bus, BusError, BusMessage, BusResult, BusStatus, LiveFeed, SideChannel, StatsFeed,
};
use stream::Eviction;

/// The NATS JetStream bus. Cheap to share behind an `Arc`.
pub struct NatsBus {
    inner: Arc<Inner>,
}

/// What the handle, every call and the watcher (through a `Weak`, so that
/// dropping the bus ends it) share.
struct Inner {
    /// The one connection; async-nats reconnects it and replays subscriptions.
    client: Client,
    /// Subject prefixes and API subjects, computed once.
    subjects: Subjects,
    /// Stream name, for the epoch and the API subjects.
    stream: String,
    /// The stream config to create (or restore) when we own the stream.
    managed_config: Option<Value>,
    /// Bound of every call (request_timeout_ms): a failure, never a hang.
    timeout: Duration,
    /// Connection state, epoch and generation, watched by registry and /readyz.
    status: watch::Sender<BusStatus>,
    /// How the stream removes a subject's oldest messages, from its config;
    /// unset (before the stream is read): assume anything may be removed.
    eviction: std::sync::OnceLock<Eviction>,
}

/// Every subject the bus uses, derived from the prefix and stream name.
struct Subjects {
    /// `p.fan.`: where editors publish; the stream's subjects.
    fan: String,
    /// `p.live.`: where the stream republishes.
    live: String,
    /// `p.in.`: fans' own publications.
    inbound: String,
    /// `p.stats.`: per-node statistics partials.
    stats: String,
    /// `$JS.API.DIRECT.GET.<stream>`.
    direct_get: String,
}

impl Subjects {
    fn new(prefix: &str, stream: &str) -> Self {
        Self {
            fan: format!("{prefix}.fan."),
            live: format!("{prefix}.live."),
            inbound: format!("{prefix}.in."),
            stats: format!("{prefix}.stats."),
            direct_get: format!("$JS.API.DIRECT.GET.{stream}"),
        }
    }

    fn fan(&self, topic: &Topic) -> String {
        format!("{}{}", self.fan, topic)
    }
}

impl Inner {
    /// Runs `fut` within the request timeout.
    async fn bounded<T>(&self, fut: impl Future<Output = BusResult<T>>) -> BusResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Unavailable(format!(
                "no answer from NATS within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Refuses to queue a publication while disconnected: async-nats would
    /// send it after the reconnect, storing a message whose caller was told
    /// it failed.
    fn require_connection(&self) -> BusResult<()> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(BusError::Unavailable("not connected to NATS".into())),
        }
    }
}

impl Bus for NatsBus {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn status(&self) -> watch::Receiver<BusStatus> {
        self.inner.status.subscribe()
    }

    fn live(&self, topic: &Topic) -> BoxFuture<'_, BusResult<LiveFeed>> {
        let topic = topic.clone();
        async move { self.inner.live(topic).await }.boxed()
    }

    fn last(&self, topic: &Topic, n: u32) -> BoxFuture<'_, BusResult<Vec<BusMessage>>> {
        let topic = topic.clone();
        async move { self.inner.bounded(self.inner.last(&topic, n)).await }.boxed()
    }

    fn after(&self, topic: &Topic, after: u64, limit: u32) -> BoxFuture<'_, BusResult<After>> {
        let topic = topic.clone();
        async move {
            self.inner
                .bounded(self.inner.after(&topic, after, limit))
                .await
        }
        .boxed()
    }

    fn last_seqs<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, BusResult<HashMap<Topic, u64>>> {
        async move {
            if topics.is_empty() {
                return Ok(HashMap::new());
            }
            self.inner.bounded(self.inner.last_seqs(topics)).await
        }
        .boxed()
    }

    fn publish(
        &self,
        topic: &Topic,
        data: Bytes,
        msg_id: Option<String>,
    ) -> BoxFuture<'_, BusResult<u64>> {
        let topic = topic.clone();
        async move {
            self.inner
                .bounded(self.inner.publish(&topic, data, msg_id))
                .await
        }
        .boxed()
    }
}

impl SideChannel for NatsBus {
    fn publish_inbound(&self, topic: &Topic, data: Bytes) -> BoxFuture<'_, BusResult<()>> {
        let subject = format!("{}{}", self.inner.subjects.inbound, topic);
        self.inner.core_publish(subject, data).boxed()
    }

    fn publish_stats(&self, node: &str, payload: Bytes) -> BoxFuture<'_, BusResult<()>> {
        let subject = format!("{}{}", self.inner.subjects.stats, node);
        self.inner.core_publish(subject, payload).boxed()
    }

    fn stats_feed(&self) -> BoxFuture<'_, BusResult<StatsFeed>> {
        self.inner.stats_feed().boxed()
    }
}
