//! The application's handle: [`Client`] (cheap to clone, every clone talks
//! to the same connection task) and its [`ClientBuilder`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tribune_protocol::{ClientFrame, Publish, validate_topic};

use crate::backoff::Backoff;
use crate::command::{Command, Lifecycle, SubscribeOptions};
use crate::connection::{ConnectionTask, TaskConfig};
use crate::connector::{Reconnector, connect_once, ws_url};
use crate::error::{
    ConnectError, PingError, PingErrorKind, PublishError, PublishErrorKind, ReactError,
    ReactErrorKind, SubscribeError, SubscribeErrorKind, UnsubscribeError,
};
use crate::events::{ConnectionEvent, ConnectionEvents, ConnectionState, EventHub};
use crate::queue::SubQueue;
use crate::subscription::Subscription;
use crate::tls;
use crate::token::TokenSource;

/// Settings of a [`Client`]; every one has a default suited to a fan app.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    urls: Vec<String>,
    token: TokenSource,
    /// Trust only this CA for `wss://` hubs instead of the platform's roots.
    ca_file: Option<PathBuf>,
    backoff_min: Duration,
    backoff_max: Duration,
    heartbeat: Option<Duration>,
    connect_timeout: Duration,
    request_timeout: Duration,
    probe_timeout: Duration,
    buffer: usize,
    max_frame_bytes: usize,
    retry_initial_connect: bool,
}

impl ClientBuilder {
    fn new(url: &str) -> Self {
        Self {
            urls: vec![url.to_string()],
            token: TokenSource::None,
            ca_file: None,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            heartbeat: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            probe_timeout: Duration::from_millis(500),
            buffer: 1024,
            max_frame_bytes: 4 * 1024,
            retry_initial_connect: false,
        }
    }

    /// Another hub URL; attempts go round the list, so a dead node is left
    /// for the next one.
    pub fn url(mut self, url: impl AsRef<str>) -> Self {
        self.urls.push(url.as_ref().to_string());
        self
    }

