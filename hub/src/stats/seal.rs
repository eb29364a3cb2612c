//! Statistics partials on the bus, sealed by the node that made them and
//! opened by the others, so that only hubs of this cluster produce figures
//! that fans see (PROTOCOL.md section 10).
//!
//! On the wire a sealed partial is `<HMAC-SHA256, 64 hex digits>\n<JSON>`,
//! the MAC taken with the cluster's `stats.key` over the JSON bytes; without
//! a key it is the JSON alone. Opening checks, cheapest first: the size, the
//! MAC (in constant time), the JSON, that the node named in the subject is
//! the partial's, that it is fresh (`at` within [`FRESH`] of this node's
//! clock) and no replay (`n` grows within a process's `boot`), and that no
//! figure is beyond what a node can hold. Then it drops the figures of
//! topics whose namespace shows none, and reactions the namespace does not
//! allow. A partial that fails a check changes nothing; the caller counts
//! it by reason.
//!
//! The embedded bus carries only this process's partials: there a partial
//! needs no MAC. On NATS, a node without a key cannot tell a cluster's
//! partial from anyone's, and takes none.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tribune_protocol::Topic;

use super::aggregate::Partial;
use crate::config::Config;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Hex digits of a MAC, before the newline.
const TAG_HEX: usize = 64;

/// The most bytes a sealed partial may take (a node splits its partial in
/// parts of 256 KiB).
const MAX_SEALED_BYTES: usize = 1024 * 1024;

/// The most audience one node may report for one topic: fifty times what a
/// node is designed to hold (200,000 connections). Beyond it the partial is
/// refused as a whole: it is a bug or an attack, not a crowd.
pub const MAX_NODE_AUDIENCE: u64 = 10_000_000;

/// The most of one reaction one node may report in one window.
pub const MAX_NODE_REACTIONS: u64 = 100_000_000;

/// How far a partial's `at` may be from this node's clock (clock skew
/// between nodes, a partial's time on the bus). Older ones are refused: a
/// recorded partial cannot be played again later.
pub const FRESH: Duration = Duration::from_secs(30);

/// Why a partial was refused as a whole (the `reason` label of
/// `tribune_stats_partials_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// On NATS without `stats.key`: no partial of another node can be told
    /// from a forgery.
    NoKey,
    /// Not sealed, on a bus that needs it.
    Unsigned,
    /// The MAC does not match: another key, or altered.
    BadSignature,
    /// Too large, or not a partial.
    Malformed,
    /// The subject names another node than the partial.
    NodeMismatch,
    /// `at` too far from this node's clock.
    Stale,
    /// Already taken (`n` not above the last one of its process).
    Replayed,
    /// A figure beyond what a node can hold.
    Overflow,
}

impl Rejected {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::NoKey => "no_key",
            Rejected::Unsigned => "unsigned",
            Rejected::BadSignature => "bad_signature",
            Rejected::Malformed => "malformed",
            Rejected::NodeMismatch => "node_mismatch",
            Rejected::Stale => "stale",
            Rejected::Replayed => "replayed",
            Rejected::Overflow => "overflow",
        }
    }
}

/// A partial that passed every check, and what was dropped from it.
#[derive(Debug, PartialEq)]
pub struct Opened {
    pub partial: Partial,
    /// Figures of topics whose namespace does not exist or shows none.
    pub topics_dropped: u64,
    /// Reactions the topic's namespace does not allow.
    pub reactions_dropped: u64,
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seals this process's partials.
pub struct Sealer {
    /// The cluster key, ready to clone per partial; `None`: partials go out
    /// unsealed (the embedded bus, or NATS without a key).
    mac: Option<HmacSha256>,
    /// This process's random id.
    boot: u64,
    /// The last `n` given.
    last: AtomicU64,
}

impl Sealer {
    pub fn new(key: Option<&[u8]>) -> Sealer {
        Sealer {
            mac: key.map(keyed),
            boot: rand::random(),
            last: AtomicU64::new(0),
        }
    }

