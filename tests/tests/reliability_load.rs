//! Issue 8, reliability under load, against real hub processes:
//!
//! - [`slow_consumers_among_2000_clients`]: 2,000 websocket clients on one
//!   hub, half on a feed topic and half on a state topic (`results`, with
//!   live audience figures); one in ten stops reading. The readers get every
//!   feed message in order and end on the latest state; the stalled feed
//!   clients are closed with 4008 and counted, the stalled state clients are
//!   conflated, never closed, and end on the latest state; the hub's resident
//!   memory stays bounded.
//! - [`drain_moves_5000_clients_to_the_other_node`]: two hub nodes on one
//!   nats-server, 5,000 clients on node A, an editor publishing through
//!   JetStream (with `Nats-Msg-Id`) all along; SIGTERM on A. Every client gets
//!   `drain` and 1001, waits a random delay below `retry_ms`, resumes on node
//!   B with `since`/`epoch`, and loses and repeats nothing (its seqs are every
//!   published seq after its subscription, the `prev` chain unbroken across
//!   the move); the reconnects are spread out; node A exits 0.
//!
//! Only correctness and bounds are asserted, never speed. Every loop is
//! bounded in count and time. The figures (RSS, CPU, reconnect histogram)
//! are printed (`--nocapture`) for the reliability and benchmark notes.
//! `RELIABILITY_DRAIN_CLIENTS`, `RELIABILITY_DRAIN_RATE` and
//! `RELIABILITY_SLOW_MESSAGES` scale the runs for such measurements.
//!
//! The clients are lean tokio-tungstenite connections (small buffers, one
//! task each, one runtime). Message frames are read with a scan of their head
//! rather than a full JSON parse: the hub writes every `message` frame in one
//! fixed layout (`tribune_protocol::encode_message`, held to serde's output by
//! the golden vectors), and fully parsing millions of frames in an
//! unoptimised test build would make the test process, even more than it is,
//! the bottleneck. The first and last message of every client are also
//! parsed in full and compared with the scan.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tribune_tests::Hub;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsServer;
use tribune_tests::procstat::{cpu_seconds, rss_kib};

type Ws = WebSocketStream<TcpStream>;

/// The two tests of this file run one at a time: each alone loads the
/// 2-core machine, and together they would hold 12,000 sockets.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long any one frame may take to arrive while a client expects one.
const FRAME_WITHIN: Duration = Duration::from_secs(30);

/// A lean client connection: small buffers, optionally a small kernel
/// receive buffer (a client that stops reading then fills up quickly).
async fn connect(addr: SocketAddr, rcvbuf: Option<u32>, read_buffer: usize) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(size) = rcvbuf {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| e.to_string())?;
    }
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    let url = format!("ws://{addr}/v1/ws");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// What a client read next.
enum Frame {
    /// A `message` frame, scanned, and its text (shared, not copied).
    Message(Scanned, Utf8Bytes),
    /// Any other frame, parsed.
    Other(Value),
    Closed(Option<u16>),
}

/// The head of a `message` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scanned {
    seq: u64,
    prev: u64,
    replay: bool,
    /// The payload's leading `{"i":N` or `{"n":N`, when it has one.
    n: Option<u64>,
}

const MESSAGE_HEAD: &str = r#"{"type":"message","topic":""#;

/// Reads `"<name>":<digits>` at the start of `text`.
fn number_after<'a>(text: &'a str, name: &str) -> Option<(u64, &'a str)> {
    let rest = text
        .strip_prefix('"')?
        .strip_prefix(name)?
        .strip_prefix("\":")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some((rest[..end].parse().ok()?, &rest[end..]))
}

