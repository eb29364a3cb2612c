//! Which topics exist in a run and which ones each client subscribes to.
//!
//! Topics are `clips.<run>.t<i>`: the `clips` namespace is a `feed` (every
//! message owed to every subscriber, so loss is measurable), and a fresh
//! `<run>` token per run keeps earlier runs' retained messages out of the
//! way. Each client's topics are drawn from a seeded generator, so the
//! coordinator and every worker agree on them without exchanging lists.
//! Popularity follows Zipf's law: rank `r` (1-based) is chosen with weight
//! `1 / r^s`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The topics of one run.
#[derive(Debug, Clone)]
pub struct TopicPlan {
    /// `clips.<run>`: every topic is `<prefix>.t<i>`.
    pub prefix: String,
    pub count: u32,
    /// Cumulative Zipf weights, normalized to end at 1.0.
    cdf: Vec<f64>,
}

impl TopicPlan {
    pub fn new(prefix: &str, count: u32, zipf_s: f64) -> TopicPlan {
        let count = count.max(1);
        let mut cdf = Vec::with_capacity(count as usize);
        let mut sum = 0.0;
        for r in 1..=count {
            sum += 1.0 / f64::from(r).powf(zipf_s);
            cdf.push(sum);
        }
        for w in &mut cdf {
            *w /= sum;
        }
        TopicPlan {
            prefix: prefix.to_string(),
            count,
            cdf,
        }
    }

    pub fn name(&self, index: u32) -> String {
        format!("{}.t{index}", self.prefix)
    }

    /// The topic index of a topic name of this plan.
    pub fn index_of(&self, topic: &[u8]) -> Option<u32> {
        let rest = topic
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b".t")?;
        let (i, tail) = crate::payload::digits(rest)?;
        (tail.is_empty() && i < u64::from(self.count)).then_some(i as u32)
    }

    /// The `per_client` distinct topics of client `client` (fewer when the
    /// run has fewer topics), drawn by popularity.
    pub fn topics_for(&self, seed: u64, client: u64, per_client: u32) -> Vec<u32> {
        let want = per_client.min(self.count) as usize;
        let mut rng = SmallRng::seed_from_u64(seed ^ client.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut chosen: Vec<u32> = Vec::with_capacity(want);
        // Bounded draws; a client that is unlucky with popular topics gets
        // the most popular ones it does not have yet.
        for _ in 0..want * 16 {
            if chosen.len() == want {
                break;
            }
            let x: f64 = rng.random();
            let i = self.cdf.partition_point(|&w| w < x).min(self.cdf.len() - 1) as u32;
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        let mut next = 0;
        while chosen.len() < want {
            if !chosen.contains(&next) {
                chosen.push(next);
            }
            next += 1;
        }
        chosen
    }
}

/// A short random token naming one run, valid as a topic token.
pub fn run_token() -> String {
    format!("lt{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_valid_topics() {
        let p = TopicPlan::new("clips.lt0001", 500, 1.0);
        let name = p.name(499);
        tribune_protocol::validate_topic(&name).unwrap();
        assert_eq!(p.index_of(name.as_bytes()), Some(499));
        assert_eq!(p.index_of(b"clips.lt0001.t500"), None);
        assert_eq!(p.index_of(b"clips.lt0002.t1"), None);
        assert_eq!(p.index_of(b"clips.lt0001.t1x"), None);
    }

    #[test]
    fn picks_distinct_topics_with_zipf_popularity() {
        let p = TopicPlan::new("clips.x", 500, 1.0);
        let mut hits = vec![0u32; 500];
        for client in 0..4000 {
            let t = p.topics_for(7, client, 5);
            assert_eq!(t.len(), 5);
            let mut d = t.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 5, "distinct");
            for i in t {
                hits[i as usize] += 1;
            }
        }
        // Rank 1 is far more popular than rank 100, which beats rank 500.
        assert!(hits[0] > 5 * hits[99], "{} vs {}", hits[0], hits[99]);
        assert!(hits[0] <= 4000);
        // Deterministic for the same seed and client.
        assert_eq!(p.topics_for(7, 3, 5), p.topics_for(7, 3, 5));
        // Never more topics than exist.
        assert_eq!(
            TopicPlan::new("clips.x", 2, 1.0).topics_for(1, 1, 5).len(),
            2
        );
        assert_eq!(run_token().len(), 10);
    }
}
