//! One client of a worker, as a state machine over its connections:
//! connect (paced, spread over the URLs, backing off on failures), speak
//! its [`Protocol`] for a session, account every message, and reconnect
//! (resuming where the protocol allows) after a close the run did not ask
//! for; churn replaces it by a fresh client, `Finish` ends it once it has
//! every counter or the settle time is over.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant as TokioInstant, sleep, sleep_until};

use super::shared::{Shared, SlotCtl};
use super::stats::{bump, record_us};
use crate::account::{Seen, Track};
use crate::payload::{self, now_us};
use crate::wire::SubscribeWhen;
use crate::ws::{Incoming, WsConn, encode_close};

/// A protocol as a client speaks it: what it sends and what each frame
/// from the server does. One value per connection holds its own state.
pub trait Protocol: Default {
    /// The websocket subprotocol asked for in the handshake.
    const SUBPROTOCOL: Option<&'static str>;

    /// What the client sends right after the upgrade.
    fn hello(&mut self, _out: &mut Vec<u8>) {}

    /// Subscribes to every topic of `client`.
    fn subscribe(&mut self, shared: &Shared, client: &mut Client, out: &mut Vec<u8>);

    /// One data frame from the server; `Err(cause)` ends the connection.
    fn on_frame(
        &mut self,
        shared: &Shared,
        client: &mut Client,
        st: &mut Conn,
        data: &[u8],
        now: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), String>;
}

/// Per-connection state every protocol shares.
pub struct Conn {
    /// Server said hello (`welcome`, or the first NATS `PONG`).
    pub ready: bool,
    pub opened_at: Instant,
    /// When to subscribe (storm), once known.
    subscribe_at: Option<Instant>,
    subscribed_sent: bool,
    /// When to leave after a `drain`.
    pub leave_at: Option<Instant>,
}

impl Conn {
    /// The server said hello: the connection is ready (counted once).
    pub fn hello_received(&mut self, shared: &Shared) {
        if !self.ready {
            self.ready = true;
            record_us(
                &mut shared.stats.borrow_mut().ready,
                self.opened_at.elapsed().as_micros() as u64,
            );
        }
    }
}

/// One subscription of one client.
#[derive(Debug)]
pub struct Sub {
    /// Its topic's index in the plan.
    pub topic: u32,
    pub name: String,
    pub track: Track,
    /// Confirmed at least once: the subscription counts in loss accounting.
    pub counted: bool,
    /// Confirmed on the current connection.
    pub live: bool,
    /// When the current subscribe was sent.
    pub sent_at: Option<Instant>,
    /// Last `seq` received (or the ack's), for `since` and the `prev` check.
    pub last_seq: Option<u64>,
}

/// A client across its reconnections.
pub struct Client {
    /// Its number among all the run's clients.
    pub index: u64,
    pub subs: Vec<Sub>,
    /// Epoch from the last `ack`, for resuming with `since`.
    pub epoch: Option<String>,
    /// When this client lost its connection without being asked to; cleared
    /// when all its subscriptions are confirmed again.
    away_since: Option<Instant>,
    away_since_us: u64,
    /// Test hooks apply to this client.
    hooked: bool,
    /// Its first subscriptions are confirmed before the first publication.
    pub before_publish: bool,
}

impl Client {
    fn new(shared: &Shared, index: u64) -> Client {
        let spec = &shared.spec;
        let topics = shared.plan.topics_for(spec.seed, index, spec.per_client);
        Client {
            index,
            subs: topics
                .into_iter()
                .map(|t| Sub {
                    topic: t,
                    name: shared.plan.name(t),
                    track: Track::unknown(),
                    counted: false,
                    live: false,
                    sent_at: None,
                    last_seq: None,
                })
                .collect(),
            epoch: None,
            away_since: None,
            away_since_us: 0,
            hooked: index == u64::from(spec.worker),
            before_publish: spec.baseline_zero,
        }
    }

    /// The subscription to `topic`, if it has one.
    pub fn sub_of(&mut self, shared: &Shared, topic: &[u8]) -> Option<usize> {
        let t = shared.plan.index_of(topic)?;
        self.subs.iter().position(|s| s.topic == t)
    }
}

