//! The public listener's routes: the websocket upgrade, after the
//! handshake's checks, health and readiness for load balancers, and the web
//! assets: the demo page at `/`, the JS SDK at `/sdk/`, the widget at
//! `/widget/` (PROTOCOL.md sections 1 and 9). Nothing for operators: that
//! is the internal listener's (`internal.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;
use tribune_protocol::ErrorCode;

use crate::answer::{healthz, http_error, not_found, readyz};
use crate::node::Node;

/// Initial read buffer of a connection: a fan's frames are small (a
/// subscribe is ~100 bytes); a larger frame grows it on demand.
const READ_BUFFER: usize = 128;

/// The public listener's routes.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(tribune_protocol::WS_PATH, get(ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::edge::headers::add))
        .with_state(node)
}

async fn ws(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A plain request (no `Upgrade: websocket`, a wrong version) is told so
    // in the JSON every refusal before the upgrade uses (PROTOCOL.md
    // section 1), not in the websocket library's text.
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let mut answer = crate::answer::http_error(
                StatusCode::UPGRADE_REQUIRED,
                ErrorCode::BadRequest,
                format!(
                    "{}: open a WebSocket here ({rejection})",
                    tribune_protocol::WS_PATH
                ),
            );
            answer.headers_mut().insert(
                header::UPGRADE,
                axum::http::HeaderValue::from_static("websocket"),
            );
            return answer;
        }
    };
    let accepted = match crate::handshake::check(&node, peer, &headers, query.as_deref()) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            node.metrics.refused(refusal.reason);
            node.audit
                .refused(refusal.reason, refusal.who(), &refusal.message);
            return (*refusal).into_response();
        }
    };
    let grant = accepted.grant;
    let admission = node.admit(accepted.place);
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
        // The path is not repeated (see `answer::not_found`).
        return http_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such file");
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
    // ETag; the page itself is revalidated every time. Which of them other
    // sites may load (CORS) is `edge::headers`'s to say.
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
        ],
        file.data.into_owned(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
