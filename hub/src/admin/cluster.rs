//! The cluster as the admin page shows it, built from the statistics
//! partials every node publishes each window (`stats.rs`): node names,
//! their connections and topics, when each was last heard, and every topic's
//! audience summed across nodes. Read-only: it listens to the same feed the
//! nodes' `stats` frames come from and changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;

use crate::bus::SideChannel;
use crate::stats::{Opener, Partial};

/// A node not heard for this long is dropped from the page (it shows as
/// silent before that, with how long ago it was heard).
const FORGET_NODE: Duration = Duration::from_secs(600);

/// What is known of one node.
#[derive(Debug)]
struct Heard {
    connections: u64,
    /// topic → (local audience, when heard).
    topics: HashMap<String, (u64, Instant)>,
    last_seen: Instant,
}

/// The nodes heard, kept current by [`Cluster::run`].
#[derive(Debug, Default)]
pub struct Cluster {
    nodes: Mutex<HashMap<String, Heard>>,
}

/// One node's row on the page.
#[derive(Debug, Serialize, PartialEq)]
pub struct NodeRow {
    pub name: String,
    pub connections: u64,
    pub topics: usize,
    pub last_seen_ms: u64,
    /// Not heard for three windows: gone, or cut off from the bus.
    pub silent: bool,
}

/// One topic's row: its audience over every node that reported it.
#[derive(Debug, Serialize, PartialEq)]
pub struct TopicRow {
    pub topic: String,
    pub audience: u64,
    pub nodes: usize,
}

/// The page's data.
#[derive(Debug, Serialize)]
pub struct View {
    pub nodes: Vec<NodeRow>,
    /// By audience, largest first (then by name).
    pub topics: Vec<TopicRow>,
}

impl Cluster {
    /// Takes in one partial (or one part of a node's partial).
    pub fn absorb(&self, partial: Partial, now: Instant) {
        let mut nodes = self.nodes.lock();
        let heard = nodes.entry(partial.node).or_insert_with(|| Heard {
            connections: 0,
            topics: HashMap::new(),
            last_seen: now,
        });
        heard.connections = partial.connections;
        heard.last_seen = now;
        for (topic, figures) in partial.topics {
            heard.topics.insert(topic, (figures.audience, now));
        }
    }

    /// The view now; a topic a node stopped reporting for `silence` (three
    /// windows) no longer counts.
    pub fn view(&self, now: Instant, silence: Duration) -> View {
        let mut nodes = self.nodes.lock();
        nodes.retain(|_, h| now.duration_since(h.last_seen) < FORGET_NODE);
        let mut rows = Vec::new();
        let mut topics: HashMap<&str, (u64, usize)> = HashMap::new();
        for (name, heard) in nodes.iter_mut() {
            heard
                .topics
                .retain(|_, (_, seen)| now.duration_since(*seen) < silence);
            let since = now.duration_since(heard.last_seen);
            rows.push(NodeRow {
                name: name.clone(),
                connections: heard.connections,
                topics: heard.topics.len(),
                last_seen_ms: since.as_millis() as u64,
                silent: since >= silence,
            });
            for (topic, (audience, _)) in &heard.topics {
                let t = topics.entry(topic.as_str()).or_default();
                t.0 += audience;
                t.1 += 1;
            }
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let mut topics: Vec<TopicRow> = topics
            .into_iter()
            .map(|(topic, (audience, nodes))| TopicRow {
                topic: topic.to_string(),
                audience,
                nodes,
            })
            .collect();
        topics.sort_by(|a, b| b.audience.cmp(&a.audience).then(a.topic.cmp(&b.topic)));
        View {
            nodes: rows,
            topics,
        }
    }

    /// Listens to the partials for the node's life (or until the page's
    /// state is dropped); retries the feed while the bus refuses it.
    pub async fn run(
        cluster: Weak<Cluster>,
        side: Arc<dyn SideChannel>,
        window: Duration,
        mut opener: Opener,
    ) {
        let mut feed = loop {
            match side.stats_feed().await {
                Ok(f) => break f,
                Err(e) => {
                    tracing::debug!(error = %e, "admin: stats feed unavailable, retrying");
                    tokio::time::sleep(window).await;
                }
            }
        };
        while let Some((node, payload)) = feed.next().await {
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            // Unsealed, forged, replayed or stale partials never reach the
            // page (the statistics count and log them).
            if let Ok(opened) = opener.open(&node, &payload) {
                cluster.absorb(opened.partial, Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stats::TopicFigures;

    fn partial(node: &str, connections: u64, topics: &[(&str, u64)]) -> Partial {
        Partial {
            node: node.into(),
            connections,
            topics: topics
                .iter()
                .map(|(t, a)| {
                    (
                        t.to_string(),
                        TopicFigures {
                            audience: *a,
                            reactions: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
            ..Partial::default()
        }
    }

    #[test]
    fn nodes_and_topics_by_audience_across_nodes() {
        let c = Cluster::default();
        let t0 = Instant::now();
        let silence = Duration::from_secs(3);
        c.absorb(partial("b", 5, &[("results.x.y", 3), ("clips.x", 2)]), t0);
        c.absorb(partial("a", 4, &[("results.x.y", 4)]), t0);
        // A second part of a's partial, same window.
        c.absorb(partial("a", 4, &[("clips.z", 9)]), t0);
        let v = c.view(t0 + Duration::from_secs(1), silence);
        let names: Vec<(&str, u64, usize, bool)> = v
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.connections, n.topics, n.silent))
            .collect();
        assert_eq!(names, [("a", 4, 2, false), ("b", 5, 2, false)]);
        let topics: Vec<(&str, u64, usize)> = v
            .topics
            .iter()
            .map(|t| (t.topic.as_str(), t.audience, t.nodes))
            .collect();
        assert_eq!(
            topics,
            [("clips.z", 9, 1), ("results.x.y", 7, 2), ("clips.x", 2, 1)]
        );

        // b goes quiet: silent, its topics no longer count; a goes on.
        let t4 = t0 + Duration::from_secs(4);
        c.absorb(partial("a", 6, &[("results.x.y", 4)]), t4);
        let v = c.view(t4, silence);
        assert!(
            v.nodes
                .iter()
                .any(|n| n.name == "b" && n.silent && n.topics == 0)
        );
        assert_eq!(v.topics[0].topic, "results.x.y");
        assert_eq!(v.topics[0].audience, 4);
        assert_eq!(v.topics.len(), 1, "{:?}", v.topics);
        // Forgotten after ten minutes.
        let later = t4 + FORGET_NODE;
        assert!(c.view(later, silence).nodes.is_empty());
    }
}
