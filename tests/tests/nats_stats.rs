//! Audience and reactions across hub nodes (PROTOCOL.md section 4 `stats`,
//! section 3 `react`, section 10 "Audience and reactions"): two real
//! `tribune-hub` processes with distinct `--node-name`s on one real
//! nats-server, 200 ms windows, real websocket clients.
//!
//! - audiences of both nodes add up, in the `stats` of clients of each node,
//!   and follow unsubscribes and disconnects;
//! - a SIGKILLed node drops out within three windows, and counts again once
//!   it is back;
//! - reactions sent through both nodes are counted exactly once in the
//!   cluster-wide figures of each node, also around refusals and the rate
//!   limit (and the hub metrics agree);
//! - the figures recover after a nats-server restart;
//! - a node is never silently missing from the others' figures: not with a
//!   node name that is no subject token, not with thousands of topics (a
//!   partial over nats-server's `max_payload`);
//! - `cpu_per_window_under_reactions` and `cpu_per_window_by_topic_count`
//!   (ignored) measure the hub's CPU time per window with 200 to 2,000
//!   reacting subscribers and with 1,000 to 8,000 topics; they print tables
//!   and assert nothing about speed.
//!
//! The single-node figures over the embedded bus are in `hub_stats.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsServer;
use tribune_tests::procstat;
use tribune_tests::{Hub, WsClient};

const WINDOW_MS: u64 = 200;
const WINDOW: Duration = Duration::from_millis(WINDOW_MS);
const TOPIC: &str = "results.x.y";
/// The `results` namespace's reactions (PROTOCOL.md section 2).
const KINDS: [&str; 4] = ["🔥", "👏", "😮", "😢"];
/// How long a figure may take to cross the cluster before a test fails: a
/// bound on correctness (a few windows plus a loaded 2-core machine), not a
/// speed target.
const SETTLE: Duration = Duration::from_secs(10);
/// The cluster's statistics key: partials sealed with another are refused.
const KEY: &str = "nats-stats-test-key-0123456789-abcdefgh";

/// Two hub nodes on one nats-server.
struct Cluster {
    a: Hub,
    b: Hub,
    /// Dropped after the hubs (fields drop in order): the hubs never see
    /// their bus vanish while a test is still asserting.
    nats: NatsServer,
    _config: ConfigFile,
}

/// 200 ms windows, and no handshake limit in the way of many clients from
/// one loopback address.
fn config() -> ConfigFile {
    ConfigFile::new(&format!(
        "[stats]\nwindow_ms = {WINDOW_MS}\nkey = \"{KEY}\"\n[limits]\nhandshakes_per_second = 100000\n"
    ))
}

async fn hub_on(nats: &NatsServer, config: &ConfigFile, name: &str) -> Hub {
    Hub::start(&[
        "--nats",
        &nats.url(),
        "--config",
        config.path(),
        "--node-name",
        name,
    ])
    .await
}

async fn cluster() -> Cluster {
    let nats = NatsServer::start().await;
    let config = config();
    let a = hub_on(&nats, &config, "stats-a").await;
    let b = hub_on(&nats, &config, "stats-b").await;
    Cluster {
        a,
        b,
        nats,
        _config: config,
    }
}

/// A client of `hub` subscribed to `topic`.
async fn subscriber(hub: &Hub, topic: &str) -> WsClient {
    let (mut c, _) = WsClient::connect(&hub.ws_url()).await;
    c.subscribe(topic, json!({})).await;
    c
}

