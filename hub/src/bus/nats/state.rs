//! What every job of the NATS bus shares: the handle [`NatsBus`], its
//! `Inner` (the one connection, the subjects, the stream's name and
//! settings, what evicts its messages, the status), and the two guards
//! around every call: the request timeout, and no queueing while
//! disconnected.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::connection::State;
use serde_json::Value;
use tokio::sync::watch;
use tribune_protocol::Topic;

use crate::bus::{BusError, BusResult, BusStatus};

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
}

/// Every subject the bus uses, derived from the prefix and stream name.
pub(super) struct Subjects {
    /// `p.fan.`: where editors publish; the stream's subjects.
    pub(super) fan: String,
    /// `p.live.`: where the stream republishes.
    pub(super) live: String,
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
            live: format!("{prefix}.live."),
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
            Err(_) => Err(BusError::Unavailable(format!(
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
            _ => Err(BusError::Unavailable("not connected to NATS".into())),
        }
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
