//! The listener, the HTTP routes and the node state every connection shares.
//!
//! Routes (PROTOCOL.md sections 1 and 9): `GET /v1/ws`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics`, `POST /v1/publish`, and the web assets: the
//! demo page at `/`, the JS SDK at `/sdk/`, the widget at `/widget/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes as Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use dashmap::DashMap;
use rust_embed::RustEmbed;
use tribune_protocol::frame::{HttpError, PublishRequest, PublishResponse};
use tribune_protocol::{ErrorCode, Topic};

use crate::auth::Authenticator;
use crate::bus::{Bus, SideChannel};
use crate::config::Config;
use crate::limits::{self, HandshakeLimiter};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::registry::Registry;
use crate::stats::Stats;

/// Initial read buffer of a connection: a fan's frames are small (a
/// subscribe is ~100 bytes); a larger frame grows it on demand.
const READ_BUFFER: usize = 128;

/// Everything a node's connections share.
pub struct Node {
    pub config: Arc<Config>,
    pub bus: Arc<dyn Bus>,
    /// The same bus's side channel: fans' publications, statistics gossip.
    pub side: Arc<dyn SideChannel>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub stats: Arc<Stats>,
    pub auth: Option<Authenticator>,
    pub handshakes: HandshakeLimiter,
    /// Open connections' outboxes, for the paced drain.
    connections: DashMap<u64, Arc<Outbox>>,
    /// Connections accepted and not yet detached, including those upgrading.
    open: AtomicUsize,
    draining: AtomicBool,
    next_conn: AtomicU64,
    /// `limits.max_connections`, lowered to what the process's file limit
    /// can hold with room for handshakes in flight: past it the node answers
    /// 503 rather than failing `accept` with EMFILE.
    pub max_connections: usize,
}

impl Node {
    pub fn new(
        config: Arc<Config>,
        bus: Arc<dyn Bus>,
        side: Arc<dyn SideChannel>,
        auth: Option<Authenticator>,
    ) -> Arc<Node> {
        let config_max = config.limits.max_connections;
        let metrics = Arc::new(Metrics::new());
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

    pub fn connection_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn attach(&self, id: u64, outbox: Arc<Outbox>) {
        self.connections.insert(id, outbox);
    }

    pub(crate) fn detach(&self, id: u64) {
        self.connections.remove(&id);
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections.dec();
    }

    /// The outboxes of every open connection (drain).
    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.connections.iter().map(|e| e.value().clone()).collect()
    }

    fn is_ready(&self) -> bool {
        !self.is_draining() && self.bus.status().borrow().connected
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
pub fn connection_cap(configured: usize, file_limit: Option<u64>) -> usize {
    match file_limit {
        Some(limit) => {
            let reserve = (limit / 20).max(256);
            configured.min(limit.saturating_sub(reserve) as usize)
        }
        None => configured,
    }
}

/// The node's HTTP routes.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(tribune_protocol::WS_PATH, get(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/publish", post(publish))
        .route("/", get(|| async { asset::<Demo>("index.html", false) }))
        .route(
            "/demo/{*path}",
            get(|Path(p): Path<String>| async move { asset::<Demo>(&p, false) }),
        )
        .route(
            "/sdk/{*path}",
            get(|Path(p): Path<String>| async move { asset::<Sdk>(&p, true) }),
        )
        .route(
            "/widget/{*path}",
            get(|Path(p): Path<String>| async move { asset::<Widget>(&p, true) }),
        )
        .with_state(node)
}

async fn ws(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let grant = match crate::handshake::check(&node, peer, &headers, query.as_deref()) {
        Ok(grant) => grant,
        Err(refusal) => {
            node.metrics.refused(refusal.reason);
            return refusal.into_response();
        }
    };
    let id = node.next_conn.fetch_add(1, Ordering::Relaxed);
    node.open.fetch_add(1, Ordering::Relaxed);
    node.metrics.connections.inc();
    node.metrics.connections_accepted.inc();
    let limits = &node.config.limits;
    // Small buffers: an idle fan's connection must cost a few KiB, not the
    // 128 KiB tungstenite reserves by default. The read buffer is allocated
    // up front and grows on demand for a larger frame; fans' frames are
    // small (a subscribe is ~100 bytes).
    let upgrade = upgrade
        .protocols([tribune_protocol::SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(limits.queue_bytes * 2 + 64 * 1024)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes);
    let guard = OpenGuard(Some(node.clone()));
    upgrade
        .on_failed_upgrade({
            let node = node.clone();
            move |_| {
                node.open.fetch_sub(1, Ordering::Relaxed);
                node.metrics.connections.dec();
            }
        })
        // The connection's future itself, not a block wrapping it: a
        // wrapper would hold the socket and the grant for the connection's life.
        .on_upgrade(move |socket| crate::connection::serve(socket, guard.disarm(), id, grant))
}

/// Undoes the open-connection count if an upgrade future is dropped unrun.
struct OpenGuard(Option<Arc<Node>>);

impl OpenGuard {
    fn disarm(mut self) -> Arc<Node> {
        self.0.take().expect("disarmed once")
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            node.open.fetch_sub(1, Ordering::Relaxed);
            node.metrics.connections.dec();
        }
    }
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "bus unavailable\n").into_response()
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.render(),
    )
        .into_response()
}

