//! Security headers on every HTTP answer of both listeners, and the one
//! place that says which paths other sites may load.
//!
//! - `Content-Security-Policy`: scripts, styles and fetches from this origin
//!   only (styles may be inline: the demo page and the widget's shadow roots
//!   carry theirs), images from here, `data:` or HTTPS (clip thumbnails),
//!   no plugins, no `<base>`, no forms, and no framing (`frame-ancestors
//!   'none'`, with `X-Frame-Options: DENY` for older browsers);
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`
//!   (a token in a websocket URL must never leak through a Referer),
//!   `Cross-Origin-Opener-Policy: same-origin`;
//! - `Cross-Origin-Resource-Policy`: `cross-origin` with
//!   `Access-Control-Allow-Origin: *` only for `/sdk/` and `/widget/`, which
//!   other sites embed as module scripts; `same-origin` for everything else,
//!   the demo page included; `/v1/history` keeps the allowed origin its
//!   handler names (`history.rs`), a read a widget on another site makes;
//!   `cross-origin` for the HTTP fallback (`/v1/sse`, `/v1/react`), whose
//!   CORS answer `sse/cors.rs` gives;
//! - `Strict-Transport-Security` on answers sent over the hub's own TLS.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Marks a request that came over the hub's own TLS.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: https:; media-src 'self' https:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One year, as browsers' preload lists ask.
const HSTS: &str = "max-age=31536000";

/// Whether other sites may load `path` (the SDK and the widget bundle).
pub fn is_embeddable(path: &str) -> bool {
    path.starts_with("/sdk/") || path.starts_with("/widget/")
}

/// The HTTP fallback's paths (PROTOCOL.md section 11), which pages of the
/// allowed origins call cross-origin.
pub fn is_fallback(path: &str) -> bool {
    path == "/v1/sse" || path == "/v1/react"
}

/// The headers every answer carries, whatever its status.
pub fn common() -> [(HeaderName, HeaderValue); 5] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ]
}

/// Middleware adding the headers to every answer of a router.
pub async fn add(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let embeddable = is_embeddable(&path);
    let fallback = is_fallback(&path);
    let over_tls = req.extensions().get::<OverTls>().is_some();
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in common() {
        h.insert(name, value);
    }
    let corp = HeaderName::from_static("cross-origin-resource-policy");
    if embeddable {
        h.insert(corp, HeaderValue::from_static("cross-origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else if fallback {
        // The HTTP fallback answers pages of allowed origins itself
        // (`sse/cors.rs`, the origin echoed, never `*`).
        h.insert(corp, HeaderValue::from_static("cross-origin"));
    } else {
        h.insert(corp, HeaderValue::from_static("same-origin"));
        // `/v1/history` names the allowed origin itself (`history.rs`).
        if path != tribune_protocol::HISTORY_PATH {
            h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
        }
    }
    if over_tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    res
}
