//! Cross-origin access to `/v1/sse` and `/v1/react`: the widget runs on a
//! news site's page, so its fetches are cross-origin. The origins allowed
//! are the websocket's (`allowed_origins`; every origin when the list is
//! empty, as the handshake allows), echoed back, never `*`: the answer
//! varies by `Origin`. Preflights (a token in `Authorization`, a JSON body)
//! are answered here.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::node::Node;

/// Whether a request's `Origin` (if any: apps send none) may use the
/// fallback, by the handshake's rule.
pub fn origin_allowed(node: &Node, headers: &HeaderMap) -> bool {
    let allowed = &node.config.allowed_origins;
    match headers.get(header::ORIGIN) {
        None => true,
        Some(_) if allowed.is_empty() => true,
        Some(origin) => origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a == o || a == "*")),
    }
}

/// Lets the page read `res` when its origin is allowed.
pub fn allow(node: &Node, headers: &HeaderMap, res: &mut Response) {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return;
    };
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if origin_allowed(node, headers) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

/// `OPTIONS` on the fallback's paths: which methods and headers a page may
/// use (a token travels in `Authorization`; `Last-Event-ID` on a resume).
pub async fn preflight(
    axum::extract::State(node): axum::extract::State<std::sync::Arc<Node>>,
    headers: HeaderMap,
) -> Response {
    if !origin_allowed(&node, &headers) {
        node.metrics.refused("origin");
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut res = (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type, last-event-id",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response();
    allow(&node, &headers, &mut res);
    res
}
