//! The NATS JetStream bus (PROTOCOL.md section 10, ARCHITECTURE.md section 4).
//!
//! Owns: connecting (short ping interval, a timeout around every call),
//! refusing servers older than 2.11, provisioning the stream when
//! `bus.manage_stream` (or checking the operator's), one core-NATS
//! subscription per live topic on the stream's republished subjects, history
//! reads through the batched direct get (async-nats has none, so it is written
//! here), and the connection status with its epoch and reconnect generation.
//!
//! Subjects, with the prefix `p`: editors publish to `p.fan.<topic>` (stored
//! by the stream), the stream republishes to `p.live.<topic>`, fans'
//! publications go to `p.in.<topic>`, statistics partials to `p.stats.<node>`.
//!
//! # `prev` in history reads
//!
//! A direct-get batch reply carries `Nats-Last-Sequence`, but it names the
//! previous reply *of the batch* (0 on the first), not the previous message of
//! the subject (checked against nats-server 2.15). In a `next_by_subj` batch on
//! one subject both agree from the second reply on; the first reply's
//! predecessor is known when the batch starts at the message that precedes it,
//! when it starts at sequence 1 (nothing before: 0), or else is read with one
//! `multi_last` request bounded by `up_to_seq`. It is the last message *still
//! stored* before it, which is the contract's `prev` except when older
//! messages were removed meanwhile (removal, not loss).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use tribune_protocol::Topic;

use super::{After, Bus, BusError, BusMessage, BusResult, BusStatus, Epoch, LiveFeed, StatsFeed};
use crate::config::BusConfig;

/// The oldest nats-server with the batched direct get (ADR-31).
const MIN_SERVER_VERSION: (u64, u64) = (2, 11);
/// nats-server answers `413 Too Many Results` above this many subjects.
const MULTI_LAST_MAX: usize = 1024;
/// Replies asked for in one `next_by_subj` batch; longer reads take several.
const BATCH_MAX: usize = 1024;
/// Messages async-nats buffers per subscription before it drops the newest:
/// generous, because a drop costs a gap repair.
const SUBSCRIPTION_CAPACITY: usize = 64 * 1024;
/// How soon a failed status refresh (stream info after a reconnect) is retried.
const REFRESH_RETRY: Duration = Duration::from_millis(250);
/// Reconnect delays grow by this step per attempt...
const RECONNECT_STEP_MS: u64 = 50;
/// ...up to this, plus up to one step of jitter.
const RECONNECT_MAX_MS: u64 = 200;
/// How often dropped-message warnings are logged at most.
const SLOW_LOG_EVERY: Duration = Duration::from_secs(5);

/// The NATS JetStream bus. Cheap to share behind an `Arc`.
pub struct NatsBus {
    inner: Arc<Inner>,
}

