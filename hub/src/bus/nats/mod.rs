//! The NATS JetStream bus (PROTOCOL.md section 10, ARCHITECTURE.md section 4).
//!
//! Subjects, with the prefix `p`: editors publish to `p.fan.<topic>` (stored
//! by the stream); hubs read a topic's new messages through a consumer of
//! the stream (never from the republished `p.live.<topic>`, which anyone
//! with a connection could forge); fans' publications go to `p.in.<topic>`,
//! statistics partials to `p.stats.<node>`.
//!
//! One file per job; this one holds only the trait implementations, which
//! delegate:
//! - `state`: what every job shares: the handle [`NatsBus`], its `Inner`
//!   (the connection, subjects, stream, status, eviction settings), and the
//!   two guards around every call (the timeout; no queueing while
//!   disconnected).
//! - `connect`: connecting (short ping interval, quick reconnects), refusing
//!   servers older than 2.11 or without JetStream, [`NatsBus::connect`].
//! - `settings`: credentials and TLS of `[bus]`, checked (also by
//!   `--check-config`) and handed to async-nats.
//! - `stream`: the JetStream stream: its config, provisioning it when
//!   `bus.manage_stream` (or checking the operator's), the JetStream API,
//!   storing a message.
//! - `direct_get`: history reads through the batched direct get (async-nats
//!   has none, so it is written here): `last`, `after` with its hole, `last_seqs`.
//! - `live`: a topic's live feed: an ephemeral consumer of the stream per
//!   feed, each delivery checked against the consumer that made it.
//! - `side`: the side channel on core NATS: the statistics feed, fans' and
//!   statistics publications.
//! - `watcher`: the connection watcher: status, epoch and reconnect generation.
//! - `region`: regions: the mirror a hub creates, the epoch of a mirror
//!   (its origin's) or of a promoted copy, promoting a mirror.
//! - `headers`: the headers of stored messages (sequence, storage time) and
//!   the RFC 3339 times NATS writes, read with the `time` crate.

mod connect;
mod direct_get;
mod headers;
mod live;
mod region;
pub mod settings;
mod side;
mod state;
mod stream;
mod watcher;

use std::collections::HashMap;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use tokio::sync::watch;
use tribune_protocol::Topic;

pub use state::NatsBus;

use super::{
    After, Bus, BusMessage, BusResult, BusStatus, ControlFeed, LiveFeed, SideChannel, StatsFeed,
};

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
                .bounded(self.inner.publish(&topic, data, msg_id, None))
                .await
        }
        .boxed()
    }

    fn retract(&self, topic: &Topic, seq: u64) -> BoxFuture<'_, BusResult<u64>> {
        let topic = topic.clone();
        async move {
            let id = tribune_protocol::retract_msg_id(topic.as_str(), seq);
            self.inner
                .bounded(
                    self.inner
                        .publish(&topic, Bytes::new(), Some(id), Some(seq)),
                )
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

    fn publish_control(&self, payload: Bytes) -> BoxFuture<'_, BusResult<()>> {
        let subject = self.inner.subjects.control.clone();
        self.inner.core_publish(subject, payload).boxed()
    }

    fn control_feed(&self) -> BoxFuture<'_, BusResult<ControlFeed>> {
        self.inner.control_feed().boxed()
    }
}
