//! `GET /v1/history` on the public listener (PROTOCOL.md section 12): a page
//! of a topic's retained messages, older than `before`, oldest first, for
//! fans scrolling back (the clips widget's "more"). The same grants as a
//! subscription, the token only from `Authorization: Bearer` (never the URL,
//! which proxies log), rate-limited per client address and per token `sub`.
//! Served from the topic's relay: the one fans here use, or one opened for
//! the request whose history load is the one batched bus read.
//!
//! Every refusal is counted and logged at a bounded rate (`audit.rs`,
//! reasons `history_*`), with the JSON error body of PROTOCOL.md section 1.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tribune_protocol::{ErrorCode, Topic};

use crate::answer::{http_error, retry_after};
use crate::audit::Who;
use crate::auth::{Grant, key_id, token_from_request};
use crate::edge::address::{client_ip, limit_key};
use crate::node::Node;

/// Messages per page unless the request says otherwise.
pub const DEFAULT_LIMIT: usize = 50;

/// The most messages one page may ask for.
pub const MAX_LIMIT: usize = 100;

/// What a request asks for, read from its query.
#[derive(Debug, PartialEq, Eq)]
struct Query {
    topic: Topic,
    before: Option<u64>,
    limit: usize,
}

/// Reads `topic`, `before` and `limit`; anything else is refused, a token
/// above all (it would sit in logs and `Referer`s).
fn parse(query: Option<&str>) -> Result<Query, String> {
    let (mut topic, mut before, mut limit) = (None, None, None);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let twice = || format!("'{name}' given twice");
        match name.as_ref() {
            "topic" if topic.is_none() => {
                topic = Some(Topic::new(&value).map_err(|e| format!("topic: {e}"))?);
            }
            "before" if before.is_none() => {
                let seq = value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or("before must be a seq of at least 1")?;
                before = Some(seq);
            }
            "limit" if limit.is_none() => {
                let n = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or(format!("limit must be 1..={MAX_LIMIT}"))?;
                limit = Some(n);
            }
            "topic" | "before" | "limit" => return Err(twice()),
            "token" | "access_token" => {
                return Err(
                    "send the token in an Authorization: Bearer header, never in the URL"
                        .to_string(),
                );
            }
            // Not echoed: the answer never repeats what the client sent.
            _ => return Err("unknown parameter (topic, before, limit)".to_string()),
        }
    }
    Ok(Query {
        topic: topic.ok_or("topic is required")?,
        before,
        limit: limit.unwrap_or(DEFAULT_LIMIT),
    })
}

/// A refused request: counted and audited, then answered.
struct Refused {
    status: StatusCode,
    code: ErrorCode,
    reason: &'static str,
    message: String,
    retry: Option<Duration>,
    kid: Option<String>,
}

impl Refused {
    fn new(
        status: StatusCode,
        code: ErrorCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            reason,
            message: message.into(),
            retry: None,
            kid: None,
        }
    }

    fn rate(wait: Duration, message: &str) -> Self {
        let mut r = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "history_rate",
            message,
        );
        r.retry = Some(wait);
        r
    }
}

/// `GET /v1/history?topic=T&before=SEQ&limit=N`.
pub async fn history(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let ip = client_ip(peer.ip(), &node.trusted_proxies, &headers);
    let origin = allowed_origin(&node, &headers);
    let mut res = match serve(&node, ip, &headers, query.as_deref(), origin.is_some()).await {
        Ok(res) => res,
        Err((refused, sub)) => {
            let who = Who {
                client: Some(ip),
                sub: sub.as_deref(),
                kid: refused.kid.as_deref(),
            };
            node.audit.refused(refused.reason, who, &refused.message);
            let mut res = http_error(refused.status, refused.code, refused.message);
            if let Some(wait) = refused.retry {
                retry_after(&mut res, wait);
            }
            res
        }
    };
    cors(&mut res, origin);
    res
}