impl NatsBus {
    /// A core-NATS publication (fans' own messages, statistics partials):
    /// at most once, within the request timeout, refused while disconnected.
    fn core_publish(&self, subject: String, data: Bytes) -> BoxFuture<'_, BusResult<()>> {
        async move {
            self.inner.require_connection()?;
            self.inner
                .bounded(async {
                    self.inner
                        .client
                        .publish(subject, data)
                        .await
                        .map_err(|e| BusError::Rejected(e.to_string()))
                })
                .await
        }
        .boxed()
    }

    /// Connects, checks the server, provisions or checks the stream.
    ///
    /// `max_retained` is the deepest namespace retention: the stream's
    /// `max_msgs_per_subject`. A failure is [`BusError::Unusable`], one line
    /// fit for the operator.
    pub async fn connect(cfg: &BusConfig, max_retained: u32) -> BusResult<NatsBus> {
        let url = cfg
            .url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| BusError::Unusable("bus.url (--nats) is not set".into()))?;
        let servers: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if cfg.prefix.is_empty()
            || cfg.prefix.contains(['*', '>', ' '])
            || cfg.stream.contains(['.', '*', '>', ' '])
        {
            return Err(BusError::Unusable(
                "bus.prefix and bus.stream must be plain NATS names (no wildcards, spaces, or dots in the stream)".into(),
            ));
        }
        let timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut options = ConnectOptions::new()
            .name("tribune-hub")
            .ping_interval(Duration::from_millis(cfg.ping_interval_ms.max(100)))
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            // Forwarded at once: async-nats runs the callback in line and drops
            // events while it is busy; the watcher task does the slow work.
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            });
        if let Some(path) = &cfg.credentials {
            options = options.credentials_file(path).await.map_err(|e| {
                BusError::Unusable(format!(
                    "cannot read NATS credentials {}: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(user) = &cfg.user {
            options =
                options.user_and_password(user.clone(), cfg.password.clone().unwrap_or_default());
        }
        if let Some(token) = &cfg.token {
            options = options.token(token.clone());
        }
        let client = tokio::time::timeout(timeout * 2, options.connect(servers))
            .await
            .map_err(|_| BusError::Unusable(format!("cannot connect to NATS at {url}: timed out")))?
            .map_err(|e| BusError::Unusable(format!("cannot connect to NATS at {url}: {e}")))?;

        let server = client.server_info();
        let version = parse_version(&server.version).ok_or_else(|| {
            BusError::Unusable(format!(
                "nats-server at {url} reports an unreadable version '{}'",
                server.version
            ))
        })?;
        if version < MIN_SERVER_VERSION {
            return Err(BusError::Unusable(format!(
                "nats-server {} at {url} is too old: Tribune needs 2.11 or newer (batched direct get)",
                server.version
            )));
        }
        if !server.jetstream {
            return Err(BusError::Unusable(format!(
                "nats-server at {url} runs without JetStream: start it with -js (or jetstream {{}} in its config)"
            )));
        }

        let managed_config = cfg.manage_stream.then(|| stream_config(cfg, max_retained));
        let (status, _) = watch::channel(BusStatus {
            connected: false,
            epoch: Epoch::new(&cfg.stream, 0),
            generation: 0,
        });
        let inner = Arc::new(Inner {
            client,
            subjects: Subjects::new(&cfg.prefix, &cfg.stream),
            stream: cfg.stream.clone(),
            managed_config,
            timeout,
            status,
            eviction: std::sync::OnceLock::new(),
        });

        let created = match &inner.managed_config {
            Some(config) => {
                let _ = inner.eviction.set(Eviction::of(config));
                inner
                    .bounded(inner.create_or_update_stream(config))
                    .await
                    .map_err(|e| {
                        BusError::Unusable(format!("cannot provision stream {}: {e}", cfg.stream))
                    })?
            }
            None => {
                let info = inner
                    .bounded(inner.stream_info())
                    .await
                    .map_err(|e| BusError::Unusable(format!("cannot read stream {}: {e}", cfg.stream)))?
                    .ok_or_else(|| {
                        BusError::Unusable(format!(
                            "stream {} does not exist and bus.manage_stream is false: create it (PROTOCOL.md section 10) or let the hub manage it",
                            cfg.stream
                        ))
                    })?;
                check_operator_stream(&info, cfg)?;
                let _ = inner.eviction.set(Eviction::of(&info.config));
                info.created_ns
            }
        };
        let connects = inner.client.statistics().connects.load(Ordering::Relaxed);
        inner.status.send_replace(BusStatus {
            connected: true,
            epoch: Epoch::new(&cfg.stream, created),
            generation: 1,
        });
        info!(url, stream = %cfg.stream, version = %server.version, "NATS bus ready");

        let check_every = Duration::from_millis(cfg.check_interval_ms.max(100));
        tokio::spawn(watch_connection(
            Arc::downgrade(&inner),
            events_rx,
            check_every,
            connects,
        ));
        Ok(NatsBus { inner })
    }
}

struct Inner {
    /// The one connection; async-nats reconnects it and replays subscriptions.
    client: Client,
    /// Subject prefixes and API subjects, computed once.
    subjects: Subjects,
    /// Stream name, for the epoch and the API subjects.
    stream: String,
    /// The stream config to create (or restore) when we own the stream.
    managed_config: Option<Value>,
    /// Bound of every call (request_timeout_ms): a failure, never a hang.
    timeout: Duration,
    /// Connection state, epoch and generation, watched by registry and /readyz.
    status: watch::Sender<BusStatus>,
    /// How the stream removes a subject's oldest messages, from its config;
    /// unset (before the stream is read): assume anything may be removed.
    eviction: std::sync::OnceLock<Eviction>,
}

/// What removes a subject's oldest messages besides `max_age`: decides
/// whether an `after` read that starts at the subject's oldest stored
/// message may follow messages that were removed (a hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Eviction {
    /// `max_msgs_per_subject`: a subject holding that many lost its oldest.
    PerSubject(u64),
    /// Stream-wide `max_msgs` or `max_bytes` may remove any subject's oldest.
    Any,
    /// Nothing but age.
    AgeOnly,
}

impl Eviction {
    fn of(config: &Value) -> Eviction {
        let limit = |key: &str| config.get(key).and_then(Value::as_i64).unwrap_or(-1);
        if limit("max_msgs") > 0 || limit("max_bytes") > 0 {
            Eviction::Any
        } else if limit("max_msgs_per_subject") > 0 {
            Eviction::PerSubject(limit("max_msgs_per_subject") as u64)
        } else {
            Eviction::AgeOnly
        }
    }

    /// Whether a subject that holds `stored` messages may have lost older ones.
    fn may_have_removed(self, stored: u64) -> bool {
        match self {
            Eviction::PerSubject(limit) => stored >= limit,
            Eviction::Any => true,
            Eviction::AgeOnly => false,
        }
    }
}

/// Every subject the bus uses, derived from the prefix and stream name.
struct Subjects {
    /// `p.fan.`: where editors publish; the stream's subjects.
    fan: String,
    /// `p.live.`: where the stream republishes.
    live: String,
    /// `p.in.`: fans' own publications.
    inbound: String,
    /// `p.stats.`: per-node statistics partials.
    stats: String,
    /// `$JS.API.DIRECT.GET.<stream>`.
    direct_get: String,
}

impl Subjects {
    fn new(prefix: &str, stream: &str) -> Self {
        Self {
            fan: format!("{prefix}.fan."),
            live: format!("{prefix}.live."),
            inbound: format!("{prefix}.in."),
            stats: format!("{prefix}.stats."),
            direct_get: format!("$JS.API.DIRECT.GET.{stream}"),
        }
    }

    fn fan(&self, topic: &Topic) -> String {
        format!("{}{}", self.fan, topic)
    }
}

/// Wait before reconnect attempt `attempts`: a restarted server or a cluster
/// peer is found within a quarter of a second. Every moment a hub stays away
/// after the server is back, editors store messages its live feed misses
/// (repaired from the stream, but only while the stream still holds them);
/// async-nats' default backs off to 4 s, and a linear 100 ms step left a hub
/// up to a second late after a 2-second restart. The jitter keeps a fleet of
/// hubs from reconnecting in lockstep.
fn reconnect_delay(attempts: usize) -> Duration {
    let step = (RECONNECT_STEP_MS * attempts as u64).min(RECONNECT_MAX_MS);
    Duration::from_millis(step + rand::random_range(0..=RECONNECT_STEP_MS))
}

/// The stream as PROTOCOL.md section 10 wants it; every field explicit, so an
/// update restores anything an operator changed by hand.
fn stream_config(cfg: &BusConfig, max_retained: u32) -> Value {
    let secs_to_ns = |s: u64| s.saturating_mul(1_000_000_000);
    json!({
        "name": cfg.stream,
        "subjects": [format!("{}.fan.>", cfg.prefix)],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": secs_to_ns(cfg.max_age_secs),
        "max_msgs_per_subject": max_retained.max(1),
        "max_msg_size": -1,
        "discard": "old",
        "storage": cfg.storage,
        "num_replicas": cfg.replicas.max(1),
        "duplicate_window": secs_to_ns(cfg.duplicate_window_secs),
        "republish": {"src": format!("{}.fan.>", cfg.prefix), "dest": format!("{}.live.>", cfg.prefix)},
        // Must be set explicitly: history reads are direct gets.
        "allow_direct": true,
        "mirror_direct": false,
        "sealed": false,
        "deny_delete": false,
        "deny_purge": false,
        "allow_rollup_hdrs": false,
    })
}

/// An operator-owned stream must still give what the hub relies on.
fn check_operator_stream(info: &StreamInfo, cfg: &BusConfig) -> BusResult<()> {
    let config = &info.config;
    if config.get("allow_direct").and_then(Value::as_bool) != Some(true) {
        return Err(BusError::Unusable(format!(
            "stream {} must have allow_direct: true (history reads are direct gets)",
            cfg.stream
        )));
    }
    let dest = config.pointer("/republish/dest").and_then(Value::as_str);
    let want = format!("{}.live.>", cfg.prefix);
    if dest != Some(want.as_str()) {
        return Err(BusError::Unusable(format!(
            "stream {} must republish {}.fan.> to {want} (found {})",
            cfg.stream,
            cfg.prefix,
            dest.unwrap_or("no republish")
        )));
    }
    Ok(())
}

/// `major.minor` of a server version such as `2.11.0-RC.1`.
fn parse_version(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split('.');
    let number = |s: Option<&str>| -> Option<u64> {
        let digits: String = s?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((number(parts.next())?, number(parts.next())?))
}

/// Keeps the status current: `Disconnected` clears `connected`; after a
/// `Connected` event (and every `check_every`) the stream info is read again,
/// so that a recreated stream shows a new epoch and a reconnect a new
/// generation. Ends when the bus is dropped.
async fn watch_connection(
    inner: Weak<Inner>,
    mut events: mpsc::UnboundedReceiver<Event>,
    check_every: Duration,
    mut connects_seen: u64,
) {
    let mut wait = check_every;
    let (mut slow_drops, mut last_slow_log) = (0u64, None);
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => return,
            },
            () = tokio::time::sleep(wait) => None,
        };
        let Some(inner) = inner.upgrade() else { return };
        match event {
            Some(Event::Disconnected) => {
                warn!("NATS connection lost");
                inner
                    .status
                    .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
                continue;
            }
            Some(Event::SlowConsumer(_)) => {
                // One event per dropped message: logged at most every 5 s.
                slow_drops += 1;
                if last_slow_log.is_none_or(|t: std::time::Instant| t.elapsed() >= SLOW_LOG_EVERY) {
                    warn!(
                        dropped = slow_drops,
                        "NATS subscription buffer full: messages dropped (gaps are repaired)"
                    );
                    slow_drops = 0;
                    last_slow_log = Some(std::time::Instant::now());
                }
                continue;
            }
            Some(Event::Connected) | None => {}
            Some(other) => {
                debug!(event = %other, "NATS event");
                continue;
            }
        }
        wait = if inner.refresh(&mut connects_seen).await {
            check_every
        } else {
            REFRESH_RETRY.min(check_every)
        };
    }
}

