//! The admin page's live tail of one topic: `GET /admin/api/tail?topic=T`,
//! a stream of server-sent events, one per frame a fan of the topic would
//! get (`ack`, `message`, `stats`, `gap`, `retract`), as the hub encoded them.
//!
//! The tail joins the topic's relay the way a fan's subscription does (same
//! ordering, replay and gap rules), with its own bounded outbox: a reader
//! too slow for the topic ends the stream as a fan would be closed with
//! 4008. While it is open it counts as one subscriber of the topic on this
//! node (its audience includes the operator). Leaving the page leaves the
//! relay.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tribune_protocol::{ErrorCode, Topic};

use super::Admin;
use crate::answer::http_error;
use crate::outbox::{Outbox, Queued};
use crate::relay::{JoinRequest, Relay};

#[derive(Debug, Deserialize)]
pub struct TailQuery {
    topic: String,
}

/// A tail's hold on the relay: leaves it when the stream is dropped (the
/// page closed the connection, or the node stops).
struct Tail {
    relay: Arc<Relay>,
    key: usize,
    outbox: Arc<Outbox>,
    batch: VecDeque<Queued>,
    closing: bool,
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.relay.leave(self.key);
    }
}

pub async fn tail(State(admin): State<Arc<Admin>>, Query(q): Query<TailQuery>) -> Response {
    let node = &admin.node;
    let topic = match Topic::new(&q.topic) {
        Ok(t) => t,
        Err(e) => return http_error(StatusCode::BAD_REQUEST, ErrorCode::BadTopic, e.to_string()),
    };
    let Some(ns) = node.config.namespace(topic.namespace()).cloned() else {
        return http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnknownNamespace,
            format!("namespace '{}' is not configured", topic.namespace()),
        );
    };
    let limits = &node.config.limits;
    let outbox = Arc::new(Outbox::new(limits.queue_bytes, limits.queue_messages));
    let req = JoinRequest {
        id: 0,
        history: None,
        since: None,
        delta: None,
        delay_ms: 0,
    };
    let (relay, key) = match node.registry.join(&topic, &ns, &outbox, &req).await {
        Ok(joined) => joined,
        Err(e) => {
            return http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                format!("{e:#}"),
            );
        }
    };
    let tail = Tail {
        relay,
        key,
        outbox,
        batch: VecDeque::new(),
        closing: false,
    };
    let events = futures::stream::unfold(tail, |mut t| async move {
        loop {
            if let Some(q) = t.batch.pop_front() {
                // A payload is JSON kept byte for byte: a CR can only be
                // whitespace between its tokens, and SSE lines may not hold one.
                let data = q.frame.as_str().replace('\r', "");
                return Some((Ok::<_, Infallible>(Event::default().data(data)), t));
            }
            if t.closing {
                return None;
            }
            // `take` swaps the queue with the (empty) batch.
            t.closing = t.outbox.take(&mut t.batch).is_some();
            if t.batch.is_empty() && !t.closing {
                t.outbox.ready().await;
            }
        }
    });
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Sse::new(events).keep_alive(KeepAlive::default()),
    )
        .into_response()
}
