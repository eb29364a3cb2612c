//! The node's HTTP routes: the websocket upgrade, after the handshake's
//! checks, and the plain HTTP endpoints.
//!
//! Routes (PROTOCOL.md sections 1 and 9): `GET /v1/ws`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics`, `POST /v1/publish`, and the web assets: the
//! demo page at `/`, the JS SDK at `/sdk/`, the widget at `/widget/`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes as Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use rust_embed::RustEmbed;
use tribune_protocol::frame::{HttpError, PublishRequest, PublishResponse};
use tribune_protocol::{ErrorCode, Topic};

use crate::node::Node;

/// Initial read buffer of a connection: a fan's frames are small (a
/// subscribe is ~100 bytes); a larger frame grows it on demand.
const READ_BUFFER: usize = 128;

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
    let admission = node.admit();
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
    // The admission alone gives the place back when no connection comes of
    // the upgrade: axum drops this closure unrun both when the upgrade fails
    // (after its `on_failed_upgrade` callback) and when the runtime drops the
    // upgrade task. Counting back in that callback too would count twice.
    //
    // The connection's future itself, not a block wrapping it: a wrapper
    // would hold the socket and the grant for the connection's life.
    upgrade.on_upgrade(move |socket| crate::connection::serve(socket, admission, grant))
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
