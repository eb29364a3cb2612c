//! Audience and reaction figures, summed across every node (PROTOCOL.md
//! sections 4 and 10).
//!
//! Every window each node publishes one partial for all its active topics:
//! its local audience (subscribers of the topic's relay) and the reactions it
//! accepted in that window. Every node keeps the latest audience of each node
//! (a node silent for three windows drops out) and adds up every partial's
//! reactions exactly once, then sends one `stats` frame per topic, encoded
//! once and shared by all local subscribers, when a figure changed. No leader,
//! no extra service: the bus carries the partials.
//!
//! Anyone with a bus connection can publish on a node's statistics subject,
//! so partials are sealed with the cluster's key and checked before they
//! count (`seal`); a refused one is counted by reason and never changes what
//! fans see.
//!
//! Layout:
//! - this file: [`Stats`], local counting and the window loop;
//! - `aggregate`: [`Partial`] and the sums across nodes ([`Aggregate`]);
//! - `seal`: sealing this node's partials, opening the others'.

mod aggregate;
pub(crate) mod seal;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::StreamExt;
use tribune_protocol::{ServerFrame, Topic, encode_server};

use aggregate::{Aggregate, split};
pub use aggregate::{Partial, TopicFigures};
pub use seal::Opener;
use seal::Sealer;

use crate::bus::SideChannel;
use crate::config::Config;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::outbox::Frame;
use crate::registry::Registry;

/// Largest serialized part of a node's partial: well under nats-server's
/// default `max_payload` (1 MiB), whatever the number of topics.
const MAX_PART_BYTES: usize = 256 * 1024;

/// Refused partials are logged at most once every few seconds: anyone on
/// the bus could otherwise flood the log.
static REFUSED_LOG: LogLimit = LogLimit::new(Duration::from_secs(5));

/// The node's statistics: local counting and the window loop.
pub struct Stats {
    config: Arc<Config>,
    registry: Arc<Registry>,
    side: Arc<dyn SideChannel>,
    metrics: Arc<Metrics>,
    /// Reactions accepted on this node in the current window.
    reactions: DashMap<Topic, BTreeMap<String, u64>>,
    /// Seals what this node publishes (its partials, the demo's crowd).
    sealer: Sealer,
    /// The cluster key (`stats.key`), for the opener the window loop makes.
    key: Option<Vec<u8>>,
}