/// Reads `c` until a `stats` frame for `topic` satisfies `want`; panics after
/// `within` with the last `stats` seen. Other frames are skipped.
async fn await_stats(
    c: &mut WsClient,
    topic: &str,
    within: Duration,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("not within {within:?}: {what}; last stats: {last}");
        }
        match c.try_recv(left).await {
            Some(f) if f["type"] == "stats" && f["topic"] == topic => {
                assert_eq!(f["window_ms"], WINDOW_MS, "{f}");
                if want(&f) {
                    return f;
                }
                last = f;
            }
            Some(_) => {}
            // A timeout; a dead socket would spin, so pause a little.
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Every client in `clients` eventually reads audience `n` for `TOPIC`.
async fn all_see_audience(clients: &mut [&mut WsClient], n: u64, what: &str) {
    for (i, c) in clients.iter_mut().enumerate() {
        await_stats(c, TOPIC, SETTLE, &format!("{what} (client {i})"), |f| {
            f["audience"] == n
        })
        .await;
    }
}

/// Adds one `stats` frame's reactions to `sum`.
fn add_reactions(sum: &mut BTreeMap<String, u64>, frame: &Value) {
    let reactions = frame["reactions"]
        .as_object()
        .unwrap_or_else(|| panic!("stats without a reactions object: {frame}"));
    for (kind, n) in reactions {
        *sum.entry(kind.clone()).or_default() += n.as_u64().expect("a count");
    }
}

/// A watcher's view: the reactions of every `stats` frame it reads for
/// `TOPIC`, summed. Reads until the sum equals `expected` (or goes past it,
/// or `SETTLE` runs out), then `quiet` more, so that a reaction counted
/// twice in a later window shows up too.
async fn watched_sum(
    c: &mut WsClient,
    expected: &BTreeMap<String, u64>,
    quiet: Duration,
) -> BTreeMap<String, u64> {
    let mut sum = BTreeMap::new();
    let deadline = Instant::now() + SETTLE;
    let mut until = None;
    loop {
        let now = Instant::now();
        match until {
            None if sum == *expected => until = Some(now + quiet),
            None if sum
                .iter()
                .any(|(k, n)| *n > expected.get(k).copied().unwrap_or(0)) =>
            {
                return sum; // already over: the caller's assertion says so
            }
            None if now > deadline => return sum,
            Some(t) if now > t => return sum,
            _ => {}
        }
        let stop = until.unwrap_or(deadline);
        let left = stop
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        match c.try_recv(left).await {
            Some(f) if f["type"] == "stats" && f["topic"] == TOPIC => add_reactions(&mut sum, &f),
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Reads `c` until the answer to request `id` (skipping `stats` and
/// messages).
async fn answer(c: &mut WsClient, id: u64) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = c
            .try_recv(left)
            .await
            .unwrap_or_else(|| panic!("no answer to request {id} within {SETTLE:?}"));
        if f["id"] == id {
            return f;
        }
    }
}

/// Sends `reactions` on `topic` back to back (so the rate limiter sees a
/// burst), then reads the answers, in order: the `ack` or `error` code of each.
async fn react_all(c: &mut WsClient, topic: &str, reactions: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for r in reactions {
        let id = c.id();
        c.send(json!({"type": "react", "id": id, "topic": topic, "reaction": r}))
            .await;
        ids.push(id);
    }
    let mut out = Vec::new();
    for id in ids {
        let a = answer(c, id).await;
        out.push(match a["type"].as_str() {
            Some("ack") => "ack".to_string(),
            Some("error") => a["code"].as_str().expect("error code").to_string(),
            _ => panic!("unexpected answer {a}"),
        });
    }
    out
}

/// A node where one client may hold `topics` subscriptions, subscribe as
/// fast as it likes, and receive a `stats` frame for each of them in one
/// window without being closed as a slow consumer.
fn roomy_config(topics: usize) -> ConfigFile {
    ConfigFile::new(&format!(
        "[stats]\nwindow_ms = {WINDOW_MS}\nkey = \"{KEY}\"\n[limits]\nhandshakes_per_second = 100000\n\
         max_subscriptions = {topics}\nframes_per_second = 100000\nframes_burst = 100000\n\
         new_topics_per_second = 100000\nnew_topics_burst = 100000\n\
         queue_messages = {}\nqueue_bytes = {}\n",
        topics * 4,
        topics * 4 * 512,
    ))
}

/// Keeps reading `c` in the background so that its queue never fills; the
/// task ends with a panic if the hub closes the connection.
fn keep_reading(mut c: WsClient) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while c.try_recv(Duration::from_secs(3600)).await.is_some() {} })
}