/// How a connection ended.
enum Outcome {
    /// The run is over for this client.
    Finished,
    /// Churn closed it; a fresh client takes the slot.
    Churned,
    /// Closed by the server or the network; `delay_ms` before reconnecting.
    Lost { cause: String, delay_ms: u64 },
}

/// Client `index` from its first connection to the end of the run: it
/// connects (spreading over the URLs and backing off on failures), runs a
/// session, and reconnects after a close the run did not ask for.
pub async fn client_task<P: Protocol>(shared: &Shared, index: u64, ctl: &SlotCtl) {
    let spec = &shared.spec;
    let mut client = Client::new(shared, index);
    let mut url = (index as usize) % shared.urls.len();
    let source: Option<IpAddr> = (!spec.sources.is_empty())
        .then(|| spec.sources[(index as usize / spec.procs.max(1) as usize) % spec.sources.len()]);
    let mut backoff_ms = 100u64;
    let mut connected_once = false;
    loop {
        if shared.control.borrow().finish.is_some() {
            settle(shared, &client);
            return;
        }
        let t0 = Instant::now();
        {
            let mut st = shared.stats.borrow_mut();
            if st.first_attempt_us == 0 {
                st.first_attempt_us = now_us();
            }
        }
        let conn = WsConn::connect(
            &shared.urls[url],
            source,
            P::SUBPROTOCOL,
            spec.read_buf,
            Duration::from_millis(spec.connect_timeout_ms),
        )
        .await;
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                {
                    let mut st = shared.stats.borrow_mut();
                    st.failed += 1;
                    bump(&mut st.failures, &e.label());
                }
                url = (url + 1) % shared.urls.len();
                let jitter = rand::rng().random_range(0..=backoff_ms / 2);
                if wait_or_finish(shared, ctl, backoff_ms / 2 + jitter).await {
                    settle(shared, &client);
                    return;
                }
                backoff_ms = (backoff_ms * 2).min(2_000);
                continue;
            }
        };
        {
            let mut st = shared.stats.borrow_mut();
            record_us(&mut st.handshake, t0.elapsed().as_micros() as u64);
            st.established += 1;
            st.open += 1;
            if !connected_once {
                connected_once = true;
                st.connected_once += 1;
                if st.connected_once == st.clients {
                    st.all_connected_us = now_us();
                }
            }
        }
        backoff_ms = 100;
        let outcome = session::<P>(shared, &mut client, conn, ctl).await;
        {
            let mut st = shared.stats.borrow_mut();
            st.open -= 1;
            let live = client.subs.iter().filter(|s| s.live).count() as u64;
            st.subscribed -= live;
        }
        for s in &mut client.subs {
            s.live = false;
        }
        match outcome {
            Outcome::Finished => {
                settle(shared, &client);
                return;
            }
            Outcome::Churned => {
                shared.stats.borrow_mut().churned += 1;
                client = Client::new(shared, index);
                client.hooked = false;
                client.before_publish = false;
            }
            Outcome::Lost { cause, delay_ms } => {
                {
                    let mut st = shared.stats.borrow_mut();
                    bump(&mut st.closes, &cause);
                    if client.away_since.is_none() && spec.reconnect {
                        st.away += 1;
                    }
                }
                if !spec.reconnect {
                    // Nothing more to do; wait for the end of the run.
                    while !wait_or_finish(shared, ctl, 60_000).await {}
                    settle(shared, &client);
                    return;
                }
                if client.away_since.is_none() {
                    client.away_since = Some(Instant::now());
                    client.away_since_us = now_us();
                }
                url = (url + 1) % shared.urls.len();
                if delay_ms > 0 && wait_or_finish(shared, ctl, delay_ms).await {
                    settle(shared, &client);
                    return;
                }
            }
        }
    }
}

/// Sleeps `ms`; true when the run finished meanwhile.
async fn wait_or_finish(shared: &Shared, ctl: &SlotCtl, ms: u64) -> bool {
    let until = TokioInstant::now() + Duration::from_millis(ms);
    loop {
        if shared.control.borrow().finish.is_some() {
            return true;
        }
        tokio::select! {
            _ = sleep_until(until) => return shared.control.borrow().finish.is_some(),
            _ = ctl.notify.notified() => {}
        }
    }
}

