//! A worker process: its share of the clients, on one thread.
//!
//! The coordinator re-executes this binary as `tribune-loadtest worker`, so
//! that more connections than one process may hold files for (20,000) can
//! be opened, and so that clients use several cores. A worker runs a
//! single-threaded runtime; each client is one task (a few hundred bytes
//! plus its read buffer) that connects at its paced moment, subscribes,
//! accounts every message, and reconnects (resuming where the protocol
//! allows) after a close the run did not ask for. Statistics live in one
//! `RefCell` shared by all tasks of the thread: no locks, no atomics.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::{Instant as TokioInstant, sleep, sleep_until};

use crate::account::{Loss, Seen, Track};
use crate::natsws::{self, NatsOp, NatsParser};
use crate::payload::{self, now_us};
use crate::plan::TopicPlan;
use crate::tribune::{self, HubFrame};
use crate::wire::{
    Command, Final, HistBlob, Progress, SubscribeWhen, Target, WorkerReport, WorkerSpec, new_hist,
};
use crate::ws::{Incoming, WsConn, WsUrl, encode_client_frame, encode_close};

/// Entry point of `tribune-loadtest worker`: spec and commands on stdin,
/// reports on stdout.
pub fn main() -> anyhow::Result<()> {
    crate::machine::raise_nofile();
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin
        .lock()
        .read_line(&mut first)
        .context("reading the worker spec")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("parsing the worker spec")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(spec))
}

/// What the coordinator has ordered so far.
#[derive(Debug, Default)]
struct Control {
    /// `Subscribe`: when it arrived, and its spread.
    subscribe: Option<(Instant, u64)>,
    /// `Finish`: the final counters and the settle deadline.
    finish: Option<(Arc<Vec<u64>>, Instant)>,
}

/// Per-client handle the worker uses to poke one client task.
#[derive(Debug, Default)]
struct SlotCtl {
    notify: Notify,
    /// Set by churn: close this client and start a fresh one.
    churn: Cell<bool>,
}

/// Everything the worker's clients share.
struct Shared {
    spec: WorkerSpec,
    plan: TopicPlan,
    urls: Vec<WsUrl>,
    control: RefCell<Control>,
    stats: RefCell<Stats>,
}

/// The worker's running totals.
struct Stats {
    handshake: Histogram<u64>,
    ready: Histogram<u64>,
    subscribe: Histogram<u64>,
    latency: Histogram<u64>,
    interval: Histogram<u64>,
    resume: Histogram<u64>,
    loss: Loss,
    deliveries: u64,
    replayed: u64,
    prev_mismatch: u64,
    established: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    closes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    churned: u64,
    recovered: u64,
    not_recovered: u64,
    resumed: u64,
    away: u64,
    open: u64,
    subscribed: u64,
    first_delivery_us: u64,
    last_delivery_us: u64,
    last_back_us: u64,
    first_attempt_us: u64,
    all_connected_us: u64,
    /// Clients that have connected at least once.
    connected_once: u64,
    /// This worker's number of clients.
    clients: u64,
    /// Test hooks still armed.
    drop_armed: bool,
    dup_armed: bool,
}

impl Stats {
    fn new(spec: &WorkerSpec) -> Stats {
        Stats {
            handshake: new_hist(),
            ready: new_hist(),
            subscribe: new_hist(),
            latency: new_hist(),
            interval: new_hist(),
            resume: new_hist(),
            loss: Loss::default(),
            deliveries: 0,
            replayed: 0,
            prev_mismatch: 0,
            established: 0,
            failed: 0,
            failures: BTreeMap::new(),
            closes: BTreeMap::new(),
            errors: BTreeMap::new(),
            churned: 0,
            recovered: 0,
            not_recovered: 0,
            resumed: 0,
            away: 0,
            open: 0,
            subscribed: 0,
            first_delivery_us: 0,
            last_delivery_us: 0,
            last_back_us: 0,
            first_attempt_us: 0,
            all_connected_us: 0,
            connected_once: 0,
            clients: 0,
            drop_armed: spec.drop_one && spec.worker == 0,
            dup_armed: spec.dup_one && spec.worker == 0,
        }
    }