fn http_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = serde_json::to_string(&HttpError::new(code, message)).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /v1/publish`: stores a message on the bus, for integrations, tests
/// and the embedded bus. Without a configured key only loopback may publish.
async fn publish(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match &node.config.publish_key {
        Some(key) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
                return http_error(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "missing or wrong publish key",
                );
            }
        }
        None if !peer.ip().is_loopback() => {
            return http_error(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "no publish key configured: only loopback callers may publish",
            );
        }
        None => {}
    }
    let limit = node.config.limits.max_payload_bytes;
    if body.len() > limit + 512 {
        return http_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "payload too large",
        );
    }
    let req: PublishRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("body must be {{\"topic\",\"data\"}}: {e}"),
            );
        }
    };
    let topic = match Topic::new(&req.topic) {
        Ok(t) => t,
        Err(e) => return http_error(StatusCode::BAD_REQUEST, ErrorCode::BadTopic, e.to_string()),
    };
    if node.config.namespace(topic.namespace()).is_none() {
        return http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnknownNamespace,
            format!("namespace '{}' is not configured", topic.namespace()),
        );
    }
    let data = Bytes::copy_from_slice(req.data.get().as_bytes());
    if data.len() > limit {
        return http_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "payload too large",
        );
    }
    let msg_id = headers
        .get("nats-msg-id")
        .or_else(|| headers.get("idempotency-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match node.bus.publish(&topic, data, msg_id).await {
        Ok(seq) => {
            node.metrics.http_publishes.inc();
            axum::Json(PublishResponse { seq }).into_response()
        }
        Err(e) => http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            e.to_string(),
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::connection_cap;

    #[test]
    fn connection_cap_leaves_room_under_the_file_limit() {
        assert_eq!(connection_cap(200_000, Some(20_000)), 19_000);
        assert_eq!(connection_cap(100, Some(20_000)), 100);
        assert_eq!(connection_cap(200_000, Some(1_024)), 768);
        assert_eq!(connection_cap(200_000, Some(1_048_576)), 200_000);
        assert_eq!(connection_cap(200_000, None), 200_000);
    }
}

#[derive(RustEmbed)]
#[folder = "../client-sdk/widget/demo/"]
struct Demo;

#[derive(RustEmbed)]
#[folder = "../client-sdk/js/src/"]
struct Sdk;

#[derive(RustEmbed)]
#[folder = "../client-sdk/widget/src/"]
struct Widget;

fn asset<A: RustEmbed>(path: &str, cacheable: bool) -> Response {
    let Some(file) = A::get(path) else {
        return http_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no such file: {path}"),
        );
    };
    let mime = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("ts") => "application/typescript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..12]));
    // The SDK and widget are versioned with the node: a short cache and an
    // ETag; the page itself is revalidated every time.
    let cache = if cacheable {
        "public, max-age=300, must-revalidate"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CACHE_CONTROL, cache.to_string()),
            (header::ETAG, etag),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_string()),
        ],
        file.data.into_owned(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
