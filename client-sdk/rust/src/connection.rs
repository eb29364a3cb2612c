//! The connection task: the one owner of the socket (async-nats pattern).
//!
//! [`Client`](crate::Client) handles and [`Subscription`](crate::Subscription)s
//! send [`Command`]s over a channel; this task turns them into frames, reads
//! the hub's frames, routes acks and errors to the requests waiting for them,
//! checks every message with the subscription's [`Tracker`] and queues it for
//! the application. When the connection ends it asks the [`Reconnector`]
//! when to try again, connects, and renews every subscription with
//! `since`/`epoch`.
//!
//! The task never waits on the application: subscription queues are bounded
//! and handle overflow themselves (see `queue.rs`). Nor on the token
//! provider: a refresh runs in its own task and its token comes back here,
//! to go out in an `auth` frame (see `token.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tribune_protocol::{
    Ack, Auth, ClientFrame, ErrorCode, Gap, Message, Mode, Ping, Publish, React, ServerFrame,
    Unsubscribe, Unsubscribed, Welcome,
};

use crate::backoff::jitter_below;
use crate::command::{Command, SubscribeInfo, SubscribeOptions};
use crate::connector::{ConnectFailure, Plan, Reconnector, WsStream, connect_once};
use crate::delta::{self, Base};
use crate::error::{
    ConnectErrorKind, PingError, PingErrorKind, PublishError, PublishErrorKind, ReactError,
    ReactErrorKind, SubscribeError, SubscribeErrorKind, UnsubscribeError,
};
use crate::events::{ConnectionEvent, DisconnectReason, EventHub};
use crate::queue::{Event, Offer, SubQueue};
use crate::token::{TokenSource, refresh_delay, retry_delay, unix_now};
use crate::tracker::{GapVerdict, Phase, Tracker, Verdict};

/// Settings the task needs, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct TaskConfig {
    pub(crate) token: TokenSource,
    /// TLS settings for `wss://` hubs, made once when the client was built
    /// (reading the trusted certificates is I/O, not for every reconnect).
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) connect_timeout: Duration,
    /// Overrides the hub's `heartbeat_ms`.
    pub(crate) heartbeat: Option<Duration>,
    /// Cap of the retry delay of a subscription the hub said it could not serve yet.
    pub(crate) backoff_max: Duration,
}

/// One subscription, as the task keeps it.
struct Sub {
    /// Matches the application's [`Subscription`](crate::Subscription) handle.
    key: u64,
    tracker: Tracker,
    queue: Arc<SubQueue>,
    /// The caller of `subscribe`, until the first `ack` or refusal.
    first: Option<oneshot::Sender<Result<SubscribeInfo, SubscribeError>>>,
    /// When a renewal refused with `unavailable`/`rate_limited` is tried again.
    retry_at: Option<Instant>,
    /// The payload delivered last on a `state` topic: the next delta's base.
    base: Option<Base>,
}

/// A request sent to the hub and not yet answered.
enum Pending {
    /// Routed to the topic's subscription, whose tracker knows the request id.
    Subscribe { topic: String },
    /// Any other request: its caller only waits for the answer.
    Reply(Reply),
    /// The task's own `auth` (a token refresh).
    Auth,
}

/// Renewing the token of the current connection (a provider only).
#[derive(Default)]
struct Refresh {
    /// The current token's `exp`, Unix seconds.
    expires_at: Option<u64>,
    /// When the provider is called next.
    at: Option<Instant>,
    /// The provider's answer, while it works.
    fetching: Option<oneshot::Receiver<Result<String, String>>>,
}

/// The caller of a request other than `subscribe`. Its answer depends only on
/// how the request ended (acked, refused, connection lost), so each of those
/// is answered in one place.
enum Reply {
    /// `None` for the task's own unsubscribes (a renewal, a suspension, a
    /// dropped handle).
    Unsubscribe(Option<oneshot::Sender<Result<(), UnsubscribeError>>>),
    Publish(oneshot::Sender<Result<(), PublishError>>),
    React(oneshot::Sender<Result<(), ReactError>>),
    Ping {
        reply: oneshot::Sender<Result<Duration, PingError>>,
        /// When the ping left: the caller gets the round trip.
        sent: Instant,
    },
}

impl Reply {
    /// The hub answered with an `ack` (`refusal` is `None`) or an `error`.
    fn answer(self, refusal: Option<tribune_protocol::Error>) {
        match self {
            // Whatever the hub says, the subscription is gone locally.
            Reply::Unsubscribe(reply) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            Reply::Publish(reply) => {
                let _ = reply.send(match refusal {
                    None => Ok(()),
                    Some(err) => Err(PublishError::new(
                        PublishErrorKind::Refused(err.code),
                        err.message,
                    )),
                });
            }
            Reply::React(reply) => {
                let _ = reply.send(match refusal {
                    None => Ok(()),
                    Some(err) => Err(ReactError::new(
                        ReactErrorKind::Refused(err.code),
                        err.message,
                    )),
                });
            }
            // Only a `pong` measures a round trip; a hub that answers
            // otherwise still proves it is alive, so the connection stays.
            Reply::Ping { reply, .. } => {
                let detail =
                    refusal.map_or_else(|| "ack instead of pong".to_string(), |e| e.message);
                let _ = reply.send(Err(PingError::new(PingErrorKind::Disconnected, detail)));
            }
        }
    }

