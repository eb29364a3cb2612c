//! The guards of the internal listener's endpoints that a bearer key opens:
//! `POST /v1/publish` and `POST /v1/retract` (the publish key) and the
//! server API (the operator key). In order, each refusal audited under the
//! endpoint's own reason:
//! 1. a request carrying `Origin` comes from a browser page (a cross-site
//!    request or a DNS-rebinding attack, never an integration): 403;
//! 2. a caller address that spent its failure budget
//!    (`publish_failures_per_minute`, shared by both keys: they are of the
//!    same strength against guessing) is refused without its key being
//!    looked at: 429 with `Retry-After`;
//! 3. the key, `Authorization: Bearer <key>`, compared in constant time: a
//!    wrong one 401 (429 once it spends the budget); no configured key 403,
//!    the endpoint is off (the publish key's demo exception aside);
//! 4. `Content-Type: application/json` only (a browser can send
//!    `text/plain` cross-site without a preflight): 415.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use sha2::{Digest, Sha256};
use tribune_protocol::ErrorCode;

use crate::answer::http_error;
use crate::audit::Who;
use crate::edge::address::{canonical, limit_key};
use crate::node::Node;

/// One key's refusal reasons (audit and metrics labels) and messages.
pub(crate) struct Keyed {
    pub origin: &'static str,
    pub rate: &'static str,
    pub key: &'static str,
    pub disabled: &'static str,
    pub content_type: &'static str,
    pub origin_message: &'static str,
    pub key_message: &'static str,
    pub disabled_message: &'static str,
}

/// The publish key's endpoints.
pub(crate) const PUBLISH: Keyed = Keyed {
    origin: "publish_origin",
    rate: "publish_rate",
    key: "publish_key",
    disabled: "publish_disabled",
    content_type: "publish_content_type",
    origin_message: "requests from browser pages (with Origin) may not publish",
    key_message: "missing or wrong publish key",
    disabled_message: "no publish_key configured: HTTP publishing is off (loopback may publish only with --demo)",
};

/// The server API's.
pub(crate) const OPERATOR: Keyed = Keyed {
    origin: "api_origin",
    rate: "api_rate",
    key: "api_key",
    disabled: "api_disabled",
    content_type: "api_content_type",
    origin_message: "requests from browser pages (with Origin) may not use the server API",
    key_message: "missing or wrong operator key",
    disabled_message: "no operator_key configured: the server API is off",
};

/// Guards 1 to 4 of the module doc for `keyed`, whose configured key is
/// `expected`; `open_without_key` lets a caller in when no key is
/// configured (a demo node's loopback publishers). `refused` is told of
/// every refusal (for the endpoint's own counters). The refusal answer
/// when one fails.
pub(crate) fn check(
    node: &Node,
    peer: SocketAddr,
    headers: &HeaderMap,
    keyed: &Keyed,
    expected: Option<&str>,
    open_without_key: bool,
    refused: impl Fn(),
) -> Option<Response> {
    let ip = canonical(peer.ip());
    let key = limit_key(ip, node.config.limits.ipv6_prefix_len);
    let refuse = |reason: &'static str, status: StatusCode, code: ErrorCode, message: &str| {
        refused();
        node.audit.refused(reason, Who::client(ip), message);
        http_error(status, code, message)
    };
    if headers.contains_key(header::ORIGIN) {
        return Some(refuse(
            keyed.origin,
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            keyed.origin_message,
        ));
    }
    if let Some(left) = node.publish_failures.blocked(&key) {
        let mut res = refuse(
            keyed.rate,
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many failed attempts from this address",
        );
        crate::answer::retry_after(&mut res, left);
        return Some(res);
    }
    match expected {
        Some(expected) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| same_key(g, expected)) {
                let (reason, status, code) = if node.publish_failures.failed(&key) {
                    (
                        keyed.rate,
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::RateLimited,
                    )
                } else {
                    (keyed.key, StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
                };
                return Some(refuse(reason, status, code, keyed.key_message));
            }
        }
        None if open_without_key => {}
        None => {
            return Some(refuse(
                keyed.disabled,
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                keyed.disabled_message,
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
            keyed.content_type,
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