    /// The bytes to publish for `partial`, stamped with this process's
    /// `boot`, the next `n` and the time.
    pub fn seal(&self, mut partial: Partial) -> Bytes {
        partial.boot = self.boot;
        partial.n = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        partial.at = now_ms();
        let json = serde_json::to_vec(&partial).expect("a partial always serializes");
        seal_json(self.mac.as_ref(), json)
    }
}

/// Opens other nodes' partials; keeps what recognises a replay.
pub struct Opener {
    mac: Option<HmacSha256>,
    /// The embedded bus: nothing but this process publishes there.
    trusted_bus: bool,
    /// Namespaces: which topics show figures, which reactions they allow.
    config: Arc<Config>,
    /// (node, boot) → (last `n` taken, when): a partial with `n` not above
    /// it was taken before. Forgotten once [`FRESH`] makes replays stale.
    seen: HashMap<(String, u64), (u64, Instant)>,
    /// When `seen` was last pruned.
    pruned: Option<Instant>,
}

impl Opener {
    pub fn new(key: Option<&[u8]>, trusted_bus: bool, config: Arc<Config>) -> Opener {
        Opener {
            mac: key.map(keyed),
            trusted_bus,
            config,
            seen: HashMap::new(),
            pruned: None,
        }
    }

    /// Opens a partial that arrived on the subject of `node`.
    pub fn open(&mut self, node: &str, payload: &[u8]) -> Result<Opened, Rejected> {
        self.open_at(node, payload, now_ms(), Instant::now())
    }

    fn open_at(
        &mut self,
        node: &str,
        payload: &[u8],
        now_ms: u64,
        now: Instant,
    ) -> Result<Opened, Rejected> {
        if payload.len() > MAX_SEALED_BYTES {
            return Err(Rejected::Malformed);
        }
        let json = self.verify(payload)?;
        let partial: Partial = serde_json::from_slice(json).map_err(|_| Rejected::Malformed)?;
        if partial.node != node {
            return Err(Rejected::NodeMismatch);
        }
        if partial.at.abs_diff(now_ms) > FRESH.as_millis() as u64 {
            return Err(Rejected::Stale);
        }
        let overflow = partial.topics.values().any(|f| {
            f.audience > MAX_NODE_AUDIENCE || f.reactions.values().any(|n| *n > MAX_NODE_REACTIONS)
        });
        if overflow {
            return Err(Rejected::Overflow);
        }
        self.check_replay(&partial, now)?;
        Ok(self.keep_allowed(partial))
    }

    /// The JSON of a payload whose MAC checks out (or that needs none).
    fn verify<'a>(&self, payload: &'a [u8]) -> Result<&'a [u8], Rejected> {
        verify_sealed(self.mac.as_ref(), self.trusted_bus, payload)
    }

    fn check_replay(&mut self, partial: &Partial, now: Instant) -> Result<(), Rejected> {
        if self.pruned.is_none_or(|t| now.duration_since(t) >= FRESH) {
            self.seen
                .retain(|_, (_, when)| now.duration_since(*when) < FRESH * 2);
            self.pruned = Some(now);
        }
        let entry = self
            .seen
            .entry((partial.node.clone(), partial.boot))
            .or_insert((0, now));
        if partial.n <= entry.0 {
            return Err(Rejected::Replayed);
        }
        *entry = (partial.n, now);
        Ok(())
    }

    /// Drops figures of topics that show none, and reactions their
    /// namespace does not allow.
    fn keep_allowed(&self, mut partial: Partial) -> Opened {
        let (mut topics_dropped, mut reactions_dropped) = (0, 0);
        partial.topics.retain(|topic, figures| {
            let ns = Topic::new(topic)
                .ok()
                .and_then(|t| self.config.namespace(t.namespace()).cloned());
            let Some(ns) = ns.filter(|ns| ns.audience || !ns.reactions.is_empty()) else {
                topics_dropped += 1;
                return false;
            };
            figures.reactions.retain(|reaction, _| {
                let allowed = ns.reactions.iter().any(|r| r == reaction);
                reactions_dropped += u64::from(!allowed);
                allowed
            });
            true
        });
        Opened {
            partial,
            topics_dropped,
            reactions_dropped,
        }
    }
}