    /// The connection dropped first: the outcome is unknown.
    fn lost(self) {
        match self {
            // Locally it is gone, and the next connection never sends it.
            unsubscribe @ Reply::Unsubscribe(_) => unsubscribe.answer(None),
            Reply::Publish(reply) => {
                let _ = reply.send(Err(PublishError::new(PublishErrorKind::Disconnected, "")));
            }
            Reply::React(reply) => {
                let _ = reply.send(Err(ReactError::new(ReactErrorKind::Disconnected, "")));
            }
            Reply::Ping { reply, .. } => {
                let _ = reply.send(Err(PingError::new(PingErrorKind::Disconnected, "")));
            }
        }
    }
}

/// Counts the renewals after a reconnection, for [`ConnectionEvent::Resumed`].
#[derive(Debug, Default)]
struct ResumeRound {
    /// Request ids still waiting for their answer.
    waiting: Vec<u64>,
    subscriptions: usize,
    recovered: usize,
    gaps: usize,
    refused: usize,
}

/// How the renewal of one subscription ended, for its [`ResumeRound`].
#[derive(Debug, Clone, Copy)]
enum Renewal {
    Recovered,
    Gap,
    Refused,
}

impl ResumeRound {
    /// Counts the answer to request `id`; false when `id` is not one of this
    /// round's renewals.
    fn count(&mut self, id: u64, renewal: Renewal) -> bool {
        let Some(i) = self.waiting.iter().position(|w| *w == id) else {
            return false;
        };
        self.waiting.swap_remove(i);
        match renewal {
            Renewal::Recovered => self.recovered += 1,
            Renewal::Gap => self.gaps += 1,
            Renewal::Refused => self.refused += 1,
        }
        true
    }
}

/// Why `serve` returned.
struct Down {
    reason: DisconnectReason,
    /// The reconnect instant drawn when the hub announced a drain.
    drain_at: Option<Instant>,
    /// Every handle is gone: stop without reconnecting.
    abandoned: bool,
}

/// A socket write failed or hung: the connection is over.
struct SendFailed(DisconnectReason);

pub(crate) struct ConnectionTask {
    commands: mpsc::UnboundedReceiver<Command>,
    config: TaskConfig,
    reconnector: Reconnector,
    events: Arc<EventHub>,
    subs: HashMap<String, Sub>,
    pending: HashMap<u64, Pending>,
    /// Request ids on the wire; never reused within a client.
    next_id: u64,
    /// Set after a reconnection until every subscription is renewed.
    resume: Option<ResumeRound>,
    /// The current connection has been welcomed once before (a reconnection).
    reconnected: bool,
    /// Bound of one socket write: a hub that stops reading is dead to us.
    write_timeout: Duration,
    refresh: Refresh,
    rng: StdRng,
}

