//! HTTP answers both listeners give: the JSON error body of every refusal
//! (PROTOCOL.md section 1), health and readiness.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tribune_protocol::ErrorCode;
use tribune_protocol::frame::HttpError;

use crate::node::Node;

/// `{"error":{"code","message"}}` with `status`.
pub fn http_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = serde_json::to_string(&HttpError::new(code, message)).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Adds `Retry-After` for a wait of `left`, in whole seconds rounded up
/// (at least 1): a client told 0 would retry at once.
pub fn retry_after(res: &mut Response, left: std::time::Duration) {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    res.headers_mut()
        .insert(header::RETRY_AFTER, secs.max(1).into());
}

/// Any path no route serves. The path is not repeated: an answer that
/// echoes what the client sent is how reflected injection starts.
pub async fn not_found() -> Response {
    http_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such path")
}

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the bus is connected and the node not draining.
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "bus unavailable\n").into_response()
    }
}