/// HMAC-SHA256 with `key` (any length is accepted by HMAC; the config asks
/// for at least 32 bytes).
/// `<MAC hex>\n<json>` with `mac`, or the JSON alone without a key. Also
/// for the other side-channel messages sealed with the cluster key.
pub(crate) fn seal_json(mac: Option<&HmacSha256>, json: Vec<u8>) -> Bytes {
    let Some(mac) = mac else {
        return Bytes::from(json);
    };
    let mut mac = mac.clone();
    mac.update(&json);
    let tag = mac.finalize().into_bytes();
    let mut out = Vec::with_capacity(TAG_HEX + 1 + json.len());
    for byte in tag {
        out.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(&json);
    Bytes::from(out)
}

/// The JSON of a sealed payload whose MAC checks out under `mac` (or that
/// needs none: on a `trusted_bus`, the embedded one). Also for the other
/// side-channel messages sealed with the cluster key (operators' control
/// messages).
pub(crate) fn verify_sealed<'a>(
    mac: Option<&HmacSha256>,
    trusted_bus: bool,
    payload: &'a [u8],
) -> Result<&'a [u8], Rejected> {
    let sealed = payload.get(TAG_HEX) == Some(&b'\n')
        && payload[..TAG_HEX].iter().all(u8::is_ascii_hexdigit);
    if !sealed {
        return match (trusted_bus, &mac) {
            (true, _) => Ok(payload),
            (false, None) => Err(Rejected::NoKey),
            (false, Some(_)) => Err(Rejected::Unsigned),
        };
    }
    let (tag, json) = (&payload[..TAG_HEX], &payload[TAG_HEX + 1..]);
    let Some(mac) = mac else {
        return if trusted_bus {
            Ok(json)
        } else {
            Err(Rejected::NoKey)
        };
    };
    let tag: Vec<u8> = tag
        .chunks(2)
        .map(|pair| {
            let hex = std::str::from_utf8(pair).unwrap_or("zz");
            u8::from_str_radix(hex, 16).unwrap_or(0)
        })
        .collect();
    let mut mac = mac.clone();
    mac.update(json);
    mac.verify_slice(&tag)
        .map(|()| json)
        .map_err(|_| Rejected::BadSignature)
}