/// Scans `{"type":"message","topic":"T","seq":N,"prev":N,"ts":N[,"replay":true],"data":D}`.
fn scan(text: &str) -> Option<Scanned> {
    let rest = text.strip_prefix(MESSAGE_HEAD)?;
    let rest = &rest[rest.find('"')? + 1..]; // topics never hold quotes
    let (seq, rest) = number_after(rest.strip_prefix(',')?, "seq")?;
    let (prev, rest) = number_after(rest.strip_prefix(',')?, "prev")?;
    let (_ts, rest) = number_after(rest.strip_prefix(',')?, "ts")?;
    let (replay, rest) = match rest.strip_prefix(r#","replay":true"#) {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let data = rest.strip_prefix(r#","data":{"#)?;
    let n = number_after(data, "i")
        .or_else(|| number_after(data, "n"))
        .map(|(n, _)| n);
    Some(Scanned {
        seq,
        prev,
        replay,
        n,
    })
}

/// The scan of a frame agrees with a full parse.
fn check_scan(text: &str, s: &Scanned) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let n = v["data"]["i"].as_u64().or_else(|| v["data"]["n"].as_u64());
    let parsed = Scanned {
        seq: v["seq"].as_u64().unwrap_or(u64::MAX),
        prev: v["prev"].as_u64().unwrap_or(u64::MAX),
        replay: v["replay"] == true,
        n,
    };
    if parsed != *s {
        return Err(format!("scan {s:?} differs from parse {parsed:?}"));
    }
    Ok(())
}