    fn progress(&mut self, worker: u32) -> Progress {
        let interval = HistBlob::encode(&self.interval);
        self.latency
            .add(&self.interval)
            .expect("histograms share bounds");
        self.interval.reset();
        Progress {
            worker,
            at_us: now_us(),
            open: self.open,
            established: self.established,
            failed: self.failed,
            subscribed: self.subscribed,
            deliveries: self.deliveries,
            interval_latency: interval,
            resumed: self.resumed,
            away: self.away,
            last_back_us: self.last_back_us,
            first_attempt_us: self.first_attempt_us,
            all_connected_us: self.all_connected_us,
        }
    }

    fn final_report(&mut self, worker: u32) -> Final {
        self.latency
            .add(&self.interval)
            .expect("histograms share bounds");
        self.interval.reset();
        Final {
            worker,
            handshake: HistBlob::encode(&self.handshake),
            ready: HistBlob::encode(&self.ready),
            subscribe: HistBlob::encode(&self.subscribe),
            latency: HistBlob::encode(&self.latency),
            resume: HistBlob::encode(&self.resume),
            loss: self.loss,
            deliveries: self.deliveries,
            replayed: self.replayed,
            prev_mismatch: self.prev_mismatch,
            established: self.established,
            failed: self.failed,
            failures: self.failures.clone(),
            closes: self.closes.clone(),
            errors: self.errors.clone(),
            churned: self.churned,
            recovered: self.recovered,
            not_recovered: self.not_recovered,
            resumed: self.resumed,
            away: self.away,
            first_delivery_us: self.first_delivery_us,
            last_delivery_us: self.last_delivery_us,
            last_back_us: self.last_back_us,
            subscribed: self.subscribed,
        }
    }
}

fn record_us(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, crate::wire::HIST_MAX_US));
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_string()).or_insert(0) += 1;
}

fn emit(report: &WorkerReport) {
    let line = serde_json::to_string(report).expect("reports serialize");
    let mut out = std::io::stdout().lock();
    // The coordinator gone means nobody reads: nothing useful to do then.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn run(spec: WorkerSpec) -> anyhow::Result<()> {
    let urls = spec
        .urls
        .iter()
        .map(|u| WsUrl::parse(u).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!urls.is_empty(), "no URL to connect to");
    let shared = Rc::new(Shared {
        plan: TopicPlan::new(&spec.topic_prefix, spec.topics, spec.zipf_s),
        urls,
        control: RefCell::new(Control::default()),
        stats: RefCell::new(Stats::new(&spec)),
        spec,
    });
    let spec = &shared.spec;
    let started = Instant::now();
    let max_life = Duration::from_millis(spec.max_life_ms);
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Option<Command>>();
    // Commands arrive on a plain thread: stdin is blocking, and its end (the
    // coordinator gone) must also end the worker.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    if cmd_tx.send(Some(cmd)).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("worker: bad command '{line}': {e}"),
            }
        }
        let _ = cmd_tx.send(None);
    });

    let my_clients: Vec<u64> = (u64::from(spec.worker)..spec.clients)
        .step_by(spec.procs.max(1) as usize)
        .collect();
    shared.stats.borrow_mut().clients = my_clients.len() as u64;
    let slots: Rc<Vec<Rc<SlotCtl>>> = Rc::new(
        my_clients
            .iter()
            .map(|_| Rc::new(SlotCtl::default()))
            .collect(),
    );
    let done = Rc::new(Cell::new(0usize));
    let all_done = Rc::new(Notify::new());

    // Paced start of the clients.
    {
        let shared = shared.clone();
        let slots = slots.clone();
        let done = done.clone();
        let all_done = all_done.clone();
        let clients = my_clients.clone();
        tokio::task::spawn_local(async move {
            let start = TokioInstant::now();
            let rate = shared.spec.connect_rate.max(0.001);
            for (k, client) in clients.into_iter().enumerate() {
                if shared.control.borrow().finish.is_some() {
                    // Clients not started yet have nothing to report.
                    done.set(done.get() + 1);
                    continue;
                }
                // Sleep in short steps so that a finished run stops the
                // pacing at once.
                let at = start + Duration::from_secs_f64(k as f64 / rate);
                while TokioInstant::now() < at && shared.control.borrow().finish.is_none() {
                    sleep_until(at.min(TokioInstant::now() + Duration::from_millis(200))).await;
                }
                let shared = shared.clone();
                let ctl = slots[k].clone();
                let done = done.clone();
                let all_done = all_done.clone();
                tokio::task::spawn_local(async move {
                    client_task(&shared, client, &ctl).await;
                    done.set(done.get() + 1);
                    all_done.notify_one();
                });
            }
            all_done.notify_one();
        });
    }

    let mut ticker = tokio::time::interval(Duration::from_millis(spec.report_ms.max(50)));
    let mut churn: Option<tokio::time::Interval> = None;
    let mut finishing: Option<Instant> = None;
    loop {
        if done.get() >= my_clients.len() && finishing.is_some() {
            break;
        }
        if started.elapsed() > max_life {
            eprintln!(
                "worker {}: maximum life reached, reporting what it has",
                spec.worker
            );
            break;
        }
        if let Some(deadline) = finishing
            && Instant::now() > deadline
        {
            eprintln!("worker {}: clients did not finish in time", spec.worker);
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {
                let p = shared.stats.borrow_mut().progress(spec.worker);
                emit(&WorkerReport::Progress(p));
            }
            cmd = cmd_rx.recv() => match cmd.flatten() {
                Some(Command::Subscribe { spread_ms }) => {
                    shared.control.borrow_mut().subscribe = Some((Instant::now(), spread_ms));
                    wake_all(&slots);
                }
                Some(Command::Churn { per_s }) if per_s > 0.0 => {
                    let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s));
                    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    iv.reset();
                    churn = Some(iv);
                }
                Some(Command::Churn { .. }) | Some(Command::StopChurn) => churn = None,
                Some(Command::Finish { published, settle_ms }) => {
                    let deadline = Instant::now() + Duration::from_millis(settle_ms);
                    shared.control.borrow_mut().finish = Some((Arc::new(published), deadline));
                    finishing = Some(deadline + Duration::from_secs(5));
                    churn = None;
                    wake_all(&slots);
                }
                None => {
                    if finishing.is_none() {
                        // The coordinator went away: stop now.
                        eprintln!("worker {}: coordinator gone", spec.worker);
                        return Ok(());
                    }
                }
            },
            _ = async { churn.as_mut().expect("guarded").tick().await }, if churn.is_some() => {
                if !slots.is_empty() {
                    let k = rand::rng().random_range(0..slots.len());
                    slots[k].churn.set(true);
                    slots[k].notify.notify_one();
                }
            }
            _ = all_done.notified() => {}
            _ = sleep(Duration::from_millis(200)) => {}
        }
    }
    let f = shared.stats.borrow_mut().final_report(spec.worker);
    emit(&WorkerReport::Final(Box::new(f)));
    Ok(())
}

