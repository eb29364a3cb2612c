//! Audience and reaction figures, summed across every node (PROTOCOL.md
//! sections 4 and 10).
//!
//! Every window each node publishes one partial for all its active topics:
//! its local audience (subscribers of the topic's relay) and the reactions it
//! accepted in that window, with its connection count (the admin page,
//! `admin/cluster.rs`, reads the partials too; a node without topics still
//! sends one). Every node keeps the latest audience of each node
//! (a node silent for three windows drops out) and adds up every partial's
//! reactions exactly once, then sends one `stats` frame per topic, encoded
//! once and shared by all local subscribers, when a figure changed. No leader,
//! no extra service: the bus carries the partials.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tribune_protocol::{ServerFrame, Topic, encode_server};

use crate::bus::SideChannel;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbox::Frame;
use crate::registry::Registry;

/// One node's figures for one window, as published on the bus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub node: String,
    /// The node's open connections (for the admin page; absent from nodes
    /// older than it, hence the default).
    #[serde(rename = "c", default)]
    pub connections: u64,
    /// topic → figures: every topic with a relay on the node (the admin
    /// page lists them all); `stats` frames go only to namespaces with an
    /// audience or reactions.
    pub topics: BTreeMap<String, TopicFigures>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicFigures {
    /// Local subscribers.
    #[serde(rename = "a")]
    pub audience: u64,
    /// Reactions accepted in the window.
    #[serde(rename = "r", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, u64>,
}

/// What every node knows of the others, folded into per-topic figures.
///
/// Audiences are kept per (topic, node) with the time they were heard, so a
/// node may send its figures in several parts (a bus message has a size
/// limit) and a node that falls silent drops out topic by topic.
#[derive(Debug, Default)]
pub struct Aggregate {
    /// topic → node → (latest audience, when heard).
    audiences: HashMap<String, HashMap<String, (u64, Instant)>>,
    /// Reactions received since the last window was sent, per topic.
    pending: HashMap<String, BTreeMap<String, u64>>,
    /// What was last sent per topic: (audience, reactions).
    sent: HashMap<String, (u64, BTreeMap<String, u64>)>,
}

impl Aggregate {
    /// Takes in one node's partial (or part of it); its reactions are
    /// counted once, here.
    pub fn absorb(&mut self, partial: Partial, now: Instant) {
        for (topic, figures) in partial.topics {
            if !figures.reactions.is_empty() {
                let pending = self.pending.entry(topic.clone()).or_default();
                for (reaction, n) in figures.reactions {
                    *pending.entry(reaction).or_default() += n;
                }
            }
            self.audiences
                .entry(topic)
                .or_default()
                .insert(partial.node.clone(), (figures.audience, now));
        }
    }

    /// Ends a window: drops figures not heard for `silence` and returns, for
    /// each local topic, the figures to send (only those that changed or
    /// carry reactions). Linear in the topics and figures held.
    pub fn window(
        &mut self,
        topics: &HashSet<&str>,
        now: Instant,
        silence: Duration,
    ) -> Vec<(String, u64, BTreeMap<String, u64>)> {
        // Figures of topics without local subscribers are nobody's here.
        self.audiences.retain(|t, _| topics.contains(t.as_str()));
        self.pending.retain(|t, _| topics.contains(t.as_str()));
        self.sent.retain(|t, _| topics.contains(t.as_str()));
        let mut out = Vec::new();
        for topic in topics {
            let audience: u64 = match self.audiences.get_mut(*topic) {
                Some(nodes) => {
                    nodes.retain(|_, (_, seen)| now.duration_since(*seen) < silence);
                    nodes.values().map(|(a, _)| a).sum()
                }
                None => 0,
            };
            let reactions = self.pending.remove(*topic).unwrap_or_default();
            let changed = match self.sent.get(*topic) {
                Some((a, r)) => *a != audience || *r != reactions || !reactions.is_empty(),
                None => audience > 0 || !reactions.is_empty(),
            };
            if changed {
                self.sent
                    .insert(topic.to_string(), (audience, reactions.clone()));
                out.push((topic.to_string(), audience, reactions));
            }
        }
        out
    }
}

/// Largest serialized part of a node's partial: well under nats-server's
/// default `max_payload` (1 MiB), whatever the number of topics.
const MAX_PART_BYTES: usize = 256 * 1024;

/// Splits a partial into parts that each serialize under `max_bytes`.
pub fn split(partial: Partial, max_bytes: usize) -> Vec<Partial> {
    let mut parts = Vec::new();
    let mut current = Partial {
        node: partial.node.clone(),
        connections: partial.connections,
        topics: BTreeMap::new(),
    };
    let mut size = 0;
    for (topic, figures) in partial.topics {
        // JSON of one entry: "topic":{"a":N,"r":{"reaction":N,...}} and commas.
        let entry = topic.len()
            + 40
            + figures
                .reactions
                .keys()
                .map(|r| r.len() + 26)
                .sum::<usize>();
        if size + entry > max_bytes && !current.topics.is_empty() {
            parts.push(std::mem::replace(
                &mut current,
                Partial {
                    node: partial.node.clone(),
                    connections: partial.connections,
                    topics: BTreeMap::new(),
                },
            ));
            size = 0;
        }
        size += entry;
        current.topics.insert(topic, figures);
    }
    // A node without topics is still heard, with its connections.
    if !current.topics.is_empty() || parts.is_empty() {
        parts.push(current);
    }
    parts
}