/// What the hub needs from `$JS.API.STREAM.INFO`.
struct StreamInfo {
    created_ns: u128,
    config: Value,
}

impl Inner {
    /// Runs `fut` within the request timeout.
    async fn bounded<T>(&self, fut: impl Future<Output = BusResult<T>>) -> BusResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Unavailable(format!(
                "no answer from NATS within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Re-reads the stream after a (re)connection or on the periodic check;
    /// returns whether the status is settled (false: retry soon).
    async fn refresh(&self, connects_seen: &mut u64) -> bool {
        if self.client.connection_state() != State::Connected {
            self.status
                .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
            return false;
        }
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        // Err(_, true): the bus cannot serve (its stream is gone for good).
        // Err(_, false): no answer now (a leader election, say), which is no
        // reason to turn a serving node away; a node that is not serving yet
        // stays so and retries soon.
        let created = match self.bounded(self.stream_info()).await {
            Ok(Some(info)) => Ok(info.created_ns),
            Ok(None) => match &self.managed_config {
                // Ours and gone (deleted, or a memory stream on a restarted
                // server): recreate it; the new epoch tells clients.
                Some(config) => {
                    warn!(stream = %self.stream, "stream missing: creating it again");
                    self.bounded(self.create_or_update_stream(config))
                        .await
                        .map_err(|e| (e, true))
                }
                None => Err((
                    BusError::Unavailable(format!("stream {} does not exist", self.stream)),
                    true,
                )),
            },
            Err(e) => Err((e, false)),
        };
        match created {
            Ok(created) => {
                let epoch = Epoch::new(&self.stream, created);
                let reconnected = connects != *connects_seen;
                *connects_seen = connects;
                self.status.send_if_modified(|s| {
                    if s.connected && s.epoch == epoch && !reconnected {
                        return false;
                    }
                    if s.epoch != epoch {
                        warn!(old = %s.epoch, new = %epoch, "stream epoch changed");
                    }
                    // Live messages may have been missed (reconnect, missing
                    // stream) or the sequence restarted: relays check again.
                    s.connected = true;
                    s.epoch = epoch.clone();
                    s.generation += 1;
                    info!(generation = s.generation, epoch = %s.epoch, "NATS bus connected");
                    true
                });
                true
            }
            Err((e, cannot_serve)) => {
                warn!(error = %e, "NATS stream check failed");
                if cannot_serve {
                    self.status
                        .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
                }
                false
            }
        }
    }

    /// A JetStream API request whose answer is JSON (`error` turned into `Err`).
    async fn api(&self, subject: String, body: Bytes) -> BusResult<Value> {
        let reply = self
            .client
            .request(subject, body)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    BusError::Unavailable("JetStream is not available on this NATS account".into())
                }
                _ => BusError::Unavailable(e.to_string()),
            })?;
        serde_json::from_slice(&reply.payload)
            .map_err(|e| BusError::Unavailable(format!("unreadable JetStream answer: {e}")))
    }

    /// Stream info, or `None` when the stream does not exist.
    async fn stream_info(&self) -> BusResult<Option<StreamInfo>> {
        let answer = self
            .api(format!("$JS.API.STREAM.INFO.{}", self.stream), Bytes::new())
            .await?;
        if let Some(error) = answer.get("error") {
            if api_err_code(error) == 10059 {
                return Ok(None);
            }
            return Err(api_error(error));
        }
        parse_stream_info(&answer).map(Some)
    }

    /// Creates the stream, or updates it when it exists with another config.
    async fn create_or_update_stream(&self, config: &Value) -> BusResult<u128> {
        let body = Bytes::from(config.to_string());
        let mut answer = self
            .api(
                format!("$JS.API.STREAM.CREATE.{}", self.stream),
                body.clone(),
            )
            .await?;
        // 10058: "stream name already in use with a different configuration".
        if answer
            .get("error")
            .is_some_and(|e| api_err_code(e) == 10058)
        {
            answer = self
                .api(format!("$JS.API.STREAM.UPDATE.{}", self.stream), body)
                .await?;
        }
        if let Some(error) = answer.get("error") {
            return Err(api_error(error));
        }
        parse_stream_info(&answer).map(|info| info.created_ns)
    }

    /// One direct-get request, reading replies until the end of the batch.
    async fn direct_get(&self, request: Value) -> BusResult<Vec<Stored>> {
        let inbox = self.client.new_inbox();
        // Subscribe before asking: commands reach the server in order.
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        self.client
            .publish_with_reply(
                self.subjects.direct_get.clone(),
                inbox,
                Bytes::from(request.to_string()),
            )
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match classify(&reply)? {
                Reply::Stored(m) => out.push(m),
                Reply::End => return Ok(out),
            }
        }
        Err(BusError::Unavailable("NATS connection closed".into()))
    }

    /// Stored messages of `subject` from `start` on (inclusive), oldest first:
    /// at most `max`, stopping early once a message at or past `stop_at` is read.
    async fn read_forward(
        &self,
        subject: &str,
        start: u64,
        max: usize,
        stop_at: Option<u64>,
    ) -> BusResult<Vec<Stored>> {
        let mut out: Vec<Stored> = Vec::new();
        let mut seq = start.max(1);
        while out.len() < max {
            let batch = (max - out.len()).min(BATCH_MAX);
            let got = self
                .direct_get(json!({"seq": seq, "next_by_subj": subject, "batch": batch}))
                .await?;
            let Some(last) = got.last() else { break };
            let (last_seq, pending) = (last.seq, last.pending);
            out.extend(got);
            if pending == 0 || stop_at.is_some_and(|s| last_seq >= s) {
                break;
            }
            seq = last_seq + 1;
        }
        Ok(out)
    }

    /// The last stored message of `subject` with `seq <= up_to` (if given).
    async fn last_of(&self, subject: &str, up_to: Option<u64>) -> BusResult<Option<Stored>> {
        let mut request = json!({"multi_last": [subject], "batch": 1});
        if let Some(up_to) = up_to {
            if up_to == 0 {
                return Ok(None);
            }
            request["up_to_seq"] = json!(up_to);
        }
        Ok(self.direct_get(request).await?.into_iter().next())
    }

    /// The `seq` of the message stored on `subject` just before `seq` (0: none).
    async fn prev_of(&self, subject: &str, seq: u64) -> BusResult<u64> {
        Ok(self
            .last_of(subject, Some(seq.saturating_sub(1)))
            .await?
            .map_or(0, |m| m.seq))
    }

    async fn last(&self, topic: &Topic, n: u32) -> BusResult<Vec<BusMessage>> {
        let n = n as usize;
        if n == 0 {
            return Ok(Vec::new());
        }
        let subject = self.subjects.fan(topic);
        let Some(tail) = self.last_of(&subject, None).await? else {
            return Ok(Vec::new());
        };
        if n == 1 {
            let prev = self.prev_of(&subject, tail.seq).await?;
            return Ok(vec![tail.into_message(topic, prev)]);
        }
        // The subject's first stored message and how many follow it.
        let Some(head) = self.read_forward(&subject, 1, 1, None).await?.pop() else {
            return Ok(Vec::new());
        };
        let slack = n / 2 + 4;
        let target = n as u64 + 1; // the window and its predecessor
        let (msgs, from_first) = if head.pending < target + slack as u64 {
            (
                self.read_forward(&subject, head.seq, usize::MAX, Some(tail.seq))
                    .await?,
                true,
            )
        } else {
            let start = self
                .find_start(&subject, &head, &tail, target, slack as u64)
                .await?;
            (
                self.read_forward(&subject, start, usize::MAX, Some(tail.seq))
                    .await?,
                false,
            )
        };
        let skip = msgs.len().saturating_sub(n);
        let prev = if skip > 0 {
            msgs[skip - 1].seq
        } else if from_first && msgs.first().is_some_and(|m| m.seq == head.seq) {
            // `head` came from a read starting at sequence 1: nothing before it.
            0
        } else {
            match msgs.first() {
                Some(m) => self.prev_of(&subject, m.seq).await?,
                None => 0,
            }
        };
        Ok(chain(topic, msgs.into_iter().skip(skip), prev))
    }

    /// A sequence to read the latest `target` messages of `subject` from: one
    /// with at least `target` messages at or after it, and (when the probes
    /// allow) at most `target + slack`. Interpolates between what is known,
    /// bisecting every other probe so that skewed topics still converge.
    async fn find_start(
        &self,
        subject: &str,
        head: &Stored,
        tail: &Stored,
        target: u64,
        slack: u64,
    ) -> BusResult<u64> {
        // `*_count`: messages of the subject at or after that sequence.
        let (mut lo, mut lo_count) = (head.seq, head.pending + 1);
        let (mut hi, mut hi_count) = (tail.seq, 1u64);
        for probe in 0..24 {
            if lo_count <= target + slack || hi <= lo + 1 {
                break;
            }
            let seq = if probe % 2 == 0 {
                let want = target + slack / 2;
                let fraction =
                    (lo_count - want) as f64 / (lo_count.saturating_sub(hi_count)).max(1) as f64;
                lo + ((hi - lo) as f64 * fraction) as u64
            } else {
                lo + (hi - lo) / 2
            }
            .clamp(lo + 1, hi);
            match self.read_forward(subject, seq, 1, None).await?.pop() {
                Some(m) if m.pending + 1 >= target => (lo, lo_count) = (m.seq, m.pending + 1),
                Some(m) => (hi, hi_count) = (seq, m.pending + 1),
                None => (hi, hi_count) = (seq, 0),
            }
        }
        Ok(lo)
    }

    async fn after(&self, topic: &Topic, after: u64, limit: u32) -> BusResult<After> {
        let limit = limit as usize;
        if limit == 0 {
            return Ok(After::default());
        }
        let subject = self.subjects.fan(topic);
        // Starting at `after` itself: when it is a message of this topic (the
        // usual case, a relay's last seen seq), it gives the first one's prev.
        let mut msgs = self
            .read_forward(&subject, after.max(1), limit.saturating_add(1), None)
            .await?;
        let (prev, hole) = match msgs.first() {
            None => return Ok(After::default()),
            Some(m) if m.seq == after => {
                msgs.remove(0);
                (after, false)
            }
            Some(m) => {
                // From sequence 1 on, the first reply is the subject's oldest.
                let prev = if after == 0 {
                    0
                } else {
                    self.prev_of(&subject, m.seq).await?
                };
                // `after` is not stored. Removal takes a subject's oldest
                // first: if an older message is still stored, `after` was
                // never one of this subject's. If `m` is the oldest, what
                // lay between `after` and `m` may have been removed, unless
                // the stream's limits cannot have removed anything yet. The
                // stored predecessor a direct get cannot give.
                let oldest = prev == 0;
                let eviction = self.eviction.get().copied().unwrap_or(Eviction::Any);
                (prev, oldest && eviction.may_have_removed(m.pending + 1))
            }
        };
        msgs.truncate(limit);
        Ok(After {
            messages: chain(topic, msgs.into_iter(), prev),
            hole,
        })
    }

    async fn last_seqs(&self, topics: &[Topic]) -> BusResult<HashMap<Topic, u64>> {
        let mut out = HashMap::with_capacity(topics.len());
        let requests = topics.chunks(MULTI_LAST_MAX).map(|chunk| async move {
            let subjects: Vec<String> = chunk.iter().map(|t| self.subjects.fan(t)).collect();
            let by_subject: HashMap<&str, &Topic> = subjects
                .iter()
                .map(String::as_str)
                .zip(chunk.iter())
                .collect();
            let got = self
                .direct_get(json!({"multi_last": subjects, "batch": chunk.len()}))
                .await?;
            Ok::<_, BusError>(
                got.into_iter()
                    .filter_map(|m| {
                        by_subject
                            .get(m.subject.as_str())
                            .map(|t| ((*t).clone(), m.seq))
                    })
                    .collect::<Vec<_>>(),
            )
        });
        for chunk in futures::future::try_join_all(requests).await? {
            out.extend(chunk);
        }
        Ok(out)
    }

    /// Refuses to queue a publication while disconnected: async-nats would
    /// send it after the reconnect, storing a message whose caller was told
    /// it failed.
    fn require_connection(&self) -> BusResult<()> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(BusError::Unavailable("not connected to NATS".into())),
        }
    }

    async fn publish(&self, topic: &Topic, data: Bytes, msg_id: Option<String>) -> BusResult<u64> {
        self.require_connection()?;
        let max = self.client.server_info().max_payload;
        if data.len() > max {
            return Err(BusError::Rejected(format!(
                "payload of {} bytes exceeds the server's max_payload of {max}",
                data.len()
            )));
        }
        let subject = self.subjects.fan(topic);
        let sent = match msg_id {
            Some(id) => {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                self.client
                    .request_with_headers(subject, headers, data)
                    .await
            }
            None => self.client.request(subject, data).await,
        };
        let reply = sent.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                BusError::Unavailable(format!("no stream stores {}", self.subjects.fan(topic)))
            }
            _ => BusError::Unavailable(e.to_string()),
        })?;
        let ack: Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| BusError::Unavailable(format!("unreadable publish ack: {e}")))?;
        if let Some(error) = ack.get("error") {
            return Err(api_error(error));
        }
        ack.get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| BusError::Unavailable(format!("publish ack without seq: {ack}")))
    }
}

