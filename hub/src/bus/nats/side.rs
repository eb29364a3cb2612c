//! The side channel on core NATS: the statistics and control feeds, and
//! the publications that never enter the stream (fans' own, statistics
//! partials, operators' control messages). Nothing here is stored or reaches a live feed.

use bytes::Bytes;
use futures::StreamExt;

use super::state::Inner;
use crate::bus::{BusError, BusResult, ControlFeed, StatsFeed};

impl Inner {
    /// Every node's statistics partials, named by the node in the subject
    /// (anyone may publish there: the statistics check what they receive).
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

    /// Every node's control messages (anyone may publish there: the
    /// receiver checks their seal).
    pub(super) async fn control_feed(&self) -> BusResult<ControlFeed> {
        let subscriber = self.subscribe(self.subjects.control.clone()).await?;
        Ok(subscriber.map(|msg| msg.payload).boxed())
    }

    /// A core-NATS publication (fans' own messages, statistics partials):
    /// at most once, within the request timeout, refused while disconnected.
    pub(super) async fn core_publish(&self, subject: String, data: Bytes) -> BusResult<()> {
        self.require_connection()?;
        self.bounded(async {
            self.client
                .publish(subject, data)
                .await
                .map_err(|e| BusError::rejected(e.to_string()))
        })
        .await
    }
}
