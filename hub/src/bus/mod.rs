//! What a hub node needs from the message bus, in two traits, and the
//! contract every implementation keeps:
//! - [`Bus`], the stored stream: sequenced messages, live feeds, history
//!   reads, publishing into the stream. Its contract is below.
//! - [`SideChannel`], what passes between nodes and out to integrations
//!   beside the stream: fans' publications, statistics gossip. Its contract
//!   is in its own doc.
//!
//! One object implements both; a caller holds the face it needs
//! (`Arc<dyn Bus>` for relays and the registry, `Arc<dyn SideChannel>` for
//! sessions and statistics), so a test double of one is not a page of
//! delegation to the other.
//!
//! Two implementations: [`memory::MemoryBus`], the embedded in-process bus, and
//! [`nats::NatsBus`], NATS JetStream. Both run the same conformance suite
//! (`hub/src/bus/conformance.rs`), so the embedded default cannot drift from
//! production.
//!
//! # The `Bus` contract
//!
//! - **Sequence.** Every stored message gets a `seq` from one counter shared by
//!   all topics of an epoch (the stream sequence): per topic it grows, with holes.
//! - **prev.** A stored message's `prev` is the `seq` of the last message still
//!   stored on the same topic when it was stored (0 if none). After expiry or
//!   purge it may be lower than a `seq` the hub saw before: removal, not loss.
//! - **ts.** When the bus stored the message, in Unix milliseconds.
//! - **Payload.** `data` is the published bytes, untouched. The bus does not
//!   validate it; the relay drops what is not JSON or too large.
//! - **Retention.** The bus retains at least the namespace's depth of latest
//!   messages of every topic (`retained`, or `retained_secs × expected_rate`
//!   when more; it may retain more): time retention is the relays', sized
//!   in messages here. Messages of a topic are
//!   dropped oldest first.
//! - **Epoch.** Names one life of the sequence. A bus whose sequence restarted
//!   (a recreated stream, a restarted embedded bus) has a new epoch; `seq`
//!   values of different epochs are unrelated. [`BusStatus::epoch`] always holds
//!   the current one.
//! - **Only stored messages are delivered.** Everything a [`LiveFeed`] or a
//!   history read yields was stored by the bus: nothing a third party sends
//!   beside it (on NATS, a publication on any subject, headers included) can
//!   pass for a stored message.
//! - **Live delivery is at most once.** A [`LiveFeed`] yields the topic's new
//!   messages in `seq` order, but may miss some (a reconnect, a dropped
//!   delivery). The relay detects gaps from `prev` and repairs them with
//!   [`Bus::after`]; after each reconnect ([`BusStatus::generation`] grows) and
//!   periodically it compares [`Bus::last_seqs`] with what it has seen.
//! - **A feed's first `prev` may be unknown.** The first message a feed
//!   yields may carry `prev` 0 although older messages are stored: whoever
//!   opens a feed reads what was stored before it (the relay reads history
//!   after opening one, and repairs after reopening one). Every later message
//!   carries its exact `prev`.
//! - **A feed may end.** A bus ends a feed it can no longer vouch for (its
//!   subscription lost, deliveries out of order); the relay opens a new one
//!   and repairs from history what was stored in between.
//! - **History reads are exact.** [`Bus::last`] and [`Bus::after`] return stored
//!   messages of one topic in ascending `seq` order, with their `prev`.
//! - **Holes are said.** [`Bus::after`] tells whether messages of the topic
//!   stored after the requested `seq` may have been removed (aged out, purged)
//!   before its first answer: reading on from there would leave a hole, which
//!   the relay announces to fans instead of hiding it (PROTOCOL.md section 5).
//!   A bus that cannot tell for sure says `hole`: a false alarm costs a fan a
//!   notice, a missed one costs it messages without a word.
//! - **Retractions are stored messages.** [`Bus::retract`] stores a marker
//!   on the topic (its own `seq`, `prev`, `ts`, an empty payload) naming
//!   the retracted `seq` in [`BusMessage::retracts`]; live feeds and history
//!   reads carry it like any message, so a node that starts later still
//!   learns of the retraction. The bus does not check the target: the
//!   relay does.
//! - **Timeouts.** Every method returns within the bus's request timeout; a
//!   failure is [`BusErrorKind::Unavailable`], never a hang.

// The suite ships with the library so that the integration tests can run it
// against NATS; only tests build it.
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod memory;
pub mod nats;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::watch;
use tribune_protocol::Topic;

/// One stored message, as the bus delivers it.
#[derive(Clone, Debug, PartialEq)]
pub struct BusMessage {
    pub topic: Topic,
    /// Stream sequence.
    pub seq: u64,
    /// `seq` of the last message still stored on this topic when this one was.
    pub prev: u64,
    /// Storage time, Unix milliseconds.
    pub ts: u64,
    /// The publisher's payload, byte for byte (not yet validated).
    pub data: Bytes,
    /// A retraction marker: this stored message retracts the message with
    /// that `seq` (PROTOCOL.md section 13; on NATS the `Tribune-Retract`
    /// header). Its own `data` is empty and never forwarded.
    pub retracts: Option<u64>,
}

