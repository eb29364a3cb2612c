//! What a node publishes each window (a [`Partial`]) and how every node adds
//! them up ([`Aggregate`]): pure logic, no bus, testable without sockets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One node's figures for one window, as published on the bus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub node: String,
    /// This process's random id: with `n`, what makes a replayed partial
    /// recognisable (`seal.rs`).
    #[serde(default)]
    pub boot: u64,
    /// Grows with every partial the process publishes.
    #[serde(default)]
    pub n: u64,
    /// When it was published, Unix milliseconds: a stale one is refused.
    #[serde(default)]
    pub at: u64,
    /// topic → figures.
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
/// limit) and a node that falls silent drops out topic by topic. Sums
/// saturate: no figure wraps around, whatever a partial says.
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
                    let count = pending.entry(reaction).or_default();
                    *count = count.saturating_add(n);
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
                    nodes
                        .values()
                        .fold(0u64, |sum, (a, _)| sum.saturating_add(*a))
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

/// Splits a partial into parts that each serialize under `max_bytes`.
pub fn split(partial: Partial, max_bytes: usize) -> Vec<Partial> {
    let empty = Partial {
        topics: BTreeMap::new(),
        ..partial.clone()
    };
    let mut parts = Vec::new();
    let mut current = empty.clone();
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
            parts.push(std::mem::replace(&mut current, empty.clone()));
            size = 0;
        }
        size += entry;
        current.topics.insert(topic, figures);
    }
    if !current.topics.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most a serialized part may take in these tests.
    const PART_BYTES: usize = 256 * 1024;

    fn partial(node: &str, topic: &str, audience: u64, reactions: &[(&str, u64)]) -> Partial {
        Partial {
            node: node.into(),
            topics: BTreeMap::from([(
                topic.to_string(),
                TopicFigures {
                    audience,
                    reactions: reactions.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
                },
            )]),
            ..Partial::default()
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
    fn sums_saturate_instead_of_wrapping() {
        let mut agg = Aggregate::default();
        let now = Instant::now();
        let t = HashSet::from(["results.a.b"]);
        agg.absorb(
            partial("n1", "results.a.b", u64::MAX, &[("🔥", u64::MAX)]),
            now,
        );
        agg.absorb(partial("n2", "results.a.b", 1, &[("🔥", 1)]), now);
        let out = agg.window(&t, now, Duration::from_secs(3));
        assert_eq!(out[0].1, u64::MAX, "not wrapped to 0");
        assert_eq!(out[0].2["🔥"], u64::MAX);
    }

    #[test]
    fn partials_split_under_the_size_limit_and_add_up() {
        let mut big = Partial {
            node: "n1".into(),
            boot: 7,
            ..Partial::default()
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
        let parts = split(big.clone(), PART_BYTES);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(
                serde_json::to_vec(p).unwrap().len() <= PART_BYTES,
                "each part fits"
            );
            assert_eq!(
                (p.node.as_str(), p.boot),
                ("n1", 7),
                "every part says whose"
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
