//! A client's frames turned into registry actions (PROTOCOL.md section 3).
//!
//! The session holds what one connection is subscribed to and answers every
//! request: `ack`, `pong`, or an `error` with the code the protocol names.
//! It never touches the socket: answers go to the connection's outbox, behind
//! anything already queued, so a subscription's `ack` precedes its messages.
//!
//! It also holds the connection's token: set at the handshake or by a first
//! `auth` frame, replaced by later ones (refresh). A refresh that grants
//! less ends the subscriptions it no longer covers with `unsubscribed`; one
//! that fails changes nothing, so the current token lasts until its `exp`
//! (plus grace), when the writer closes with 1008.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::DefaultDirectRateLimiter;
use tribune_protocol::frame::{Auth, Publish, React, Subscribe, Unsubscribe};
use tribune_protocol::{
    Ack, ClientFrame, CloseCode, DELTA_FOSSIL, ErrorCode, MAX_DELAY_MS, Pong, ServerFrame, Topic,
    Unsubscribed, decode_client, encode_server,
};

use crate::audit::Who;
use crate::auth::{Expiry, Grant};
use crate::error::{AuthErrorKind, JoinErrorKind};
use crate::limits::{self, BadFrames};
use crate::node::Node;
use crate::outbox::{Frame, Outbox};
use crate::relay::{JoinRequest, Relay};

/// One subscription of this connection.
struct Sub {
    relay: Arc<Relay>,
    /// The subscriber's key in the relay.
    key: usize,
}

/// What the connection does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Close(CloseCode),
}

/// Per-connection protocol state.
pub struct Session {
    node: Arc<Node>,
    outbox: Arc<Outbox>,
    subs: HashMap<Topic, Sub>,
    /// The verified token's grant, if the handshake carried one. Boxed:
    /// anonymous fans (a widget on a public page) carry a pointer, not a
    /// grant's worth of `None`.
    grant: Option<Box<Grant>>,
    bad: BadFrames,
    /// Created at the first reaction: most fans never react, and boxed so
    /// that they carry a pointer rather than a limiter's worth of `None`.
    reactions: Option<Box<DefaultDirectRateLimiter>>,
    /// Subscriptions to topics new to this connection; created at the
    /// first. Bounds how fast one connection can make the node open relays
    /// (and read history from the bus) by subscribing and unsubscribing.
    new_topics: Option<DefaultDirectRateLimiter>,
    /// The client's address (limit key), for the audit log.
    client: Option<IpAddr>,
    /// The connection's id in the node.
    conn_id: u64,
    /// When the token runs out, shared with the writer; `None` on a node
    /// that verifies no tokens.
    expiry: Option<Arc<Expiry>>,
}

impl Session {
    pub fn new(
        node: Arc<Node>,
        outbox: Arc<Outbox>,
        grant: Option<Grant>,
        client: Option<IpAddr>,
        conn_id: u64,
        expiry: Option<Arc<Expiry>>,
    ) -> Self {
        Self {
            node,
            outbox,
            subs: HashMap::new(),
            grant: grant.map(Box::new),
            bad: BadFrames::default(),
            reactions: None,
            new_topics: None,
            client,
            conn_id,
            expiry,
        }
    }

    /// Audits a refusal of this connection's request.
    fn audit(&self, reason: &'static str, detail: &str) {
        let who = Who {
            client: self.client,
            sub: self.grant.as_ref().and_then(|g| g.subject.as_deref()),
            kid: None,
        };
        self.node.audit.refused(reason, who, detail);
    }

    /// Audits a close with 4029 (frames, pings or bad frames past their limit).
    pub fn flooded(&self) {
        self.audit("flood", "frame flood: closed with 4029");
    }

    /// Whether the token grants `topic` (always, on a namespace without tokens).
    fn granted(&self, ns: &crate::config::Namespace, topic: &Topic) -> bool {
        !ns.token || self.grant.as_ref().is_some_and(|g| g.allows(topic))
    }

    fn send(&self, frame: &ServerFrame) {
        self.outbox.push_control(Frame::from(encode_server(frame)));
    }

    fn ack(&self, id: u64) {
        self.send(&ServerFrame::Ack(Ack {
            id,
            ..Ack::default()
        }));
    }

    fn error(&self, id: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        self.send(&ServerFrame::Error(tribune_protocol::Error {
            id,
            code,
            message: message.into(),
        }));
    }

