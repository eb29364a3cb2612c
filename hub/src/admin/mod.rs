//! The admin page on the internal listener (`/admin`), on only when
//! `admin_key` is set: the cluster's nodes and topics from the statistics
//! partials (`cluster`), and a live tail of one topic (`tail`). A plain
//! HTML page and one script, served from the binary like the widget, no
//! build step; the script renders every value as text.
//!
//! Every path under `/admin` needs the key: HTTP Basic (any user name, the
//! key as the password; browsers ask for it and send it on the page's own
//! requests) or `Authorization: Bearer <key>` for scripts, compared in
//! constant time. Without it: 401 and a `WWW-Authenticate` challenge; a
//! wrong key spends the caller address's failure budget, shared with
//! `POST /v1/publish` (`publish_failures_per_minute`), past which 429.
//! Every refusal is counted and audited (`admin_key`, `admin_rate`).

mod cluster;
mod tail;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use tribune_protocol::ErrorCode;

use crate::answer::http_error;
use crate::audit::Who;
use crate::edge::address::{canonical, limit_key};
use crate::keyed::same_key;
use crate::node::Node;
use cluster::Cluster;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");

/// What the admin routes share.
pub struct Admin {
    node: Arc<Node>,
    cluster: Arc<Cluster>,
}

/// The `/admin` routes, or none without an `admin_key`. Starts listening to
/// the statistics partials.
pub fn router(node: Arc<Node>) -> Option<Router> {
    node.config.admin_key.as_ref()?;
    let cluster = Arc::new(Cluster::default());
    let window = Duration::from_millis(node.config.stats.window_ms);
    // The page counts only what the statistics count: partials sealed with
    // the cluster key (or, on the embedded bus, this process's own).
    let opener = crate::stats::Opener::new(
        node.config.stats.key_bytes().ok().flatten().as_deref(),
        node.config.bus.url.is_none(),
        node.config.clone(),
    );
    tokio::spawn(Cluster::run(
        Arc::downgrade(&cluster),
        node.side.clone(),
        window,
        opener,
    ));
    let admin = Arc::new(Admin { node, cluster });
    Some(
        Router::new()
            .route("/admin", get(page))
            .route("/admin/", get(page))
            .route("/admin/admin.js", get(script))
            .route("/admin/api/cluster", get(view))
            .route("/admin/api/tail", get(tail::tail))
            .layer(axum::middleware::from_fn_with_state(admin.clone(), guard))
            .with_state(admin),
    )
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// The nodes and topics now, and which node answers.
async fn view(State(admin): State<Arc<Admin>>) -> Response {
    let window = Duration::from_millis(admin.node.config.stats.window_ms);
    let view = admin.cluster.view(Instant::now(), window * 3);
    let body = serde_json::json!({
        "node": admin.node.config.node_name,
        "window_ms": admin.node.config.stats.window_ms,
        "nodes": view.nodes,
        "topics": view.topics,
    });
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The key in `Authorization`: Basic (the password) or Bearer.
fn given_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, key)| key.to_string())
}

/// Lets a request with the admin key through; refuses, counts and audits
/// anything else (see the module doc).
async fn guard(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let node = &admin.node;
    let Some(expected) = node.config.admin_key.as_deref() else {
        return crate::answer::not_found().await;
    };
    let ip = canonical(peer.ip());
    let key = limit_key(ip, node.config.limits.ipv6_prefix_len);
    let refuse = |reason: &'static str, status: StatusCode, code: ErrorCode, message: &str| {
        tracing::debug!(reason, status = status.as_u16(), peer = %peer, "admin request refused");
        node.audit.refused(reason, Who::client(ip), message);
        let mut res = http_error(status, code, message);
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tribune admin\", charset=\"UTF-8\""),
        );
        res
    };
    if let Some(left) = node.publish_failures.blocked(&key) {
        let mut res = refuse(
            "admin_rate",
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many failed attempts from this address",
        );
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        res.headers_mut()
            .insert(header::RETRY_AFTER, secs.max(1).into());
        return res;
    }
    match given_key(req.headers()) {
        Some(given) if same_key(&given, expected) => next.run(req).await,
        // A browser's first request carries no key: it asks the user on
        // the challenge. Only a wrong key spends the budget.
        None => refuse(
            "admin_key",
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the admin key is needed",
        ),
        Some(_) => {
            let (reason, status, code) = if node.publish_failures.failed(&key) {
                (
                    "admin_rate",
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                )
            } else {
                (
                    "admin_key",
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                )
            };
            refuse(reason, status, code, "wrong admin key")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_basic_and_bearer() {
        let mut h = HeaderMap::new();
        assert_eq!(given_key(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        assert_eq!(given_key(&h).as_deref(), Some("k1"));
        // "ops:k:2" — a colon in the key belongs to the key.
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:k:2");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        assert_eq!(given_key(&h).as_deref(), Some("k:2"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(given_key(&h), None);
    }
}
