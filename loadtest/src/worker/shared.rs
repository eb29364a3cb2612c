//! What the client tasks of a worker share, on its one thread: the spec,
//! the topic plan, the servers' URLs, the coordinator's orders so far and
//! the statistics; and the handle through which the worker pokes one
//! client.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use super::stats::Stats;
use crate::plan::TopicPlan;
use crate::wire::WorkerSpec;
use crate::ws::WsUrl;

/// What the coordinator has ordered so far.
#[derive(Debug, Default)]
pub struct Control {
    /// `Subscribe`: when it arrived, and its spread.
    pub subscribe: Option<(Instant, u64)>,
    /// `Finish`: the final counters and the settle deadline.
    pub finish: Option<(Arc<Vec<u64>>, Instant)>,
}

/// Per-client handle the worker uses to poke one client task.
#[derive(Debug, Default)]
pub struct SlotCtl {
    pub notify: Notify,
    /// Set by churn: close this client and start a fresh one.
    pub churn: Cell<bool>,
}

/// Everything the worker's clients share.
pub struct Shared {
    pub spec: WorkerSpec,
    pub plan: TopicPlan,
    /// The servers' websocket URLs; a client starts on its own and moves
    /// on after a failure.
    pub urls: Vec<WsUrl>,
    pub control: RefCell<Control>,
    pub stats: RefCell<Stats>,
}
