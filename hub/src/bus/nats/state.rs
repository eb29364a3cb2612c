//! What every job of the NATS bus shares: the handle [`NatsBus`], its
//! `Inner` (the one connection, the subjects, the stream's name and
//! settings, what evicts its messages, the status, the refusal counter),
//! the two guards around every call (the request timeout; no queueing while
//! disconnected), and subscribing.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, Subscriber};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use tokio::sync::watch;
use tribune_protocol::Topic;

use crate::bus::{BusError, BusResult, BusStatus};
use crate::metrics::Labels;

/// The NATS JetStream bus. Cheap to share behind an `Arc`.
pub struct NatsBus {
    pub(super) inner: Arc<Inner>,
}

/// What the handle, every call and the watcher (through a `Weak`, so that
/// dropping the bus ends it) share.
pub(super) struct Inner {
    /// The one connection; async-nats reconnects it and replays subscriptions.
    pub(super) client: Client,
    /// Subject prefixes and API subjects, computed once.
    pub(super) subjects: Subjects,
    /// Stream name, for the epoch and the API subjects.
    pub(super) stream: String,
    /// The stream config to create (or restore) when we own the stream.
    pub(super) managed_config: Option<Value>,
    /// Bound of every call (request_timeout_ms): a failure, never a hang.
    pub(super) timeout: Duration,
    /// Connection state, epoch and generation, watched by registry and /readyz.
    pub(super) status: watch::Sender<BusStatus>,
    /// What removes the stream's messages, from the latest stream info: a
    /// live feed far enough behind to have missed removed messages ends.
    pub(super) eviction: watch::Sender<Eviction>,
    /// Idle heartbeat of every live feed's consumer (`check_interval_ms`):
    /// a feed silent for two of them has lost its consumer.
    pub(super) heartbeat: Duration,
    /// Messages on a live feed's inbox that the stream did not deliver, by
    /// reason (`tribune_bus_messages_refused_total`).
    pub(super) refused: Family<Labels, Counter>,
}

/// Every subject the bus uses, derived from the prefix and stream name.
pub(super) struct Subjects {
    /// `p.fan.`: where editors publish; the stream's subjects.
    pub(super) fan: String,
    /// `p.in.`: fans' own publications.
    pub(super) inbound: String,
    /// `p.stats.`: per-node statistics partials.
    pub(super) stats: String,
    /// `p.control`: operators' control messages (disconnect, revoke).
    pub(super) control: String,
    /// `$JS.API.DIRECT.GET.<stream>`.
    pub(super) direct_get: String,
}

impl Subjects {
    pub(super) fn new(prefix: &str, stream: &str) -> Self {
        Self {
            fan: format!("{prefix}.fan."),
            inbound: format!("{prefix}.in."),
            stats: format!("{prefix}.stats."),
            control: format!("{prefix}.control"),
            direct_get: format!("$JS.API.DIRECT.GET.{stream}"),
        }
    }

    pub(super) fn fan(&self, topic: &Topic) -> String {
        format!("{}{}", self.fan, topic)
    }
}

impl Inner {
    /// Runs `fut` within the request timeout.
    pub(super) async fn bounded<T>(&self, fut: impl Future<Output = BusResult<T>>) -> BusResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(BusError::unavailable(format!(
                "no answer from NATS within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Refuses to queue a publication while disconnected: async-nats would
    /// send it after the reconnect, storing a message whose caller was told
    /// it failed.
    pub(super) fn require_connection(&self) -> BusResult<()> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(BusError::unavailable("not connected to NATS")),
        }
    }

    /// Subscribes within the request timeout. The SUB is on the wire when
    /// this returns, so nothing sent to `subject` afterwards (a consumer's
    /// first delivery, a history read's reply) can be missed.
    pub(super) async fn subscribe(&self, subject: String) -> BusResult<Subscriber> {
        self.bounded(async {
            let subscriber = self
                .client
                .subscribe(subject)
                .await
                .map_err(|e| BusError::unavailable(e.to_string()))?;
            self.client
                .flush()
                .await
                .map_err(|e| BusError::unavailable(e.to_string()))?;
            Ok(subscriber)
        })
        .await
    }
}

/// What removes a subject's oldest messages besides `max_age`, read from the
/// stream's config when it is set up: decides whether an `after` read that
/// starts at the subject's oldest stored message may follow messages that
/// were removed (a hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Eviction {
    /// `max_msgs_per_subject`: a subject holding that many lost its oldest.
    PerSubject(u64),
    /// Stream-wide `max_msgs` or `max_bytes` may remove any subject's oldest.
    Any,
    /// Nothing but age.
    AgeOnly,
}

impl Eviction {
    /// The eviction of a stream with this config (`$JS.API` JSON).
    pub(super) fn of(config: &Value) -> Eviction {
        let limit = |key: &str| config.get(key).and_then(Value::as_i64).unwrap_or(-1);
        if limit("max_msgs") > 0 || limit("max_bytes") > 0 {
            Eviction::Any
        } else if limit("max_msgs_per_subject") > 0 {
            Eviction::PerSubject(limit("max_msgs_per_subject") as u64)
        } else {
            Eviction::AgeOnly
        }
    }

    /// Whether a subject that holds `stored` messages may have lost older ones.
    pub(super) fn may_have_removed(self, stored: u64) -> bool {
        match self {
            Eviction::PerSubject(limit) => stored >= limit,
            Eviction::Any => true,
            Eviction::AgeOnly => false,
        }
    }
}