/// The stored messages of one topic, with `prev` chained from `first_prev`.
fn chain(topic: &Topic, msgs: impl Iterator<Item = Stored>, first_prev: u64) -> Vec<BusMessage> {
    let mut prev = first_prev;
    msgs.map(|m| {
        let seq = m.seq;
        let message = m.into_message(topic, prev);
        prev = seq;
        message
    })
    .collect()
}

fn api_err_code(error: &Value) -> u64 {
    error.get("err_code").and_then(Value::as_u64).unwrap_or(0)
}

/// A JetStream API error: 503 (no quorum, JetStream down) is unavailability,
/// anything else a refusal.
fn api_error(error: &Value) -> BusError {
    let code = error.get("code").and_then(Value::as_u64).unwrap_or(0);
    let description = error
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("unknown JetStream error");
    let text = format!("{description} ({})", api_err_code(error));
    if code == 503 || code == 408 {
        BusError::Unavailable(text)
    } else {
        BusError::Rejected(text)
    }
}

fn parse_stream_info(answer: &Value) -> BusResult<StreamInfo> {
    let created = answer
        .get("created")
        .and_then(Value::as_str)
        .and_then(rfc3339_to_ns)
        .ok_or_else(|| {
            BusError::Unavailable(format!(
                "stream info without a readable 'created': {answer}"
            ))
        })?;
    Ok(StreamInfo {
        created_ns: created,
        config: answer.get("config").cloned().unwrap_or(Value::Null),
    })
}

