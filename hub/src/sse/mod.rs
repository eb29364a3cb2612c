//! The HTTP fallback for networks that block websockets (PROTOCOL.md
//! section 11): `GET /v1/sse`, one topic as server-sent events, and
//! `POST /v1/react` (`react.rs`).
//!
//! A stream is a connection without a socket of its own: it passes the
//! handshake's checks (`handshake::check`: draining, rates, capacity,
//! origin, token, shares), holds a place in the node like a websocket (so
//! the drain, an operator's disconnect and revocations reach it), and its
//! one subscription is made by a `Session` exactly as a `subscribe` frame
//! is, joining the relay through the registry: ack, replay and live under
//! the relay's one lock, nothing missed or sent twice. Its outbox is
//! drained into the response body in batches; `events.rs` turns frames
//! into events. A token travels only in `Authorization` (never the URL).

pub mod cors;
pub mod events;
pub mod keys;
pub mod react;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tribune_protocol::{CloseCode, ErrorCode, ServerFrame, Welcome, encode_server};

use crate::answer::http_error;
use crate::auth::Expiry;
use crate::node::{Connected, Node};
use crate::outbox::{Outbox, Queued};
use crate::session::Session;
use events::{After, Translator};

/// The query of `GET /v1/sse`: a `subscribe` frame's fields.
#[derive(Debug, Deserialize)]
struct SseQuery {
    topic: String,
    history: Option<u32>,
    since: Option<u64>,
    epoch: Option<String>,
    delta: Option<String>,
    /// The spoiler shield (PROTOCOL.md section 13), as on the websocket.
    delay_ms: Option<u64>,
    /// Refused: tokens never travel in a fallback's URL.
    token: Option<String>,
}

/// The stream's place in the node: its session (and so its relay) is left
/// and its place given back when the response body is dropped (the client
/// went away, or the stream ended).
struct Held {
    node: Arc<Node>,
    conn_id: u64,
    session: Option<Session>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.node.metrics.sse_streams.dec();
        drop(self.session.take());
        self.node.detach(self.conn_id);
    }
}

/// An open stream, polled by the response body.
struct Live {
    held: Held,
    outbox: Arc<Outbox>,
    batch: VecDeque<Queued>,
    translator: Translator,
    heartbeat: tokio::time::Interval,
    expiry: Option<Arc<Expiry>>,
    /// Resolves when the token ran out (plus grace); `None` without one.
    expired: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The reaction key's topic and user, and the stream's nonce, on
    /// namespaces with reactions.
    react: Option<ReactKey>,
    /// Set once the close event went out, or the subscription ended.
    done: bool,
}

struct ReactKey {
    topic: String,
    sub: Option<String>,
    nonce: u64,
    /// When the next key is due (tokio time).
    renew_at: tokio::time::Instant,
}

impl ReactKey {
    /// The `react` event: a new key, and when it runs out.
    fn event(&mut self, node: &Node) -> Vec<u8> {
        let (key, exp) = node
            .react_keys
            .issue(&self.topic, self.sub.as_deref(), self.nonce);
        self.renew_at = tokio::time::Instant::now() + Duration::from_secs(keys::KEY_TTL_SECS / 2);
        let data = serde_json::json!({"type": "react", "key": key, "expires_at": exp});
        format!("event: react\ndata: {data}\n\n").into_bytes()
    }
}

fn refused(node: &Node, reason: &'static str, status: StatusCode, msg: &str) -> Response {
    node.metrics.refused(reason);
    node.audit
        .refused(reason, crate::audit::Who::default(), msg);
    http_error(status, ErrorCode::BadRequest, msg.to_string())
}

/// The HTTP status for a subscription's refusal (its `error` frame).
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable | ErrorCode::TooManySubscriptions => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `GET /v1/sse?topic=T[&history=N][&since=S&epoch=E][&delta=fossil][&delay_ms=D]`.
pub async fn stream(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut res = open(node.clone(), peer, &uri, &headers).await;
    cors::allow(&node, &headers, &mut res);
    res
}

