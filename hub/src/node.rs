//! The node: what every handshake, connection and HTTP route of one hub
//! process shares, and the counts of its sockets.
//!
//! The counts are kept here, so that no other file touches them:
//! - a socket accepted on the public listener holds a pending place from
//!   [`Node::accept`] until it is closed or upgraded ([`Pending`]); pending
//!   sockets count against `max_connections` too, and against
//!   `max_pending_handshakes`, per peer address as well;
//! - a connection holds its place under `max_connections` from its accepted
//!   handshake ([`Node::admit`]) until it detaches ([`Node::detach`]), and an
//!   upgrade that comes to nothing gives its place back exactly once, when
//!   its [`Admission`] is dropped; its address's and user's place
//!   ([`Place`]) goes with it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use governor::DefaultDirectRateLimiter;

use crate::audit::Audit;
use crate::auth::Authenticator;
use crate::bus::{Bus, SideChannel};
use crate::config::Config;
use crate::edge::address::TrustedProxies;
use crate::limits::{self, FailureLimiter, KeyedLimiter};
use crate::metrics::Metrics;
use crate::occupancy::{Counts, Occupancy, Place};
use crate::outbox::Outbox;
use crate::registry::Registry;
use crate::stats::Stats;
use tribune_protocol::CloseCode;

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
    /// Tokens an operator revoked (by `jti`, or a user's before a time).
    pub revocations: crate::auth::Revocations,
    /// Handshakes per client address (limit key).
    pub handshakes: KeyedLimiter,
    /// Handshakes of the whole node.
    pub node_handshakes: DefaultDirectRateLimiter,
    /// `GET /v1/history` per client address (limit key) and per token `sub`.
    pub history_addresses: KeyedLimiter,
    pub history_users: KeyedLimiter<String>,
    /// Connections per client address and per user.
    pub occupancy: Arc<Occupancy>,
    /// Reaction keys of HTTP streams and their per-stream rate (`sse/keys.rs`).
    pub react_keys: crate::sse::keys::ReactKeys,
    /// Failed `POST /v1/publish` attempts per caller address.
    pub publish_failures: FailureLimiter,
    /// Refusals: counted, and logged at a bounded rate.
    pub audit: Audit,
    /// The configured reverse proxies, ready to match peers against.
    pub trusted_proxies: TrustedProxies,
    /// `limits.max_connections`, lowered to what the process's file limit
    /// can hold with room for refusals in flight: past it the node answers
    /// 503 rather than failing `accept` with EMFILE.
    pub max_connections: usize,
    /// Open connections' outboxes, for the paced drain, and their places.
    connections: DashMap<u64, Attached>,
    /// Connections admitted and not yet detached, including those upgrading:
    /// what `max_connections` is checked against.
    open: AtomicUsize,
    /// Sockets accepted on the public listener and not yet upgraded (or
    /// closed): they hold files as much as connections do.
    pending: AtomicUsize,
    /// Pending sockets per peer address (limit key), trusted proxies aside.
    pending_by_peer: Counts<IpAddr>,
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
        let max_connections = connection_cap(config_max, file_limit());
        metrics.connections_max.set(max_connections as i64);
        let registry = Registry::new(bus.clone(), config.clone(), metrics.clone());
        let stats = Stats::new(
            config.clone(),
            registry.clone(),
            side.clone(),
            metrics.clone(),
        );
        Arc::new(Node {
            handshakes: limits::handshake_rate(&config.limits),
            node_handshakes: limits::node_handshake_rate(&config.limits),
            history_addresses: limits::history_rate(&config.limits),
            history_users: limits::history_token_rate(&config.limits),
            occupancy: Arc::new(Occupancy::default()),
            react_keys: crate::sse::keys::ReactKeys::new(
                config.stats.key_bytes().ok().flatten().as_deref(),
                &config.limits,
            ),
            publish_failures: FailureLimiter::per_minute(config.limits.publish_failures_per_minute),
            audit: Audit::new(metrics.clone()),
            trusted_proxies: TrustedProxies::new(&config.trusted_proxies),
            config,
            bus,
            side,
            registry,
            metrics,
            stats,
            auth,
            revocations: Default::default(),
            connections: DashMap::new(),
            open: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            pending_by_peer: Counts::default(),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            max_connections,
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

    /// Connections one client address may hold: its share of the node.
    pub fn address_max(&self) -> usize {
        share(
            self.max_connections,
            self.config.limits.address_share_percent,
        )
    }

    /// Pending sockets one peer address may hold: its share of them.
    fn pending_max_per_peer(&self) -> usize {
        share(
            self.config.limits.max_pending_handshakes,
            self.config.limits.address_share_percent,
        )
    }

    /// Counts a socket just accepted on the public listener, from `peer`
    /// (its limit key; `None` for a trusted proxy, whose sockets carry many
    /// clients). Refused with the audit reason when the node holds as many
    /// sockets as `max_connections`, as many pending ones as
    /// `max_pending_handshakes`, or the peer its share of those.
    pub fn accept(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Pending, &'static str> {
        let pending = self.pending.load(Ordering::Relaxed);
        if self.connection_count() + pending >= self.max_connections {
            return Err("capacity");
        }
        if pending >= self.config.limits.max_pending_handshakes {
            return Err("pending");
        }
        if let Some(peer) = peer
            && !self
                .pending_by_peer
                .try_take(&peer, self.pending_max_per_peer())
        {
            return Err("pending_address");
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.metrics.pending_sockets.inc();
        Ok(Pending {
            node: self.clone(),
            peer,
        })
    }

    /// Sockets accepted and not yet upgraded or closed.
    #[cfg(test)]
    pub fn pending_count(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts a connection whose handshake passed every check: it holds a
    /// place under `max_connections` from now until it detaches, or until the
    /// returned admission is dropped unattached. `place` is its address's
    /// and user's share, held as long.
    pub fn admit(self: &Arc<Self>, place: Place) -> Admission {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.inc();
        self.metrics.connections_accepted.inc();
        Admission {
            node: Some(self.clone()),
            id,
            place: Some(place),
        }
    }

    /// Ends an attached connection: out of the drain's list, its places given back.
    pub fn detach(&self, id: u64) {
        self.connections.remove(&id);
        self.release();
    }

    /// Forgets what per-address limiters hold for addresses gone quiet, and
    /// publishes how many they still hold. Run every few seconds.
    pub fn sweep_limiters(&self) {
        let forgot = self.handshakes.sweep();
        self.metrics.limiter_keys_expired("handshakes", forgot);
        let forgot = self.history_addresses.sweep() + self.history_users.sweep();
        self.metrics.limiter_keys_expired("history", forgot);
        self.metrics.set_limiter_keys(
            "history",
            self.history_addresses.keys() + self.history_users.keys(),
        );
        let forgot = self.react_keys.sweep();
        self.metrics
            .limiter_keys_expired("stream_reactions", forgot);
        self.metrics
            .set_limiter_keys("stream_reactions", self.react_keys.keys());
        let forgot = self.publish_failures.sweep();
        self.metrics
            .limiter_keys_expired("publish_failures", forgot);
        self.metrics
            .set_limiter_keys("handshakes", self.handshakes.keys());
        self.metrics
            .set_limiter_keys("publish_failures", self.publish_failures.keys());
        self.metrics
            .set_limiter_keys("connections", self.occupancy.addresses());
    }

    /// Gives one admitted connection's place back.
    fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections.dec();
    }

    /// Verifies a token, on the handshake or in an `auth` frame: the key,
    /// the claims and the policy.
    pub fn verify_token(&self, token: &str) -> Result<crate::auth::Grant, crate::error::AuthError> {
        let grant = match &self.auth {
            Some(auth) => auth.verify(token)?,
            None => {
                return Err(crate::error::AuthError::new(
                    crate::error::AuthErrorKind::NoKey,
                    "this node verifies no tokens (no key configured)",
                ));
            }
        };
        if self.revocations.covers(&grant) {
            return Err(crate::error::AuthErrorKind::Revoked.into());
        }
        Ok(grant)
    }

    /// Registers connection `id`'s token state, through which an operator's
    /// unsubscribe reaches its session.
    pub fn set_expiry(&self, id: u64, expiry: Arc<crate::auth::Expiry>) {
        if let Some(mut attached) = self.connections.get_mut(&id) {
            attached.expiry = Some(expiry);
        }
    }

    /// Records which token connection `id` now holds, for revocations.
    pub fn set_token(&self, id: u64, grant: &crate::auth::Grant) {
        if let Some(mut attached) = self.connections.get_mut(&id) {
            attached.token = Some(Box::new(TokenId {
                jti: grant.id.clone(),
                iat: grant.issued_at,
            }));
        }
    }

    /// Applies an operator's control message to this node's connections and
    /// revocation list; how many connections it closed (with 1008), or, for
    /// an unsubscribe, told to end the topic.
    pub fn apply(&self, op: &crate::control::Op) -> usize {
        use crate::control::Op;
        let close = |outbox: &Outbox| {
            self.metrics.tokens.disconnected.inc();
            outbox.close(CloseCode::POLICY, false);
        };
        let mut closed = 0;
        match op {
            Op::Disconnect { user, conn, node } => {
                let id = conn
                    .as_deref()
                    .filter(|_| node.as_deref().is_none_or(|n| n == self.config.node_name))
                    .and_then(|c| c.strip_prefix("c-"))
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                for entry in self.connections.iter() {
                    let by_user = user.is_some() && entry.place.user() == user.as_deref();
                    if by_user || id == Some(*entry.key()) {
                        close(&entry.outbox);
                        closed += 1;
                    }
                }
            }
            Op::Unsubscribe { user, topic } => {
                for entry in self.connections.iter() {
                    if entry.place.user() == Some(user.as_str())
                        && let Some(expiry) = &entry.expiry
                    {
                        expiry.end_topic(topic);
                        closed += 1;
                    }
                }
            }
            Op::Revoke {
                jti,
                user,
                before,
                until,
            } => {
                self.metrics
                    .tokens
                    .revocation(if jti.is_some() { "jti" } else { "user" });
                if let Some(jti) = jti {
                    self.revocations.revoke_id(jti, *until);
                }
                if let (Some(user), Some(before)) = (user, before) {
                    self.revocations.revoke_user(user, *before, *until);
                }
                for entry in self.connections.iter() {
                    let Some(token) = &entry.token else { continue };
                    if self.revocations.covers_token(
                        entry.place.user(),
                        token.jti.as_deref(),
                        token.iat,
                    ) {
                        close(&entry.outbox);
                        closed += 1;
                    }
                }
            }
        }
        closed
    }

    /// Counts connection `id`, which logged in after its handshake, under
    /// `user`; false when the user holds its share of the node.
    pub fn claim_user(&self, id: u64, user: &str) -> bool {
        let max = self.config.limits.max_connections_per_user;
        match self.connections.get_mut(&id) {
            Some(mut attached) => attached.place.add_user(user, max),
            None => false,
        }
    }

    /// The outboxes of every open connection (drain).
    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.connections
            .iter()
            .map(|e| e.value().outbox.clone())
            .collect()
    }
}

/// `percent` of `total`, at least 1.
fn share(total: usize, percent: u32) -> usize {
    (total.saturating_mul(percent as usize) / 100).max(1)
}

/// A serving connection, as the node keeps it.
struct Attached {
    /// For the drain.
    outbox: Arc<Outbox>,
    /// Its address's and user's place, given back when it detaches.
    place: Place,
    /// Its token's id and issue time, for revocations; boxed, as most
    /// connections have none.
    token: Option<Box<TokenId>>,
    /// Its token state (on nodes that verify tokens), for an operator's
    /// unsubscribe.
    expiry: Option<Arc<crate::auth::Expiry>>,
}

/// What identifies a connection's token for a revocation.
struct TokenId {
    jti: Option<String>,
    iat: Option<u64>,
}

/// A socket accepted by [`Node::accept`]: its pending place is given back
/// when this is dropped (the socket closed, or upgraded: from then on its
/// [`Admission`] holds its place).
pub struct Pending {
    node: Arc<Node>,
    /// The peer's limit key, when counted per peer.
    peer: Option<IpAddr>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.node.pending.fetch_sub(1, Ordering::Relaxed);
        self.node.metrics.pending_sockets.dec();
        if let Some(peer) = &self.peer {
            self.node.pending_by_peer.release(peer);
        }
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
    /// The address's and user's place; moves to the node at attach.
    place: Option<Place>,
}

impl Admission {
    /// The node that admitted the connection.
    pub fn node(&self) -> &Arc<Node> {
        self.node.as_ref().expect("not yet attached")
    }

    /// The client's address (limit key), for the audit log.
    pub fn client(&self) -> Option<IpAddr> {
        self.place.as_ref().map(Place::address)
    }

    /// Registers the connection's outbox for the drain; from here on the
    /// connection owns its place and gives it back with [`Node::detach`].
    /// Returns the node and the connection's id.
    pub fn attach(mut self, outbox: Arc<Outbox>) -> (Arc<Node>, u64) {
        let node = self.node.take().expect("attached once");
        let place = self.place.take().expect("attached once");
        node.connections.insert(
            self.id,
            Attached {
                outbox,
                place,
                token: None,
                expiry: None,
            },
        );
        (node, self.id)
    }

    /// A connection (a websocket, or an HTTP stream of the fallback) joins
    /// the node: a fresh outbox under the node's queue limits, registered
    /// for the drain with its token (revocations find it) and, on a node
    /// that verifies tokens, its expiry (refreshes move it).
    pub fn connect(self, grant: Option<&crate::auth::Grant>) -> Connected {
        let limits = &self.node().config.limits;
        let outbox = Arc::new(Outbox::new(limits.queue_bytes, limits.queue_messages));
        let client = self.client();
        let (node, conn_id) = self.attach(outbox.clone());
        if let Some(grant) = grant {
            node.set_token(conn_id, grant);
        }
        let expires_at = grant.and_then(|g| g.expires_at);
        // Only a node that verifies tokens can see one set or refreshed later.
        let expiry = node
            .auth
            .is_some()
            .then(|| Arc::new(crate::auth::Expiry::new(expires_at)));
        if let Some(expiry) = &expiry {
            node.set_expiry(conn_id, expiry.clone());
        }
        Connected {
            node,
            conn_id,
            outbox,
            client,
            expiry,
            expires_at,
        }
    }
}

/// A connection registered in its node ([`Admission::connect`]).
pub struct Connected {
    pub node: Arc<Node>,
    pub conn_id: u64,
    pub outbox: Arc<Outbox>,
    /// The client's address (limit key), for the audit log.
    pub client: Option<IpAddr>,
    /// When the token runs out; `None` on a node that verifies no tokens.
    pub expiry: Option<Arc<crate::auth::Expiry>>,
    /// The token's `exp`, for `welcome`.
    pub expires_at: Option<u64>,
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
/// hold that many sockets plus a reserve (5%, at least 256) for refusals
/// being answered, the listeners, the bus, the log and key files. Pending
/// sockets count against the cap itself.
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

    fn place(node: &Arc<Node>) -> Place {
        node.occupancy
            .take("192.0.2.1".parse().unwrap(), 10, Some("fan"), 10)
            .unwrap()
    }

    #[tokio::test]
    async fn a_place_is_given_back_once_attached_or_not() {
        let node = node();
        let upgrading = node.admit(place(&node));
        let serving = node.admit(place(&node));
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
        assert_eq!(
            node.occupancy.addresses(),
            0,
            "the address's place went too"
        );
    }

    #[tokio::test]
    async fn pending_sockets_count_against_the_cap_and_per_peer() {
        let node = node();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let per_peer = node.pending_max_per_peer();
        assert_eq!(per_peer, 1024, "a quarter of 4,096");
        let held: Vec<Pending> = (0..per_peer)
            .map(|_| node.accept(Some(peer)).unwrap())
            .collect();
        assert_eq!(node.accept(Some(peer)).err(), Some("pending_address"));
        // A trusted proxy's sockets are not counted per peer.
        let proxied = node.accept(None).unwrap();
        assert_eq!(node.pending_count(), per_peer + 1);
        drop(held);
        drop(proxied);
        assert_eq!(node.pending_count(), 0);
        assert!(node.accept(Some(peer)).is_ok());
    }
}
