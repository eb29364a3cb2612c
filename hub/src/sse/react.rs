//! `POST /v1/react` for fans on the HTTP fallback (PROTOCOL.md section 11):
//! the checks of a `react` frame in the same order, the subscription proven
//! by the stream's reaction key (`keys.rs`), counted where it lands and
//! summed across nodes like any other reaction.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tribune_protocol::{Ack, ErrorCode, ServerFrame, Topic, encode_server};

use crate::answer::http_error;
use crate::audit::Who;
use crate::auth::token_from_request;
use crate::edge::address::client_ip;
use crate::node::Node;

/// The body of `POST /v1/react`: the `react` frame's fields and the key.
#[derive(Debug, Deserialize)]
struct ReactBody {
    #[serde(default)]
    id: u64,
    topic: String,
    reaction: String,
    key: String,
}

/// `POST /v1/react`: the same checks as a `react` frame, in the same
/// order, the subscription proven by the stream's key.
pub async fn react(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = client_ip(peer.ip(), &node.trusted_proxies, &headers);
    let mut res = answer(&node, ip, &headers, &body);
    super::cors::allow(&node, &headers, &mut res);
    res
}

fn answer(node: &Node, ip: std::net::IpAddr, headers: &HeaderMap, body: &[u8]) -> Response {
    let refuse = |reason: &'static str, status: StatusCode, code: ErrorCode, msg: &str| {
        node.metrics.reaction("refused");
        let who = Who {
            client: Some(ip),
            sub: None,
            kid: None,
        };
        node.audit.refused(reason, who, msg);
        http_error(status, code, msg.to_string())
    };
    // Every request counts against its address's handshake rate: a flood
    // of reactions (valid or not) costs what a flood of handshakes does.
    let key = crate::edge::address::limit_key(ip, node.config.limits.ipv6_prefix_len);
    if let Err(wait) = node.handshakes.check(&key) {
        node.metrics.reaction("rate_limited");
        node.audit.refused(
            "rate",
            Who {
                client: Some(ip),
                sub: None,
                kid: None,
            },
            "too many requests from this address",
        );
        let mut res = http_error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many requests from this address",
        );
        crate::answer::retry_after(&mut res, wait);
        return res;
    }
    if !super::cors::origin_allowed(node, headers) {
        return refuse(
            "origin",
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "origin not allowed",
        );
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == "application/json");
    if !json {
        return refuse(
            "react_content_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            "send application/json",
        );
    }
    // The limit of a client frame: a reaction is one.
    if body.len() > node.config.limits.max_frame_bytes {
        return refuse(
            "react_body",
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BadRequest,
            "body too large",
        );
    }
    let Ok(r) = serde_json::from_slice::<ReactBody>(body) else {
        return refuse(
            "react_body",
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "expected {\"topic\",\"reaction\",\"key\"}",
        );
    };
    let grant = if node.auth.is_some() {
        let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        match token_from_request(None, authorization) {
            Ok(None) => None,
            Ok(Some(token)) => match node.verify_token(&token) {
                Ok(grant) => Some(grant),
                Err(e) => {
                    return refuse(
                        "token",
                        StatusCode::UNAUTHORIZED,
                        ErrorCode::Unauthorized,
                        &e.to_string(),
                    );
                }
            },
            Err(e) => {
                return refuse(
                    "token",
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    &e.to_string(),
                );
            }
        }
    } else {
        None
    };
    let topic = match Topic::new(&r.topic) {
        Ok(t) => t,
        Err(e) => {
            return refuse(
                "react_body",
                StatusCode::BAD_REQUEST,
                ErrorCode::BadTopic,
                &e.to_string(),
            );
        }
    };
    let Some(ns) = node.config.namespace(topic.namespace()) else {
        return refuse(
            "react_body",
            StatusCode::BAD_REQUEST,
            ErrorCode::UnknownNamespace,
            "namespace is not configured",
        );
    };
    if ns.reactions.is_empty() {
        return refuse(
            "react_body",
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this namespace takes no reactions",
        );
    }
    if !ns.reactions.contains(&r.reaction) {
        return refuse(
            "react_body",
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "reaction not allowed on this topic",
        );
    }
    let sub = grant.as_ref().and_then(|g| g.subject.as_deref());
    if ns.token && !grant.as_ref().is_some_and(|g| g.allows(&topic)) {
        return refuse(
            "react_grant",
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this topic needs a token that grants it",
        );
    }
    let Some(nonce) = node.react_keys.verify(&r.key, topic.as_str(), sub) else {
        return refuse(
            "react_unsubscribed",
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "react with the key of a stream of this topic",
        );
    };
    if let Err(wait) = node.react_keys.check_rate(nonce) {
        node.metrics.reaction("rate_limited");
        let mut res = http_error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many reactions",
        );
        crate::answer::retry_after(&mut res, wait);
        return res;
    }
    node.metrics.reaction("accepted");
    node.stats.react(&topic, &r.reaction);
    let ack = encode_server(&ServerFrame::Ack(Ack {
        id: r.id,
        ..Ack::default()
    }));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        ack,
    )
        .into_response()
}