/// End-of-run accounting of a client's subscriptions.
fn settle(shared: &Shared, client: &Client) {
    let control = shared.control.borrow();
    let Some((published, _)) = control.finish.as_ref() else {
        return;
    };
    let mut st = shared.stats.borrow_mut();
    for s in client.subs.iter().filter(|s| s.counted) {
        let last = published.get(s.topic as usize).copied().unwrap_or(0);
        st.loss.settle(&s.track, last);
    }
}

/// Whether every counted subscription has every published counter.
fn caught_up(client: &Client, published: &[u64]) -> bool {
    client.subs.iter().filter(|s| s.counted).all(|s| {
        let last = published.get(s.topic as usize).copied().unwrap_or(0);
        s.track.owed(last) == 0
    })
}

async fn session<P: Protocol>(
    shared: &Shared,
    client: &mut Client,
    mut conn: WsConn,
    ctl: &SlotCtl,
) -> Outcome {
    let mut st = Conn {
        ready: false,
        opened_at: Instant::now(),
        subscribe_at: None,
        subscribed_sent: false,
        leave_at: None,
    };
    let mut proto = P::default();
    let mut out: Vec<u8> = Vec::new();
    proto.hello(&mut out);
    let timer = sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut timer_at: Option<Instant> = None;
    loop {
        // Frames already buffered first (a welcome may arrive with the 101),
        // then orders and timers, then flush, then wait for the socket.
        if let Some(o) = process_buffered(shared, client, &mut st, &mut proto, &mut conn, &mut out)
        {
            let _ = conn.stream.write_all(&out).await;
            return o;
        }
        if let Some(o) = check_control(shared, client, &mut st, ctl, &mut out) {
            let _ = conn.stream.write_all(&out).await;
            return o;
        }
        if st.ready && !st.subscribed_sent && st.subscribe_at.is_some_and(|t| Instant::now() >= t) {
            st.subscribed_sent = true;
            proto.subscribe(shared, client, &mut out);
        }
        if let Some(t) = st.leave_at
            && Instant::now() >= t
        {
            encode_close(&mut out, 1000);
            let _ = conn.stream.write_all(&out).await;
            return Outcome::Lost {
                cause: "drain".into(),
                delay_ms: 0,
            };
        }
        if !out.is_empty() {
            if let Err(e) = conn.stream.write_all(&out).await {
                return lost(format!("write_{:?}", e.kind()).to_lowercase());
            }
            out.clear();
        }
        let next_timer = [
            st.subscribe_at.filter(|_| st.ready && !st.subscribed_sent),
            st.leave_at,
            shared.control.borrow().finish.as_ref().map(|f| f.1),
        ]
        .into_iter()
        .flatten()
        .min();
        if next_timer != timer_at {
            timer_at = next_timer;
            if let Some(t) = next_timer {
                timer.as_mut().reset(TokioInstant::from_std(t));
            }
        }
        tokio::select! {
            r = conn.fill() => match r {
                Ok(0) => return lost("eof".into()),
                Err(e) => return lost(format!("read_{:?}", e.kind()).to_lowercase()),
                Ok(_) => {}
            },
            _ = ctl.notify.notified() => {}
            _ = &mut timer, if timer_at.is_some() => { timer_at = None; }
        }
    }
}

/// Handles every complete frame in the read buffer; `Some` ends the
/// session (a close, whose answer is left in `out`, or a protocol error).
fn process_buffered(
    shared: &Shared,
    client: &mut Client,
    st: &mut Conn,
    proto: &mut impl Protocol,
    conn: &mut WsConn,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    if conn.reader.pending() == 0 {
        return None;
    }
    let now = now_us();
    loop {
        let ev = match conn.reader.next(out) {
            Ok(Some(ev)) => ev,
            Ok(None) => return None,
            Err(e) => {
                bump(&mut shared.stats.borrow_mut().errors, "bad_frame");
                eprintln!("client {}: {}", client.index, e.0);
                return Some(lost("bad_frame".into()));
            }
        };
        match ev {
            Incoming::Close(code) => {
                encode_close(out, code.unwrap_or(1000));
                return Some(on_close(st, code));
            }
            Incoming::Text(data) | Incoming::Binary(data) => {
                if let Err(cause) = proto.on_frame(shared, client, st, data, now, out) {
                    return Some(lost(cause));
                }
            }
        }
    }
}

