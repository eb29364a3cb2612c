//! Checks before the upgrade (PROTOCOL.md section 1), cheapest first:
//! draining, handshake rate per client address, handshake rate of the node,
//! node capacity, Origin, token, then the share of the node the client's
//! address and user may hold. A refusal is a plain HTTP answer with a JSON
//! body, costs the node nothing more, and goes to the audit log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tribune_protocol::ErrorCode;
use tribune_protocol::frame::HttpError;

use crate::audit::Who;
use crate::auth::{Grant, key_id, token_from_request};
use crate::edge::address::{client_ip, limit_key};
use crate::limits::direct_check;
use crate::node::Node;
use crate::occupancy::{Full, Place};

/// A handshake refused before the upgrade.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// Metric label and audit reason.
    pub reason: &'static str,
    /// The client's address, when known.
    pub client: Option<IpAddr>,
    /// The verified token's `sub`.
    pub sub: Option<String>,
    /// The token header's `kid`.
    pub kid: Option<String>,
}

impl Refusal {
    fn new(
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
            client: None,
            sub: None,
            kid: None,
        }
    }

    /// A refusal that tells the client when to come back (429, 503).
    fn retry_in(mut self, wait: Duration) -> Refusal {
        self.retry_after = Some(retry_after_secs(wait));
        self
    }

    /// Who was refused, for the audit log.
    pub fn who(&self) -> Who<'_> {
        Who {
            client: self.client,
            sub: self.sub.as_deref(),
            kid: self.kid.as_deref(),
        }
    }
}

/// `Retry-After` in whole seconds: at least 1, and a random extra second
/// for half the clients, so that thousands refused in the same instant (a
/// stadium behind one address) do not all come back in the same one.
fn retry_after_secs(wait: Duration) -> u64 {
    let base = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    base.max(1) + u64::from(rand::random::<bool>())
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

/// What a handshake that passed every check brings to its connection.
pub struct Accepted {
    /// The verified token's grant, if a token came.
    pub grant: Option<Grant>,
    /// The share of the node its address and user now hold.
    pub place: Place,
}

/// Runs every check; on success, the grant and the place taken.
///
/// `peer` is the transport peer, or the client named by a trusted PROXY
/// protocol header; `X-Forwarded-For` is read only from trusted proxies.
pub fn check(
    node: &Arc<Node>,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Accepted, Box<Refusal>> {
    let ip = client_ip(peer.ip(), &node.trusted_proxies, headers);
    // Boxed: a refusal is large and rare; the accepted path stays small.
    let with_client = |mut r: Refusal| {
        r.client = Some(ip);
        Box::new(r)
    };
    if node.is_draining() {
        return Err(with_client(
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "draining",
                "node is draining; connect to another node",
            )
            .retry_in(Duration::from_secs(1)),
        ));
    }
    let key = limit_key(ip, node.config.limits.ipv6_prefix_len);
    if let Err(wait) = node.handshakes.check(&key) {
        return Err(with_client(
            Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "rate",
                "too many handshakes from this address",
            )
            .retry_in(wait),
        ));
    }
    // After the per-address check: one address's flood must not spend the
    // node's budget that other fans need.
    if let Err(wait) = direct_check(&node.node_handshakes) {
        return Err(with_client(
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "rate_node",
                "node is busy with handshakes; retry or connect to another node",
            )
            .retry_in(wait),
        ));
    }
    if node.connection_count() >= node.max_connections {
        return Err(with_client(
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "capacity",
                "node is at its connection limit",
            )
            .retry_in(Duration::from_secs(1)),
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
            return Err(with_client(Refusal::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "origin",
                "origin not allowed",
            )));
        }
    }
    let grant = verify_token(node, headers, query).map_err(|r| with_client(*r))?;
    let user = grant.as_ref().and_then(|g| g.subject.as_deref());
    let limits = &node.config.limits;
    match node.occupancy.take(
        key,
        node.address_max(),
        user,
        limits.max_connections_per_user,
    ) {
        Ok(place) => Ok(Accepted { grant, place }),
        Err(full) => {
            let (reason, message) = match full {
                Full::Address => (
                    "address_share",
                    "this address holds its share of the node's connections",
                ),
                Full::User => ("user_share", "too many connections for this user"),
            };
            let mut refusal = with_client(
                Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    reason,
                    message,
                )
                .retry_in(Duration::from_secs(1)),
            );
            refusal.sub = user.map(str::to_string);
            Err(refusal)
        }
    }
}

/// The token's grant: `None` without a token; a 401 for one that does not
/// verify, naming the `kid` it claimed for the audit log.
fn verify_token(
    node: &Node,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Grant>, Box<Refusal>> {
    let unauthorized = |message: String, kid: Option<String>| {
        let mut r = Refusal::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "token",
            message,
        );
        r.kid = kid;
        Box::new(r)
    };
    // Without a key, tokens are not checked (README, `[auth]`): no
    // namespace can need one, so whatever a client sends is ignored, as a
    // widget embedded with a token on a node that has none must still work.
    if node.auth.is_none() {
        return Ok(None);
    }
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let token =
        token_from_request(query, authorization).map_err(|e| unauthorized(e.to_string(), None))?;
    match token {
        None => Ok(None),
        Some(token) => node
            .verify_token(&token)
            .map(Some)
            .map_err(|e| unauthorized(e.to_string(), key_id(&token))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_at_least_one_with_jitter() {
        for _ in 0..50 {
            let s = retry_after_secs(Duration::from_millis(5));
            assert!((1..=2).contains(&s), "{s}");
            let s = retry_after_secs(Duration::from_millis(2500));
            assert!((3..=4).contains(&s), "{s}");
        }
        let seen: std::collections::HashSet<u64> =
            (0..100).map(|_| retry_after_secs(Duration::ZERO)).collect();
        assert_eq!(seen.len(), 2, "both 1 and 2 come out: {seen:?}");
    }
}