pub(crate) fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stats::aggregate::TopicFigures;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

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

    fn opener(key: Option<&[u8]>, trusted_bus: bool) -> Opener {
        Opener::new(key, trusted_bus, Arc::new(Config::default()))
    }

    #[test]
    fn a_sealed_partial_opens_with_the_same_key_only() {
        let sealer = Sealer::new(Some(KEY));
        let sealed = sealer.seal(partial("n1", "results.a.b", 10, &[("🔥", 2)]));
        let opened = opener(Some(KEY), false).open("n1", &sealed).unwrap();
        assert_eq!(opened.partial.topics["results.a.b"].audience, 10);
        assert_eq!((opened.topics_dropped, opened.reactions_dropped), (0, 0));
        let other = b"another key of thirty-two bytes!";
        assert_eq!(
            opener(Some(other), false).open("n1", &sealed),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            opener(None, false).open("n1", &sealed),
            Err(Rejected::NoKey)
        );
    }

    #[test]
    fn an_altered_or_unsigned_partial_is_refused_on_nats() {
        let sealed = Sealer::new(Some(KEY)).seal(partial("n1", "results.a.b", 10, &[]));
        let mut altered = sealed.to_vec();
        let at = altered.windows(6).position(|w| w == b"\"a\":10").unwrap();
        altered[at + 4] = b'9';
        assert_eq!(
            opener(Some(KEY), false).open("n1", &altered),
            Err(Rejected::BadSignature)
        );
        let unsigned = Sealer::new(None).seal(partial("n1", "results.a.b", 10, &[]));
        assert_eq!(
            opener(Some(KEY), false).open("n1", &unsigned),
            Err(Rejected::Unsigned)
        );
        // The embedded bus carries this process's partials only.
        assert!(opener(None, true).open("n1", &unsigned).is_ok());
    }

    #[test]
    fn the_subject_must_name_the_partial_node() {
        let sealed = Sealer::new(Some(KEY)).seal(partial("n1", "results.a.b", 10, &[]));
        assert_eq!(
            opener(Some(KEY), false).open("evil", &sealed),
            Err(Rejected::NodeMismatch)
        );
    }

    #[test]
    fn replays_and_stale_partials_are_refused() {
        let sealer = Sealer::new(Some(KEY));
        let first = sealer.seal(partial("n1", "results.a.b", 10, &[("🔥", 5)]));
        let second = sealer.seal(partial("n1", "results.a.b", 11, &[]));
        let mut o = opener(Some(KEY), false);
        let now = Instant::now();
        let t = now_ms();
        assert!(o.open_at("n1", &first, t, now).is_ok());
        assert_eq!(o.open_at("n1", &first, t, now), Err(Rejected::Replayed));
        assert!(o.open_at("n1", &second, t, now).is_ok());
        assert_eq!(o.open_at("n1", &first, t, now), Err(Rejected::Replayed));
        // Another process of the same node starts its own count.
        let restarted = Sealer::new(Some(KEY)).seal(partial("n1", "results.a.b", 3, &[]));
        assert!(o.open_at("n1", &restarted, t, now).is_ok());
        // Played back later than FRESH, even to a node that never saw it.
        let later = t + FRESH.as_millis() as u64 + 1;
        assert_eq!(
            opener(Some(KEY), false).open_at("n1", &first, later, now),
            Err(Rejected::Stale)
        );
    }

    #[test]
    fn figures_beyond_a_node_refuse_the_partial() {
        let sealer = Sealer::new(Some(KEY));
        let mut o = opener(Some(KEY), false);
        for p in [
            partial("n1", "results.a.b", MAX_NODE_AUDIENCE + 1, &[]),
            partial("n1", "results.a.b", u64::MAX, &[]),
            partial("n1", "results.a.b", 1, &[("🔥", MAX_NODE_REACTIONS + 1)]),
        ] {
            assert_eq!(o.open("n1", &sealer.seal(p)), Err(Rejected::Overflow));
        }
        let at_caps = partial(
            "n1",
            "results.a.b",
            MAX_NODE_AUDIENCE,
            &[("🔥", MAX_NODE_REACTIONS)],
        );
        assert!(o.open("n1", &sealer.seal(at_caps)).is_ok());
    }

    #[test]
    fn only_allowed_topics_and_reactions_are_kept() {
        let sealer = Sealer::new(Some(KEY));
        let mut p = partial("n1", "results.a.b", 10, &[("🔥", 2), ("💩", 1000)]);
        for topic in ["clips.a.b", "nosuch.a.b", "not a topic"] {
            p.topics.insert(
                topic.into(),
                TopicFigures {
                    audience: 5,
                    reactions: BTreeMap::new(),
                },
            );
        }
        let opened = opener(Some(KEY), false)
            .open("n1", &sealer.seal(p))
            .unwrap();
        assert_eq!(
            opened.partial.topics.keys().collect::<Vec<_>>(),
            ["results.a.b"],
            "clips show no figures; nosuch is no namespace"
        );
        assert_eq!(
            opened.partial.topics["results.a.b"].reactions,
            BTreeMap::from([("🔥".to_string(), 2)])
        );
        assert_eq!((opened.topics_dropped, opened.reactions_dropped), (3, 1));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let mut o = opener(Some(KEY), true);
        assert_eq!(o.open("n1", b"{not json"), Err(Rejected::Malformed));
        let huge = vec![b' '; MAX_SEALED_BYTES + 1];
        assert_eq!(o.open("n1", &huge), Err(Rejected::Malformed));
    }
}