/// `OPTIONS /v1/history`: a browser's preflight before a request with an
/// `Authorization` header from another origin.
pub async fn preflight(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let origin = allowed_origin(&node, &headers);
    let mut res = StatusCode::NO_CONTENT.into_response();
    if origin.is_some() {
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    cors(&mut res, origin);
    res
}

/// The request's `Origin` when the node lets it read answers (`None`: no
/// `Origin`, a request from the hub's own pages, or an origin not allowed).
/// Without `allowed_origins`, as for websockets, any origin may.
fn allowed_origin(node: &Node, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let allowed = &node.config.allowed_origins;
    (allowed.is_empty() || allowed.iter().any(|a| a == text || a == "*")).then(|| origin.clone())
}

/// Lets the page at `origin` read the answer (`edge::headers` keeps this
/// path's header); answers vary by origin.
fn cors(res: &mut Response, origin: Option<HeaderValue>) {
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
}

async fn serve(
    node: &Arc<Node>,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    query: Option<&str>,
    origin_allowed: bool,
) -> Result<Response, (Refused, Option<String>)> {
    let no_sub = |r: Refused| (r, None);
    let key = limit_key(ip, node.config.limits.ipv6_prefix_len);
    node.history_addresses.check(&key).map_err(|wait| {
        no_sub(Refused::rate(
            wait,
            "too many history requests from this address",
        ))
    })?;
    // Browsers always send Origin on a cross-origin request; apps send none.
    if headers.contains_key(header::ORIGIN) && !origin_allowed {
        return Err(no_sub(Refused::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "history_origin",
            "origin not allowed",
        )));
    }
    let q = parse(query).map_err(|why| {
        no_sub(Refused::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "history_params",
            why,
        ))
    })?;
    let Some(ns) = node.config.namespace(q.topic.namespace()) else {
        return Err(no_sub(Refused::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "history_namespace",
            "this topic's namespace is not configured",
        )));
    };
    let grant = token(node, headers).map_err(no_sub)?;
    let sub = grant.as_ref().and_then(|g| g.subject.clone());
    if ns.token {
        match &grant {
            None => {
                return Err(no_sub(Refused::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "history_token",
                    "this namespace needs a token (Authorization: Bearer)",
                )));
            }
            Some(g) if !g.allows(&q.topic) => {
                return Err((
                    Refused::new(
                        StatusCode::FORBIDDEN,
                        ErrorCode::Forbidden,
                        "history_grant",
                        "the token does not grant this topic",
                    ),
                    sub,
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(user) = &sub {
        node.history_users.check(user).map_err(|wait| {
            (
                Refused::rate(wait, "too many history requests for this user"),
                sub.clone(),
            )
        })?;
    }
    let page = node
        .registry
        .history_page(&q.topic, ns, q.before, q.limit)
        .await
        .map_err(|e| {
            // The node's topic cap, a relay restarting, the bus down: all
            // passing, all 503 with a short wait.
            let mut r = Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "history_unavailable",
                e.to_string(),
            );
            r.retry = Some(Duration::from_secs(1));
            (r, sub.clone())
        })?;
    node.metrics.history_pages.inc();
    let mut body =
        String::with_capacity(96 + page.frames.iter().map(|f| f.len() + 1).sum::<usize>());
    // Frames are JSON already (encoded once by the relay): spliced, not parsed.
    let _ = write!(
        body,
        r#"{{"topic":{},"epoch":{},"messages":["#,
        serde_json::Value::from(q.topic.as_str()),
        serde_json::Value::from(page.epoch.as_str()),
    );
    for (i, frame) in page.frames.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(frame.as_str());
    }
    match page.before {
        Some(seq) => {
            let _ = write!(body, r#"],"before":{seq}}}"#);
        }
        None => body.push_str(r#"],"before":null}"#),
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            // The answer depends on the token: never kept by a cache.
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// The grant of the `Authorization: Bearer` token: `None` without one (or
/// on a node that verifies no tokens: it is ignored, as on the handshake).
fn token(node: &Node, headers: &HeaderMap) -> Result<Option<Grant>, Refused> {
    if node.auth.is_none() {
        return Ok(None);
    }
    let unauthorized = |message: String| {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "history_token",
            message,
        )
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let Some(token) =
        token_from_request(None, authorization).map_err(|e| unauthorized(e.to_string()))?
    else {
        return Ok(None);
    };
    node.verify_token(&token).map(Some).map_err(|e| {
        let mut r = unauthorized(e.to_string());
        r.kid = key_id(&token);
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_rules() {
        let q = parse(Some("topic=clips.a&before=42&limit=7")).unwrap();
        assert_eq!(
            q,
            Query {
                topic: Topic::new("clips.a").unwrap(),
                before: Some(42),
                limit: 7
            }
        );
        let q = parse(Some("topic=clips.a")).unwrap();
        assert_eq!((q.before, q.limit), (None, DEFAULT_LIMIT));
        for bad in [
            None,
            Some(""),
            Some("topic=clips..a"),
            Some("topic=clips.a&limit=0"),
            Some("topic=clips.a&limit=101"),
            Some("topic=clips.a&limit=x"),
            Some("topic=clips.a&before=0"),
            Some("topic=clips.a&before=-1"),
            Some("topic=clips.a&topic=clips.b"),
            Some("topic=clips.a&token=abc"),
            Some("topic=clips.a&access_token=abc"),
            Some("topic=clips.a&x=1"),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse(Some("topic=clips.a&token=abc"))
                .unwrap_err()
                .contains("Authorization")
        );
    }
}