impl Stats {
    pub fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        side: Arc<dyn SideChannel>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let key = match config.stats.key_bytes() {
            Ok(key) => key,
            Err(e) => {
                // Checked when the config was loaded: the file changed since.
                tracing::error!(error = %e, "stats key unreadable: partials go out unsealed");
                None
            }
        };
        if key.is_none() && config.bus.url.is_some() {
            tracing::warn!(
                "stats.key is not set: other nodes' statistics partials cannot be \
                 authenticated and are ignored; fans see this node's audience and \
                 reactions only"
            );
        }
        Arc::new(Self {
            sealer: Sealer::new(key.as_deref()),
            key,
            config,
            registry,
            side,
            metrics,
            reactions: DashMap::new(),
        })
    }

    /// `partial` as this node publishes it: stamped and sealed with the
    /// cluster key (the demo's simulated crowd goes out the same way).
    pub fn seal(&self, partial: Partial) -> bytes::Bytes {
        self.sealer.seal(partial)
    }

    /// Counts one accepted reaction.
    pub fn react(&self, topic: &Topic, reaction: &str) {
        let mut entry = self.reactions.entry(topic.clone()).or_default();
        match entry.get_mut(reaction) {
            Some(n) => *n += 1,
            None => {
                entry.insert(reaction.to_string(), 1);
            }
        }
    }

    fn engaged(&self, topic: &Topic) -> bool {
        self.config
            .namespace(topic.namespace())
            .is_some_and(|ns| ns.audience || !ns.reactions.is_empty())
    }

    /// This node's partial for the window that ends now (resets the counts).
    fn partial(&self) -> Partial {
        let mut topics = BTreeMap::new();
        for relay in self.registry.relays() {
            if self.engaged(&relay.topic) {
                topics.insert(
                    relay.topic.to_string(),
                    TopicFigures {
                        audience: relay.audience() as u64,
                        reactions: BTreeMap::new(),
                    },
                );
            }
        }
        let reacted: Vec<Topic> = self.reactions.iter().map(|e| e.key().clone()).collect();
        for topic in reacted {
            if let Some((topic, counts)) = self.reactions.remove(&topic) {
                topics.entry(topic.to_string()).or_default().reactions = counts;
            }
        }
        Partial {
            node: self.config.node_name.clone(),
            connections: self.metrics.connections.get().max(0) as u64,
            topics,
            ..Partial::default()
        }
    }

    /// The window loop; runs for the node's life.
    pub async fn run(self: Arc<Self>) {
        let window = Duration::from_millis(self.config.stats.window_ms);
        let mut feed = loop {
            match self.side.stats_feed().await {
                Ok(f) => break f,
                Err(e) => {
                    tracing::warn!(error = %e, "stats feed unavailable, retrying");
                    tokio::time::sleep(window).await;
                }
            }
        };
        let mut aggregate = Aggregate::default();
        // Only this process publishes on the embedded bus.
        let trusted_bus = self.config.bus.url.is_none();
        let mut opener = Opener::new(self.key.as_deref(), trusted_bus, self.config.clone());
        let mut last_warning: Option<Instant> = None;
        let mut tick = tokio::time::interval(window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = feed.next() => match item {
                    // Our own partial was absorbed when it was made.
                    Some((node, _)) if node == self.config.node_name => {}
                    Some((node, payload)) => match opener.open(&node, &payload) {
                        Ok(opened) => {
                            self.metrics.stats_dropped("topic_not_allowed", opened.topics_dropped);
                            self.metrics.stats_dropped("reaction_not_allowed", opened.reactions_dropped);
                            aggregate.absorb(opened.partial, Instant::now());
                        }
                        Err(why) => {
                            self.metrics.stats_rejected(why.as_str());
                            if let Some(held_back) = REFUSED_LOG.allow() {
                                tracing::warn!(node = %node.escape_debug(), reason = why.as_str(), held_back,
                                    "refused a statistics partial: it changes nothing fans see");
                            }
                        }
                    },
                    None => return,
                },
                _ = tick.tick() => {
                    for part in split(self.partial(), MAX_PART_BYTES) {
                        let bytes = self.sealer.seal(part.clone());
                        if let Err(e) = self.side.publish_stats(&self.config.node_name, bytes).await {
                            self.metrics.stats_partials_failed.inc();
                            if last_warning.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(10)) {
                                last_warning = Some(Instant::now());
                                tracing::warn!(error = %e, "statistics partial not published: other nodes miss this node's figures");
                            }
                        }
                        // Local figures count in this very window, without
                        // waiting for the bus to bring them back.
                        aggregate.absorb(part, Instant::now());
                    }
                    self.send(&mut aggregate, window);
                }
            }
        }
    }

    fn send(&self, aggregate: &mut Aggregate, window: Duration) {
        let relays: HashMap<String, _> = self
            .registry
            .relays()
            .into_iter()
            .filter(|r| self.engaged(&r.topic))
            .map(|r| (r.topic.to_string(), r))
            .collect();
        let topics: HashSet<&str> = relays.keys().map(String::as_str).collect();
        let figures = aggregate.window(&topics, Instant::now(), window * 3);
        for (topic, audience, reactions) in figures {
            let Some(relay) = relays.get(&topic) else {
                continue;
            };
            let ns = self.config.namespace(relay.topic.namespace());
            let show_audience = ns.is_some_and(|n| n.audience);
            let frame = Frame::from(encode_server(&ServerFrame::Stats(
                tribune_protocol::Stats {
                    topic,
                    audience: if show_audience { audience } else { 0 },
                    reactions,
                    window_ms: window.as_millis() as u64,
                },
            )));
            let n = relay.broadcast_stats(&frame);
            self.metrics.stats_sent.inc_by(n as u64);
        }
    }
}