/// One message read by a direct get.
#[derive(Debug)]
struct Stored {
    /// `Nats-Subject`: `p.fan.<topic>`.
    subject: String,
    seq: u64,
    ts: u64,
    /// `Nats-Num-Pending`: messages of the subject stored after this one.
    pending: u64,
    data: Bytes,
}

impl Stored {
    fn into_message(self, topic: &Topic, prev: u64) -> BusMessage {
        BusMessage {
            topic: topic.clone(),
            seq: self.seq,
            prev,
            ts: self.ts,
            data: self.data,
        }
    }
}

enum Reply {
    Stored(Stored),
    /// End of the batch: `204 EOB`, or `404` (nothing matched).
    End,
}

fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn header_u64(msg: &Message, name: &str) -> Option<u64> {
    header(msg, name)?.trim().parse().ok()
}

/// Reads one direct-get reply.
fn classify(msg: &Message) -> BusResult<Reply> {
    let description = || msg.description.clone().unwrap_or_default();
    match msg.status.map(|s| s.as_u16()) {
        None | Some(200) => {}
        Some(204 | 404) => return Ok(Reply::End),
        Some(503) => {
            return Err(BusError::Unavailable(
                "no answer to direct get: stream missing or JetStream unavailable".into(),
            ));
        }
        Some(code @ (400 | 408 | 413)) => {
            return Err(BusError::Rejected(format!(
                "direct get refused: {code} {}",
                description()
            )));
        }
        Some(code) => {
            return Err(BusError::Unavailable(format!(
                "direct get failed: {code} {}",
                description()
            )));
        }
    }
    let stored = (|| {
        Some(Stored {
            subject: header(msg, "Nats-Subject")?.to_string(),
            seq: header_u64(msg, "Nats-Sequence")?,
            ts: rfc3339_to_ns(header(msg, "Nats-Time-Stamp")?).map(|ns| (ns / 1_000_000) as u64)?,
            pending: header_u64(msg, "Nats-Num-Pending").unwrap_or(0),
            data: msg.payload.clone(),
        })
    })();
    stored.map(Reply::Stored).ok_or_else(|| {
        BusError::Unavailable(format!(
            "direct get reply without its headers: {:?}",
            msg.headers
        ))
    })
}

