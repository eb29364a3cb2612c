//! A topic's live feed, read from the stream itself: one ephemeral
//! JetStream push consumer per feed, filtered on `p.fan.<topic>`,
//! delivering to a private inbox of this connection.
//!
//! Why not the republished subject `p.live.<topic>`: anyone who can publish
//! there (on a server without permissions, anyone at all) can make a
//! message look republished, headers included, and a relay would forward,
//! cache and replay it. A consumer's deliveries come from what the stream
//! stored; each carries in its `$JS.ACK` reply subject the stream, the
//! consumer, the stream sequence and the consumer sequence, and nats-server
//! refuses any client's publication with a `$JS.ACK` reply (since 2.8,
//! nats-server#3026), permissions or not. A message on the inbox is taken
//! only when it names this feed's stream and consumer and continues its
//! consumer sequence; anything else is refused and counted.
//!
//! The feed ends (the relay opens a new one and reads what it missed from
//! the stream, where removed messages are told as a hole) whenever it cannot
//! vouch for continuity: a consumer sequence that skips or repeats, a
//! heartbeat naming a delivery it did not get, the consumer gone (no
//! heartbeat for two intervals, a status such as 409), or a delivery so far
//! behind the stream that older messages of the topic may have been removed
//! before the consumer reached them (a consumer skips those silently).
//!
//! `prev` is the seq of the feed's previous delivery: every message of the
//! topic after it was stored, in order, and the consumer delivered each. The
//! first delivery's `prev` is 0 (unknown), which the bus contract allows:
//! whoever opens a feed reads what was stored before it.
//!
//! Cost: one consumer-create request per feed (the relay's life, or a
//! restart of the feed), a heartbeat per idle feed per `check_interval_ms`,
//! and the consumer's state on the server; nothing per message beyond the
//! delivery itself.

use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tribune_protocol::Topic;

use super::headers::{header, header_u64, retract_target};
use super::state::{Eviction, Inner};
use super::stream::api_error;
use crate::bus::{BusError, BusMessage, BusResult, BusStatus, LiveFeed};
use crate::log_limit::LogLimit;
use crate::metrics::Labels;

/// Beyond two heartbeat intervals, how long a silent feed is still given.
const HEARTBEAT_SLACK: Duration = Duration::from_millis(500);

/// With stream-wide limits (`max_msgs`, `max_bytes`) any message may be
/// removed; a feed this many deliveries behind may have lost some.
const LAG_SUSPECT: u64 = 1024;

/// How long a deleted feed's consumer request may take before the server's
/// `inactive_threshold` is left to remove it.
const DELETE_WITHIN: Duration = Duration::from_secs(5);

/// Refused inbox messages are logged at most once a second across the node:
/// whoever can publish to an inbox could otherwise flood the log.
static REFUSED_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

/// Feeds ending (each one costs a consumer and a read) are logged at most
/// once a second.
static ENDED_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