/// Subscribes `c` to every topic of `topics`, 500 requests in flight at a
/// time; panics on a refusal.
async fn subscribe_many(c: &mut WsClient, topics: impl Iterator<Item = String>) {
    let topics: Vec<String> = topics.collect();
    for chunk in topics.chunks(500) {
        let mut waiting = std::collections::BTreeSet::new();
        for topic in chunk {
            let id = c.id();
            c.send(json!({"type": "subscribe", "id": id, "topic": topic}))
                .await;
            waiting.insert(id);
        }
        while !waiting.is_empty() {
            let f = c.recv().await;
            match f["type"].as_str() {
                Some("ack") => assert!(waiting.remove(&f["id"].as_u64().unwrap()), "{f}"),
                Some("error") => panic!("subscribe refused: {f}"),
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn audiences_of_both_nodes_add_up() {
    let cl = cluster().await;
    let mut a1 = subscriber(&cl.a, TOPIC).await;
    let mut a2 = subscriber(&cl.a, TOPIC).await;
    let mut a3 = subscriber(&cl.a, TOPIC).await;
    let mut b1 = subscriber(&cl.b, TOPIC).await;
    let mut b2 = subscriber(&cl.b, TOPIC).await;
    all_see_audience(
        &mut [&mut a1, &mut a2, &mut a3, &mut b1, &mut b2],
        5,
        "3 on A + 2 on B",
    )
    .await;

    // An unsubscribe on B is seen on A too.
    let id = b2.id();
    b2.send(json!({"type": "unsubscribe", "id": id, "topic": TOPIC}))
        .await;
    assert_eq!(answer(&mut b2, id).await["type"], "ack");
    all_see_audience(
        &mut [&mut a1, &mut a2, &mut a3, &mut b1],
        4,
        "after an unsubscribe on B",
    )
    .await;

    // A closed connection on A is seen on B too.
    drop(a3);
    all_see_audience(&mut [&mut a1, &mut a2, &mut b1], 3, "after a close on A").await;
}

#[tokio::test]
async fn a_killed_node_drops_out_within_three_windows() {
    let mut cl = cluster().await;
    let mut a1 = subscriber(&cl.a, TOPIC).await;
    let mut a2 = subscriber(&cl.a, TOPIC).await;
    let mut bs = Vec::new();
    for _ in 0..3 {
        bs.push(subscriber(&cl.b, TOPIC).await);
    }
    all_see_audience(&mut [&mut a1, &mut a2], 5, "2 on A + 3 on B").await;

    cl.b.kill().await;
    let killed = Instant::now();
    drop(bs);
    // Three windows of silence (600 ms) and the next window; SETTLE allows
    // for a loaded machine.
    all_see_audience(&mut [&mut a1, &mut a2], 2, "B dropped out after SIGKILL").await;
    eprintln!(
        "B's audience left A's figures {:?} after SIGKILL (three windows: {:?})",
        killed.elapsed(),
        WINDOW * 3
    );

    // B back (same name, same port): its subscribers count again, and B's
    // own clients see A's.
    cl.b.restart().await;
    let mut b1 = subscriber(&cl.b, TOPIC).await;
    all_see_audience(&mut [&mut a1, &mut a2, &mut b1], 3, "B back with 1").await;
}

#[tokio::test]
async fn reactions_through_both_nodes_are_counted_once() {
    let cl = cluster().await;
    let mut wa = subscriber(&cl.a, TOPIC).await;
    let mut wb = subscriber(&cl.b, TOPIC).await;
    // Both nodes hear each other before anyone reacts.
    all_see_audience(&mut [&mut wa, &mut wb], 2, "the two watchers").await;

    // 8 fans, 4 per node, each subscribed (a reaction needs a subscription
    // to its topic on the same connection): 5 reactions each (within the
    // burst of 10), kinds mixed: 40 in all.
    let mut fans = Vec::new();
    for i in 0..8 {
        let hub = if i % 2 == 0 { &cl.a } else { &cl.b };
        fans.push(subscriber(hub, TOPIC).await);
    }
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut acked_on = [0u64; 2];
    for (i, fan) in fans.iter_mut().enumerate() {
        let kinds: Vec<&str> = (0..5).map(|k| KINDS[(i * 3 + k * k) % 4]).collect();
        let answers = react_all(fan, TOPIC, &kinds).await;
        for (kind, a) in kinds.iter().zip(&answers) {
            assert_eq!(a, "ack", "fan {i}, within its rate limit: {answers:?}");
            *acked.entry(kind.to_string()).or_default() += 1;
            acked_on[i % 2] += 1;
        }
    }
    assert_eq!(acked.values().sum::<u64>(), 40);
    assert!(acked.len() > 1, "mixed kinds: {acked:?}");

    // Each watcher's sum over all windows is exactly what was acked, and
    // stays so for five more windows.
    for (name, w) in [("A", &mut wa), ("B", &mut wb)] {
        let sum = watched_sum(w, &acked, WINDOW * 5).await;
        assert_eq!(
            sum, acked,
            "watcher on {name}: reactions summed over windows"
        );
    }
    let accepted = r#"tribune_reactions_total{result="accepted"}"#;
    assert_eq!(cl.a.metric(accepted).await, acked_on[0] as f64);
    assert_eq!(cl.b.metric(accepted).await, acked_on[1] as f64);
}

#[tokio::test]
async fn refused_and_rate_limited_reactions_count_nothing() {
    let cl = cluster().await;
    let mut wa = subscriber(&cl.a, TOPIC).await;
    let mut wb = subscriber(&cl.b, TOPIC).await;
    // A clips subscriber: that namespace has neither audience nor reactions,
    // so it never gets `stats`.
    let mut clips = subscriber(&cl.a, "clips.x.y").await;
    all_see_audience(&mut [&mut wa, &mut wb], 2, "the two watchers").await;

    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let limited_metric = r#"tribune_reactions_total{result="rate_limited"}"#;
    let refused_metric = r#"tribune_reactions_total{result="refused"}"#;
    let accepted_metric = r#"tribune_reactions_total{result="accepted"}"#;
    for (name, hub) in [("A", &cl.a), ("B", &cl.b)] {
        // Subscribed to both topics: the refusals below are for the
        // reactions themselves, not for a missing subscription.
        let mut fan = subscriber(hub, TOPIC).await;
        fan.subscribe("clips.x.y", json!({})).await;
        assert_eq!(
            react_all(&mut fan, TOPIC, &["💩"]).await,
            ["bad_request"],
            "a reaction outside the allowlist, on {name}"
        );
        assert_eq!(
            react_all(&mut fan, "clips.x.y", &["🔥"]).await,
            ["forbidden"],
            "a reaction on a namespace without reactions, on {name}"
        );

        // 25 back to back: the burst of 10 passes, the rest (bar the odd
        // refill at 5/s) is refused, and only what was acked counts.
        let answers = react_all(&mut fan, TOPIC, &["👏"; 25]).await;
        let acks = answers.iter().filter(|a| *a == "ack").count() as u64;
        let limited = answers.iter().filter(|a| *a == "rate_limited").count() as u64;
        assert_eq!(acks + limited, 25, "on {name}: {answers:?}");
        assert!(acks >= 10, "the burst of 10 passes, on {name}: {answers:?}");
        assert!(
            limited >= 1,
            "the rest is rate limited, on {name}: {answers:?}"
        );
        *acked.entry("👏".into()).or_default() += acks;

        assert_eq!(
            hub.metric(limited_metric).await,
            limited as f64,
            "on {name}"
        );
        assert_eq!(hub.metric(refused_metric).await, 2.0, "on {name}");
        assert_eq!(hub.metric(accepted_metric).await, acks as f64, "on {name}");
    }

    for (name, w) in [("A", &mut wa), ("B", &mut wb)] {
        let sum = watched_sum(w, &acked, WINDOW * 5).await;
        assert_eq!(sum, acked, "watcher on {name}: only acked reactions count");
    }
    while let Some(f) = clips.try_recv(Duration::from_millis(50)).await {
        assert_ne!(f["type"], "stats", "clips take no stats: {f}");
    }
}

#[tokio::test]
async fn figures_recover_after_a_nats_server_restart() {
    let mut cl = cluster().await;
    let mut wa = subscriber(&cl.a, TOPIC).await;
    let mut wb = subscriber(&cl.b, TOPIC).await;
    all_see_audience(&mut [&mut wa, &mut wb], 2, "before the restart").await;

    // No bus: each node hears nobody for three windows and shows its own.
    cl.nats.kill();
    all_see_audience(&mut [&mut wa, &mut wb], 1, "nats-server down").await;

    // Back: the partials flow again, new subscribers count on both sides,
    // and reactions cross again, once.
    cl.nats.restart().await;
    let mut b2 = subscriber(&cl.b, TOPIC).await;
    all_see_audience(&mut [&mut wa, &mut wb, &mut b2], 3, "after the restart").await;
    let answers = react_all(&mut b2, TOPIC, &["🔥", "😮", "🔥"]).await;
    assert_eq!(answers, ["ack", "ack", "ack"]);
    let expected = BTreeMap::from([("🔥".to_string(), 2), ("😮".to_string(), 1)]);
    for (name, w) in [("A", &mut wa), ("B", &mut wb)] {
        let sum = watched_sum(w, &expected, WINDOW * 5).await;
        assert_eq!(sum, expected, "watcher on {name} after the restart");
    }
}

/// PROTOCOL.md section 10: each node's partial travels on
/// `tribune.stats.<node>`. A node name that is not one subject token (here
/// with a space) must be refused at start; a node that runs with it must not
/// be silently missing from everybody else's figures.
#[tokio::test]
async fn a_node_name_is_refused_or_counted() {
    let nats = NatsServer::start().await;
    let config = config();
    let a = hub_on(&nats, &config, "stats-a").await;
    let mut wa = subscriber(&a, TOPIC).await;
    for name in ["stats b", "stats-b.>"] {
        let started = Hub::try_start(&[
            "--nats",
            &nats.url(),
            "--config",
            config.path(),
            "--node-name",
            name,
        ])
        .await;
        let Ok(b) = started else {
            continue; // refused at start: fine
        };
        let mut wb = subscriber(&b, TOPIC).await;
        all_see_audience(
            &mut [&mut wa, &mut wb],
            2,
            &format!("node {name:?} runs, so it counts"),
        )
        .await;
        drop(wb);
        all_see_audience(&mut [&mut wa], 1, "node gone").await;
    }
}

/// A node with thousands of active topics publishes one partial per window
/// for all of them; it must still count in the other nodes' figures. 5,400
/// topics of 187 bytes make a partial of over 1 MiB, nats-server's default
/// `max_payload`.
#[tokio::test]
async fn a_node_with_thousands_of_topics_still_counts() {
    const TOPICS: usize = 5_400;
    let nats = NatsServer::start().await;
    let config = config();
    let roomy = roomy_config(TOPICS);
    let a = hub_on(&nats, &config, "stats-a").await;
    let b = hub_on(&nats, &roomy, "stats-b").await;
    let long = "t".repeat(60);
    let topic = |i: usize| format!("results.{long}.{long}.{}-{i:06}", &long[..50]);
    let mut wa = subscriber(&a, &topic(0)).await;
    let (mut fan, _) = WsClient::connect(&b.ws_url()).await;
    subscribe_many(&mut fan, (0..TOPICS).map(topic)).await;
    let fan = keep_reading(fan);
    // The figure A shows for topic 0 settles on 2 (1 on A, 1 on B) and holds
    // for ten windows.
    let deadline = Instant::now() + SETTLE;
    let mut audience = Value::Null;
    let mut since = Instant::now();
    while !(audience == 2 && since.elapsed() > WINDOW * 10) {
        assert!(
            Instant::now() < deadline,
            "A's audience of a topic also on B (with {TOPICS} topics) is {audience}, not 2 \
             (B's client still open: {})",
            !fan.is_finished()
        );
        if let Some(f) = wa.try_recv(WINDOW).await
            && f["type"] == "stats"
        {
            audience = f["audience"].clone();
            since = Instant::now();
        }
    }
    assert!(!fan.is_finished(), "B's client was closed: {:?}", fan.await);
    fan.abort();
}

/// User CPU + system CPU of a process so far.
fn cpu_time(pid: u32) -> Duration {
    Duration::from_secs_f64(procstat::cpu_seconds(pid).expect("/proc/<pid>/stat"))
}

/// Listens to `tribune.stats.>` like a hub node does: per node, how many
/// partials it published (the windows it actually ran) and the largest.
struct PartialWatch {
    seen: Arc<std::sync::Mutex<BTreeMap<String, (u64, usize)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PartialWatch {
    async fn start(url: &str) -> PartialWatch {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let mut sub = client
            .subscribe("tribune.stats.>")
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let seen: Arc<std::sync::Mutex<BTreeMap<String, (u64, usize)>>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let _client = client; // keeps the connection open
            while let Some(m) = sub.next().await {
                let node = m.subject.as_str().trim_start_matches("tribune.stats.");
                let mut seen = sink.lock().unwrap();
                let e = seen.entry(node.to_string()).or_default();
                e.0 += 1;
                e.1 = e.1.max(m.payload.len());
            }
        });
        PartialWatch { seen, task }
    }

    /// (partials so far, largest so far) of `node`.
    fn of(&self, node: &str) -> (u64, usize) {
        self.seen
            .lock()
            .unwrap()
            .get(node)
            .copied()
            .unwrap_or_default()
    }
}

impl Drop for PartialWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One node over one measured interval.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    /// Partials the node published: the windows it ran.
    windows_run: u64,
    /// Largest partial published so far, in bytes.
    largest: usize,
}

impl Sample {
    /// Windows that a 200 ms clock would have run in `wall`.
    fn windows_due(&self) -> f64 {
        self.wall.as_secs_f64() / WINDOW.as_secs_f64()
    }

    /// CPU time per window the node ran (per wall window when it published
    /// nothing, i.e. had no active topic).
    fn cpu_per_window(&self) -> Duration {
        let windows = if self.windows_run > 0 {
            self.windows_run as f64
        } else {
            self.windows_due()
        };
        self.cpu.div_f64(windows)
    }

    /// Share of one core.
    fn core_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64()
    }
}

/// CPU time and windows of two nodes over `windows` windows of wall time.
async fn measure(
    pids: [u32; 2],
    names: [&str; 2],
    watch: &PartialWatch,
    windows: u32,
) -> [Sample; 2] {
    let start = Instant::now();
    let cpu0 = pids.map(cpu_time);
    let run0 = names.map(|n| watch.of(n).0);
    tokio::time::sleep(WINDOW * windows).await;
    let cpu1 = pids.map(cpu_time);
    let wall = start.elapsed();
    [0, 1].map(|i| Sample {
        wall,
        cpu: cpu1[i] - cpu0[i],
        windows_run: watch.of(names[i]).0 - run0[i],
        largest: watch.of(names[i]).1,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// What the load clients saw, across all of them.
#[derive(Default)]
struct LoadCounts {
    sent: AtomicU64,
    acked: AtomicU64,
    limited: AtomicU64,
    stats: AtomicU64,
    /// `stats` frames whose audience was not the N subscribed: a node that
    /// dropped out (or counted late).
    off_audience: AtomicU64,
    closed: AtomicU64,
}

impl LoadCounts {
    fn snapshot(&self) -> [u64; 6] {
        [
            &self.sent,
            &self.acked,
            &self.limited,
            &self.stats,
            &self.off_audience,
            &self.closed,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// One subscriber that reacts once a window (5/s, its rate limit) from
/// `offset` on while `react` is set, until `stop`; counts its answers.
async fn load_client(
    c: WsClient,
    i: usize,
    n: u64,
    offset: Duration,
    react: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    counts: Arc<LoadCounts>,
) {
    let (mut tx, mut rx) = c.stream.split();
    let reaction = KINDS[i % KINDS.len()];
    let mut tick = tokio::time::interval_at(Instant::now() + offset, WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id = 0u64;
    // Bounded: the test sets `stop`; the hard limit covers a test that panicked.
    let hard_stop = Instant::now() + Duration::from_secs(300);
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
        tokio::select! {
            _ = tick.tick() => {
                if react.load(Ordering::Relaxed) {
                    id += 1;
                    let frame = json!({"type": "react", "id": id, "topic": TOPIC, "reaction": reaction});
                    if tx.send(Message::text(frame.to_string())).await.is_err() {
                        counts.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let f: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    match (f["type"].as_str(), f["code"].as_str()) {
                        (Some("ack"), _) => counts.acked.fetch_add(1, Ordering::Relaxed),
                        (Some("error"), Some("rate_limited")) => counts.limited.fetch_add(1, Ordering::Relaxed),
                        (Some("stats"), _) if f["audience"] != n => counts.off_audience.fetch_add(1, Ordering::Relaxed),
                        (Some("stats"), _) => counts.stats.fetch_add(1, Ordering::Relaxed),
                        _ => continue,
                    };
                }
                Some(Ok(_)) => {}
                _ => {
                    counts.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
}

async fn subscriber_at(url: &str) -> WsClient {
    let (mut c, _) = WsClient::connect(url).await;
    c.subscribe(TOPIC, json!({})).await;
    c
}

/// Speed is measured, never asserted: this prints the hub's CPU time per
/// window with N subscribers of one topic (half on each node), first idle,
/// then each reacting at 5/s. Run it alone, ideally with the release binary:
///
/// ```text
/// cargo build --release -p tribune-hub
/// TRIBUNE_HUB_BIN=$PWD/target/release/tribune-hub cargo test -p tribune-tests \
///     --test nats_stats -- --ignored --nocapture cpu_per_window_under_reactions
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: prints CPU time per window, run with --ignored --nocapture"]
async fn cpu_per_window_under_reactions() {
    const MEASURED_WINDOWS: u32 = 25;
    let names = ["stats-a", "stats-b"];
    let mut rows = Vec::new();
    for n in [200usize, 1_000, 2_000] {
        let cl = cluster().await;
        let watch = PartialWatch::start(&cl.nats.url()).await;
        let pids = [cl.a.pid().unwrap(), cl.b.pid().unwrap()];
        // Connect and subscribe, 50 at a time.
        let urls = [cl.a.ws_url(), cl.b.ws_url()];
        let clients: Vec<WsClient> = futures::stream::iter(0..n)
            .map(|i| {
                let url = urls[i % 2].clone();
                async move { subscriber_at(&url).await }
            })
            .buffer_unordered(50)
            .collect()
            .await;
        let react = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(LoadCounts::default());
        let mut tasks = Vec::new();
        for (i, c) in clients.into_iter().enumerate() {
            // Spread the reactions evenly over a window.
            let offset = WINDOW * i as u32 / n as u32;
            tasks.push(tokio::spawn(load_client(
                c,
                i,
                n as u64,
                offset,
                react.clone(),
                stop.clone(),
                counts.clone(),
            )));
        }
        // Idle: n subscribers, audience steady, nothing to send.
        tokio::time::sleep(WINDOW * 5).await;
        let idle = measure(pids, names, &watch, MEASURED_WINDOWS).await;

        react.store(true, Ordering::Relaxed);
        tokio::time::sleep(WINDOW * 10).await;
        let before = counts.snapshot();
        let busy = measure(pids, names, &watch, MEASURED_WINDOWS).await;
        let after = counts.snapshot();
        let per_window = |k: usize| (after[k] - before[k]) as f64 / busy[0].windows_due();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        rows.push((n, idle, busy, [0, 1, 2, 3, 4].map(per_window), after[5]));
    }
    println!(
        "\nhub CPU time (user+sys) per {WINDOW_MS} ms window, N subscribers of {TOPIC}, half on each of 2 nodes; \
         idle = subscribed, nobody reacting; reacting = every subscriber reacts at 5/s"
    );
    println!(
        "| N | node | idle: CPU/window | reacting: CPU/window | reacting: core share | windows run/due | reactions sent/window (cluster) | acked | rate_limited | stats received | stats with audience != N | clients closed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, idle, busy, per, closed) in rows {
        for i in 0..2 {
            println!(
                "| {n} | {} | {} | {} | {:.0}% | {}/{:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {closed} |",
                names[i],
                ms(idle[i].cpu_per_window()),
                ms(busy[i].cpu_per_window()),
                busy[i].core_share() * 100.0,
                busy[i].windows_run,
                busy[i].windows_due(),
                per[0],
                per[1],
                per[2],
                per[3],
                per[4],
            );
        }
    }
}

/// Speed is measured, never asserted: the CPU time per window of a node
/// with T active topics (one subscriber each, no traffic at all), and of the
/// other node, which only takes in its partials. Run it alone, ideally with
/// the release binary:
///
/// ```text
/// cargo build --release -p tribune-hub
/// TRIBUNE_HUB_BIN=$PWD/target/release/tribune-hub cargo test -p tribune-tests \
///     --test nats_stats -- --ignored --nocapture cpu_per_window_by_topic_count
/// ```
#[tokio::test]
#[ignore = "measurement: prints CPU time per window, run with --ignored --nocapture"]
async fn cpu_per_window_by_topic_count() {
    const MEASURED_WINDOWS: u32 = 25;
    let names = ["stats-a", "stats-b"];
    let mut rows = Vec::new();
    for topics in [1_000usize, 2_000, 4_000, 8_000] {
        let nats = NatsServer::start().await;
        let watch = PartialWatch::start(&nats.url()).await;
        let config = config();
        let roomy = roomy_config(topics);
        let a = hub_on(&nats, &roomy, names[0]).await;
        let b = hub_on(&nats, &config, names[1]).await;
        let (mut fan, _) = WsClient::connect(&a.ws_url()).await;
        subscribe_many(&mut fan, (0..topics).map(|i| format!("results.m.t-{i:05}"))).await;
        // The first stats go out, then nothing changes; the client is read
        // all along so that the hub's socket never backs up.
        let fan = keep_reading(fan);
        tokio::time::sleep(WINDOW * 10).await;
        let [sa, sb] = measure(
            [a.pid().unwrap(), b.pid().unwrap()],
            names,
            &watch,
            MEASURED_WINDOWS,
        )
        .await;
        assert!(!fan.is_finished(), "the client was closed: {:?}", fan.await);
        fan.abort();
        rows.push((topics, sa, sb));
    }
    println!(
        "\nhub CPU time (user+sys) per {WINDOW_MS} ms window, T topics with one idle subscriber each on node A"
    );
    println!(
        "| T | A: CPU/window run | A: core share | A: windows run/due | A: partial bytes | B (absorbs A's partials): CPU/window |"
    );
    println!("|---|---|---|---|---|---|");
    for (t, sa, sb) in rows {
        println!(
            "| {t} | {} | {:.0}% | {}/{:.0} | {} | {} |",
            ms(sa.cpu_per_window()),
            sa.core_share() * 100.0,
            sa.windows_run,
            sa.windows_due(),
            sa.largest,
            ms(sb.cpu_per_window()),
        );
    }
}