impl ConnectionTask {
    pub(crate) fn new(
        commands: mpsc::UnboundedReceiver<Command>,
        config: TaskConfig,
        reconnector: Reconnector,
        events: Arc<EventHub>,
    ) -> Self {
        Self {
            commands,
            config,
            reconnector,
            events,
            subs: HashMap::new(),
            pending: HashMap::new(),
            next_id: 1,
            resume: None,
            reconnected: false,
            write_timeout: Duration::from_secs(10),
            refresh: Refresh::default(),
            rng: StdRng::from_os_rng(),
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Runs until the client is closed or every handle is dropped. `first`
    /// is a connection made by `connect()` before the task started.
    pub(crate) async fn run(mut self, first: Option<(WsStream, Welcome, String)>) {
        // `connect()` announced the first connection itself, so that the
        // state is `Connected` as soon as it returns.
        let mut announced = first.is_some();
        let mut link = first;
        let mut wait = Duration::ZERO;
        loop {
            let (ws, welcome, url) = match link.take() {
                Some(l) => l,
                None => match self.attempt(wait).await {
                    Attempt::Connected(ws, welcome, url) => (*ws, welcome, url),
                    Attempt::Failed(failure) => {
                        match self.reconnector.after_failure(&failure, &mut self.rng) {
                            Plan::After(d) => {
                                self.events.emit(ConnectionEvent::Disconnected {
                                    reason: failure.reason(),
                                    retry_in: Some(d),
                                });
                                wait = d;
                                continue;
                            }
                            Plan::Stop => return self.terminate(failure.reason()).await,
                        }
                    }
                    Attempt::Closed(reason) => return self.terminate(reason).await,
                    Attempt::Abandoned => return,
                },
            };
            self.reconnector.on_connected();
            if !std::mem::take(&mut announced) {
                self.events.emit(ConnectionEvent::Connected {
                    node: welcome.node.clone(),
                    conn: welcome.conn.clone(),
                    url,
                });
            }
            let down = self.serve(ws, &welcome).await;
            self.link_down();
            if down.abandoned {
                return;
            }
            let now = Instant::now();
            match self
                .reconnector
                .after_disconnect(&down.reason, down.drain_at, now, &mut self.rng)
            {
                Plan::After(d) => {
                    self.events.emit(ConnectionEvent::Disconnected {
                        reason: down.reason,
                        retry_in: Some(d),
                    });
                    wait = d;
                }
                Plan::Stop => return self.terminate(down.reason).await,
            }
            self.reconnected = true;
        }
    }

    /// Waits `delay` while answering commands, then makes one attempt (still
    /// answering commands).
    async fn attempt(&mut self, delay: Duration) -> Attempt {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None => return Attempt::Abandoned,
                    Some(Command::Close { reply }) => {
                        let _ = reply.send(());
                        return Attempt::Closed(DisconnectReason::ClientClosed);
                    }
                    Some(cmd) => self.command_offline(cmd),
                },
                _ = sleep_until(until) => break,
            }
        }
        let url = self.reconnector.next_url();
        self.events.emit(ConnectionEvent::Connecting {
            attempt: self.reconnector.attempt(),
            url: url.to_string(),
        });
        let source = self.config.token.clone();
        let tls = self.config.tls.clone();
        let timeout = self.config.connect_timeout;
        let connecting = async move {
            // A provider is asked again at every attempt: the last token
            // may have expired while the client was away.
            let result = match source.get().await {
                Ok(token) => connect_once(&url, token.as_deref(), tls.as_ref(), timeout).await,
                Err(e) => Err(ConnectFailure::new(ConnectErrorKind::TokenProvider, e)),
            };
            (result, url)
        };
        tokio::pin!(connecting);
        loop {
            tokio::select! {
                (result, url) = &mut connecting => return match result {
                    Ok((ws, welcome)) => Attempt::Connected(Box::new(ws), welcome, url.to_string()),
                    Err(failure) => Attempt::Failed(failure),
                },
                cmd = self.commands.recv() => match cmd {
                    None => return Attempt::Abandoned,
                    Some(Command::Close { reply }) => {
                        let _ = reply.send(());
                        return Attempt::Closed(DisconnectReason::ClientClosed);
                    }
                    Some(cmd) => self.command_offline(cmd),
                },
            }
        }
    }

    /// Serves one welcomed connection until it ends.
    async fn serve(&mut self, mut ws: WsStream, welcome: &Welcome) -> Down {
        let heartbeat = self
            .config
            .heartbeat
            .unwrap_or(Duration::from_millis(welcome.heartbeat_ms))
            .max(Duration::from_millis(50));
        self.write_timeout = (heartbeat * 2).max(Duration::from_secs(1));
        let mut drain_at: Option<Instant> = None;
        let down = |reason, drain_at| Down {
            reason,
            drain_at,
            abandoned: false,
        };

        if let Err(SendFailed(reason)) = self.renew_subscriptions(&mut ws).await {
            return down(reason, drain_at);
        }
        self.token_valid_until(welcome.expires_at);

        let mut last_seen = Instant::now();
        let mut pinged = false;
        let mut tick = tokio::time::interval(
            (heartbeat / 4).clamp(Duration::from_millis(20), Duration::from_secs(2)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_at = self.subs.values().filter_map(|s| s.retry_at).min();
            tokio::select! {
                frame = ws.next() => {
                    last_seen = Instant::now();
                    pinged = false;
                    match frame {
                        Some(Ok(WsMessage::Text(text))) => {
                            if let Err(SendFailed(reason)) = self.on_text(&text, &mut ws, &mut drain_at).await {
                                return down(reason, drain_at);
                            }
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            return down(DisconnectReason::Closed { code, reason }, drain_at);
                        }
                        // Pings are answered by tungstenite; pongs only prove life.
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return down(DisconnectReason::Io(e.to_string()), drain_at),
                        None => return down(DisconnectReason::Io("socket ended without a close frame".into()), drain_at),
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None => {
                        close(&mut ws, "client dropped").await;
                        return Down { reason: DisconnectReason::ClientClosed, drain_at: None, abandoned: true };
                    }
                    Some(Command::Close { reply }) => {
                        close(&mut ws, "client closed").await;
                        let _ = reply.send(());
                        return down(DisconnectReason::ClientClosed, None);
                    }
                    Some(cmd) => {
                        if let Err(SendFailed(reason)) = self.command_online(cmd, &mut ws).await {
                            return down(reason, drain_at);
                        }
                    }
                },
                _ = tick.tick() => {
                    let idle = last_seen.elapsed();
                    if idle >= heartbeat * 2 {
                        return down(DisconnectReason::HeartbeatTimeout, drain_at);
                    }
                    // A quiet hub is asked for a sign of life: its pong resets `last_seen`.
                    if idle >= heartbeat && !pinged {
                        pinged = true;
                        if let Err(SendFailed(reason)) = self.send_ws(&mut ws, WsMessage::Ping(Default::default())).await {
                            return down(reason, drain_at);
                        }
                    }
                }
                _ = sleep_until(drain_at.unwrap_or_else(Instant::now)), if drain_at.is_some() => {
                    // The node is going away and our drawn instant has come:
                    // leave now rather than wait for its close.
                    close(&mut ws, "leaving a draining node").await;
                    return down(DisconnectReason::Drained, None);
                }
                _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    if let Err(SendFailed(reason)) = self.retry_due(&mut ws).await {
                        return down(reason, drain_at);
                    }
                }
                _ = sleep_until(self.refresh.at.unwrap_or_else(Instant::now)), if self.refresh.at.is_some() => {
                    self.refresh.at = None;
                    self.fetch_token();
                }
                token = async { self.refresh.fetching.as_mut().expect("guarded").await }, if self.refresh.fetching.is_some() => {
                    self.refresh.fetching = None;
                    let token = token.unwrap_or_else(|_| Err("token provider task ended".into()));
                    if let Err(SendFailed(reason)) = self.send_token(token, &mut ws).await {
                        return down(reason, drain_at);
                    }
                }
            }
        }
    }

    /// The connection's token expires at `exp` (None: never): with a
    /// provider, its refresh is drawn in the later part of its life.
    fn token_valid_until(&mut self, exp: Option<u64>) {
        self.refresh.expires_at = exp;
        self.refresh.at = None;
        if self.config.token.renewable().is_none() {
            return;
        }
        if let Some(exp) = exp {
            let delay = refresh_delay(exp, unix_now(), &mut self.rng);
            self.refresh.at = Some(Instant::now() + delay);
        }
    }

    /// Calls the provider in a task of its own: the connection keeps serving.
    fn fetch_token(&mut self) {
        let Some(provider) = self.config.token.renewable() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(provider().await);
        });
        self.refresh.fetching = Some(rx);
    }

    /// Sends the provider's new token in an `auth` frame, or plans another
    /// try when the provider failed.
    async fn send_token(
        &mut self,
        token: Result<String, String>,
        ws: &mut WsStream,
    ) -> Result<(), SendFailed> {
        match token {
            Ok(token) => {
                let id = self.next_id();
                self.pending.insert(id, Pending::Auth);
                self.send_frame(ws, &ClientFrame::Auth(Auth { id, token }))
                    .await
            }
            Err(reason) => {
                self.refresh_failed(reason);
                Ok(())
            }
        }
    }

    /// A refresh failed: the current token serves until it expires; try
    /// again before then.
    fn refresh_failed(&mut self, reason: String) {
        tracing::warn!(%reason, "token refresh failed; the current token serves until it expires");
        self.events
            .emit(ConnectionEvent::TokenRefreshFailed { reason });
        let delay = retry_delay(self.refresh.expires_at, unix_now());
        self.refresh.at = Some(Instant::now() + delay);
    }

    /// The hub ended a subscription (a refreshed token no longer grants its
    /// topic): the application's stream gets its last event.
    fn on_unsubscribed(&mut self, ended: Unsubscribed) {
        let Some(sub) = self.subs.remove(&ended.topic) else {
            return;
        };
        if let Some(first) = sub.first {
            let _ = first.send(Err(SubscribeError::new(
                SubscribeErrorKind::Refused(ended.code),
                "ended by the hub",
            )));
        }
        sub.queue.end(Some(Event::Closed {
            code: Some(ended.code),
            reason: "the hub ended this subscription: the token no longer grants its topic"
                .to_string(),
        }));
    }

    /// Subscribes every subscription the hub does not know on this
    /// connection, with `since` where a position is held.
    async fn renew_subscriptions(&mut self, ws: &mut WsStream) -> Result<(), SendFailed> {
        let topics: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| *s.tracker.phase() == Phase::Idle)
            .map(|(t, _)| t.clone())
            .collect();
        let mut round = self.reconnected.then(ResumeRound::default);
        for topic in topics {
            let (id, frame) = self.subscribe_request(&topic);
            if let Some(round) = round.as_mut() {
                round.waiting.push(id);
                round.subscriptions += 1;
            }
            self.feed_frame(ws, &frame).await?;
        }
        self.flush(ws).await?;
        if let Some(round) = round {
            self.resume = Some(round);
            self.finish_round_if_done();
        }
        Ok(())
    }

    /// Registers a `subscribe` of `topic`, whose subscription the caller holds,
    /// under a fresh request id; returns the id and the frame to send.
    fn subscribe_request(&mut self, topic: &str) -> (u64, ClientFrame) {
        let id = self.next_id();
        let sub = self.subs.get_mut(topic).expect("the caller holds it");
        let frame = ClientFrame::Subscribe(sub.tracker.subscribe_frame(id));
        self.pending.insert(
            id,
            Pending::Subscribe {
                topic: topic.to_string(),
            },
        );
        (id, frame)
    }

    /// Tries again the renewals the hub could not serve earlier.
    async fn retry_due(&mut self, ws: &mut WsStream) -> Result<(), SendFailed> {
        let now = Instant::now();
        let due: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.retry_at.is_some_and(|at| at <= now))
            .map(|(t, _)| t.clone())
            .collect();
        for topic in due {
            self.subs.get_mut(&topic).expect("listed above").retry_at = None;
            let (_, frame) = self.subscribe_request(&topic);
            self.send_frame(ws, &frame).await?;
        }
        Ok(())
    }

    async fn on_text(
        &mut self,
        text: &str,
        ws: &mut WsStream,
        drain_at: &mut Option<Instant>,
    ) -> Result<(), SendFailed> {
        let frame = match serde_json::from_str::<ServerFrame>(text) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the hub, ignored");
                return Ok(());
            }
        };
        match frame {
            ServerFrame::Message(msg) => self.on_message(msg, ws).await?,
            ServerFrame::Ack(ack) => self.on_ack(ack),
            ServerFrame::Gap(gap) => self.on_gap(gap, ws).await?,
            ServerFrame::Error(err) => self.on_error(err),
            ServerFrame::Stats(stats) => {
                if let Some(sub) = self.subs.get(&stats.topic)
                    && *sub.tracker.phase() == Phase::Live
                {
                    sub.queue.push_stats(stats);
                }
            }
            ServerFrame::Pong(pong) => {
                if let Some(Pending::Reply(Reply::Ping { reply, sent })) =
                    self.pending.remove(&pong.id)
                {
                    let _ = reply.send(Ok(sent.elapsed()));
                }
            }
            ServerFrame::Drain(drain) => {
                if drain_at.is_none() {
                    let delay = jitter_below(Duration::from_millis(drain.retry_ms), &mut self.rng);
                    *drain_at = Some(Instant::now() + delay);
                    self.events.emit(ConnectionEvent::Draining {
                        retry_ms: drain.retry_ms,
                        reconnect_in: delay,
                    });
                }
            }
            ServerFrame::Welcome(_) => tracing::warn!("second welcome on one connection, ignored"),
            ServerFrame::Unsubscribed(ended) => self.on_unsubscribed(ended),
        }
        Ok(())
    }

    async fn on_message(&mut self, mut msg: Message, ws: &mut WsStream) -> Result<(), SendFailed> {
        let Some(sub) = self.subs.get_mut(&msg.topic) else {
            return Ok(());
        };
        match sub.tracker.check(&msg) {
            Verdict::Deliver => {
                if let Err(mismatch) = delta::resolve(sub.base.as_ref(), &mut msg) {
                    // Never a wrong board: ask again from what was delivered;
                    // the hub replays the latest state in full.
                    tracing::warn!(topic = %msg.topic, %mismatch, "delta not applicable, resubscribing with since");
                    sub.base = None;
                    return self.resubscribe(&msg.topic, ws).await;
                }
                let seq = msg.seq;
                if sub.tracker.mode() == Some(Mode::Feed) {
                    match sub.queue.offer_feed(msg) {
                        Offer::Queued => sub.tracker.advance(seq),
                        Offer::Gone => {}
                        Offer::Overflow => {
                            // The application is too far behind: stop the flow
                            // at the hub and renew with `since` once it caught up.
                            tracing::debug!(topic = %sub_topic(sub), "subscription buffer full, suspended");
                            sub.tracker.suspend();
                            let topic = sub_topic(sub);
                            let id = self.next_id();
                            self.pending
                                .insert(id, Pending::Reply(Reply::Unsubscribe(None)));
                            self.send_frame(
                                ws,
                                &ClientFrame::Unsubscribe(Unsubscribe { id, topic }),
                            )
                            .await?;
                        }
                    }
                } else {
                    sub.base = Some(Base::of(&msg));
                    sub.queue.push_state(msg);
                    sub.tracker.advance(seq);
                }
            }
            Verdict::Duplicate | Verdict::Ignore => {}
            Verdict::Gap => {
                // `prev` says messages were missed: renew with `since` so the
                // hub replays them from the bus (PROTOCOL.md section 5).
                tracing::debug!(topic = %msg.topic, seq = msg.seq, prev = msg.prev, "gap, resubscribing with since");
                self.resubscribe(&msg.topic, ws).await?;
            }
        }
        Ok(())
    }

    /// A hole the hub announced on a feed: what the bus lost is reported to
    /// the application, and the subscription goes on (PROTOCOL.md section 5).
    async fn on_gap(&mut self, gap: Gap, ws: &mut WsStream) -> Result<(), SendFailed> {
        let Some(sub) = self.subs.get_mut(&gap.topic) else {
            return Ok(());
        };
        match sub.tracker.on_gap(&gap) {
            GapVerdict::Report {
                after_seq,
                before_seq,
            } => {
                let epoch = sub.tracker.epoch().map(str::to_string);
                sub.queue.push_always(Event::Gap {
                    topic: gap.topic,
                    after_seq,
                    before_seq: Some(before_seq),
                    epoch_changed: false,
                    epoch,
                });
            }
            GapVerdict::Ignore => {}
            GapVerdict::Renew => {
                // The hole starts after messages this subscription never got:
                // those may still be on the bus, so ask for them.
                tracing::debug!(topic = %gap.topic, after = gap.after, before = gap.before, "gap frame past the position, resubscribing with since");
                self.resubscribe(&gap.topic, ws).await?;
            }
        }
        Ok(())
    }

    /// Renews the subscription of `topic` on this connection with `since`:
    /// `unsubscribe` then `subscribe`, in one write. Messages until the new
    /// `ack` belong to the old subscription and are ignored.
    async fn resubscribe(&mut self, topic: &str, ws: &mut WsStream) -> Result<(), SendFailed> {
        let unsub_id = self.next_id();
        self.pending
            .insert(unsub_id, Pending::Reply(Reply::Unsubscribe(None)));
        let (_, subscribe) = self.subscribe_request(topic);
        self.feed_frame(
            ws,
            &ClientFrame::Unsubscribe(Unsubscribe {
                id: unsub_id,
                topic: topic.to_string(),
            }),
        )
        .await?;
        self.feed_frame(ws, &subscribe).await?;
        self.flush(ws).await
    }

    fn on_ack(&mut self, ack: Ack) {
        match self.pending.remove(&ack.id) {
            Some(Pending::Subscribe { topic }) => self.on_subscribed(&topic, &ack),
            Some(Pending::Reply(reply)) => reply.answer(None),
            Some(Pending::Auth) => {
                self.token_valid_until(ack.expires_at);
                self.events.emit(ConnectionEvent::TokenRefreshed {
                    expires_at: ack.expires_at,
                });
            }
            None => {}
        }
    }

    fn on_error(&mut self, err: tribune_protocol::Error) {
        let Some(id) = err.id else {
            tracing::warn!(code = %err.code, message = %err.message, "error from the hub");
            return;
        };
        match self.pending.remove(&id) {
            Some(Pending::Subscribe { topic }) => self.on_subscribe_refused(id, &topic, &err),
            Some(Pending::Reply(reply)) => reply.answer(Some(err)),
            Some(Pending::Auth) => self.refresh_failed(format!("{}: {}", err.code, err.message)),
            None => {}
        }
    }

    /// The hub acknowledged a `subscribe` of `topic`.
    fn on_subscribed(&mut self, topic: &str, ack: &Ack) {
        let Some(sub) = self.subs.get_mut(topic) else {
            return;
        };
        let Some(outcome) = sub.tracker.on_ack(ack) else {
            return;
        };
        // A new subscription starts from a full message (the hub never
        // sends a delta before one): nothing held before is a base.
        sub.base = None;
        sub.queue.set_epoch(ack.epoch.clone());
        if let Some(first) = sub.first.take() {
            let info = SubscribeInfo {
                mode: ack.mode.or(sub.tracker.mode()).unwrap_or(Mode::Feed),
                epoch: ack.epoch.clone().unwrap_or_default(),
                seq: ack.seq.unwrap_or(0),
                recovered: ack.recovered,
            };
            let _ = first.send(Ok(info));
        }
        let renewal = match outcome.lost {
            Some(lost) => {
                sub.queue.push_always(Event::Gap {
                    topic: topic.to_string(),
                    after_seq: lost.after_seq,
                    before_seq: None,
                    epoch_changed: lost.epoch_changed,
                    epoch: lost.epoch,
                });
                Renewal::Gap
            }
            None => Renewal::Recovered,
        };
        self.count_renewal(ack.id, renewal);
    }

    /// The hub refused the `subscribe` request `id` of `topic`.
    fn on_subscribe_refused(&mut self, id: u64, topic: &str, err: &tribune_protocol::Error) {
        let Some(sub) = self.subs.get_mut(topic) else {
            return;
        };
        if !sub.tracker.on_refused(id) {
            return;
        }
        if let Some(first) = sub.first.take() {
            let _ = first.send(Err(SubscribeError::new(
                SubscribeErrorKind::Refused(err.code),
                format!("{topic}: {}", err.message),
            )));
            self.subs.remove(topic);
        } else if matches!(err.code, ErrorCode::Unavailable | ErrorCode::RateLimited) {
            // The hub cannot serve it *yet* (bus down, too fast): try again.
            let bound = self.config.backoff_max.min(Duration::from_secs(2));
            sub.retry_at = Some(
                Instant::now() + Duration::from_millis(50) + jitter_below(bound, &mut self.rng),
            );
        } else {
            let sub = self.subs.remove(topic).expect("found above");
            sub.queue.end(Some(Event::Closed {
                code: Some(err.code),
                reason: err.message.clone(),
            }));
            self.count_renewal(id, Renewal::Refused);
        }
    }

    /// Counts the answer to a renewal of the current resume round, if `id`
    /// is one, and announces the round once every renewal is answered.
    fn count_renewal(&mut self, id: u64, renewal: Renewal) {
        if self
            .resume
            .as_mut()
            .is_some_and(|round| round.count(id, renewal))
        {
            self.finish_round_if_done();
        }
    }

    fn finish_round_if_done(&mut self) {
        if self.resume.as_ref().is_some_and(|r| r.waiting.is_empty()) {
            let r = self.resume.take().expect("checked above");
            self.events.emit(ConnectionEvent::Resumed {
                subscriptions: r.subscriptions,
                recovered: r.recovered,
                gaps: r.gaps,
                refused: r.refused,
            });
        }
    }

    /// A command while connected.
    async fn command_online(&mut self, cmd: Command, ws: &mut WsStream) -> Result<(), SendFailed> {
        match cmd {
            Command::Subscribe {
                topic,
                key,
                options,
                queue,
                reply,
            } => {
                if !self.add_sub(topic.clone(), key, options, queue, reply) {
                    return Ok(());
                }
                let (_, frame) = self.subscribe_request(&topic);
                self.send_frame(ws, &frame).await
            }
            Command::Unsubscribe { topic, key, reply } => {
                let Some(sub) = self.remove_sub(&topic, key) else {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                    return Ok(());
                };
                if matches!(sub.tracker.phase(), Phase::Pending { .. } | Phase::Live) {
                    let id = self.next_id();
                    self.pending
                        .insert(id, Pending::Reply(Reply::Unsubscribe(reply)));
                    self.send_frame(ws, &ClientFrame::Unsubscribe(Unsubscribe { id, topic }))
                        .await
                } else {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                    Ok(())
                }
            }
            Command::CaughtUp { topic, key } => {
                let Some(sub) = self.subs.get_mut(&topic).filter(|s| s.key == key) else {
                    return Ok(());
                };
                if !sub.tracker.unsuspend() {
                    return Ok(());
                }
                sub.queue.clear_overflow();
                let (_, frame) = self.subscribe_request(&topic);
                self.send_frame(ws, &frame).await
            }
            Command::Publish { topic, data, reply } => {
                let id = self.next_id();
                self.pending
                    .insert(id, Pending::Reply(Reply::Publish(reply)));
                self.send_frame(ws, &ClientFrame::Publish(Publish { id, topic, data }))
                    .await
            }
            Command::React {
                topic,
                reaction,
                reply,
            } => {
                let id = self.next_id();
                self.pending.insert(id, Pending::Reply(Reply::React(reply)));
                self.send_frame(
                    ws,
                    &ClientFrame::React(React {
                        id,
                        topic,
                        reaction,
                    }),
                )
                .await
            }
            Command::Ping { reply } => {
                let id = self.next_id();
                self.pending.insert(
                    id,
                    Pending::Reply(Reply::Ping {
                        reply,
                        sent: Instant::now(),
                    }),
                );
                self.send_frame(ws, &ClientFrame::Ping(Ping { id })).await
            }
            Command::Close { .. } => unreachable!("handled by serve"),
        }
    }

    /// A command while no connection is up.
    fn command_offline(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe {
                topic,
                key,
                options,
                queue,
                reply,
            } => {
                // Registered now, sent by the next connection.
                self.add_sub(topic, key, options, queue, reply);
            }
            Command::Unsubscribe { topic, key, reply } => {
                self.remove_sub(&topic, key);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            Command::CaughtUp { topic, key } => {
                if let Some(sub) = self.subs.get_mut(&topic).filter(|s| s.key == key)
                    && sub.tracker.unsuspend()
                {
                    sub.queue.clear_overflow();
                }
            }
            Command::Publish { topic, reply, .. } => {
                let _ = reply.send(Err(PublishError::new(
                    PublishErrorKind::NotConnected,
                    topic,
                )));
            }
            Command::React { topic, reply, .. } => {
                let _ = reply.send(Err(ReactError::new(ReactErrorKind::NotConnected, topic)));
            }
            Command::Ping { reply } => {
                let _ = reply.send(Err(PingError::new(PingErrorKind::NotConnected, "")));
            }
            Command::Close { .. } => unreachable!("handled by the caller"),
        }
    }

    /// Registers a subscription; refuses a second one to the same topic.
    fn add_sub(
        &mut self,
        topic: String,
        key: u64,
        options: SubscribeOptions,
        queue: Arc<SubQueue>,
        reply: oneshot::Sender<Result<SubscribeInfo, SubscribeError>>,
    ) -> bool {
        if self.subs.contains_key(&topic) {
            let _ = reply.send(Err(SubscribeError::new(
                SubscribeErrorKind::AlreadySubscribed,
                format!("{topic}: this client already has a subscription to it"),
            )));
            return false;
        }
        let tracker = Tracker::new(topic.clone(), options.history, options.since)
            .asking_delta(!options.full_messages);
        self.subs.insert(
            topic,
            Sub {
                key,
                tracker,
                queue,
                first: Some(reply),
                retry_at: None,
                base: None,
            },
        );
        true
    }

    /// Removes the subscription `key` of `topic`, not a newer one.
    fn remove_sub(&mut self, topic: &str, key: u64) -> Option<Sub> {
        if self.subs.get(topic).is_some_and(|s| s.key == key) {
            let sub = self.subs.remove(topic)?;
            sub.queue.end(None);
            Some(sub)
        } else {
            None
        }
    }

    /// The connection is gone: requests in flight fail (their outcome is
    /// unknown), subscriptions wait for the next connection.
    fn link_down(&mut self) {
        for (_, pending) in self.pending.drain() {
            if let Pending::Reply(reply) = pending {
                reply.lost();
            }
        }
        for sub in self.subs.values_mut() {
            sub.tracker.on_disconnect();
            sub.retry_at = None;
        }
        self.resume = None;
        // The next connection starts with a fresh token from the provider.
        self.refresh = Refresh::default();
    }

    /// Stops for good: every subscription ends with the reason, then the
    /// task answers `Closed` until every handle is gone.
    async fn terminate(mut self, reason: DisconnectReason) {
        self.link_down();
        for (_, sub) in self.subs.drain() {
            if let Some(first) = sub.first {
                let _ = first.send(Err(SubscribeError::new(
                    SubscribeErrorKind::Closed,
                    reason.to_string(),
                )));
            }
            sub.queue.end(Some(Event::Closed {
                code: None,
                reason: reason.to_string(),
            }));
        }
        self.events.emit(ConnectionEvent::Disconnected {
            reason: reason.clone(),
            retry_in: None,
        });
        self.events.emit(ConnectionEvent::Closed { reason });
        while let Some(cmd) = self.commands.recv().await {
            let closed = "client closed";
            match cmd {
                Command::Subscribe { reply, .. } => {
                    let _ =
                        reply.send(Err(SubscribeError::new(SubscribeErrorKind::Closed, closed)));
                }
                Command::Unsubscribe { reply, .. } => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Command::CaughtUp { .. } => {}
                Command::Publish { reply, .. } => {
                    let _ = reply.send(Err(PublishError::new(PublishErrorKind::Closed, closed)));
                }
                Command::React { reply, .. } => {
                    let _ = reply.send(Err(ReactError::new(ReactErrorKind::Closed, closed)));
                }
                Command::Ping { reply } => {
                    let _ = reply.send(Err(PingError::new(PingErrorKind::Closed, closed)));
                }
                Command::Close { reply } => {
                    let _ = reply.send(());
                }
            }
        }
    }

    async fn send_frame(
        &mut self,
        ws: &mut WsStream,
        frame: &ClientFrame,
    ) -> Result<(), SendFailed> {
        self.send_ws(ws, WsMessage::text(encode(frame))).await
    }

    async fn send_ws(&mut self, ws: &mut WsStream, msg: WsMessage) -> Result<(), SendFailed> {
        match tokio::time::timeout(self.write_timeout, ws.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SendFailed(DisconnectReason::Io(e.to_string()))),
            Err(_) => Err(SendFailed(DisconnectReason::HeartbeatTimeout)),
        }
    }

    /// Queues a frame without flushing, so that a batch leaves in one write.
    async fn feed_frame(
        &mut self,
        ws: &mut WsStream,
        frame: &ClientFrame,
    ) -> Result<(), SendFailed> {
        match tokio::time::timeout(self.write_timeout, ws.feed(WsMessage::text(encode(frame))))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SendFailed(DisconnectReason::Io(e.to_string()))),
            Err(_) => Err(SendFailed(DisconnectReason::HeartbeatTimeout)),
        }
    }

    async fn flush(&mut self, ws: &mut WsStream) -> Result<(), SendFailed> {
        match tokio::time::timeout(self.write_timeout, ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SendFailed(DisconnectReason::Io(e.to_string()))),
            Err(_) => Err(SendFailed(DisconnectReason::HeartbeatTimeout)),
        }
    }
}

enum Attempt {
    /// Boxed: a socket is large, and this enum moves through `select!`.
    Connected(Box<WsStream>, Welcome, String),
    Failed(ConnectFailure),
    Closed(DisconnectReason),
    Abandoned,
}

fn sub_topic(sub: &Sub) -> String {
    sub.tracker.topic().to_string()
}

fn encode(frame: &ClientFrame) -> String {
    serde_json::to_string(frame).expect("client frames always serialize")
}

/// A normal close; errors are moot, the connection is being dropped anyway.
async fn close(ws: &mut WsStream, reason: &'static str) {
    let frame = CloseFrame {
        code: WsCloseCode::Normal,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(Some(frame))).await;
}