fn wake_all(slots: &[Rc<SlotCtl>]) {
    for s in slots {
        s.notify.notify_one();
    }
}

/// One subscription of one client.
#[derive(Debug)]
struct Sub {
    topic: u32,
    name: String,
    track: Track,
    /// Confirmed at least once: the subscription counts in loss accounting.
    counted: bool,
    /// Confirmed on the current connection.
    live: bool,
    /// When the current subscribe was sent.
    sent_at: Option<Instant>,
    /// Last `seq` received (or the ack's), for `since` and the `prev` check.
    last_seq: Option<u64>,
}

/// A client across its reconnections.
struct Client {
    index: u64,
    subs: Vec<Sub>,
    /// Epoch from the last `ack`, for resuming with `since`.
    epoch: Option<String>,
    /// When this client lost its connection without being asked to; cleared
    /// when all its subscriptions are confirmed again.
    away_since: Option<Instant>,
    away_since_us: u64,
    /// Test hooks apply to this client.
    hooked: bool,
    /// Its first subscriptions are confirmed before the first publication.
    before_publish: bool,
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

    fn sub_of(&mut self, shared: &Shared, topic: &[u8]) -> Option<usize> {
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

async fn client_task(shared: &Shared, index: u64, ctl: &SlotCtl) {
    let spec = &shared.spec;
    let mut client = Client::new(shared, index);
    let mut url = (index as usize) % shared.urls.len();
    let source: Option<IpAddr> = (!spec.sources.is_empty())
        .then(|| spec.sources[(index as usize / spec.procs.max(1) as usize) % spec.sources.len()]);
    let mut backoff_ms = 100u64;
    let mut connected_once = false;
    let subprotocol = match spec.target {
        Target::Tribune => Some(tribune_protocol::SUBPROTOCOL),
        Target::NatsWs => None,
    };
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
            subprotocol,
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
        let outcome = session(shared, &mut client, conn, ctl).await;
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

/// Per-connection protocol state.
struct Conn {
    /// Server said hello (`welcome`, or the first NATS `PONG`).
    ready: bool,
    opened_at: Instant,
    /// NATS: subscriptions waiting for their `PONG`, in order.
    pong_queue: VecDeque<usize>,
    /// Hub: next request id.
    next_id: u64,
    nats: NatsParser,
    /// When to subscribe (storm), once known.
    subscribe_at: Option<Instant>,
    subscribed_sent: bool,
    /// When to leave after a `drain`.
    leave_at: Option<Instant>,
}

async fn session(shared: &Shared, client: &mut Client, mut conn: WsConn, ctl: &SlotCtl) -> Outcome {
    let spec = &shared.spec;
    let mut st = Conn {
        ready: false,
        opened_at: Instant::now(),
        pong_queue: VecDeque::new(),
        next_id: 1,
        nats: NatsParser::default(),
        subscribe_at: None,
        subscribed_sent: false,
        leave_at: None,
    };
    let mut out: Vec<u8> = Vec::new();
    if spec.target == Target::NatsWs {
        encode_client_frame(&mut out, 0x2, natsws::connect_ops());
    }
    let timer = sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut timer_at: Option<Instant> = None;
    loop {
        // Frames already buffered first (a welcome may arrive with the 101),
        // then orders and timers, then flush, then wait for the socket.
        if let Some(o) = process_buffered(shared, client, &mut st, &mut conn, &mut out) {
            let _ = conn.stream.write_all(&out).await;
            return o;
        }
        if let Some(o) = check_control(shared, client, &mut st, ctl, &mut out) {
            let _ = conn.stream.write_all(&out).await;
            return o;
        }
        if st.ready && !st.subscribed_sent && st.subscribe_at.is_some_and(|t| Instant::now() >= t) {
            send_subscribes(shared, client, &mut st, &mut out);
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
                let r = match shared.spec.target {
                    Target::Tribune => on_hub_frame(shared, client, st, data, now),
                    Target::NatsWs => on_nats_bytes(shared, client, st, data, now, out),
                };
                if let Err(cause) = r {
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

fn send_subscribes(shared: &Shared, client: &mut Client, st: &mut Conn, out: &mut Vec<u8>) {
    st.subscribed_sent = true;
    let now = Instant::now();
    match shared.spec.target {
        Target::Tribune => {
            for s in client.subs.iter_mut() {
                let resume = match (s.last_seq, client.epoch.as_deref()) {
                    (Some(seq), Some(epoch)) if s.counted => Some((seq, epoch)),
                    _ => None,
                };
                let text =
                    tribune::subscribe_frame(st.next_id, &s.name, shared.spec.history, resume);
                st.next_id += 1;
                encode_client_frame(out, 0x1, text.as_bytes());
                s.sent_at = Some(now);
            }
        }
        Target::NatsWs => {
            let mut ops = Vec::new();
            for (k, s) in client.subs.iter_mut().enumerate() {
                let subject = format!("{}{}", shared.spec.subject_prefix, s.name);
                natsws::sub_ops(&mut ops, &subject, k as u64 + 1);
                st.pong_queue.push_back(k);
                s.sent_at = Some(now);
            }
            encode_client_frame(out, 0x2, &ops);
        }
    }
}

/// A subscription is confirmed on this connection.
fn confirmed(shared: &Shared, client: &mut Client, k: usize, baseline_zero: bool) {
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
fn delivered(shared: &Shared, client: &mut Client, k: usize, data: &[u8], live: bool, now: u64) {
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

fn on_hub_frame(
    shared: &Shared,
    client: &mut Client,
    st: &mut Conn,
    data: &[u8],
    now: u64,
) -> Result<(), String> {
    match tribune::classify(data) {
        HubFrame::Message(m) => {
            on_hub_message(
                shared, client, m.topic, m.seq, m.prev, m.replay, m.data, now,
            );
        }
        HubFrame::OwnedMessage {
            topic,
            seq,
            prev,
            replay,
            data,
            ..
        } => {
            on_hub_message(
                shared,
                client,
                topic.as_bytes(),
                seq,
                prev,
                replay,
                data.as_bytes(),
                now,
            );
        }
        HubFrame::Welcome => {
            if !st.ready {
                st.ready = true;
                record_us(
                    &mut shared.stats.borrow_mut().ready,
                    st.opened_at.elapsed().as_micros() as u64,
                );
            }
        }
        HubFrame::SubscribeAck {
            topic,
            seq,
            epoch,
            recovered,
            ..
        } => {
            let Some(k) = client.sub_of(shared, topic.as_bytes()) else {
                bump(
                    &mut shared.stats.borrow_mut().errors,
                    "ack_for_unknown_topic",
                );
                return Ok(());
            };
            match recovered {
                Some(true) => shared.stats.borrow_mut().recovered += 1,
                Some(false) => shared.stats.borrow_mut().not_recovered += 1,
                None => {}
            }
            if epoch.is_some() {
                client.epoch = epoch;
            }
            let s = &mut client.subs[k];
            if recovered != Some(true) {
                s.last_seq = Some(seq);
            }
            // Nothing ever published on the topic: every counter is owed.
            let baseline_zero = seq == 0;
            confirmed(shared, client, k, baseline_zero);
        }
        HubFrame::OtherAck | HubFrame::Pong | HubFrame::Stats => {}
        // An announced loss is still a loss: the run reports it as an error.
        HubFrame::Gap { .. } => bump(&mut shared.stats.borrow_mut().errors, "gap"),
        HubFrame::Error { code, .. } => {
            bump(&mut shared.stats.borrow_mut().errors, &code);
        }
        HubFrame::Drain { retry_ms } => {
            let delay = if retry_ms == 0 {
                0
            } else {
                rand::rng().random_range(0..retry_ms)
            };
            st.leave_at = Some(Instant::now() + Duration::from_millis(delay));
        }
        HubFrame::Invalid(e) => {
            bump(&mut shared.stats.borrow_mut().errors, "invalid_frame");
            eprintln!("client {}: invalid frame from hub: {e}", client.index);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn on_hub_message(
    shared: &Shared,
    client: &mut Client,
    topic: &[u8],
    seq: u64,
    prev: u64,
    replay: bool,
    data: &[u8],
    now: u64,
) {
    let Some(k) = client.sub_of(shared, topic) else {
        bump(
            &mut shared.stats.borrow_mut().errors,
            "message_for_unknown_topic",
        );
        return;
    };
    let s = &mut client.subs[k];
    if !replay
        && let Some(last) = s.last_seq
        && prev != last
    {
        shared.stats.borrow_mut().prev_mismatch += 1;
    }
    s.last_seq = Some(s.last_seq.map_or(seq, |l| l.max(seq)));
    delivered(shared, client, k, data, !replay, now);
}

fn on_nats_bytes(
    shared: &Shared,
    client: &mut Client,
    st: &mut Conn,
    data: &[u8],
    now: u64,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    st.nats.push(data);
    loop {
        let op = match st.nats.next_op() {
            Ok(Some(op)) => op,
            Ok(None) => return Ok(()),
            Err(e) => {
                eprintln!("client {}: {}", client.index, e.0);
                return Err("bad_nats_protocol".into());
            }
        };
        match op {
            NatsOp::Msg {
                subject, payload, ..
            } => {
                let topic = subject.strip_prefix(shared.spec.subject_prefix.as_bytes());
                match topic.and_then(|t| client.sub_of(shared, t)) {
                    Some(k) => delivered(shared, client, k, payload, true, now),
                    None => bump(
                        &mut shared.stats.borrow_mut().errors,
                        "message_for_unknown_subject",
                    ),
                }
            }
            NatsOp::Ping => encode_client_frame(out, 0x2, b"PONG\r\n"),
            NatsOp::Pong => {
                if !st.ready {
                    st.ready = true;
                    record_us(
                        &mut shared.stats.borrow_mut().ready,
                        st.opened_at.elapsed().as_micros() as u64,
                    );
                } else if let Some(k) = st.pong_queue.pop_front() {
                    // Core NATS says nothing about what was published
                    // before: only a subscription known to predate the
                    // first publication starts at counter 0.
                    let baseline_zero = client.before_publish && !client.subs[k].counted;
                    confirmed(shared, client, k, baseline_zero);
                }
            }
            NatsOp::Info | NatsOp::Ok => {}
            NatsOp::Err(text) => {
                let text = String::from_utf8_lossy(text).to_lowercase();
                let code = text.trim_matches('\'').replace(' ', "_");
                bump(&mut shared.stats.borrow_mut().errors, &code);
            }
        }
    }
}