/// Names one life of the bus's sequence: `<stream>@<creation time in ns>`.
///
/// A region's copy promoted to origin (`bus/nats/region.rs`) continues the
/// sequence of the epoch it copied, but only up to the last message the
/// copy held, `N`: its epoch is `<copied epoch>+<N>`, and a `since` of the
/// copied epoch up to `N` names the same messages in it ([`Epoch::accepts`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

/// The longest epoch taken from a stream's metadata: promotions chain
/// `+<N>` suffixes, a few per decade, never kilobytes.
const EPOCH_MAX_LEN: usize = 512;

impl Epoch {
    pub fn new(stream: &str, created_ns: u128) -> Self {
        Self(Arc::from(format!("{stream}@{created_ns}")))
    }

    /// An epoch recorded by a promotion (the stream's metadata), if it is
    /// one: `<stream>@<ns>` and any number of `+<seq>`, no spaces or control
    /// characters, at most 512 bytes. The metadata is the operator's, but a
    /// malformed value is refused rather than sent to every fan.
    pub fn parse(text: &str) -> Option<Self> {
        let ok_chars = !text.is_empty()
            && text.len() <= EPOCH_MAX_LEN
            && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        let mut base = text;
        while let Some((before, _)) = promotion_of(base) {
            base = before;
        }
        let well_formed = base
            .rsplit_once('@')
            .is_some_and(|(stream, ns)| !stream.is_empty() && ns.parse::<u128>().is_ok());
        (ok_chars && well_formed).then(|| Self(Arc::from(text)))
    }

    /// This epoch promoted at `last_seq`: the epoch of a copy that held its
    /// messages up to `last_seq` and stores new ones after it.
    pub fn promoted(&self, last_seq: u64) -> Self {
        Self(Arc::from(format!("{}+{last_seq}", self.0)))
    }

    /// Whether a resume from `since` under `epoch` (a fan's) may go on in this
    /// epoch: the same epoch, or one this epoch was promoted from with
    /// `since` no later than every promotion since (what the copy held).
    /// A `since` beyond it names messages the copy never had, and new ones
    /// now carry those numbers: that resume must not recover.
    pub fn accepts(&self, epoch: &str, since: u64) -> bool {
        if *self.0 == *epoch {
            return true;
        }
        let (mut current, mut bound) = (&*self.0, u64::MAX);
        while let Some((before, at)) = promotion_of(current) {
            bound = bound.min(at);
            if before == epoch {
                return since <= bound;
            }
            current = before;
        }
        false
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `<before>+<seq>`: the epoch a promotion continued and where it did.
fn promotion_of(epoch: &str) -> Option<(&str, u64)> {
    let (before, at) = epoch.rsplit_once('+')?;
    let at = at.parse().ok()?;
    // A stream named `A+5` puts its `@<ns>` after the `+`: no promotion.
    before.contains('@').then_some((before, at))
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bus connection as the node sees it; watched by the registry and `/readyz`.
#[derive(Clone, Debug, PartialEq)]
pub struct BusStatus {
    /// Whether requests can be served now.
    pub connected: bool,
    /// The current epoch.
    pub epoch: Epoch,
    /// Grows at every (re)connection: live messages may have been missed
    /// before it, so every active topic is checked with [`Bus::last_seqs`].
    pub generation: u64,
    /// Whether publications can be stored: false while a region's origin
    /// stream is unreachable (reads from the region's mirror go on).
    pub writable: bool,
}

/// What [`Bus::after`] read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct After {
    /// Stored messages after the requested `seq`, oldest first.
    pub messages: Vec<BusMessage>,
    /// Messages of the topic stored after the requested `seq` and before the
    /// first of `messages` may have been removed before this read: whoever
    /// held the requested `seq` cannot go on from `messages` without a hole.
    pub hole: bool,
}

pub use crate::error::{BusError, BusErrorKind};

pub type BusResult<T> = Result<T, BusError>;

/// New messages of one topic, in `seq` order, at most once. Dropping it ends
/// the bus subscription.
pub type LiveFeed = BoxStream<'static, BusMessage>;

/// Per-node statistics partials (`tribune.stats.<node>`): `(node, payload)`.
pub type StatsFeed = BoxStream<'static, (String, Bytes)>;

/// Control messages as they arrive: the payloads, sealed.
pub type ControlFeed = BoxStream<'static, Bytes>;

/// The stored stream: what relays and the registry need from the bus. See
/// the module docs for the contract.
pub trait Bus: Send + Sync + 'static {
    /// A short name for logs and metrics: `memory` or `nats`.
    fn kind(&self) -> &'static str;

    /// The connection state, epoch and reconnect generation.
    fn status(&self) -> watch::Receiver<BusStatus>;

    /// Starts receiving the topic's new messages. Messages stored after this
    /// returns are delivered (at most once); earlier ones are read with
    /// [`Bus::last`] / [`Bus::after`].
    fn live(&self, topic: &Topic) -> BoxFuture<'_, BusResult<LiveFeed>>;

    /// The latest `n` stored messages of `topic`, oldest first.
    fn last(&self, topic: &Topic, n: u32) -> BoxFuture<'_, BusResult<Vec<BusMessage>>>;

    /// Stored messages of `topic` with `seq > after`, oldest first, at most
    /// `limit`, and whether some after `after` were removed before them.
    fn after(&self, topic: &Topic, after: u64, limit: u32) -> BoxFuture<'_, BusResult<After>>;

    /// The last stored `seq` of each topic; topics with nothing stored are
    /// absent. One batched request, whatever the number of topics.
    fn last_seqs<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, BusResult<HashMap<Topic, u64>>>;

    /// Stores a message (the editors' path; `/v1/publish` and the demo use it).
    /// A repeated `msg_id` within the duplicate window is stored once and
    /// answers the first `seq`.
    fn publish(
        &self,
        topic: &Topic,
        data: Bytes,
        msg_id: Option<String>,
    ) -> BoxFuture<'_, BusResult<u64>>;

    /// Stores a retraction marker of message `seq` on `topic` (an editor's
    /// correction) and answers the marker's own `seq`. Repeated within the
    /// duplicate window, it is stored once.
    fn retract(&self, topic: &Topic, seq: u64) -> BoxFuture<'_, BusResult<u64>>;
}

/// The side channel: messages beside the stored stream, between nodes and
/// out to integrations (core NATS on the NATS bus). Today fans' own
/// publications and the statistics gossip; control messages between nodes
/// belong here too.
///
/// # Contract
///
/// - **Apart from the stream.** Nothing sent here is stored or reaches a
///   [`LiveFeed`] or a history read of [`Bus`]: fans' publications never
///   enter the stream fans read.
/// - **At most once, no history.** No `seq`, no replay: what is sent while
///   nobody listens is gone. A send while disconnected fails with
///   [`BusErrorKind::Unavailable`] rather than being queued for later.
/// - **Everyone hears everyone.** [`SideChannel::stats_feed`] yields every
///   node's partials, this node's own included.
/// - **Timeouts.** Every method returns within the bus's request timeout.
pub trait SideChannel: Send + Sync + 'static {
    /// Forwards a fan's own publication to `<prefix>.in.<topic>`, outside the
    /// stream fans read.
    fn publish_inbound(&self, topic: &Topic, data: Bytes) -> BoxFuture<'_, BusResult<()>>;