    /// A JWT, sent as `Authorization: Bearer` on every handshake. It is
    /// never renewed: when it expires the hub closes with 1008 and the
    /// client stops. Use [`ClientBuilder::token_provider`] for tokens that
    /// expire while a fan watches.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = TokenSource::Fixed(token.into());
        self
    }

    /// An async callback that returns a fresh JWT: called at connect, on
    /// every reconnect (the token goes in the handshake's `Authorization`
    /// header) and ahead of the current token's `exp`, at a random moment
    /// of its last half, when the new token replaces it on the open
    /// connection with an `auth` frame. A refresh the provider or the hub
    /// refuses is retried while the current token lasts; each outcome is a
    /// [`ConnectionEvent::TokenRefreshed`] or
    /// [`ConnectionEvent::TokenRefreshFailed`]. Subscriptions a new token no
    /// longer grants end with [`Event::Closed`](crate::Event::Closed) and
    /// code `forbidden`.
    pub fn token_provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.token = TokenSource::provider(provider);
        self
    }

    /// For `wss://` hubs, trust only the CA certificates of this PEM file
    /// instead of the platform's root certificates: a hub with a private or
    /// test CA. Read once, by [`connect`](Self::connect).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Bounds of the full-jitter exponential backoff between reconnection
    /// attempts: attempt n waits a random delay in `[0, min(max, min * 2^n)]`.
    /// Defaults: 100 ms and 30 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Liveness interval, instead of the hub's `heartbeat_ms`: after one
    /// quiet interval the client pings, after two it reconnects.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// How long the check of [`Client::network_changed`] (and
    /// [`Client::resume`] while connected) waits for a sign of life before
    /// it reconnects. Default 500 ms: a live hub answers a ping in a round
    /// trip, and a false alarm costs one lossless reconnection.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Bound of one handshake, `welcome` included. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound of the wait for an answer to `subscribe`, `unsubscribe`,
    /// `publish`, `react` and `ping`. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many events a subscription holds for a slow application before a
    /// feed is suspended and renewed with `since` (a state topic keeps the
    /// newest). Default 1,024.
    pub fn subscription_buffer(mut self, events: usize) -> Self {
        self.buffer = events;
        self
    }

    /// Largest client frame the hub accepts (PROTOCOL.md section 8); a
    /// `publish` that would exceed it fails before it is sent. Default 4 KiB.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Return at once and keep trying in the background when the first
    /// connection fails, instead of returning its error.
    pub fn retry_initial_connect(mut self, retry: bool) -> Self {
        self.retry_initial_connect = retry;
        self
    }

    /// Connects (or, with `retry_initial_connect`, starts connecting) and
    /// spawns the connection task on the current Tokio runtime.
    pub async fn connect(self) -> Result<Client, ConnectError> {
        let urls = self
            .urls
            .iter()
            .map(|u| ws_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        // Trusted certificates are read only when TLS may be used; a CA file
        // that was given is checked even then, so a bad path shows at once.
        let tls = if self.ca_file.is_some() || urls.iter().any(|u| u.scheme() == "wss") {
            Some(tls::client_config(self.ca_file.as_deref())?)
        } else {
            None
        };
        let mut reconnector =
            Reconnector::new(urls, Backoff::new(self.backoff_min, self.backoff_max));
        let first = if self.retry_initial_connect {
            None
        } else {
            let url = reconnector.next_url();
            let token =
                self.token.get().await.map_err(|e| {
                    ConnectError::new(crate::error::ConnectErrorKind::TokenProvider, e)
                })?;
            let (ws, welcome) =
                connect_once(&url, token.as_deref(), tls.as_ref(), self.connect_timeout)
                    .await
                    .map_err(|f| f.error)?;
            Some((ws, welcome, url.to_string()))
        };
        let events = Arc::new(EventHub::new(ConnectionState::Connecting));
        if let Some((_, welcome, url)) = &first {
            events.emit(ConnectionEvent::Connected {
                node: welcome.node.clone(),
                conn: welcome.conn.clone(),
                url: url.clone(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = ConnectionTask::new(
            rx,
            TaskConfig {
                token: self.token.clone(),
                tls,
                connect_timeout: self.connect_timeout,
                heartbeat: self.heartbeat,
                backoff_max: self.backoff_max,
                probe_timeout: self.probe_timeout,
            },
            reconnector,
            events.clone(),
        );
        tokio::spawn(task.run(first));
        Ok(Client {
            inner: Arc::new(Inner {
                commands: tx,
                events,
                next_key: AtomicU64::new(1),
                request_timeout: self.request_timeout,
                buffer: self.buffer,
                max_frame_bytes: self.max_frame_bytes,
            }),
        })
    }
}

struct Inner {
    /// Commands to the connection task.
    commands: mpsc::UnboundedSender<Command>,
    /// Connection events and state, written by the task.
    events: Arc<EventHub>,
    /// Keys that tell subscriptions to the same topic apart over time.
    next_key: AtomicU64,
    request_timeout: Duration,
    buffer: usize,
    max_frame_bytes: usize,
}

/// A fan's connection to Tribune: subscriptions that survive reconnections,
/// reactions, and publications where a namespace allows them.
///
/// Cloning is cheap; every clone uses the same connection. The connection
/// task stops when the client is [closed](Client::close) or when every clone
/// and every [`Subscription`] is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Awaits a reply from the task within the request timeout.
async fn reply<T, K: Copy>(
    rx: oneshot::Receiver<Result<T, crate::Error<K>>>,
    timeout: Duration,
    timed_out: K,
    closed: K,
    what: &str,
) -> Result<T, crate::Error<K>> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(crate::Error::new(closed, what)),
        Err(_) => Err(crate::Error::new(
            timed_out,
            format!("{what}: no answer within {timeout:?}"),
        )),
    }
}

impl Client {
    /// Settings for a client of the hub at `url` (`ws://host:port`,
    /// `http://host:port` or a full `.../v1/ws` URL).
    pub fn builder(url: impl AsRef<str>) -> ClientBuilder {
        ClientBuilder::new(url.as_ref())
    }

    /// Connects with the default settings.
    pub async fn connect(url: impl AsRef<str>) -> Result<Client, ConnectError> {
        Self::builder(url).connect().await
    }

    /// Subscribes to `topic` with the hub's default history (1 for `state`,
    /// 0 for `feed`). Returns once the hub acknowledged it.
    pub async fn subscribe(
        &self,
        topic: impl Into<String>,
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe_with(topic, SubscribeOptions::default())
            .await
    }

    /// Subscribes with history or a resume point.
    pub async fn subscribe_with(
        &self,
        topic: impl Into<String>,
        options: SubscribeOptions,
    ) -> Result<Subscription, SubscribeError> {
        let topic = topic.into();
        validate_topic(&topic).map_err(|e| {
            SubscribeError::with_source(SubscribeErrorKind::InvalidTopic, topic.clone(), e)
        })?;
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let queue = SubQueue::new(self.inner.buffer);
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Subscribe {
                topic: topic.clone(),
                key,
                options,
                queue: queue.clone(),
                reply: tx,
            })
            .map_err(|_| SubscribeError::new(SubscribeErrorKind::Closed, topic.clone()))?;
        // Created before the wait: if the wait times out or is cancelled,
        // dropping it unsubscribes.
        let mut sub = Subscription::new(
            topic.clone(),
            key,
            queue,
            self.inner.commands.clone(),
            crate::SubscribeInfo {
                mode: tribune_protocol::Mode::Feed,
                epoch: String::new(),
                seq: 0,
                recovered: None,
            },
            self.inner.request_timeout,
        );
        let info = reply(
            rx,
            self.inner.request_timeout,
            SubscribeErrorKind::TimedOut,
            SubscribeErrorKind::Closed,
            &topic,
        )
        .await?;
        sub.set_info(info);
        Ok(sub)
    }

    /// Stops a subscription (the same as [`Subscription::unsubscribe`]).
    pub async fn unsubscribe(&self, subscription: Subscription) -> Result<(), UnsubscribeError> {
        subscription.unsubscribe().await
    }

    /// Publishes `data` (serialized to JSON) to `topic`, for namespaces where
    /// clients may publish. It goes to the bus subject `tribune.in.<topic>`,
    /// never into what fans read. Fails at once when disconnected.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        data: &T,
    ) -> Result<(), PublishError> {
        let json = serde_json::to_string(data).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidJson, topic.to_string(), e)
        })?;
        self.publish_json(topic, json).await
    }

    /// Publishes a payload that is already JSON text (checked here).
    pub async fn publish_json(
        &self,
        topic: &str,
        json: impl Into<String>,
    ) -> Result<(), PublishError> {
        validate_topic(topic).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidTopic, topic.to_string(), e)
        })?;
        let data = RawValue::from_string(json.into()).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidJson, topic.to_string(), e)
        })?;
        // The largest id the frame could carry, so the check never passes a
        // frame the hub would refuse.
        let frame = ClientFrame::Publish(Publish {
            id: u64::MAX,
            topic: topic.to_string(),
            data,
        });
        let size = serde_json::to_string(&frame)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > self.inner.max_frame_bytes {
            return Err(PublishError::new(
                PublishErrorKind::PayloadTooLarge,
                format!(
                    "{topic}: frame of {size} bytes, the hub takes {}",
                    self.inner.max_frame_bytes
                ),
            ));
        }
        let ClientFrame::Publish(Publish { data, .. }) = frame else {
            unreachable!("built above")
        };
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Publish {
                topic: topic.to_string(),
                data,
                reply: tx,
            })
            .map_err(|_| PublishError::new(PublishErrorKind::Closed, topic.to_string()))?;
        reply(
            rx,
            self.inner.request_timeout,
            PublishErrorKind::TimedOut,
            PublishErrorKind::Closed,
            topic,
        )
        .await
    }

    /// Sends one reaction (one of the namespace's allowed ones, e.g. `🔥` on
    /// `results`); the counts come back to every subscriber as
    /// [`Event::Stats`](crate::Event::Stats). Fails at once when disconnected.
    pub async fn react(&self, topic: &str, reaction: &str) -> Result<(), ReactError> {
        validate_topic(topic).map_err(|e| {
            ReactError::with_source(ReactErrorKind::InvalidTopic, topic.to_string(), e)
        })?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::React {
                topic: topic.to_string(),
                reaction: reaction.to_string(),
                reply: tx,
            })
            .map_err(|_| ReactError::new(ReactErrorKind::Closed, topic.to_string()))?;
        reply(
            rx,
            self.inner.request_timeout,
            ReactErrorKind::TimedOut,
            ReactErrorKind::Closed,
            topic,
        )
        .await
    }

    /// Round trip of an application-level `ping`.
    pub async fn ping(&self) -> Result<Duration, PingError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Ping { reply: tx })
            .map_err(|_| PingError::new(PingErrorKind::Closed, ""))?;
        reply(
            rx,
            self.inner.request_timeout,
            PingErrorKind::TimedOut,
            PingErrorKind::Closed,
            "ping",
        )
        .await
    }

    /// Tells the client the device's network changed (Wi-Fi to cellular,
    /// out of a tunnel; from the platform's reachability callback). A socket
    /// may then be dead without any sign: connected, the client pings the
    /// hub and reconnects at once (no backoff, every subscription resumed
    /// with `since`) if nothing comes back within the probe timeout;
    /// waiting to reconnect, it tries now; paused, it stays paused.
    pub fn network_changed(&self) {
        let _ = self
            .inner
            .commands
            .send(Command::Lifecycle(Lifecycle::NetworkChanged));
    }

    /// The app goes to the background: the client closes its connection
    /// (1000) and stays away until [`Client::resume`], keeping its
    /// subscriptions and their resume points. Nothing is lost if the
    /// app resumes while the hub still retains what it missed.
    pub fn pause(&self) {
        let _ = self
            .inner
            .commands
            .send(Command::Lifecycle(Lifecycle::Pause));
    }

    /// The app is back in the foreground: a paused or waiting client
    /// connects at once and resumes every subscription; a connected one
    /// checks its socket as [`Client::network_changed`] does.
    pub fn resume(&self) {
        let _ = self
            .inner
            .commands
            .send(Command::Lifecycle(Lifecycle::Resume));
    }

    /// Connection events from now on.
    pub fn events(&self) -> ConnectionEvents {
        self.inner.events.listen()
    }

    /// The connection's current state.
    pub fn state(&self) -> ConnectionState {
        self.inner.events.state()
    }

    /// The state as a `watch` channel, to await a change.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.events.watch()
    }

    /// The name of the hub node of the latest connection (from `welcome`).
    pub fn node(&self) -> Option<String> {
        self.inner.events.node()
    }

    /// Closes the connection (1000) and stops reconnecting; every
    /// subscription ends with [`Event::Closed`](crate::Event::Closed).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close { reply: tx })
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}