impl Inner {
    /// The topic's new messages, from a consumer of the stream created for
    /// this feed; see the module docs.
    pub(super) async fn live(&self, topic: Topic) -> BusResult<LiveFeed> {
        let consumer = consumer_name();
        let deliver = self.client.new_inbox();
        // Listening before the consumer exists: its first delivery may
        // follow the create answer at once.
        let subscriber = self.subscribe(deliver.clone()).await?;
        let filter = self.subjects.fan(&topic);
        let heartbeat_ns = self.heartbeat.as_nanos() as u64;
        let request = json!({
            "stream_name": self.stream,
            "action": "create",
            "config": {
                "name": consumer,
                "description": "tribune hub: a topic's live feed",
                "deliver_subject": deliver,
                "filter_subject": filter,
                "deliver_policy": "new",
                "ack_policy": "none",
                "replay_policy": "instant",
                // Flow control: a hub that falls behind pauses the consumer
                // rather than overflowing its subscription.
                "flow_control": true,
                "idle_heartbeat": heartbeat_ns,
                // Removed by the server once nobody listens on the inbox,
                // should the delete on drop not arrive.
                "inactive_threshold": (heartbeat_ns * 10).max(30_000_000_000),
                "mem_storage": true,
                "num_replicas": 1,
            }
        });
        let subject = format!(
            "$JS.API.CONSUMER.CREATE.{}.{}.{}",
            self.stream, consumer, filter
        );
        let answer = self
            .bounded(self.api(subject, Bytes::from(request.to_string())))
            .await?;
        if let Some(error) = answer.get("error") {
            // 10026: the stream's max_consumers is reached.
            if error.get("err_code").and_then(serde_json::Value::as_u64) == Some(10026) {
                return Err(BusError::unavailable(format!(
                    "stream {} has as many consumers as it allows: raise its max_consumers \
                     (bus.max_consumers; every hub holds one per active topic)",
                    self.stream
                )));
            }
            return Err(api_error(error));
        }
        let feed = Feed {
            topic,
            subscriber,
            client: self.client.clone(),
            stream: self.stream.clone(),
            consumer,
            heartbeat: self.heartbeat,
            generation: self.status.borrow().generation,
            status: self.status.subscribe(),
            eviction: self.eviction.subscribe(),
            refused: self.refused.clone(),
            last_consumer_seq: 0,
            last_seq: 0,
            heard: Instant::now(),
        };
        let stream = futures::stream::unfold(feed, |mut feed| async move {
            let msg = feed.next().await?;
            Some((msg, feed))
        });
        Ok(stream.boxed())
    }
}

/// A random consumer name: unique per feed, not guessable from outside.
fn consumer_name() -> String {
    use rand::Rng;
    let token: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(22)
        .map(char::from)
        .collect();
    format!("tribune_{token}")
}

/// One live feed: its consumer's deliveries, checked.
struct Feed {
    topic: Topic,
    /// The private inbox the consumer delivers to.
    subscriber: Subscriber,
    /// For flow-control answers and the consumer's deletion.
    client: Client,
    stream: String,
    consumer: String,
    heartbeat: Duration,
    /// Time disconnected does not count against the consumer's heartbeat.
    status: watch::Receiver<BusStatus>,
    /// The connection's generation when the feed opened. While a hub is
    /// away its consumer keeps its place, and when it comes back the
    /// consumer skips, without a word and without a gap in its own
    /// sequence, whatever the stream removed meanwhile (another hub may
    /// have lowered the limits: this hub's view of them may be stale), and it
    /// may deliver before this hub has even noticed it is back. So a feed
    /// ends when the connection is lost: the relay opens a new one once the
    /// bus is back and reads what it missed from the stream, where removed
    /// messages are told as a hole.
    generation: u64,
    /// Whether a delivery far behind may follow removed messages.
    eviction: watch::Receiver<Eviction>,
    refused: Family<Labels, Counter>,
    /// The consumer sequence of the last delivery taken (0: none yet).
    last_consumer_seq: u64,
    /// The stream sequence of the last delivery taken: the next one's `prev`.
    last_seq: u64,
    /// When the consumer was last heard from (a delivery or a heartbeat).
    heard: Instant,
}

/// What one message on the inbox means for the feed.
enum Step {
    Deliver(BusMessage),
    Skip,
    End(&'static str),
}

impl Feed {
    /// The next checked delivery; `None` when the feed ends.
    async fn next(&mut self) -> Option<BusMessage> {
        loop {
            let connected = self.status.borrow().connected;
            let deadline = self.heard + self.heartbeat * 2 + HEARTBEAT_SLACK;
            let step = tokio::select! {
                msg = self.subscriber.next() => {
                    self.heard = Instant::now();
                    self.take(msg?).await
                }
                changed = self.status.changed() => {
                    changed.ok()?;
                    let status = self.status.borrow().clone();
                    if !status.connected || status.generation != self.generation {
                        Step::End("the bus connection was lost")
                    } else {
                    // Back from a disconnection (or a new generation): a
                    // consumer that survived shows itself within one
                    // interval; one that did not (a restarted server) is
                    // replaced without waiting two.
                    self.heard = Instant::now()
                        .checked_sub(self.heartbeat)
                        .unwrap_or_else(Instant::now);
                    Step::Skip
                    }
                }
                () = tokio::time::sleep_until(deadline), if connected => {
                    Step::End("no heartbeat from its consumer")
                }
            };
            match step {
                Step::Deliver(msg) => return Some(msg),
                Step::Skip => {}
                Step::End(why) => {
                    if let Some(held_back) = ENDED_LOG.allow() {
                        tracing::info!(topic = %self.topic, held_back,
                            "live feed restarted, the missed messages are read from the stream: {why}");
                    }
                    return None;
                }
            }
        }
    }

