//! `POST /v1/publish` on the internal listener: stores a message on the
//! bus, for integrations, tests and the embedded bus.
//!
//! Guards, in order, each refusal audited:
//! 1. a request carrying `Origin` comes from a browser page: a cross-site
//!    request or a DNS-rebinding attack, never an integration: 403;
//! 2. a caller address that spent its failure budget
//!    (`publish_failures_per_minute`) is refused without its key being
//!    looked at: 429 with `Retry-After`;
//! 3. the key: `Authorization: Bearer <publish_key>` (at least 32 bytes,
//!    compared in constant time); without a configured key nobody may
//!    publish, but loopback callers of a `--demo` node: 401 or 403;
//! 4. `Content-Type: application/json` only (a browser can send
//!    `text/plain` cross-site without a preflight): 415;
//! 5. then the body: size, JSON, topic, namespace.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes as Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tribune_protocol::frame::{PublishRequest, PublishResponse};
use tribune_protocol::{ErrorCode, Topic};

use crate::answer::http_error;
use crate::audit::Who;
use crate::edge::address::{canonical, limit_key};
use crate::node::Node;

pub async fn publish(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refusal) = guard(&node, peer, &headers) {
        return refusal;
    }
    let limit = node.config.limits.max_payload_bytes;
    if body.len() > limit + 512 {
        return http_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "payload too large",
        );
    }
    let req: PublishRequest = match editor_body(&body, "{\"topic\",\"data\"}") {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let topic = match configured_topic(&node, &req.topic) {
        Ok((topic, _)) => topic,
        Err(refusal) => return *refusal,
    };
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
/// An editor's JSON body of the given `shape` (for the error), or the 400.
pub(crate) fn editor_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("body must be {shape}: {e}"),
        ))
    })
}

/// A topic name of a configured namespace, with that namespace, or the 400.
pub(crate) fn configured_topic<'a>(
    node: &'a Node,
    name: &str,
) -> Result<(Topic, &'a crate::config::Namespace), Box<Response>> {
    let topic = Topic::new(name).map_err(|e| {
        Box::new(http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadTopic,
            e.to_string(),
        ))
    })?;
    let Some(ns) = node.config.namespace(topic.namespace()) else {
        return Err(Box::new(http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnknownNamespace,
            format!("namespace '{}' is not configured", topic.namespace()),
        )));
    };
    Ok((topic, ns))
}

/// Guards 1 to 4 of the module doc; the refusal answer when one fails.
/// `POST /v1/retract` (`retract.rs`) passes the same ones.
pub(crate) fn guard(node: &Node, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    let ip = canonical(peer.ip());
    let key = limit_key(ip, node.config.limits.ipv6_prefix_len);
    let refuse = |reason: &'static str, status: StatusCode, code: ErrorCode, message: &str| {
        node.audit.refused(reason, Who::client(ip), message);
        http_error(status, code, message)
    };
    if headers.contains_key(header::ORIGIN) {
        return Some(refuse(
            "publish_origin",
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "requests from browser pages (with Origin) may not publish",
        ));
    }
    if let Some(left) = node.publish_failures.blocked(&key) {
        let mut res = refuse(
            "publish_rate",
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many failed attempts from this address",
        );
        crate::answer::retry_after(&mut res, left);
        return Some(res);
    }
    match &node.config.publish_key {
        Some(expected) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| same_key(g, expected)) {
                let blocked = node.publish_failures.failed(&key);
                let reason = if blocked {
                    "publish_rate"
                } else {
                    "publish_key"
                };
                let (status, code) = if blocked {
                    (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)
                } else {
                    (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
                };
                return Some(refuse(reason, status, code, "missing or wrong publish key"));
            }
        }
        None if node.config.demo && ip.is_loopback() => {}
        None => {
            return Some(refuse(
                "publish_disabled",
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "no publish_key configured: HTTP publishing is off (loopback may publish only with --demo)",
            ));
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Some(refuse(
            "publish_content_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            "Content-Type must be application/json",
        ));
    }
    None
}

/// Compares keys in constant time, their lengths included: both are hashed
/// first, so neither the position of the first wrong byte nor the length of
/// the real key shows in the time taken.
pub(crate) fn same_key(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        let key = "0123456789abcdef0123456789abcdef";
        assert!(same_key(key, key));
        assert!(!same_key("0123456789abcdef0123456789abcdeX", key));
        assert!(!same_key("0123456789abcdef", key));
        assert!(!same_key("", key));
    }
}