async fn open(node: Arc<Node>, peer: SocketAddr, uri: &Uri, headers: &HeaderMap) -> Response {
    let q = match Query::<SseQuery>::try_from_uri(uri) {
        Ok(Query(q)) => q,
        Err(e) => {
            return refused(
                &node,
                "sse_request",
                StatusCode::BAD_REQUEST,
                &e.body_text(),
            );
        }
    };
    if q.token.is_some() {
        // Proxies and access logs keep URLs: a token there leaks.
        return refused(
            &node,
            "token_in_url",
            StatusCode::BAD_REQUEST,
            "send the token in Authorization, never in the URL",
        );
    }
    // `Last-Event-ID` (an `EventSource` reconnecting) wins over the query:
    // it names the last message this client holds.
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let since = match last {
        Some(id) => match events::parse_event_id(id) {
            Some(pair) => Some(pair),
            None => {
                return refused(
                    &node,
                    "sse_request",
                    StatusCode::BAD_REQUEST,
                    "Last-Event-ID is <epoch>:<seq>",
                );
            }
        },
        None => match (q.since, q.epoch) {
            (Some(s), Some(e)) => Some((e, s)),
            (None, None) => None,
            _ => {
                return refused(
                    &node,
                    "sse_request",
                    StatusCode::BAD_REQUEST,
                    "since and epoch go together",
                );
            }
        },
    };
    let accepted = match crate::handshake::check(&node, peer, headers, None) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            node.metrics.refused(refusal.reason);
            node.audit
                .refused(refusal.reason, refusal.who(), &refusal.message);
            return (*refusal).into_response();
        }
    };
    let grant = accepted.grant;
    let admission = node.admit(accepted.place);
    let Connected {
        node,
        conn_id,
        outbox,
        client,
        expiry,
        expires_at,
    } = admission.connect(grant.as_ref());
    let sub = grant.as_ref().and_then(|g| g.subject.clone());
    let session = Session::new(
        node.clone(),
        outbox.clone(),
        grant,
        client,
        conn_id,
        expiry.clone(),
    );
    node.metrics.sse_streams.inc();
    let mut held = Held {
        node: node.clone(),
        conn_id,
        session: Some(session),
    };
    let mut subscribe = serde_json::json!({"type": "subscribe", "id": 1, "topic": q.topic});
    if let Some(h) = q.history {
        subscribe["history"] = h.into();
    }
    if let Some((epoch, since)) = &since {
        subscribe["since"] = (*since).into();
        subscribe["epoch"] = epoch.clone().into();
    }
    if let Some(d) = &q.delta {
        subscribe["delta"] = d.clone().into();
    }
    if let Some(d) = q.delay_ms {
        subscribe["delay_ms"] = d.into();
    }
    let session = held.session.as_mut().expect("set above");
    Box::pin(session.handle(&subscribe.to_string())).await;
    // The session answered `ack` (then the replay) or `error`: an error is
    // the request's answer, as HTTP, so that a stream never opens for
    // nothing (and `EventSource` does not retry a refusal forever).
    let mut batch = VecDeque::new();
    outbox.take(&mut batch);
    if let Some(first) = batch.front()
        && let Ok(ServerFrame::Error(e)) = serde_json::from_str::<ServerFrame>(first.frame.as_str())
    {
        return http_error(status_of(e.code), e.code, e.message);
    }
    let welcome = encode_server(&ServerFrame::Welcome(Welcome {
        protocol: tribune_protocol::PROTOCOL_VERSION,
        node: node.config.node_name.clone(),
        conn: format!("c-{conn_id:x}"),
        heartbeat_ms: node.config.heartbeat_ms,
        expires_at,
    }));
    let mut first = Vec::new();
    // An `EventSource` that loses the stream waits this long before it
    // reconnects: 1 to 3 s, drawn per stream, so that the fans of a node
    // that died do not all come back in the same instant.
    let retry = 1000 + rand::random::<u64>() % 2000;
    first.extend_from_slice(format!("retry: {retry}\n").as_bytes());
    let mut translator = Translator::new(since.as_ref().map(|(_, s)| *s));
    translator.push(&mut first, &welcome);
    let topic = q.topic.clone();
    let mut react = node
        .config
        .namespace(topic.split('.').next().unwrap_or(""))
        .filter(|ns| !ns.reactions.is_empty())
        .map(|_| ReactKey {
            topic,
            sub,
            nonce: rand::random(),
            renew_at: tokio::time::Instant::now(),
        });
    let heartbeat = Duration::from_millis(node.config.heartbeat_ms.max(100));
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = Duration::from_millis(node.config.auth.expiry_grace_ms);
    let expired = expiry.clone().map(|e| {
        Box::pin(async move { e.passed(grace).await }) as Pin<Box<dyn Future<Output = ()> + Send>>
    });
    let mut done = false;
    for q in batch.drain(..) {
        if translator.push(&mut first, q.frame.as_str()) == After::End {
            done = true;
        }
    }
    if let Some(key) = react.as_mut() {
        first.extend_from_slice(&key.event(&node));
    }
    let live = Live {
        held,
        outbox,
        batch,
        translator,
        heartbeat,
        expiry,
        expired,
        react,
        done,
    };
    let head =
        futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Bytes::from(first)) });
    let rest = futures::stream::unfold(live, |mut live| async move {
        let chunk = live.next().await?;
        Some((Ok(chunk), live))
    });
    use futures::StreamExt;
    let mut res = Response::new(Body::from_stream(head.chain(rest)));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx buffers responses unless told not to; a buffered stream is not live.
    h.insert(
        header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    res
}

impl Live {
    /// The next chunk of the body: every frame queued since the last one,
    /// a heartbeat, a new reaction key, or the close event; `None` once the
    /// stream ended.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            let close = self.outbox.take(&mut self.batch);
            if !self.batch.is_empty() {
                let mut out = Vec::new();
                for q in self.batch.drain(..) {
                    if self.translator.push(&mut out, q.frame.as_str()) == After::End {
                        self.done = true;
                        break;
                    }
                }
                if !out.is_empty() {
                    return Some(Bytes::from(out));
                }
                continue;
            }
            if let Some(code) = close {
                self.done = true;
                self.held.node.metrics.closed(code.0);
                return Some(events::close(code));
            }
            let renew_at = self.react.as_ref().map(|k| k.renew_at);
            tokio::select! {
                () = self.outbox.ready() => {}
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(events::HEARTBEAT)),
                () = async { tokio::time::sleep_until(renew_at.expect("guarded")).await }, if renew_at.is_some() => {
                    let node = self.held.node.clone();
                    let key = self.react.as_mut().expect("guarded");
                    return Some(Bytes::from(key.event(&node)));
                }
                () = async { self.expired.as_mut().expect("guarded").await }, if self.expired.is_some() => {
                    self.expired = None;
                    self.held.node.metrics.tokens.expired.inc();
                    self.outbox.close(CloseCode::POLICY, false);
                }
                () = async { self.expiry.as_ref().expect("guarded").topics_ended().await }, if self.expiry.is_some() => {
                    if let Some(session) = self.held.session.as_mut() {
                        session.end_operator_topics();
                    }
                }
            }
        }
    }
}