    /// A request the client got wrong: answered, and counted towards 4029.
    fn refuse(&mut self, id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Verdict {
        self.node.metrics.bad_frames.inc();
        self.error(id, code, message);
        let limits = &self.node.config.limits;
        if self.bad.record(
            Instant::now(),
            limits.bad_frames,
            Duration::from_millis(limits.bad_frames_window_ms),
        ) {
            Verdict::Close(CloseCode::FLOOD)
        } else {
            Verdict::Continue
        }
    }

    /// Handles one text frame from the client.
    pub async fn handle(&mut self, text: &str) -> Verdict {
        match decode_client(text) {
            Err(e) => self.refuse(e.id, ErrorCode::BadRequest, e.message),
            Ok(ClientFrame::Subscribe(s)) => self.subscribe(s).await,
            Ok(ClientFrame::Unsubscribe(u)) => self.unsubscribe(u),
            Ok(ClientFrame::Publish(p)) => self.publish(p).await,
            Ok(ClientFrame::Ping(p)) => {
                self.send(&ServerFrame::Pong(Pong { id: p.id }));
                Verdict::Continue
            }
            Ok(ClientFrame::React(r)) => self.react(r),
            Ok(ClientFrame::Auth(a)) => self.auth(a),
        }
    }

    /// `auth`: first-frame login or refresh (PROTOCOL.md section 3).
    fn auth(&mut self, a: Auth) -> Verdict {
        if self.node.auth.is_none() {
            // A node without a key checks no token (README, `[auth]`): no
            // namespace can need one, so the token is ignored, as at the
            // handshake, and a widget embedded with a token still works.
            self.ack(a.id);
            return Verdict::Continue;
        }
        let kind = if self.grant.is_some() {
            "refresh"
        } else {
            "login"
        };
        let grant = match self.node.verify_token(&a.token) {
            Ok(grant) => grant,
            Err(e) => {
                let rule = e.kind().rule();
                self.node.metrics.tokens.auth_failure(rule);
                self.audit_token(rule, &e.to_string(), &a.token);
                // Not a token at all is the client's bug and counts towards
                // 4029; a token the policy refuses is not.
                if e.kind() == AuthErrorKind::Malformed {
                    return self.refuse(Some(a.id), ErrorCode::BadRequest, e.to_string());
                }
                self.error(Some(a.id), ErrorCode::Forbidden, e.to_string());
                return Verdict::Continue;
            }
        };
        let old_sub = self.grant.as_ref().and_then(|g| g.subject.clone());
        if self.grant.is_some() && grant.subject != old_sub {
            // The per-user limit and the operator's `disconnect` by user
            // count this connection as its first user's.
            self.node.metrics.tokens.auth_failure("sub_changed");
            self.audit_token(
                "sub_changed",
                "a refresh must keep the token's sub",
                &a.token,
            );
            self.error(
                Some(a.id),
                ErrorCode::Forbidden,
                "a refreshed token must name the same sub",
            );
            return Verdict::Continue;
        }
        if self.grant.is_none()
            && let Some(user) = grant.subject.as_deref()
            && !self.node.claim_user(self.conn_id, user)
        {
            self.node.metrics.tokens.auth_failure("user_share");
            self.node.audit.refused(
                "user_share",
                Who {
                    client: self.client,
                    sub: Some(user),
                    kid: None,
                },
                "too many connections for this user",
            );
            self.error(
                Some(a.id),
                ErrorCode::RateLimited,
                "too many connections for this user",
            );
            return Verdict::Continue;
        }
        self.node.set_token(self.conn_id, &grant);
        self.grant = Some(Box::new(grant));
        self.end_ungranted();
        let expires_at = self.grant.as_ref().and_then(|g| g.expires_at);
        if let Some(expiry) = &self.expiry {
            expiry.set(expires_at);
        }
        self.node.metrics.tokens.auth_frame(kind);
        self.send(&ServerFrame::Ack(Ack {
            id: a.id,
            expires_at,
            ..Ack::default()
        }));
        Verdict::Continue
    }

    /// Audits a refused `auth` frame: the rule and its message, the `kid`
    /// the token named; never the token.
    fn audit_token(&self, rule: &str, message: &str, token: &str) {
        let kid = crate::auth::key_id(token);
        let who = Who {
            client: self.client,
            sub: self.grant.as_ref().and_then(|g| g.subject.as_deref()),
            kid: kid.as_deref(),
        };
        self.node
            .audit
            .refused("auth_frame", who, &format!("rule={rule}: {message}"));
    }

    /// Ends, with `unsubscribed`, every subscription the current token no
    /// longer grants; the others go on untouched.
    fn end_ungranted(&mut self) {
        let ended: Vec<Topic> = self
            .subs
            .keys()
            .filter(|topic| {
                self.node
                    .config
                    .namespace(topic.namespace())
                    .is_some_and(|ns| !self.granted(ns, topic))
            })
            .cloned()
            .collect();
        for topic in ended {
            self.end(&topic, ErrorCode::Forbidden, "narrowed");
        }
    }

    /// The connection's token state, shared with its reader and writer.
    pub fn expiry(&self) -> Option<Arc<Expiry>> {
        self.expiry.clone()
    }

    /// Ends the subscriptions an operator ended for this user
    /// (`POST /v1/unsubscribe`), each with `unsubscribed`.
    pub fn end_operator_topics(&mut self) {
        let Some(expiry) = &self.expiry else { return };
        for topic in expiry.take_ended() {
            if let Ok(topic) = Topic::new(&topic) {
                self.end(&topic, ErrorCode::Forbidden, "operator");
            }
        }
    }

    /// Ends one subscription from the hub's side and tells the client.
    pub fn end(&mut self, topic: &Topic, code: ErrorCode, reason: &'static str) {
        if let Some(sub) = self.subs.remove(topic) {
            sub.relay.leave(sub.key);
            self.node.metrics.tokens.unsubscribe(reason);
            self.send(&ServerFrame::Unsubscribed(Unsubscribed {
                topic: topic.to_string(),
                code,
            }));
        }
    }

    /// Validates a topic and finds its namespace, answering the error if not.
    fn resolve(
        &mut self,
        id: u64,
        topic: &str,
    ) -> Result<(Topic, crate::config::Namespace), Verdict> {
        let topic = match Topic::new(topic) {
            Ok(t) => t,
            Err(e) => return Err(self.refuse(Some(id), ErrorCode::BadTopic, e.to_string())),
        };
        match self.node.config.namespace(topic.namespace()) {
            Some(ns) => Ok((topic, ns.clone())),
            None => {
                let msg = format!("namespace '{}' is not configured", topic.namespace());
                Err(self.refuse(Some(id), ErrorCode::UnknownNamespace, msg))
            }
        }
    }

    async fn subscribe(&mut self, s: Subscribe) -> Verdict {
        let (topic, ns) = match self.resolve(s.id, &s.topic) {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        let since = match (s.since, s.epoch) {
            (Some(since), Some(epoch)) => Some((since, epoch)),
            (None, None) => None,
            _ => {
                return self.refuse(
                    Some(s.id),
                    ErrorCode::BadRequest,
                    "since and epoch go together",
                );
            }
        };
        let delay_ms = s.delay_ms.unwrap_or(0);
        if delay_ms > MAX_DELAY_MS {
            self.audit("delay_range", "delay_ms above the maximum");
            return self.refuse(
                Some(s.id),
                ErrorCode::BadRequest,
                format!("delay_ms must be 0 to {MAX_DELAY_MS}"),
            );
        }
        if !self.granted(&ns, &topic) {
            let msg = format!(
                "namespace '{}' needs a token that grants this topic",
                topic.namespace()
            );
            self.error(Some(s.id), ErrorCode::Forbidden, msg);
            return Verdict::Continue;
        }
        if let Some(sub) = self.subs.get(&topic) {
            let delta = s.delta.as_deref().map(|f| f == DELTA_FOSSIL);
            self.outbox
                .push_control(sub.relay.ack_existing(s.id, sub.key, delta));
            return Verdict::Continue;
        }
        if self.subs.len() >= self.node.config.limits.max_subscriptions {
            let msg = format!(
                "at most {} subscriptions per connection",
                self.node.config.limits.max_subscriptions
            );
            self.error(Some(s.id), ErrorCode::TooManySubscriptions, msg);
            return Verdict::Continue;
        }
        let new_topics = self
            .new_topics
            .get_or_insert_with(|| limits::new_topic_rate(&self.node.config.limits));
        if new_topics.check().is_err() {
            self.audit("topic_rate", "too many new topics on one connection");
            self.error(
                Some(s.id),
                ErrorCode::RateLimited,
                "too many new topics on this connection; retry later",
            );
            return Verdict::Continue;
        }
        let req = JoinRequest {
            id: s.id,
            history: s.history,
            since,
            // Another format (none exists yet) is answered `"delta":false`.
            delta: s.delta.as_deref().map(|f| f == DELTA_FOSSIL),
            delay_ms,
        };
        match self
            .node
            .registry
            .join(&topic, &ns, &self.outbox, &req)
            .await
        {
            Ok((relay, key)) => {
                self.subs.insert(topic, Sub { relay, key });
            }
            Err(e) => {
                if e.kind() == JoinErrorKind::TooManyTopics {
                    self.audit("relay_cap", "the node carries its maximum of topics");
                }
                self.error(Some(s.id), ErrorCode::Unavailable, format!("{e:#}"))
            }
        }
        Verdict::Continue
    }

    fn unsubscribe(&mut self, u: Unsubscribe) -> Verdict {
        if let Err(e) = tribune_protocol::validate_topic(&u.topic) {
            return self.refuse(Some(u.id), ErrorCode::BadTopic, e.to_string());
        }
        if let Some(sub) = self.subs.remove(u.topic.as_str()) {
            sub.relay.leave(sub.key);
        }
        self.ack(u.id);
        Verdict::Continue
    }

    async fn publish(&mut self, p: Publish) -> Verdict {
        let (topic, ns) = match self.resolve(p.id, &p.topic) {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        if !ns.publish {
            let msg = format!(
                "namespace '{}' does not take publications from clients",
                topic.namespace()
            );
            self.error(Some(p.id), ErrorCode::Forbidden, msg);
            return Verdict::Continue;
        }
        if !self.granted(&ns, &topic) {
            self.error(
                Some(p.id),
                ErrorCode::Forbidden,
                "this topic needs a token that grants it",
            );
            return Verdict::Continue;
        }
        let data = Bytes::copy_from_slice(p.data.get().as_bytes());
        if data.len() > self.node.config.limits.max_payload_bytes {
            self.error(Some(p.id), ErrorCode::PayloadTooLarge, "payload too large");
            return Verdict::Continue;
        }
        match self.node.side.publish_inbound(&topic, data).await {
            Ok(()) => {
                self.node.metrics.client_publishes.inc();
                self.ack(p.id);
            }
            Err(e) => self.error(Some(p.id), ErrorCode::Unavailable, e.to_string()),
        }
        Verdict::Continue
    }

    fn react(&mut self, r: React) -> Verdict {
        let (topic, ns) = match self.resolve(r.id, &r.topic) {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        if ns.reactions.is_empty() {
            self.node.metrics.reaction("refused");
            let msg = format!("namespace '{}' takes no reactions", topic.namespace());
            self.error(Some(r.id), ErrorCode::Forbidden, msg);
            return Verdict::Continue;
        }
        if !ns.reactions.contains(&r.reaction) {
            self.node.metrics.reaction("refused");
            return self.refuse(
                Some(r.id),
                ErrorCode::BadRequest,
                "reaction not allowed on this topic",
            );
        }
        // A reaction is a watching fan's: it needs what a subscription
        // needs (the topic's grant) and the subscription itself. Without
        // them, anyone could cheer on a token-only topic, and reactions on
        // topics nobody watches here would make every node carry their
        // figures.
        if !self.granted(&ns, &topic) {
            self.node.metrics.reaction("refused");
            self.audit("react_grant", "reaction without the topic's grant");
            self.error(
                Some(r.id),
                ErrorCode::Forbidden,
                "this topic needs a token that grants it",
            );
            return Verdict::Continue;
        }
        if !self.subs.contains_key(&topic) {
            self.node.metrics.reaction("refused");
            self.audit("react_unsubscribed", "reaction on a topic not subscribed");
            self.error(
                Some(r.id),
                ErrorCode::Forbidden,
                "react only on a topic this connection is subscribed to",
            );
            return Verdict::Continue;
        }
        let limiter = self
            .reactions
            .get_or_insert_with(|| Box::new(limits::reaction_rate(&self.node.config.limits)));
        if limiter.check().is_err() {
            self.node.metrics.reaction("rate_limited");
            self.error(Some(r.id), ErrorCode::RateLimited, "too many reactions");
            return Verdict::Continue;
        }
        self.node.metrics.reaction("accepted");
        self.node.stats.react(&topic, &r.reaction);
        self.ack(r.id);
        Verdict::Continue
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, sub) in self.subs.drain() {
            sub.relay.leave(sub.key);
        }
    }
}