async fn next_frame(ws: &mut Ws, within: Duration) -> Result<Frame, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no frame within {within:?}"))?;
        match msg {
            None | Some(Err(_)) => return Ok(Frame::Closed(None)),
            Some(Ok(Message::Close(f))) => return Ok(Frame::Closed(f.map(|f| f.code.into()))),
            Some(Ok(Message::Text(t))) => {
                let text = t.as_str();
                if text.starts_with(MESSAGE_HEAD) {
                    let s = scan(text).ok_or_else(|| format!("unscannable message {text:.200}"))?;
                    return Ok(Frame::Message(s, t));
                }
                return serde_json::from_str(text)
                    .map(Frame::Other)
                    .map_err(|e| format!("frame is not JSON ({e}): {text:.200}"));
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// The next non-message frame, which must be of `kind` (audience `stats`
/// frames, which may come at any time, are skipped).
async fn expect_frame(ws: &mut Ws, kind: &str) -> Result<Value, String> {
    for _ in 0..100 {
        match next_frame(ws, FRAME_WITHIN).await? {
            Frame::Other(v) if v["type"] == "stats" && kind != "stats" => continue,
            frame => return frame_of_kind(frame, kind),
        }
    }
    Err(format!("expected {kind}, got 100 stats frames"))
}

fn frame_of_kind(frame: Frame, kind: &str) -> Result<Value, String> {
    match frame {
        Frame::Other(v) if v["type"] == kind => Ok(v),
        Frame::Other(v) => Err(format!("expected {kind}, got {v}")),
        Frame::Message(s, _) => Err(format!("expected {kind}, got message {s:?}")),
        Frame::Closed(code) => Err(format!("expected {kind}, closed with {code:?}")),
    }
}

async fn send(ws: &mut Ws, frame: Value) -> Result<(), String> {
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Deterministic per-client randomness (SplitMix64), no extra dependency.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Polls `done` every 5 ms until it holds, or fails with `what` after `within`.
async fn wait_for(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("not within {within:?}: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// a. Slow consumers
// ---------------------------------------------------------------------------

const SLOW_FEED: &str = "clips.load.slow-consumers";
const SLOW_STATE: &str = "results.load.slow-consumers";
/// Topics only the stalled clients follow (see [`BALLAST_BYTES`]).
const BALLAST_FEED: &str = "clips.load.ballast";
const BALLAST_STATE: &str = "results.load.ballast";
const CLIENTS: usize = 2000;
/// Messages per topic.
const MESSAGES: u64 = 300;
const PAD_BYTES: usize = 4 * 1024;
/// How far (in messages) the publisher runs ahead of the slowest reader:
/// readers must keep up within the hub's queue (64 KiB here), stalled
/// clients need not.
const READER_LAG: u64 = 3;
/// On loopback the MSS is 64 KiB, so the kernel gives the hub's end of a
/// connection a send buffer of about 2.5 MiB at once (on a real network it
/// is some 100 KiB): a client that stops reading takes megabytes before the
/// hub's own queue even starts to fill. Rather than send megabytes to each
/// of the 1,800 readers, the stalled clients also follow a ballast topic of
/// large messages, published alongside; their queues then overflow while
/// the readers' topic goes on.
const BALLAST_BYTES: usize = 64 * 1024;
/// One ballast publication (per mode) after every this many messages.
const BALLAST_EVERY: u64 = 5;
/// Generous: what 2,000 connections and the queues may cost, far below
/// what unbounded queues for 200 stalled clients would (each was sent some
/// 5 MiB: together 1 GiB).
const RSS_BOUND_KIB: u64 = 300 * 1024;

struct SlowClient {
    feed: bool,
    stalled: bool,
}

#[derive(Default)]
struct SlowReport {
    /// Seqs of the messages read, in order.
    seqs: Vec<u64>,
    /// The payload index of the last message.
    last_n: Option<u64>,
    close: Option<Option<u16>>,
    error: Option<String>,
}

/// One client of the slow-consumer test, from connect to its last frame.
async fn slow_client(
    addr: SocketAddr,
    me: SlowClient,
    progress: Arc<AtomicU64>,
    connecting: Arc<Semaphore>,
    subscribed: Arc<AtomicUsize>,
    mut read_now: watch::Receiver<bool>,
    messages: u64,
) -> SlowReport {
    let mut report = SlowReport::default();
    let mut counted = false;
    let run = async {
        let permit = connecting.acquire().await.map_err(|e| e.to_string())?;
        let rcvbuf = me.stalled.then_some(4096);
        let mut ws = connect(addr, rcvbuf, 16 * 1024).await?;
        expect_frame(&mut ws, "welcome").await?;
        let topic = if me.feed { SLOW_FEED } else { SLOW_STATE };
        send(
            &mut ws,
            json!({"type": "subscribe", "id": 1, "topic": topic}),
        )
        .await?;
        let ack = expect_frame(&mut ws, "ack").await?;
        let mut prev = ack["seq"].as_u64().ok_or("ack without seq")?;
        if me.stalled {
            let ballast = if me.feed { BALLAST_FEED } else { BALLAST_STATE };
            send(
                &mut ws,
                json!({"type": "subscribe", "id": 2, "topic": ballast}),
            )
            .await?;
            expect_frame(&mut ws, "ack").await?;
        }
        drop(permit);
        subscribed.fetch_add(1, Ordering::SeqCst);
        counted = true;
        if me.stalled {
            // Stop reading until told; the kernel buffers and the hub's queue fill.
            read_now
                .wait_for(|now| *now)
                .await
                .map_err(|_| "test gone".to_string())?;
        }
        let main_head = format!("{MESSAGE_HEAD}{topic}\"");
        for _ in 0..messages * 3 + 100 {
            let frame = next_frame(&mut ws, FRAME_WITHIN).await?;
            let (s, text) = match frame {
                // The ballast only fills the stalled clients' buffers.
                Frame::Message(_, text) if !text.starts_with(&main_head) => continue,
                Frame::Message(s, text) => (s, text),
                // Audience figures of the `results` namespace.
                Frame::Other(v) if v["type"] == "stats" => continue,
                Frame::Other(v) => return Err(format!("unexpected frame {v}")),
                Frame::Closed(code) => {
                    report.close = Some(code);
                    return Ok(());
                }
            };
            if report.seqs.is_empty() {
                check_scan(&text, &s)?;
            }
            if s.seq <= prev {
                return Err(format!("seq {} after {prev}", s.seq));
            }
            // Feed: every message chains to the one before. State: conflation
            // may skip superseded messages, never reorder them.
            if me.feed && s.prev != prev {
                return Err(format!("prev {} where {prev} was received", s.prev));
            }
            prev = s.seq;
            report.seqs.push(s.seq);
            let n = s.n.ok_or("payload without i")?;
            report.last_n = Some(n);
            progress.store(n + 1, Ordering::Relaxed);
            if n + 1 == messages {
                check_scan(&text, &s)?;
                return Ok(());
            }
        }
        Err("more frames than were published".into())
    };
    if let Err(e) = run.await {
        report.error = Some(e);
        if !counted {
            // Counted as settled, so that the test goes on to report it.
            subscribed.fetch_add(1, Ordering::SeqCst);
        }
    }
    // A finished or failed reader no longer holds the publisher back.
    progress.store(u64::MAX, Ordering::Relaxed);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_among_2000_clients() {
    let _alone = HEAVY.lock().await;
    let cfg = ConfigFile::new(
        "slow_close_grace_ms = 120000\n\
         [limits]\n\
         queue_messages = 16\n\
         queue_bytes = 65536\n\
         handshakes_per_second = 100000\n\
         handshakes_burst = 100000\n\
         node_handshakes_per_second = 100000\n\
         node_handshakes_burst = 100000\n\
         address_share_percent = 100\n",
    );
    let messages: u64 = std::env::var("RELIABILITY_SLOW_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let pid = hub.pid().expect("hub pid");
    let rss_start = rss_kib(pid).expect("VmRSS");

    // RSS of the hub, sampled all along.
    let sampling = Arc::new(AtomicBool::new(true));
    let rss_max = Arc::new(AtomicU64::new(rss_start));
    let sampler = {
        let (sampling, rss_max) = (sampling.clone(), rss_max.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    rss_max.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let connecting = Arc::new(Semaphore::new(64));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (read_now_tx, read_now) = watch::channel(false);
    let mut readers = Vec::new();
    let mut stalled = Vec::new();
    let mut reader_progress = Vec::new();
    for i in 0..CLIENTS {
        // Even: feed, odd: state; one pair in ten stalls.
        let me = SlowClient {
            feed: i % 2 == 0,
            stalled: (i / 2) % 10 == 0,
        };
        let progress = Arc::new(AtomicU64::new(0));
        let kind = (me.feed, me.stalled);
        let task = tokio::spawn(slow_client(
            hub.addr(),
            me,
            progress.clone(),
            connecting.clone(),
            subscribed.clone(),
            read_now.clone(),
            messages,
        ));
        if kind.1 {
            stalled.push((kind.0, task));
        } else {
            reader_progress.push(progress);
            readers.push((kind.0, task));
        }
    }
    let t0 = Instant::now();
    wait_for("every client subscribed", Duration::from_secs(120), || {
        subscribed.load(Ordering::SeqCst) == CLIENTS
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; {} subscribed", subscribed.load(Ordering::SeqCst)));
    let connected_in = t0.elapsed();
    let rss_connected = rss_kib(pid).unwrap_or(0);

    // Publish, never more than READER_LAG messages ahead of the slowest reader.
    let pad = "p".repeat(PAD_BYTES);
    let ballast = "b".repeat(BALLAST_BYTES);
    let mut feed_seqs = Vec::new();
    let mut state_last = 0;
    let t1 = Instant::now();
    for i in 0..messages {
        feed_seqs.push(hub.publish(SLOW_FEED, json!({"i": i, "pad": pad})).await);
        state_last = hub.publish(SLOW_STATE, json!({"i": i, "pad": pad})).await;
        if i % BALLAST_EVERY == 0 {
            hub.publish(BALLAST_FEED, json!({"b": i, "pad": ballast}))
                .await;
            hub.publish(BALLAST_STATE, json!({"b": i, "pad": ballast}))
                .await;
        }
        let behind = (i + 1).saturating_sub(READER_LAG);
        wait_for("readers keep up", Duration::from_secs(60), || {
            reader_progress
                .iter()
                .all(|p| p.load(Ordering::Relaxed) >= behind)
        })
        .await
        .unwrap_or_else(|e| panic!("{e} (message {i})"));
    }
    let published_in = t1.elapsed();

    let mut failures = Vec::new();
    for (n, (feed, task)) in readers.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("reader finishes")
            .expect("reader task");
        if let Some(e) = r.error {
            failures.push(format!(
                "reader {n} ({}): {e}",
                if feed { "feed" } else { "state" }
            ));
        } else if feed && r.seqs != feed_seqs {
            failures.push(format!(
                "feed reader {n}: {} of {} messages",
                r.seqs.len(),
                feed_seqs.len()
            ));
        } else if !feed && (r.seqs.last() != Some(&state_last) || r.last_n != Some(messages - 1)) {
            failures.push(format!("state reader {n} ended on {:?}", r.seqs.last()));
        }
    }
    let rss_published = rss_kib(pid).unwrap_or(0);
    let slow_counted = hub.metric("tribune_slow_consumers_total").await;
    let conflated = hub.metric("tribune_conflated_total").await;

    // The stalled clients read at last.
    read_now_tx.send(true).unwrap();
    let (mut feed_closed, mut state_latest) = (0, 0);
    for (n, (feed, task)) in stalled.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("stalled client finishes")
            .expect("stalled task");
        match (feed, &r.error, r.close) {
            (_, Some(e), _) => failures.push(format!("stalled {n}: {e}")),
            (true, None, Some(Some(4008))) => {
                // What it did receive before the close was in order, chained.
                if !feed_seqs.starts_with(&r.seqs) {
                    failures.push(format!("stalled feed {n}: not a prefix of the feed"));
                }
                feed_closed += 1;
            }
            (true, None, close) => failures.push(format!(
                "stalled feed {n}: {} messages, close {close:?}, expected 4008",
                r.seqs.len()
            )),
            (false, None, None) if r.seqs.last() == Some(&state_last) => state_latest += 1,
            (false, None, close) => failures.push(format!(
                "stalled state {n}: ended on {:?} (latest {state_last}), close {close:?}; \
                 a state-only client is conflated, never closed (PROTOCOL.md section 5)",
                r.seqs.last()
            )),
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let rss_max = rss_max.load(Ordering::Relaxed);

    println!(
        "slow consumers: {CLIENTS} clients connected+subscribed in {connected_in:.1?}; \
         {messages} x 2 messages of {PAD_BYTES} B published in {published_in:.1?}; \
         hub RSS start {} MiB, connected {} MiB, after publishing {} MiB, max {} MiB; \
         slow consumers counted {slow_counted}, conflated {conflated}; \
         stalled feed closed 4008: {feed_closed}, stalled state on latest: {state_latest}",
        rss_start / 1024,
        rss_connected / 1024,
        rss_published / 1024,
        rss_max / 1024,
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        feed_closed,
        CLIENTS / 20,
        "every stalled feed client got 4008"
    );
    assert_eq!(
        state_latest,
        CLIENTS / 20,
        "every stalled state client ended on the latest state"
    );
    assert_eq!(
        slow_counted,
        (CLIENTS / 20) as f64,
        "slow consumers counted: the stalled feed clients only"
    );
    assert!(conflated > 0.0, "stalled state clients were conflated");
    assert!(
        rss_max < RSS_BOUND_KIB,
        "hub RSS peaked at {} MiB (bound {} MiB)",
        rss_max / 1024,
        RSS_BOUND_KIB / 1024
    );
}

// ---------------------------------------------------------------------------
// b. Drain with 5,000 clients and two nodes
// ---------------------------------------------------------------------------

const DRAIN_TOPIC: &str = "live.drain.feed";
const DRAIN_CLIENTS: usize = 5000;
const WINDOW_MS: u64 = 3000;
const RETRY_MS: u64 = 1000;
/// Publications per second during the drain: 100,000 deliveries a second to
/// 5,000 clients. Measured on the shared 2-core machine: at 50/s the test's
/// own 5,000 clients (not the hubs) take most of the CPU and the move takes
/// some 19 s instead of 5; at 100/s they fall so far behind that node B
/// rightly closes some with 4008. `RELIABILITY_DRAIN_RATE` overrides it.
const RATE: u64 = 20;
/// Most publications the editor makes (bounds the loop).
const MAX_PUBLICATIONS: u64 = 6000;
/// Share of all reconnects allowed in any one 100 ms bucket.
const MAX_BUCKET_SHARE: f64 = 0.25;
/// Beyond window + retry: the time a loaded machine may need to reconnect.
const MOVE_SLACK: Duration = Duration::from_secs(60);

fn drain_config() -> String {
    format!(
        // Every client comes from this one machine: the per-address share
        // and the handshake rates of the edge would stand for a real crowd
        // of addresses.
        "[limits]\n\
         handshakes_per_second = 100000\n\
         handshakes_burst = 100000\n\
         node_handshakes_per_second = 100000\n\
         node_handshakes_burst = 100000\n\
         address_share_percent = 100\n\
         [drain]\n\
         window_ms = {WINDOW_MS}\n\
         grace_ms = 10000\n\
         retry_ms = {RETRY_MS}\n\
         [namespaces.live]\n\
         mode = \"feed\"\n\
         retained = 2000\n"
    )
}

/// What one drained client saw.
#[derive(Default)]
struct Moved {
    /// `seq` of its subscription's ack on node A.
    start: u64,
    /// Every message received, on A then on B.
    seqs: Vec<u64>,
    drain_retry_ms: Option<u64>,
    close_on_a: Option<Option<u16>>,
    /// When it began to reconnect, and when B acknowledged the resume,
    /// from SIGTERM.
    reconnect_at: Option<Duration>,
    resumed_at: Option<Duration>,
    recovered: Option<bool>,
    /// Handshakes to B that failed and were retried.
    retries: u32,
    error: Option<String>,
}

struct DrainShared {
    a: SocketAddr,
    b: SocketAddr,
    connecting: Semaphore,
    subscribed: AtomicUsize,
    moved: AtomicUsize,
    term: watch::Receiver<Option<Instant>>,
    last: watch::Receiver<Option<u64>>,
}

/// Reads messages until the connection closes, or until `last` is reached.
async fn follow(
    ws: &mut Ws,
    report: &mut Moved,
    prev: &mut u64,
    last: &mut watch::Receiver<Option<u64>>,
    on_a: bool,
) -> Result<Option<Option<u16>>, String> {
    for _ in 0..MAX_PUBLICATIONS + 10 {
        if !on_a && last.borrow().is_some_and(|l| *prev >= l) {
            return Ok(None);
        }
        // On A the first frames may wait for every client to connect.
        let within = if on_a {
            Duration::from_secs(180)
        } else {
            FRAME_WITHIN
        };
        let frame = tokio::select! {
            f = next_frame(ws, within) => f?,
            _ = last.changed(), if !on_a => continue,
        };
        match frame {
            Frame::Message(s, text) => {
                if report.seqs.is_empty() {
                    check_scan(&text, &s)?;
                }
                if s.prev != *prev || s.seq <= *prev {
                    return Err(format!(
                        "on {}: seq {} prev {} after {prev}",
                        if on_a { "A" } else { "B" },
                        s.seq,
                        s.prev
                    ));
                }
                *prev = s.seq;
                report.seqs.push(s.seq);
            }
            Frame::Other(v) if on_a && v["type"] == "drain" => {
                report.drain_retry_ms = v["retry_ms"].as_u64();
            }
            Frame::Other(v) => return Err(format!("unexpected frame {v}")),
            Frame::Closed(code) => return Ok(Some(code)),
        }
    }
    Err("more frames than were published".into())
}

async fn drain_client(idx: usize, shared: Arc<DrainShared>) -> Moved {
    let mut report = Moved::default();
    let mut last = shared.last.clone();
    let mut term = shared.term.clone();
    let run = async {
        let permit = shared
            .connecting
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let mut ws = connect(shared.a, None, 4096).await?;
        expect_frame(&mut ws, "welcome").await?;
        send(
            &mut ws,
            json!({"type": "subscribe", "id": 1, "topic": DRAIN_TOPIC}),
        )
        .await?;
        let ack = expect_frame(&mut ws, "ack").await?;
        drop(permit);
        let epoch = ack["epoch"]
            .as_str()
            .ok_or("ack without epoch")?
            .to_string();
        report.start = ack["seq"].as_u64().ok_or("ack without seq")?;
        let mut prev = report.start;
        shared.subscribed.fetch_add(1, Ordering::SeqCst);

        let close = follow(&mut ws, &mut report, &mut prev, &mut last, true).await?;
        report.close_on_a = close;
        drop(ws);
        let term_at = *term
            .wait_for(Option::is_some)
            .await
            .map_err(|_| "test gone".to_string())?;
        let term_at = term_at.ok_or("no SIGTERM instant")?;
        // Reconnect after a random delay in [0, retry_ms), as `drain` says.
        let retry_ms = report.drain_retry_ms.unwrap_or(RETRY_MS);
        let delay = splitmix(idx as u64) % retry_ms.max(1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        report.reconnect_at = Some(term_at.elapsed());
        let mut ws = loop {
            match connect(shared.b, None, 4096).await {
                Ok(ws) => break ws,
                Err(e) if report.retries >= 20 => {
                    return Err(format!("node B refused 20 times: {e}"));
                }
                Err(_) => {
                    report.retries += 1;
                    let backoff = 50 + splitmix(idx as u64 + u64::from(report.retries)) % 200;
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
            }
        };
        expect_frame(&mut ws, "welcome").await?;
        let resume = json!({
            "type": "subscribe", "id": 2, "topic": DRAIN_TOPIC, "since": prev, "epoch": epoch,
        });
        send(&mut ws, resume).await?;
        let ack = expect_frame(&mut ws, "ack").await?;
        report.resumed_at = Some(term_at.elapsed());
        report.recovered = ack["recovered"].as_bool();
        shared.moved.fetch_add(1, Ordering::SeqCst);
        if report.recovered != Some(true) {
            // Same epoch, nothing aged out: PROTOCOL.md section 3 owes `true`.
            return Err(format!(
                "resume on B since {prev}: recovered {}, ack seq {}",
                ack["recovered"], ack["seq"]
            ));
        }
        match follow(&mut ws, &mut report, &mut prev, &mut last, false).await? {
            None => {
                let _ = ws.close(None).await;
                Ok(())
            }
            Some(code) => Err(format!("node B closed the connection ({code:?})")),
        }
    };
    if let Err(e) = run.await {
        report.error = Some(e);
    }
    report
}

/// The editor: `RATE` JetStream publications a second with `Nats-Msg-Id`
/// until `stop`; the stored seqs, in order, and how long it published.
///
/// It runs on its own thread and runtime, so that 5,000 clients on the
/// test's runtime do not slow its clock. Acks are awaited in a second task,
/// in order (one connection, one stream: publications stay ordered), so that
/// a slow ack does not hold the next publication back.
fn editor(url: &str, stop: &AtomicBool, rate: u64) -> (Vec<u64>, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("editor runtime");
    runtime.block_on(async {
        let js =
            async_nats::jetstream::new(async_nats::connect(url).await.expect("editor connects"));
        let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
        let acker = tokio::spawn(async move {
            let mut seqs = Vec::new();
            while let Some(ack) = acks_rx.recv().await {
                let ack: async_nats::jetstream::context::PublishAckFuture = ack;
                seqs.push(ack.await.expect("stored").sequence);
            }
            seqs
        });
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0..MAX_PUBLICATIONS {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            tick.tick().await;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("drain-{n}").as_str());
            let payload = Bytes::from(json!({"n": n}).to_string());
            let ack = js
                .publish_with_headers(format!("tribune.fan.{DRAIN_TOPIC}"), headers, payload)
                .await
                .expect("publish");
            acks_tx.send(ack).expect("acker runs");
        }
        let publishing = started.elapsed();
        drop(acks_tx);
        let seqs = tokio::time::timeout(Duration::from_secs(30), acker)
            .await
            .expect("every publication acknowledged within 30 s")
            .expect("acker");
        (seqs, publishing)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_5000_clients_to_the_other_node() {
    let _alone = HEAVY.lock().await;
    let clients: usize = std::env::var("RELIABILITY_DRAIN_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DRAIN_CLIENTS);
    let rate: u64 = std::env::var("RELIABILITY_DRAIN_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RATE);
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(&drain_config());
    let url = nats.url();
    let mut a = Hub::start(&[
        "--config",
        cfg.path(),
        "--nats",
        &url,
        "--node-name",
        "hub-a",
    ])
    .await;
    let b = Hub::start(&[
        "--config",
        cfg.path(),
        "--nats",
        &url,
        "--node-name",
        "hub-b",
    ])
    .await;

    let (term_tx, term_rx) = watch::channel(None);
    let (last_tx, last_rx) = watch::channel(None);
    let shared = Arc::new(DrainShared {
        a: a.addr(),
        b: b.addr(),
        connecting: Semaphore::new(100),
        subscribed: AtomicUsize::new(0),
        moved: AtomicUsize::new(0),
        term: term_rx,
        last: last_rx,
    });
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(drain_client(i, shared.clone())))
        .collect();
    wait_for(
        "every client subscribed on A",
        Duration::from_secs(120),
        || shared.subscribed.load(Ordering::SeqCst) == clients,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; {} subscribed",
            shared.subscribed.load(Ordering::SeqCst)
        )
    });
    let connected_in = t0.elapsed();

    // The editor publishes through JetStream all along, with Nats-Msg-Id.
    let stop = Arc::new(AtomicBool::new(false));
    let editor = std::thread::spawn({
        let (stop, url) = (stop.clone(), url.clone());
        move || editor(&url, &stop, rate)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let term_at = Instant::now();
    a.terminate();
    term_tx.send(Some(term_at)).unwrap();
    let window = Duration::from_millis(WINDOW_MS + RETRY_MS) + MOVE_SLACK;
    let moved = wait_for("every client resumed on B", window, || {
        shared.moved.load(Ordering::SeqCst) == clients
    })
    .await;
    let moved_in = term_at.elapsed();
    // Keep publishing a little after the last move, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let (published, publishing) = tokio::task::spawn_blocking(move || editor.join())
        .await
        .expect("join")
        .expect("editor thread");
    let final_seq = *published.last().expect("published something");
    last_tx.send(Some(final_seq)).unwrap();

    let mut reports = Vec::new();
    for task in tasks {
        let r = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("client finishes")
            .expect("client task");
        reports.push(r);
    }
    let cpu = format!(
        "CPU used: test process {:.1} s, node A {:.1} s, node B {:.1} s",
        cpu_seconds(std::process::id()).unwrap_or(0.0),
        a.pid().and_then(cpu_seconds).unwrap_or(0.0),
        b.pid().and_then(cpu_seconds).unwrap_or(0.0),
    );
    let a_status = a.wait(Duration::from_secs(15)).await;

    // Figures: the reconnect spread, in 100 ms buckets from SIGTERM.
    let mut buckets = std::collections::BTreeMap::<u128, usize>::new();
    for r in &reports {
        if let Some(at) = r.reconnect_at {
            *buckets.entry(at.as_millis() / 100).or_default() += 1;
        }
    }
    let max_bucket = buckets.values().copied().max().unwrap_or(0);
    let last_resume = reports.iter().filter_map(|r| r.resumed_at).max();
    let retries: u32 = reports.iter().map(|r| r.retries).sum();
    let delivered: usize = reports.iter().map(|r| r.seqs.len()).sum();
    println!(
        "drain: {clients} clients subscribed on A in {connected_in:.1?}; \
         {} publications in {publishing:.1?} (target {rate}/s); \
         all resumed on B {moved_in:.1?} after SIGTERM (last ack {last_resume:.1?}); \
         handshake retries {retries}; {delivered} messages delivered; \
         node A exit {a_status:?}",
        published.len()
    );
    println!("{cpu}");
    println!("reconnects per 100 ms after SIGTERM (bucket start ms: count):");
    for (bucket, count) in &buckets {
        println!(
            "  {:>5}: {count:>5} {}",
            bucket * 100,
            "#".repeat(count.div_ceil(10))
        );
    }
    println!(
        "largest bucket: {max_bucket} of {clients} ({:.1}%)",
        100.0 * max_bucket as f64 / clients as f64
    );

    let mut failures = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let expected: Vec<u64> = published.iter().copied().filter(|s| *s > r.start).collect();
        let problem = if let Some(e) = &r.error {
            Some(e.clone())
        } else if r.drain_retry_ms != Some(RETRY_MS) {
            Some(format!("drain frame {:?}", r.drain_retry_ms))
        } else if r.close_on_a != Some(Some(1001)) {
            Some(format!("closed on A with {:?}, not 1001", r.close_on_a))
        } else if r.recovered != Some(true) {
            Some(format!("resume on B: recovered {:?}", r.recovered))
        } else if r.resumed_at.is_none_or(|at| at > window) {
            Some(format!("resumed at {:?}, beyond {window:?}", r.resumed_at))
        } else if r.seqs != expected {
            Some(format!(
                "{} messages, expected {}",
                r.seqs.len(),
                expected.len()
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!("client {i}: {p}"));
        }
    }
    let shown: Vec<&String> = failures.iter().take(20).collect();
    assert!(
        failures.is_empty(),
        "{} of {clients} clients failed, first ones:\n{shown:#?}",
        failures.len()
    );
    moved.unwrap();
    assert!(
        (max_bucket as f64) <= MAX_BUCKET_SHARE * clients as f64,
        "reconnects bunched: {max_bucket} of {clients} in one 100 ms bucket"
    );
    let status = a_status.expect("node A exits within 15 s of SIGTERM");
    assert!(status.success(), "node A exit status {status:?}");
}
