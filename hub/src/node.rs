//! The node: what every handshake, connection and HTTP route of one hub
//! process shares, and the count of its open connections.
//!
//! The count is kept here, behind [`Node::admit`], [`Admission::attach`] and
//! [`Node::detach`], so that no other file touches it: a connection holds
//! its place under `max_connections` from its accepted handshake until it
//! detaches, and an upgrade that comes to nothing gives its place back
//! exactly once, when its [`Admission`] is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::auth::Authenticator;
use crate::bus::{Bus, SideChannel};
use crate::config::Config;
use crate::limits::{self, HandshakeLimiter};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::registry::Registry;
use crate::stats::Stats;

/// Everything a node's connections share.
pub struct Node {
    /// The effective configuration, fixed for the node's life.
    pub config: Arc<Config>,
    /// Where messages come from and fans' publications go.
    pub bus: Arc<dyn Bus>,
    /// The same bus's side channel: fans' publications, statistics gossip.
    pub side: Arc<dyn SideChannel>,
    /// Topic → relay: what a subscription joins.
    pub registry: Arc<Registry>,
    /// Every metric the node exports.
    pub metrics: Arc<Metrics>,
    /// Audience and reaction windows.
    pub stats: Arc<Stats>,
    /// Token verification; `None` when no key is configured.
    pub auth: Option<Authenticator>,
    /// Handshakes per client address.
    pub handshakes: HandshakeLimiter,
    /// `limits.max_connections`, lowered to what the process's file limit
    /// can hold with room for handshakes in flight: past it the node answers
    /// 503 rather than failing `accept` with EMFILE.
    pub max_connections: usize,
    /// Open connections' outboxes, for the paced drain.
    connections: DashMap<u64, Arc<Outbox>>,
    /// Connections admitted and not yet detached, including those upgrading:
    /// what `max_connections` is checked against.
    open: AtomicUsize,
    /// Set once at SIGTERM: not ready, no new connections.
    draining: AtomicBool,
    /// The next connection's id (shown to the client in `welcome`).
    next_conn: AtomicU64,
}

impl Node {
    pub fn new(
        config: Arc<Config>,
        bus: Arc<dyn Bus>,
        side: Arc<dyn SideChannel>,
        auth: Option<Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Arc<Node> {
        let config_max = config.limits.max_connections;
        let registry = Registry::new(bus.clone(), config.clone(), metrics.clone());
        let stats = Stats::new(
            config.clone(),
            registry.clone(),
            side.clone(),
            metrics.clone(),
        );
        Arc::new(Node {
            handshakes: limits::handshake_rate(&config.limits),
            config,
            bus,
            side,
            registry,
            metrics,
            stats,
            auth,
            connections: DashMap::new(),
            open: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            max_connections: connection_cap(config_max, file_limit()),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.draining.set(1);
    }

    /// Ready for fans: not draining and connected to the bus (`/readyz`).
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.bus.status().borrow().connected
    }

    /// Connections admitted and not yet detached, upgrading ones included.
    pub fn connection_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a connection whose handshake passed every check: it holds a
    /// place under `max_connections` from now until it detaches, or until the
    /// returned admission is dropped unattached.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.inc();
        self.metrics.connections_accepted.inc();
        Admission {
            node: Some(self.clone()),
            id,
        }
    }

    /// Ends an attached connection: out of the drain's list, its place given back.
    pub fn detach(&self, id: u64) {
        self.connections.remove(&id);
        self.release();
    }

    /// Gives one admitted connection's place back.
    fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections.dec();
    }

    /// The outboxes of every open connection (drain).
    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.connections.iter().map(|e| e.value().clone()).collect()
    }
}

/// A connection counted by [`Node::admit`] that is not yet serving.
///
/// The websocket upgrade happens after the handshake's answer, in a task
/// axum runs; if it fails, or the task is dropped unrun, no connection comes
/// of it and dropping the admission gives the place back. A connection that
/// does start calls [`Admission::attach`] and, when it ends, [`Node::detach`].
pub struct Admission {
    /// `None` once attached: the place then belongs to the connection.
    node: Option<Arc<Node>>,
    /// The connection's id.
    id: u64,
}

impl Admission {
    /// The node that admitted the connection.
    pub fn node(&self) -> &Arc<Node> {
        self.node.as_ref().expect("not yet attached")
    }

    /// Registers the connection's outbox for the drain; from here on the
    /// connection owns its place and gives it back with [`Node::detach`].
    /// Returns the node and the connection's id.
    pub fn attach(mut self, outbox: Arc<Outbox>) -> (Arc<Node>, u64) {
        let node = self.node.take().expect("attached once");
        node.connections.insert(self.id, outbox);
        (node, self.id)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.release();
        }
    }
}

/// The process's soft limit on open files, if it can be read.
fn file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// The connection cap: the configured one, or fewer if the file limit cannot
/// hold that many sockets plus a reserve (5%, at least 256) for handshakes
/// in flight, the listener, the bus and the log.
fn connection_cap(configured: usize, file_limit: Option<u64>) -> usize {
    match file_limit {
        Some(limit) => {
            let reserve = (limit / 20).max(256);
            configured.min(limit.saturating_sub(reserve) as usize)
        }
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::bus::memory::MemoryBus;

    fn node() -> Arc<Node> {
        let bus = Arc::new(MemoryBus::new(HashMap::new(), Duration::from_secs(60)));
        Node::new(
            Arc::new(Config::default()),
            bus.clone(),
            bus,
            None,
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn connection_cap_leaves_room_under_the_file_limit() {
        assert_eq!(connection_cap(200_000, Some(20_000)), 19_000);
        assert_eq!(connection_cap(100, Some(20_000)), 100);
        assert_eq!(connection_cap(200_000, Some(1_024)), 768);
        assert_eq!(connection_cap(200_000, Some(1_048_576)), 200_000);
        assert_eq!(connection_cap(200_000, None), 200_000);
    }

    #[tokio::test]
    async fn a_place_is_given_back_once_attached_or_not() {
        let node = node();
        let upgrading = node.admit();
        let serving = node.admit();
        assert_eq!(node.connection_count(), 2);
        // The upgrade failed: the admission is dropped.
        drop(upgrading);
        assert_eq!(node.connection_count(), 1);
        let outbox = Arc::new(Outbox::new(1024, 8));
        let (node, id) = serving.attach(outbox);
        assert_eq!(node.connection_count(), 1);
        assert_eq!(node.outboxes().len(), 1);
        node.detach(id);
        assert_eq!(node.connection_count(), 0);
        assert!(node.outboxes().is_empty());
    }
}
