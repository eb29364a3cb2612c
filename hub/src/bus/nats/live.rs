//! Core NATS: a topic's live feed on the stream's republished subject, the
//! statistics feed, and the publications that never enter the stream (fans'
//! own, statistics partials).

use async_nats::{Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tribune_protocol::Topic;

use super::headers::{header_u64, timestamp_ms};
use super::state::Inner;
use crate::bus::{BusError, BusMessage, BusResult, ControlFeed, LiveFeed, StatsFeed};

impl Inner {
    /// The topic's new messages, from the stream's republished subject.
    pub(super) async fn live(&self, topic: Topic) -> BusResult<LiveFeed> {
        let subscriber = self
            .subscribe(format!("{}{}", self.subjects.live, topic))
            .await?;
        let feed: LiveFeed = subscriber
            .filter_map(move |msg| futures::future::ready(parse_live(&topic, msg)))
            .boxed();
        Ok(feed)
    }

    /// Every node's statistics partials, named by the node in the subject.
    pub(super) async fn stats_feed(&self) -> BusResult<StatsFeed> {
        let prefix = self.subjects.stats.clone();
        let subscriber = self.subscribe(format!("{prefix}>")).await?;
        let feed: StatsFeed = subscriber
            .filter_map(move |msg| {
                let node = msg
                    .subject
                    .as_str()
                    .strip_prefix(prefix.as_str())
                    .map(String::from);
                futures::future::ready(node.map(|node| (node, msg.payload)))
            })
            .boxed();
        Ok(feed)
    }

    pub(super) async fn control_feed(&self) -> BusResult<ControlFeed> {
        let subscriber = self.subscribe(self.subjects.control.clone()).await?;
        Ok(subscriber.map(|msg| msg.payload).boxed())
    }

    /// Subscribes within the request timeout. The SUB is on the wire when
    /// this returns, so a history read that follows cannot miss what the
    /// subscription would deliver.
    async fn subscribe(&self, subject: String) -> BusResult<Subscriber> {
        self.bounded(async {
            let subscriber = self
                .client
                .subscribe(subject)
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            self.client
                .flush()
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            Ok(subscriber)
        })
        .await
    }

    /// A core-NATS publication (fans' own messages, statistics partials):
    /// at most once, within the request timeout, refused while disconnected.
    pub(super) async fn core_publish(&self, subject: String, data: Bytes) -> BusResult<()> {
        self.require_connection()?;
        self.bounded(async {
            self.client
                .publish(subject, data)
                .await
                .map_err(|e| BusError::Rejected(e.to_string()))
        })
        .await
    }
}

/// A republished message on `p.live.<topic>` as a [`BusMessage`]; `None` for
/// anything that did not come from the stream (no sequence header).
fn parse_live(topic: &Topic, msg: Message) -> Option<BusMessage> {
    let seq = header_u64(&msg, "Nats-Sequence")?;
    Some(BusMessage {
        topic: topic.clone(),
        seq,
        prev: header_u64(&msg, "Nats-Last-Sequence").unwrap_or(0),
        ts: timestamp_ms(&msg).unwrap_or(0),
        data: msg.payload,
    })
}