fn lost(cause: String) -> Outcome {
    Outcome::Lost { cause, delay_ms: 0 }
}

/// A close from the server: protocol section 6 says what to do next.
fn on_close(st: &Conn, code: Option<u16>) -> Outcome {
    let delay_ms = match code {
        // Slow consumer: resume at once.
        Some(4008) => 0,
        // Flood: back off.
        Some(4029) => 1_000,
        _ => {
            if st.leave_at.is_some() {
                0
            } else {
                rand::rng().random_range(0..250)
            }
        }
    };
    Outcome::Lost {
        cause: code.map_or("close".into(), |c| format!("close_{c}")),
        delay_ms,
    }
}

/// Applies orders (subscribe, finish, churn); `Some` ends the session.
fn check_control(
    shared: &Shared,
    client: &mut Client,
    st: &mut Conn,
    ctl: &SlotCtl,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    if ctl.churn.replace(false) {
        encode_close(out, 1000);
        return Some(Outcome::Churned);
    }
    let control = shared.control.borrow();
    if let Some((published, deadline)) = control.finish.as_ref()
        && (caught_up(client, published) || Instant::now() >= *deadline)
    {
        encode_close(out, 1000);
        return Some(Outcome::Finished);
    }
    if st.subscribe_at.is_none() && !st.subscribed_sent {
        match shared.spec.subscribe {
            SubscribeWhen::OnConnect => st.subscribe_at = Some(st.opened_at),
            SubscribeWhen::OnCommand => {
                // A client that already subscribed once (reconnecting) does
                // so again at once; others wait for the order and its spread.
                if client.subs.iter().any(|s| s.counted) {
                    st.subscribe_at = Some(st.opened_at);
                } else if let Some((at, spread)) = control.subscribe {
                    let offset = if spread == 0 {
                        0
                    } else {
                        rand::rng().random_range(0..spread)
                    };
                    st.subscribe_at = Some(at + Duration::from_millis(offset));
                }
            }
            SubscribeWhen::Never => {}
        }
    }
    None
}

/// A subscription is confirmed on this connection.
pub fn confirmed(shared: &Shared, client: &mut Client, k: usize, baseline_zero: bool) {
    let mut stats = shared.stats.borrow_mut();
    let s = &mut client.subs[k];
    if let Some(t) = s.sent_at.take() {
        record_us(&mut stats.subscribe, t.elapsed().as_micros() as u64);
    }
    if !s.live {
        s.live = true;
        stats.subscribed += 1;
    }
    if baseline_zero {
        s.track.set_baseline(0);
    }
    s.counted = true;
    if client.subs.iter().all(|s| s.live)
        && let Some(away) = client.away_since.take()
    {
        record_us(&mut stats.resume, away.elapsed().as_micros() as u64);
        stats.resumed += 1;
        stats.away -= 1;
        stats.last_back_us = stats.last_back_us.max(now_us());
    }
}

/// Accounts one message of subscription `k`; `live` ones count in latency.
/// The test hooks (`--test-drop-one`, `--test-dup-one`) act here.
pub fn delivered(
    shared: &Shared,
    client: &mut Client,
    k: usize,
    data: &[u8],
    live: bool,
    now: u64,
) {
    let mut stats = shared.stats.borrow_mut();
    let Some(stamp) = payload::parse(data) else {
        bump(&mut stats.errors, "foreign_payload");
        return;
    };
    let mut times = 1;
    if live && client.hooked {
        if stats.drop_armed {
            stats.drop_armed = false;
            return;
        }
        if stats.dup_armed {
            stats.dup_armed = false;
            times = 2;
        }
    }
    for _ in 0..times {
        let seen = client.subs[k].track.observe(stamp.counter);
        stats.loss.record(seen);
        if seen == Seen::Duplicate || !live {
            if !live {
                stats.replayed += 1;
            }
            continue;
        }
        stats.deliveries += 1;
        record_us(&mut stats.interval, now.saturating_sub(stamp.sent_us));
        if stats.first_delivery_us == 0 {
            stats.first_delivery_us = now;
        }
        stats.last_delivery_us = now;
    }
}