/// The node's statistics: local counting and the window loop.
pub struct Stats {
    config: Arc<Config>,
    registry: Arc<Registry>,
    side: Arc<dyn SideChannel>,
    metrics: Arc<Metrics>,
    /// Reactions accepted on this node in the current window.
    reactions: DashMap<Topic, BTreeMap<String, u64>>,
}

impl Stats {
    pub fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        side: Arc<dyn SideChannel>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            registry,
            side,
            metrics,
            reactions: DashMap::new(),
        })
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
            topics.insert(
                relay.topic.to_string(),
                TopicFigures {
                    audience: relay.audience() as u64,
                    reactions: BTreeMap::new(),
                },
            );
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
        let mut last_warning: Option<Instant> = None;
        let mut tick = tokio::time::interval(window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = feed.next() => match item {
                    // Our own partial was absorbed when it was made.
                    Some((node, _)) if node == self.config.node_name => {}
                    Some((_, payload)) => match serde_json::from_slice::<Partial>(&payload) {
                        Ok(p) => aggregate.absorb(p, Instant::now()),
                        Err(e) => tracing::debug!(error = %e, "ignoring a malformed stats partial"),
                    },
                    None => return,
                },
                _ = tick.tick() => {
                    for part in split(self.partial(), MAX_PART_BYTES) {
                        let bytes = Bytes::from(serde_json::to_vec(&part).unwrap_or_default());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(node: &str, topic: &str, audience: u64, reactions: &[(&str, u64)]) -> Partial {
        Partial {
            node: node.into(),
            connections: 0,
            topics: BTreeMap::from([(
                topic.to_string(),
                TopicFigures {
                    audience,
                    reactions: reactions.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
                },
            )]),
        }
    }

    #[test]
    fn audiences_add_up_and_reactions_count_once() {
        let mut agg = Aggregate::default();
        let now = Instant::now();
        let t = HashSet::from(["results.a.b"]);
        agg.absorb(partial("n1", "results.a.b", 10, &[("🔥", 2)]), now);
        agg.absorb(
            partial("n2", "results.a.b", 5, &[("🔥", 1), ("👏", 4)]),
            now,
        );
        let out = agg.window(&t, now, Duration::from_secs(3));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, 15);
        assert_eq!(
            out[0].2,
            BTreeMap::from([("🔥".into(), 3), ("👏".into(), 4)])
        );
        // The next window brings the reactions back to zero (meters decay)...
        let out = agg.window(&t, now, Duration::from_secs(3));
        assert_eq!((out[0].1, out[0].2.is_empty()), (15, true));
        // ...then nothing changes: nothing is sent.
        assert!(agg.window(&t, now, Duration::from_secs(3)).is_empty());
        // ...and the reactions were not counted a second time.
        agg.absorb(partial("n1", "results.a.b", 10, &[]), now);
        assert!(agg.window(&t, now, Duration::from_secs(3)).is_empty());
    }

    #[test]
    fn partials_split_under_the_size_limit_and_add_up() {
        let mut big = Partial {
            node: "n1".into(),
            connections: 7,
            topics: BTreeMap::new(),
        };
        for i in 0..5000 {
            let topic = format!("results.{}.t{i}", "x".repeat(150));
            big.topics.insert(
                topic,
                TopicFigures {
                    audience: 1,
                    reactions: BTreeMap::from([("🔥".into(), 2)]),
                },
            );
        }
        let parts = split(big.clone(), MAX_PART_BYTES);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.connections == 7));
        // A node without topics is heard all the same.
        let idle = Partial {
            node: "n2".into(),
            connections: 3,
            topics: BTreeMap::new(),
        };
        assert_eq!(split(idle.clone(), MAX_PART_BYTES), [idle]);
        for p in &parts {
            assert!(
                serde_json::to_vec(p).unwrap().len() <= MAX_PART_BYTES,
                "each part fits"
            );
        }
        let topics: HashSet<&str> = big.topics.keys().map(String::as_str).collect();
        let mut agg = Aggregate::default();
        let now = Instant::now();
        for p in parts {
            agg.absorb(p, now);
        }
        let out = agg.window(&topics, now, Duration::from_secs(3));
        assert_eq!(out.len(), 5000);
        assert!(out.iter().all(|(_, a, r)| *a == 1 && r["🔥"] == 2));
    }

    #[test]
    fn silent_nodes_drop_out() {
        let mut agg = Aggregate::default();
        let t0 = Instant::now();
        let t = HashSet::from(["results.a.b"]);
        agg.absorb(partial("n1", "results.a.b", 10, &[]), t0);
        agg.absorb(
            partial("n2", "results.a.b", 5, &[]),
            t0 + Duration::from_secs(2),
        );
        let out = agg.window(&t, t0 + Duration::from_millis(3500), Duration::from_secs(3));
        assert_eq!(out[0].1, 5, "n1 was silent for three windows");
    }
}