    /// Publishes this node's statistics partial to `<prefix>.stats.<node>`.
    fn publish_stats(&self, node: &str, payload: Bytes) -> BoxFuture<'_, BusResult<()>>;

    /// Every node's statistics partials, this node's own included.
    fn stats_feed(&self) -> BoxFuture<'_, BusResult<StatsFeed>>;

    /// Publishes an operator's control message (sealed by the caller) to
    /// `<prefix>.control`, for every node.
    fn publish_control(&self, payload: Bytes) -> BoxFuture<'_, BusResult<()>>;

    /// Every node's control messages, this node's own included.
    fn control_feed(&self) -> BoxFuture<'_, BusResult<ControlFeed>>;
}

#[cfg(test)]
mod epoch_tests {
    use super::Epoch;

    #[test]
    fn a_promoted_epoch_accepts_resumes_up_to_the_copy() {
        let origin = Epoch::new("TRIBUNE", 1_700);
        let promoted = origin.promoted(40);
        assert_eq!(promoted.as_str(), "TRIBUNE@1700+40");
        assert!(promoted.accepts("TRIBUNE@1700+40", 99));
        assert!(promoted.accepts("TRIBUNE@1700", 40));
        assert!(promoted.accepts("TRIBUNE@1700", 0));
        assert!(!promoted.accepts("TRIBUNE@1700", 41), "beyond the copy");
        assert!(!promoted.accepts("TRIBUNE@1699", 1));
        assert!(!origin.accepts(promoted.as_str(), 1), "never backwards");
        // Twice promoted: the tighter bound holds for the first epoch.
        let twice = promoted.promoted(30);
        assert!(twice.accepts("TRIBUNE@1700", 30));
        assert!(!twice.accepts("TRIBUNE@1700", 35));
        assert!(twice.accepts("TRIBUNE@1700+40", 30));
        assert!(!twice.accepts("TRIBUNE@1700+40", 31));
        // A stream whose name holds a `+` is no promotion.
        let odd = Epoch::new("A+5", 9);
        assert!(!odd.accepts("A", 1));
    }

    #[test]
    fn recorded_epochs_are_checked() {
        assert!(Epoch::parse("TRIBUNE@1700").is_some());
        assert!(Epoch::parse("TRIBUNE@1700+40+7").is_some());
        for bad in [
            "",
            "TRIBUNE",
            "TRIBUNE@x",
            "@1700",
            "T @1",
            "T@1\n",
            "T@1+x",
        ] {
            assert!(Epoch::parse(bad).is_none(), "{bad}");
        }
        assert!(Epoch::parse(&format!("T@1{}", "+1".repeat(300))).is_none());
    }
}