    async fn take(&mut self, msg: Message) -> Step {
        match msg.status.map(|s| s.as_u16()) {
            None => self.delivery(msg),
            // Idle heartbeat, or flow control (which has a reply subject).
            Some(100) => self.heartbeat_or_flow_control(&msg).await,
            // 409 (consumer deleted, leadership lost), 408, 503...
            Some(_) => Step::End("the server ended its consumer"),
        }
    }

    async fn heartbeat_or_flow_control(&mut self, msg: &Message) -> Step {
        // Answered only on the server's flow-control subjects: a forged
        // status must not make the hub publish where someone chooses.
        let answer = [
            msg.reply.as_ref().map(|r| r.to_string()),
            header(msg, "Nats-Consumer-Stalled").map(String::from),
        ];
        for subject in answer.into_iter().flatten() {
            if subject.starts_with("$JS.FC.") {
                let _ = self.client.publish(subject, Bytes::new()).await;
            }
        }
        match header_u64(msg, "Nats-Last-Consumer") {
            Some(last) if last != self.last_consumer_seq => {
                Step::End("a heartbeat names deliveries it did not get")
            }
            _ => Step::Skip,
        }
    }

    /// A delivery, taken only if it is this consumer's next one.
    fn delivery(&mut self, msg: Message) -> Step {
        let Some(ack) = msg.reply.as_deref().and_then(AckInfo::parse) else {
            return self.refuse("not_from_stream", Step::Skip);
        };
        if ack.stream != self.stream || ack.consumer != self.consumer {
            return self.refuse("not_from_stream", Step::Skip);
        }
        if ack.consumer_seq <= self.last_consumer_seq || ack.stream_seq <= self.last_seq {
            // A consumer never delivers a sequence twice without acks, and no
            // client can send a `$JS.ACK` reply: whatever repeats one is not
            // to be trusted (a server bug, a relayed message). Which of the
            // two was wrong cannot be told, so the feed starts again from the
            // stream.
            return self.refuse("out_of_order", Step::End("a delivery repeated a sequence"));
        }
        if ack.consumer_seq != self.last_consumer_seq + 1 {
            return Step::End("deliveries were missed");
        }
        if self.eviction.borrow().may_follow_removed(ack.pending) {
            return Step::End("it fell so far behind that messages may have been removed");
        }
        let prev = self.last_seq;
        self.last_consumer_seq = ack.consumer_seq;
        self.last_seq = ack.stream_seq;
        Step::Deliver(BusMessage {
            topic: self.topic.clone(),
            seq: ack.stream_seq,
            prev,
            ts: ack.timestamp_ns / 1_000_000,
            retracts: retract_target(&msg),
            data: msg.payload,
        })
    }

    /// Counts (and logs, rate-limited) a message the stream did not deliver.
    fn refuse(&self, reason: &'static str, step: Step) -> Step {
        self.refused.get_or_create(&vec![("reason", reason)]).inc();
        if let Some(held_back) = REFUSED_LOG.allow() {
            tracing::warn!(topic = %self.topic, reason, held_back,
                "refused a message on a live feed's inbox: the stream did not deliver it");
        }
        step
    }
}

impl Drop for Feed {
    /// Deletes the consumer at once rather than leaving it to the server's
    /// inactivity threshold.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let subject = format!("$JS.API.CONSUMER.DELETE.{}.{}", self.stream, self.consumer);
        runtime.spawn(async move {
            let _ =
                tokio::time::timeout(DELETE_WITHIN, client.request(subject, Bytes::new())).await;
        });
    }
}