/// A republished message on `p.live.<topic>` as a [`BusMessage`]; `None` for
/// anything that did not come from the stream (no sequence header).
fn parse_live(topic: &Topic, msg: Message) -> Option<BusMessage> {
    let seq = header_u64(&msg, "Nats-Sequence")?;
    let ts = header(&msg, "Nats-Time-Stamp")
        .and_then(rfc3339_to_ns)
        .map_or(0, |ns| (ns / 1_000_000) as u64);
    Some(BusMessage {
        topic: topic.clone(),
        seq,
        prev: header_u64(&msg, "Nats-Last-Sequence").unwrap_or(0),
        ts,
        data: msg.payload,
    })
}

/// Parses an RFC 3339 timestamp (`2026-11-25T03:18:55.371628942Z`, or with an
/// offset) into Unix nanoseconds. Pre-1970 times are refused.
fn rfc3339_to_ns(text: &str) -> Option<u128> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut padded = digits.chars().take(9).collect::<String>();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let secs = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u128::try_from(total).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Bus for NatsBus {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn status(&self) -> watch::Receiver<BusStatus> {
        self.inner.status.subscribe()
    }

    fn live(&self, topic: &Topic) -> BoxFuture<'_, BusResult<LiveFeed>> {
        let topic = topic.clone();
        async move {
            let inner = &self.inner;
            let subscriber = inner
                .bounded(async {
                    let subscriber = inner
                        .client
                        .subscribe(format!("{}{}", inner.subjects.live, topic))
                        .await
                        .map_err(|e| BusError::Unavailable(e.to_string()))?;
                    // The SUB is on the wire before any history read that follows.
                    inner
                        .client
                        .flush()
                        .await
                        .map_err(|e| BusError::Unavailable(e.to_string()))?;
                    Ok(subscriber)
                })
                .await?;
            let feed: LiveFeed = subscriber
                .filter_map(move |msg| futures::future::ready(parse_live(&topic, msg)))
                .boxed();
            Ok(feed)
        }
        .boxed()
    }

    fn last(&self, topic: &Topic, n: u32) -> BoxFuture<'_, BusResult<Vec<BusMessage>>> {
        let topic = topic.clone();
        async move { self.inner.bounded(self.inner.last(&topic, n)).await }.boxed()
    }

    fn after(&self, topic: &Topic, after: u64, limit: u32) -> BoxFuture<'_, BusResult<After>> {
        let topic = topic.clone();
        async move {
            self.inner
                .bounded(self.inner.after(&topic, after, limit))
                .await
        }
        .boxed()
    }

    fn last_seqs<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, BusResult<HashMap<Topic, u64>>> {
        async move {
            if topics.is_empty() {
                return Ok(HashMap::new());
            }
            self.inner.bounded(self.inner.last_seqs(topics)).await
        }
        .boxed()
    }

    fn publish(
        &self,
        topic: &Topic,
        data: Bytes,
        msg_id: Option<String>,
    ) -> BoxFuture<'_, BusResult<u64>> {
        let topic = topic.clone();
        async move {
            self.inner
                .bounded(self.inner.publish(&topic, data, msg_id))
                .await
        }
        .boxed()
    }

    fn publish_inbound(&self, topic: &Topic, data: Bytes) -> BoxFuture<'_, BusResult<()>> {
        self.core_publish(format!("{}{}", self.inner.subjects.inbound, topic), data)
    }

    fn publish_stats(&self, node: &str, payload: Bytes) -> BoxFuture<'_, BusResult<()>> {
        self.core_publish(format!("{}{}", self.inner.subjects.stats, node), payload)
    }

    fn stats_feed(&self) -> BoxFuture<'_, BusResult<StatsFeed>> {
        async move {
            let inner = &self.inner;
            let prefix = inner.subjects.stats.clone();
            let subscriber = inner
                .bounded(async {
                    let subscriber = inner
                        .client
                        .subscribe(format!("{prefix}>"))
                        .await
                        .map_err(|e| BusError::Unavailable(e.to_string()))?;
                    inner
                        .client
                        .flush()
                        .await
                        .map_err(|e| BusError::Unavailable(e.to_string()))?;
                    Ok(subscriber)
                })
                .await?;
            let feed: StatsFeed = subscriber
                .filter_map(move |msg| {
                    let node = msg
                        .subject
                        .as_str()
                        .strip_prefix(prefix.as_str())
                        .map(String::from);
                    futures::future::ready(node.map(|node| (node, msg.payload)))
                })
                .boxed();
            Ok(feed)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_time() {
        assert_eq!(rfc3339_to_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_to_ns("2026-11-25T03:18:55.371628942Z"),
            Some(1_795_576_735_371_628_942)
        );
        assert_eq!(
            rfc3339_to_ns("2020-01-15T14:22:03.456Z"),
            Some(1_579_098_123_456_000_000)
        );
        assert_eq!(
            rfc3339_to_ns("2020-01-15T15:22:03.456+01:00"),
            rfc3339_to_ns("2020-01-15T14:22:03.456Z")
        );
        assert_eq!(
            rfc3339_to_ns("2024-02-29T23:59:59Z"),
            Some(1_709_251_199_000_000_000)
        );
        for bad in [
            "",
            "2020-01-15",
            "2020-13-01T00:00:00Z",
            "2020-01-15T14:22:03",
            "1969-12-31T23:59:59Z",
            "2020-01-15T14:22:03.Z",
        ] {
            assert_eq!(rfc3339_to_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn reconnects_are_attempted_within_a_quarter_second() {
        for attempts in 0..100 {
            let d = reconnect_delay(attempts);
            assert!(d <= Duration::from_millis(250), "attempt {attempts}: {d:?}");
        }
        assert!(reconnect_delay(1) <= Duration::from_millis(100));
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("2.11.0-RC.1"), Some((2, 11)));
        assert_eq!(parse_version("v2.9.25"), Some((2, 9)));
        assert!(parse_version("2.9.25").unwrap() < MIN_SERVER_VERSION);
        assert!(parse_version("2.11.0").unwrap() >= MIN_SERVER_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn stream_config_is_what_protocol_section_10_asks() {
        let cfg = BusConfig::default();
        let c = stream_config(&cfg, 100);
        assert_eq!(c["subjects"], json!(["tribune.fan.>"]));
        assert_eq!(
            c["republish"],
            json!({"src": "tribune.fan.>", "dest": "tribune.live.>"})
        );
        assert_eq!(c["allow_direct"], json!(true));
        assert_eq!(c["max_msgs_per_subject"], json!(100));
        assert_eq!(c["duplicate_window"], json!(120_000_000_000u64));
        assert_eq!(c["max_age"], json!(86_400_000_000_000u64));
    }
}
