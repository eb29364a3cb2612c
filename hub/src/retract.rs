//! `POST /v1/retract` on the internal listener: an editor retracts a
//! message (PROTOCOL.md section 13). Behind the guards of `POST
//! /v1/publish` (no `Origin`, failure limits, the publish key, JSON): who
//! may publish may retract. The body `{"topic","seq"}`; the answer
//! `{"seq":M}`, the marker's own `seq`. `state` topics are refused (a
//! correction there is the next state), counted and audited.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes as Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tribune_protocol::frame::{PublishResponse, RetractRequest};
use tribune_protocol::{ErrorCode, Mode};

use crate::answer::http_error;
use crate::audit::Who;
use crate::edge::address::canonical;
use crate::node::Node;
use crate::publish::{configured_topic, editor_body, guard};

/// A retraction body is two small fields.
const MAX_BODY: usize = 1024;

pub async fn retract(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refusal) = guard(&node, peer, &headers) {
        return refusal;
    }
    if body.len() > MAX_BODY {
        return http_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "a retraction is {\"topic\",\"seq\"}",
        );
    }
    let req: RetractRequest = match editor_body(&body, "{\"topic\",\"seq\"}") {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let (topic, ns) = match configured_topic(&node, &req.topic) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    if ns.mode == Mode::State {
        let message = format!(
            "'{}' is a state topic: publish the corrected state instead of retracting",
            topic.namespace()
        );
        node.audit.refused(
            "retract_state_topic",
            Who::client(canonical(peer.ip())),
            &message,
        );
        return http_error(StatusCode::CONFLICT, ErrorCode::BadRequest, message);
    }
    if req.seq == 0 {
        return http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "seq must name a stored message (above 0)",
        );
    }
    match node.bus.retract(&topic, req.seq).await {
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
