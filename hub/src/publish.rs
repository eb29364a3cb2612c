//! `POST /v1/publish` on the internal listener: stores a message on the
//! bus, for integrations, tests and the embedded bus.
//!
//! Guards, in order, each refusal audited: those of `keyed.rs` with the
//! publish key (`Authorization: Bearer <publish_key>`, at least 32 bytes;
//! without a configured key nobody may publish, but loopback callers of a
//! `--demo` node), then the body: size, JSON, topic, namespace.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes as Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tribune_protocol::frame::{PublishRequest, PublishResponse};
use tribune_protocol::{ErrorCode, Topic};

use crate::answer::http_error;
use crate::edge::address::canonical;
use crate::keyed;
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

/// Guards 1 to 4 of the module doc (`keyed.rs`); the refusal answer when
/// one fails. `POST /v1/retract` (`retract.rs`) passes the same ones.
pub(crate) fn guard(node: &Node, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    let demo_loopback = node.config.demo && canonical(peer.ip()).is_loopback();
    keyed::check(
        node,
        peer,
        headers,
        &keyed::PUBLISH,
        node.config.publish_key.as_deref(),
        demo_loopback,
        || {},
    )
}
