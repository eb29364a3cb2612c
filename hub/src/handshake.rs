//! Checks before the upgrade (PROTOCOL.md section 1): draining, handshake
//! rate per client address, node capacity, Origin, token. A refusal is a
//! plain HTTP answer with a JSON body and costs the node nothing more.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tribune_protocol::ErrorCode;
use tribune_protocol::frame::HttpError;

use crate::auth::{Grant, token_from_request};
use crate::node::Node;

/// A handshake refused before the upgrade.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// Metric label.
    pub reason: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body =
            serde_json::to_string(&HttpError::new(self.code, self.message)).unwrap_or_default();
        let mut res = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        res
    }
}

fn refuse(
    status: StatusCode,
    code: ErrorCode,
    reason: &'static str,
    message: impl Into<String>,
) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
        retry_after: None,
        reason,
    }
}

/// A refusal that tells the client to retry in a second (429, 503).
fn retry_later(
    status: StatusCode,
    code: ErrorCode,
    reason: &'static str,
    message: &str,
) -> Refusal {
    Refusal {
        retry_after: Some(1),
        ..refuse(status, code, reason, message)
    }
}

/// The client's address: the peer, or the first untrusted hop of
/// `X-Forwarded-For` when the peer is a configured proxy.
pub fn client_ip(node: &Node, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let peer_ip = peer.ip();
    if !node.config.trusted_proxies.contains(&peer_ip) {
        return peer_ip;
    }
    let Some(forwarded) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) else {
        return peer_ip;
    };
    // Walk from the nearest hop back; the first address that is not one of
    // our proxies is the client.
    forwarded
        .split(',')
        .rev()
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .find(|ip| !node.config.trusted_proxies.contains(ip))
        .unwrap_or(peer_ip)
}

/// Runs every check; on success, the verified grant (if a token came).
pub fn check(
    node: &Node,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Grant>, Refusal> {
    if node.is_draining() {
        return Err(retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "draining",
            "node is draining; connect to another node",
        ));
    }
    let ip = client_ip(node, peer, headers);
    if node.handshakes.check_key(&ip).is_err() {
        return Err(retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "rate",
            "too many handshakes from this address",
        ));
    }
    if node.connection_count() >= node.max_connections {
        return Err(retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "capacity",
            "node is at its connection limit",
        ));
    }
    // Apps send no Origin; browsers always do, and only those are checked.
    let origin = headers
        .get(header::ORIGIN)
        .filter(|_| !node.config.allowed_origins.is_empty());
    if let Some(origin) = origin {
        let allowed = origin.to_str().is_ok_and(|o| {
            node.config
                .allowed_origins
                .iter()
                .any(|a| a == o || a == "*")
        });
        if !allowed {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "origin",
                "origin not allowed",
            ));
        }
    }
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let token = token_from_request(query, authorization).map_err(|e| {
        refuse(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "token",
            e.to_string(),
        )
    })?;
    match (token, &node.auth) {
        (None, _) => Ok(None),
        (Some(_), None) => Err(refuse(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "token",
            "this node verifies no tokens (no key configured)",
        )),
        (Some(token), Some(auth)) => auth.verify(&token).map(Some).map_err(|e| {
            refuse(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "token",
                e.to_string(),
            )
        }),
    }
}
