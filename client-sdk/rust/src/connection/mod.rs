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
//!
//! Files: this one, the task, its state and its connection loop; `frames`,
//! the hub's frames; `commands`, the handles' commands; `tokens`, token
//! refreshes.

mod commands;
mod frames;
mod tokens;

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
    Ack, Auth, ClientFrame, ErrorCode, Gap, Message, Mode, Ping, Publish, React, Retract,
    ServerFrame, Unsubscribe, Unsubscribed, Welcome,
};

use crate::backoff::jitter_below;
use crate::command::{Command, Lifecycle, SubscribeInfo, SubscribeOptions};
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
    /// How long a check after a network change waits for a sign of life.
    pub(crate) probe_timeout: Duration,
}

/// How long a paused client waits: until the app resumes it.
const PAUSED: Duration = Duration::from_secs(365 * 24 * 3600);

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
    /// The app paused the client (background): no connection until it
    /// resumes it.
    paused: bool,
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
            paused: false,
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
                    Attempt::Paused => {
                        wait = PAUSED;
                        continue;
                    }
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
            self.reconnected = true;
            if self.paused {
                // Subscriptions wait, with their resume points, for `resume`.
                self.events.emit(ConnectionEvent::Disconnected {
                    reason: down.reason,
                    retry_in: None,
                });
                wait = PAUSED;
                continue;
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
        }
    }

    /// Waits `delay` while answering commands, then makes one attempt (still
    /// answering commands).
    async fn attempt(&mut self, delay: Duration) -> Attempt {
        let mut until = Instant::now() + if self.paused { PAUSED } else { delay };
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None => return Attempt::Abandoned,
                    Some(Command::Close { reply }) => {
                        let _ = reply.send(());
                        return Attempt::Closed(DisconnectReason::ClientClosed);
                    }
                    Some(Command::Lifecycle(Lifecycle::Pause)) => {
                        self.paused = true;
                        until = Instant::now() + PAUSED;
                    }
                    // A network change in the background changes nothing:
                    // the app resumes the client when it comes back.
                    Some(Command::Lifecycle(Lifecycle::NetworkChanged)) if self.paused => {}
                    // Back in the foreground or on a network: whatever the
                    // backoff said, try now.
                    Some(Command::Lifecycle(_)) => {
                        self.paused = false;
                        self.reconnector.network_back();
                        break;
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
                    Some(Command::Lifecycle(Lifecycle::Pause)) => {
                        self.paused = true;
                        return Attempt::Paused;
                    }
                    // Already connecting: that is the check.
                    Some(Command::Lifecycle(_)) => {}
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
        // A check the app asked for (network changed, back from the
        // background): any frame before this instant proves the socket.
        let mut probe: Option<Instant> = None;
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
                    probe = None;
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
                    Some(Command::Lifecycle(Lifecycle::Pause)) => {
                        self.paused = true;
                        close(&mut ws, "paused").await;
                        return down(DisconnectReason::Paused, None);
                    }
                    // A socket can be dead without a word after a network
                    // change (mobile Safari fires nothing): a ping now, and
                    // the probe arm below gives up on it quickly.
                    Some(Command::Lifecycle(_)) => {
                        if probe.is_none() {
                            probe = Some(Instant::now() + self.config.probe_timeout);
                            if let Err(SendFailed(reason)) = self.send_ws(&mut ws, WsMessage::Ping(Default::default())).await {
                                return down(reason, drain_at);
                            }
                        }
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
                _ = sleep_until(probe.unwrap_or_else(Instant::now)), if probe.is_some() => {
                    return down(DisconnectReason::Unresponsive, None);
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
                Command::Lifecycle(_) => {}
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
    /// The app paused the client while it was connecting.
    Paused,
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
