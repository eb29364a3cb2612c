//! The server API on the internal listener, for operators:
//! `POST /v1/disconnect` (`{"user"}`, or `{"conn"}` with an optional
//! `"node"`, by default the node called), `POST /v1/unsubscribe`
//! (`{"user","topic"}`: the user's subscriptions to the topic end with
//! `unsubscribed`; the grant is unchanged, so the user may subscribe again)
//! and `POST /v1/revoke` (`{"jti"}`,
//! or `{"user"}` with an optional `"before"`, Unix seconds, by default now;
//! an optional `"until"`, when the entry may be forgotten).
//!
//! Each call is applied on the node called at once, then carried to every
//! other node as a control message sealed with the cluster's `stats.key`
//! (`control.rs`): the whole cluster follows within the bus's latency. Guards, each refusal audited and
//! counted: a request with `Origin` (a browser page) 403; an address past
//! its failed attempts 429; `Authorization: Bearer <operator_key>` (401 when
//! wrong, 403 when no key is configured: the API is off); JSON only (415).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes as Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tribune_protocol::ErrorCode;

use crate::answer::http_error;
use crate::auth::{DEFAULT_RETENTION, unix_now};
use crate::control::{self, Op};
use crate::keyed;
use crate::log_limit::LogLimit;
use crate::node::Node;

/// Dropped control messages are logged at most once a second: whoever can
/// publish on the bus could otherwise flood the log.
static DROPPED_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

/// The seal of control messages: the cluster's statistics key (read once
/// here; an unreadable key file was refused at start), trusted on the
/// embedded bus.
fn control_seal(node: &Node) -> control::Seal {
    let key = node.config.stats.key_bytes().ok().flatten();
    control::Seal::new(key.as_deref(), node.config.bus.url.is_none())
}

/// Applies every other node's control messages to this node, for its life.
pub async fn follow(node: Arc<Node>) {
    let mut seal = control_seal(&node);
    let mut feed = loop {
        match node.side.control_feed().await {
            Ok(feed) => break feed,
            Err(e) => {
                tracing::warn!(error = %e, "control feed unavailable, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    while let Some(payload) = feed.next().await {
        match seal.open(&payload) {
            // Applied when the call came in.
            Ok((origin, _)) if origin == node.config.node_name => {}
            Ok((origin, op)) => {
                let closed = node.apply(&op);
                tracing::info!(%origin, ?op, closed, "control message applied");
            }
            Err(why) => {
                node.metrics.tokens.control_dropped(why.as_str());
                if let Some(held_back) = DROPPED_LOG.allow() {
                    tracing::warn!(reason = why.as_str(), held_back, "control message dropped");
                }
            }
        }
    }
}

/// Body of `POST /v1/disconnect`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    user: Option<String>,
    conn: Option<String>,
    node: Option<String>,
}

/// Body of `POST /v1/unsubscribe`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeRequest {
    user: String,
    topic: String,
}

/// Body of `POST /v1/revoke`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    jti: Option<String>,
    user: Option<String>,
    before: Option<u64>,
    until: Option<u64>,
}

pub async fn disconnect(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req: DisconnectRequest = match admit(&node, peer, &headers, &body, "disconnect") {
        Ok(req) => req,
        Err(refusal) => return *refusal,
    };
    let op = match (req.user, req.conn) {
        (Some(user), None) if req.node.is_none() => Op::Disconnect {
            user: Some(user),
            conn: None,
            node: None,
        },
        (None, Some(conn)) => Op::Disconnect {
            user: None,
            conn: Some(conn),
            node: Some(req.node.unwrap_or_else(|| node.config.node_name.clone())),
        },
        _ => {
            return bad_request(
                &node,
                "disconnect",
                "give either \"user\" or \"conn\" (with an optional \"node\")",
            );
        }
    };
    run(&node, "disconnect", op).await
}

pub async fn unsubscribe(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req: UnsubscribeRequest = match admit(&node, peer, &headers, &body, "unsubscribe") {
        Ok(req) => req,
        Err(refusal) => return *refusal,
    };
    if let Err(e) = tribune_protocol::validate_topic(&req.topic) {
        return bad_request(&node, "unsubscribe", &e.to_string());
    }
    let op = Op::Unsubscribe {
        user: req.user,
        topic: req.topic,
    };
    run(&node, "unsubscribe", op).await
}

pub async fn revoke(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req: RevokeRequest = match admit(&node, peer, &headers, &body, "revoke") {
        Ok(req) => req,
        Err(refusal) => return *refusal,
    };
    // Kept as long as a token it covers may be valid.
    let lifetime = match node.config.auth.max_lifetime_secs {
        0 => DEFAULT_RETENTION.as_secs(),
        max => max,
    };
    let until = req.until.unwrap_or(unix_now() + lifetime);
    let op = match (req.jti, req.user) {
        (Some(jti), None) if req.before.is_none() => Op::Revoke {
            jti: Some(jti),
            user: None,
            before: None,
            until,
        },
        (None, Some(user)) => Op::Revoke {
            jti: None,
            user: Some(user),
            before: Some(req.before.unwrap_or_else(unix_now)),
            until,
        },
        _ => {
            return bad_request(
                &node,
                "revoke",
                "give either \"jti\" or \"user\" (with an optional \"before\")",
            );
        }
    };
    run(&node, "revoke", op).await
}

/// Applies `op` here, then sends it to every other node.
async fn run(node: &Arc<Node>, endpoint: &'static str, op: Op) -> Response {
    let closed = node.apply(&op);
    let sealed = control_seal(node).seal(&node.config.node_name, &op);
    if let Err(e) = node.side.publish_control(sealed).await {
        node.metrics.tokens.api_call(endpoint, "unavailable");
        return http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            format!("applied on this node ({closed} closed), not sent to the others: {e}"),
        );
    }
    node.metrics.tokens.api_call(endpoint, "ok");
    tracing::info!(endpoint, ?op, closed, "server API call applied and sent");
    axum::Json(serde_json::json!({ "node": node.config.node_name, "closed": closed }))
        .into_response()
}

fn bad_request(node: &Node, endpoint: &'static str, message: &str) -> Response {
    node.metrics.tokens.api_call(endpoint, "refused");
    http_error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}

/// The guards of the module doc, then the body.
fn admit<T: serde::de::DeserializeOwned>(
    node: &Node,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: &'static str,
) -> Result<T, Box<Response>> {
    if let Some(refusal) = keyed::check(
        node,
        peer,
        headers,
        &keyed::OPERATOR,
        node.config.operator_key.as_deref(),
        false,
        || node.metrics.tokens.api_call(endpoint, "refused"),
    ) {
        return Err(Box::new(refusal));
    }
    serde_json::from_slice(body).map_err(|e| {
        node.metrics.tokens.api_call(endpoint, "refused");
        Box::new(http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("bad body: {e}"),
        ))
    })
}
