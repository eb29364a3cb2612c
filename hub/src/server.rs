//! The public listener's routes: the websocket upgrade, after the
//! handshake's checks, `GET /v1/history` (`history.rs`), its HTTP fallback
//! (`sse/`), health and readiness for load balancers, and the web
//! assets: the demo page at `/`, the JS SDK at `/sdk/`, the widget at
//! `/widget/` (PROTOCOL.md sections 1 and 9). Nothing for operators: that
//! is the internal listener's (`internal.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;
use tribune_protocol::ErrorCode;

use crate::answer::{healthz, http_error, not_found, readyz};
use crate::node::Node;

/// The public listener's routes.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(tribune_protocol::WS_PATH, get(ws))
        .route(
            tribune_protocol::HISTORY_PATH,
            get(crate::history::history).options(crate::history::preflight),
        )
        .route(
            "/v1/sse",
            get(crate::sse::stream).options(crate::sse::cors::preflight),
        )
        .route(
            "/v1/react",
            axum::routing::post(crate::sse::react::react).options(crate::sse::cors::preflight),
        )
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
    req: Request,
) -> Response {
    // A plain request (no `Upgrade: websocket`, a wrong version) is told so
    // in the JSON every refusal before the upgrade uses (PROTOCOL.md
    // section 1), not in the websocket library's text.
    let offer = match crate::ws::Offer::read(&req) {
        Ok(offer) => offer,
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
    let headers: &HeaderMap = req.headers();
    let accepted = match crate::handshake::check(&node, peer, headers, query.as_deref()) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            // Every refused fan at debug (the audit line at info is limited
            // to one per reason per second): why, and who.
            tracing::debug!(
                reason = refusal.reason,
                status = refusal.status.as_u16(),
                peer = %peer,
                client = ?refusal.client,
                "handshake refused"
            );
            node.metrics.refused(refusal.reason);
            node.audit
                .refused(refusal.reason, refusal.who(), &refusal.message);
            return (*refusal).into_response();
        }
    };
    let grant = accepted.grant;
    let admission = node.admit(accepted.place);
    let deflate = node.config.permessage_deflate && offer.deflate();
    let on_upgrade = hyper::upgrade::on(req);
    // The admission alone gives the place back when no connection comes of
    // the upgrade (the client left before it completed): it is dropped
    // with this task.
    //
    // The connection runs as a task of its own, its future built by
    // `serve` after the setup: a wrapper future would hold the upgrade, the
    // socket and the grant for the connection's whole life.
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            tokio::spawn(crate::connection::serve(
                upgraded, deflate, admission, grant,
            ));
        }
    });
    offer.accept(deflate)
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