impl Eviction {
    /// Whether a delivery with `pending` more messages of its subject behind
    /// it may follow messages removed before the consumer reached them.
    ///
    /// Removal takes a subject's oldest first, so a consumer skips a removed
    /// message only when it lags behind the subject's oldest: with a limit
    /// per subject, the delivery it sends next is then the oldest of a full
    /// subject (`pending + 1 == limit`). Age alone removes only what is older
    /// than `max_age`, which a consumer at the tip never lags by.
    fn may_follow_removed(self, pending: u64) -> bool {
        match self {
            Eviction::PerSubject(limit) => pending.saturating_add(1) >= limit,
            Eviction::Any => pending >= LAG_SUSPECT,
            Eviction::AgeOnly => false,
        }
    }
}

/// What a delivery's `$JS.ACK` reply subject says (ADR-15).
#[derive(Debug, PartialEq, Eq)]
struct AckInfo<'a> {
    stream: &'a str,
    consumer: &'a str,
    stream_seq: u64,
    consumer_seq: u64,
    timestamp_ns: u64,
    /// Messages of the subject stored after this one, not yet delivered.
    pending: u64,
}

impl<'a> AckInfo<'a> {
    /// Both forms: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`
    /// and, with domain and account hash first, 11 tokens or more.
    fn parse(reply: &'a str) -> Option<AckInfo<'a>> {
        let rest = reply.strip_prefix("$JS.ACK.")?;
        let mut tokens = [""; 9];
        let mut n = 0;
        for token in rest.split('.') {
            if n == tokens.len() {
                break;
            }
            tokens[n] = token;
            n += 1;
        }
        let t: &[&str] = match n {
            7 => &tokens[..7],
            9 => &tokens[2..9],
            _ => return None,
        };
        let num = |s: &str| s.parse::<u64>().ok();
        Some(AckInfo {
            stream: t[0],
            consumer: t[1],
            stream_seq: num(t[3])?,
            consumer_seq: num(t[4])?,
            timestamp_ns: num(t[5])?,
            pending: num(t[6])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_of_both_forms_are_read() {
        let v1 = AckInfo::parse("$JS.ACK.TRIBUNE.tribune_x.1.100.7.1700000000123456789.42");
        let want = AckInfo {
            stream: "TRIBUNE",
            consumer: "tribune_x",
            stream_seq: 100,
            consumer_seq: 7,
            timestamp_ns: 1_700_000_000_123_456_789,
            pending: 42,
        };
        assert_eq!(v1.as_ref(), Some(&want));
        let v2 =
            AckInfo::parse("$JS.ACK._.szMpdrwD.TRIBUNE.tribune_x.1.100.7.1700000000123456789.42");
        assert_eq!(v2.as_ref(), Some(&want));
        let v2_token = AckInfo::parse(
            "$JS.ACK.hub.szMpdrwD.TRIBUNE.tribune_x.1.100.7.1700000000123456789.42.rand.more",
        );
        assert_eq!(v2_token.as_ref(), Some(&want));
        for bad in [
            "_INBOX.abc",
            "$JS.ACK.TRIBUNE.tribune_x.1.100.7.1700000000123456789",
            "$JS.ACK.TRIBUNE.tribune_x.1.abc.7.1700000000123456789.42",
            "$JS.ACK.TRIBUNE.tribune_x.1.100.-7.1700000000123456789.42",
            "$JS.ACK.a.b.TRIBUNE.tribune_x.1.100.7.1700000000123456789",
        ] {
            assert_eq!(AckInfo::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_feed_far_behind_may_follow_removed_messages() {
        assert!(!Eviction::PerSubject(11).may_follow_removed(0));
        assert!(!Eviction::PerSubject(11).may_follow_removed(9));
        assert!(Eviction::PerSubject(11).may_follow_removed(10));
        assert!(Eviction::PerSubject(1).may_follow_removed(0));
        assert!(!Eviction::Any.may_follow_removed(LAG_SUSPECT - 1));
        assert!(Eviction::Any.may_follow_removed(LAG_SUSPECT));
        assert!(!Eviction::AgeOnly.may_follow_removed(u64::MAX));
    }
}
