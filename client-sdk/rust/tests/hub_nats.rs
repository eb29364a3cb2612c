//! The SDK and the editors' `Publisher` against real hubs on a real
//! nats-server (JetStream): publish and receive, exactly-once delivery across
//! a hub restart, a takeover by a second node and a drain, the explicit gap
//! when retention ran out while the hub was away, and the hub's `gap` frame
//! when the bus removed messages while the hub's link to it was cut.
//!
//! Needs `target/debug/tribune-hub` and nats-server 2.11+ (`scripts/install-nats`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tribune_client::{
    Client, ConnectionEvent, DisconnectReason, Event, MsgIds, PublishErrorKind, Publisher,
    Subscription,
};
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::{NatsServer, TcpProxy};
use tribune_tests::{Hub, eventually};

const WAIT: Duration = Duration::from_secs(10);

/// A feed namespace deep enough that a few seconds of outage at 100 msg/s
/// stay retained, and a fast drain.
const CONFIG: &str = "[namespaces.live]\nmode = \"feed\"\nretained = 2000\n\
                      [drain]\nwindow_ms = 100\nretry_ms = 1000\ngrace_ms = 5000\n";

async fn hub(nats: &NatsServer, cfg: &ConfigFile, name: &str) -> Hub {
    Hub::start(&[
        "--nats",
        &nats.url(),
        "--config",
        cfg.path(),
        "--node-name",
        name,
    ])
    .await
}

async fn next_event(sub: &mut Subscription) -> Event {
    timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{}: no event within {WAIT:?}", sub.topic()))
        .expect("stream open")
}

async fn next_message(sub: &mut Subscription) -> (u64, Value) {
    loop {
        match next_event(sub).await {
            Event::Message(m) => return (m.seq, serde_json::from_str(m.data.get()).unwrap()),
            Event::Stats(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Publishes `{"n": 0..count}` at 100 messages a second; returns the seqs.
fn feed(
    publisher: Publisher,
    topic: &'static str,
    count: usize,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut seqs = Vec::with_capacity(count);
        for n in 0..count {
            tick.tick().await;
            let stored = publisher
                .publish(topic, &json!({ "n": n }))
                .await
                .expect("publish to the stream");
            seqs.push(stored.seq);
        }
        seqs
    })
}

/// Receives messages until `count` arrived, failing on a gap or a duplicate;
/// returns (seq, n) in arrival order. Stops early after `pause_after`
/// messages to let the caller inject a fault, once.
struct Collector {
    got: Vec<(u64, u64)>,
}

impl Collector {
    fn new() -> Self {
        Self { got: Vec::new() }
    }

    async fn until(&mut self, sub: &mut Subscription, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.got.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = timeout(left, sub.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("only {} of {count} messages within 30 s", self.got.len())
                })
                .expect("stream open");
            match event {
                Event::Message(m) => {
                    let data: Value = serde_json::from_str(m.data.get()).unwrap();
                    self.got.push((m.seq, data["n"].as_u64().unwrap()));
                }
                Event::Stats(_) => {}
                other => panic!("after {} messages: {other:?}", self.got.len()),
            }
        }
    }

    /// Every message exactly once, in order, with the seq the stream gave it.
    fn assert_exactly_once(&self, published: &[u64]) {
        let ns: Vec<u64> = self.got.iter().map(|(_, n)| *n).collect();
        let expected: Vec<u64> = (0..published.len() as u64).collect();
        assert_eq!(ns, expected, "payloads out of order, lost or repeated");
        let seqs: Vec<u64> = self.got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, published, "seqs differ from what the stream stored");
    }
}

/// Records connection events with their instant, in the background.
fn record(client: &Client) -> Arc<Mutex<Vec<(Instant, ConnectionEvent)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut events = client.events();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            sink.lock().unwrap().push((Instant::now(), e));
        }
    });
    log
}

#[tokio::test]
async fn publisher_to_fans_through_the_stream() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(CONFIG);
    let hub = hub(&nats, &cfg, "n1").await;
    let client = Client::connect(hub.ws_url()).await.unwrap();
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    let topic = "clips.sdk.publisher";
    let mut sub = client.subscribe(topic).await.unwrap();

    let clip = json!({"kind": "clip", "id": "c-1", "title": "Final lap"});
    let first = publisher.publish(topic, &clip).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.attempts, 1);
    assert_eq!(next_message(&mut sub).await, (first.seq, clip.clone()));

    // An explicit id makes a repeat of the same publication a no-op: stored
    // once, answered with the first seq, not delivered twice.
    let bytes = serde_json::to_vec(&clip).unwrap();
    let explicit = publisher
        .publish_with_id(topic, bytes.clone(), "c-1-once")
        .await
        .unwrap();
    assert!(explicit.seq > first.seq && !explicit.duplicate);
    assert_eq!(next_message(&mut sub).await, (explicit.seq, clip.clone()));
    let rerun = publisher
        .publish_with_id(topic, bytes, "c-1-once")
        .await
        .unwrap();
    assert_eq!((rerun.seq, rerun.duplicate), (explicit.seq, true));
    // Payloads arrive byte for byte.    // Payloads arrive byte for byte.
    let raw = "{ \"spacing\" :  [1, 2.50] }";
    let stored = publisher.publish_json(topic, raw).await.unwrap();
    match next_event(&mut sub).await {
        Event::Message(m) => assert_eq!((m.seq, m.data.get()), (stored.seq, raw)),
        other => panic!("{other:?}"),
    }

    // Refused before anything is sent.
    let kind =
        |r: Result<tribune_client::Published, tribune_client::PublishError>| r.unwrap_err().kind();
    assert_eq!(
        kind(publisher.publish_json("clips.sdk.*", "{}").await),
        PublishErrorKind::InvalidTopic
    );
    assert_eq!(
        kind(publisher.publish_json(topic, "{\"a\":").await),
        PublishErrorKind::InvalidJson
    );
    let big = format!("\"{}\"", "x".repeat(tribune_client::MAX_PAYLOAD_BYTES));
    assert_eq!(
        kind(publisher.publish_json(topic, big).await),
        PublishErrorKind::PayloadTooLarge
    );
    // No stream takes another prefix.
    let elsewhere = Publisher::builder()
        .prefix("nope")
        .connect(&nats.url())
        .await
        .unwrap();
    assert_eq!(
        kind(elsewhere.publish_json(topic, "{}").await),
        PublishErrorKind::NoStream
    );
}

/// Issue 15: `live`, `paused`, `live` on a board are three updates. With ids
/// derived from content the third was answered as a duplicate of the first
/// and never reached the fans.
#[tokio::test]
async fn the_same_payload_published_twice_is_stored_and_delivered_twice() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(CONFIG);
    let hub = hub(&nats, &cfg, "n1").await;
    let client = Client::connect(hub.ws_url()).await.unwrap();
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    let topic = "results.sdk.status";
    let mut sub = client.subscribe(topic).await.unwrap();

    let live = json!({"status": "live"});
    let paused = json!({"status": "paused"});
    let mut seqs = Vec::new();
    for data in [&live, &paused, &live] {
        let stored = publisher.publish(topic, data).await.unwrap();
        assert!(!stored.duplicate, "{stored:?}");
        seqs.push(stored.seq);
        assert_eq!(next_message(&mut sub).await, (stored.seq, data.clone()));
    }
    assert!(seqs[0] < seqs[1] && seqs[1] < seqs[2], "{seqs:?}");
    // The same bytes through publish_json: a new publication again.
    let raw = publisher
        .publish_json(topic, r#"{"status":"live"}"#)
        .await
        .unwrap();
    assert!(raw.seq > seqs[2] && !raw.duplicate);
    assert_eq!(next_message(&mut sub).await, (raw.seq, live.clone()));

    // Content-derived ids only when asked for: then the repeat is not stored.
    let by_content = Publisher::builder()
        .msg_ids(MsgIds::FromContent)
        .connect(&nats.url())
        .await
        .unwrap();
    let once = by_content.publish(topic, &paused).await.unwrap();
    assert_eq!(
        once.msg_id,
        tribune_client::content_message_id(topic, &serde_json::to_vec(&paused).unwrap())
    );
    assert_eq!(next_message(&mut sub).await, (once.seq, paused.clone()));
    let again = by_content.publish(topic, &paused).await.unwrap();
    assert_eq!((again.seq, again.duplicate), (once.seq, true));
    // Nothing more reached the fan: the next message is the next publication.
    let last = publisher.publish(topic, &live).await.unwrap();
    assert_eq!(next_message(&mut sub).await, (last.seq, live));
}

#[tokio::test]
async fn hub_restart_during_a_feed_loses_and_repeats_nothing() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(CONFIG);
    let mut hub = hub(&nats, &cfg, "n1").await;
    let client = Client::builder(hub.ws_url())
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let events = record(&client);
    const TOPIC: &str = "live.sdk.restart";
    let mut sub = client.subscribe(TOPIC).await.unwrap();
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    let publishing = feed(publisher, TOPIC, 300);

    let mut got = Collector::new();
    got.until(&mut sub, 60).await;
    hub.restart().await;
    got.until(&mut sub, 300).await;
    let published = publishing.await.unwrap();
    got.assert_exactly_once(&published);

    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, ConnectionEvent::Disconnected { .. })),
        "the hub restart was not noticed: {events:?}"
    );
    assert!(
        events.iter().any(|(_, e)| matches!(
            e,
            ConnectionEvent::Resumed {
                subscriptions: 1,
                recovered: 1,
                gaps: 0,
                ..
            }
        )),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_second_node_takes_over_without_loss() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(CONFIG);
    let mut a = hub(&nats, &cfg, "node-a").await;
    let b = hub(&nats, &cfg, "node-b").await;
    let client = Client::builder(a.ws_url())
        .url(b.ws_url())
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.node().as_deref(), Some("node-a"));
    const TOPIC: &str = "live.sdk.takeover";
    let mut sub = client.subscribe(TOPIC).await.unwrap();
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    let publishing = feed(publisher, TOPIC, 300);

    let mut got = Collector::new();
    got.until(&mut sub, 60).await;
    a.kill().await;
    got.until(&mut sub, 300).await;
    let published = publishing.await.unwrap();
    got.assert_exactly_once(&published);
    assert_eq!(client.node().as_deref(), Some("node-b"));
}

#[tokio::test]
async fn drain_moves_the_client_within_retry_ms() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(CONFIG);
    let mut a = hub(&nats, &cfg, "node-a").await;
    let b = hub(&nats, &cfg, "node-b").await;
    // A backoff this slow would show: only the drain path reconnects quickly.
    let client = Client::builder(a.ws_url())
        .url(b.ws_url())
        .backoff(Duration::from_secs(20), Duration::from_secs(20))
        .connect()
        .await
        .unwrap();
    let events = record(&client);
    const TOPIC: &str = "live.sdk.drain";
    let mut sub = client.subscribe(TOPIC).await.unwrap();
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    let publishing = feed(publisher, TOPIC, 300);

    let mut got = Collector::new();
    got.until(&mut sub, 60).await;
    a.terminate();
    got.until(&mut sub, 300).await;
    let published = publishing.await.unwrap();
    got.assert_exactly_once(&published);
    let status = a
        .wait(Duration::from_secs(10))
        .await
        .expect("the drained hub exits");
    assert!(status.success(), "{status:?}");

    let events = events.lock().unwrap();
    let (drained_at, reconnect_in) = events
        .iter()
        .find_map(|(at, e)| match e {
            ConnectionEvent::Draining {
                retry_ms,
                reconnect_in,
            } => {
                assert_eq!(*retry_ms, 1000);
                Some((*at, *reconnect_in))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no drain seen: {events:?}"));
    assert!(reconnect_in < Duration::from_millis(1000));
    let connected_at = events
        .iter()
        .find_map(|(at, e)| match e {
            ConnectionEvent::Connected { node, .. } if node == "node-b" => Some(*at),
            _ => None,
        })
        .unwrap_or_else(|| panic!("never moved to node-b: {events:?}"));
    let moved = connected_at - drained_at;
    assert!(
        moved < Duration::from_millis(1000 + 500),
        "moved after {moved:?}"
    );
    assert!(
        moved + Duration::from_millis(100) >= reconnect_in,
        "moved after {moved:?}, before {reconnect_in:?}"
    );
    let reasons: Vec<&DisconnectReason> = events
        .iter()
        .filter_map(|(_, e)| match e {
            ConnectionEvent::Disconnected { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{events:?}");
    assert!(
        matches!(
            reasons[0],
            DisconnectReason::Closed { code: 1001, .. } | DisconnectReason::Drained
        ),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn retention_run_out_while_the_hub_was_down_is_a_gap() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new("[namespaces.tiny]\nmode = \"feed\"\nretained = 3\n");
    let mut hub = Hub::start(&["--nats", &nats.url(), "--config", cfg.path()]).await;
    let client = Client::builder(hub.ws_url())
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let topic = "tiny.sdk.gap";
    let mut sub = client.subscribe(topic).await.unwrap();
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    let mut seqs = Vec::new();
    for n in 0..2 {
        seqs.push(
            publisher
                .publish(topic, &json!({ "n": n }))
                .await
                .unwrap()
                .seq,
        );
    }
    assert_eq!(next_message(&mut sub).await.0, seqs[0]);
    assert_eq!(next_message(&mut sub).await.0, seqs[1]);

    hub.kill().await;
    for n in 2..12 {
        seqs.push(
            publisher
                .publish(topic, &json!({ "n": n }))
                .await
                .unwrap()
                .seq,
        );
    }
    hub.restart().await;
    match next_event(&mut sub).await {
        Event::Gap {
            after_seq,
            epoch_changed,
            ..
        } => {
            assert_eq!(after_seq, seqs[1]);
            assert!(!epoch_changed, "the stream is the same");
        }
        other => panic!("expected Gap after {}, got {other:?}", seqs[1]),
    }
    let live = publisher
        .publish(topic, &json!({"n": 12}))
        .await
        .unwrap()
        .seq;
    assert_eq!(next_message(&mut sub).await, (live, json!({"n": 12})));
}

#[tokio::test]
async fn messages_removed_from_the_bus_while_the_link_was_cut_are_an_announced_gap() {
    let nats = NatsServer::start().await;
    // The hub reaches NATS through a proxy that the test cuts; the fan's
    // websocket and the editor are not behind it.
    let proxy = TcpProxy::start(&nats.url()).await;
    // Every namespace retains 3 (no time window: the built-in `clips` one
    // would keep what this test needs removed), so the stream keeps 4 per
    // subject and removes older messages while the hub is away.
    let cfg = ConfigFile::new(
        "[namespaces.results]\nmode = \"state\"\nretained = 3\n\
         [namespaces.clips]\nmode = \"feed\"\nretained = 3\nretained_secs = 0\n\
         [bus]\nrequest_timeout_ms = 1000\nping_interval_ms = 500\n",
    );
    let hub = Hub::start(&["--nats", &proxy.url(), "--config", cfg.path()]).await;
    let client = Client::builder(hub.ws_url()).connect().await.unwrap();
    let topic = "clips.sdk.hole";
    let mut sub = client.subscribe(topic).await.unwrap();
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    let mut seqs = Vec::new();
    for n in 0..12 {
        if n == 2 {
            proxy.cut();
            eventually(
                "/readyz 503 while the hub's link to NATS is cut",
                WAIT,
                || async { (hub.get("/readyz").await.0 == 503).then_some(()) },
            )
            .await;
        }
        let seq = publisher
            .publish(topic, &json!({ "n": n }))
            .await
            .unwrap()
            .seq;
        seqs.push(seq);
        if n < 2 {
            assert_eq!(next_message(&mut sub).await.0, seq);
        }
    }
    proxy.restore();
    let before = match next_event(&mut sub).await {
        Event::Gap {
            after_seq,
            before_seq: Some(before),
            epoch_changed: false,
            ..
        } => {
            assert_eq!(after_seq, seqs[1]);
            before
        }
        other => panic!("expected the hub's gap after {}, got {other:?}", seqs[1]),
    };
    // The bus kept the last 4: what follows the gap is them, in order, the
    // first one whatever the `prev` the bus gave it.
    let kept = seqs
        .iter()
        .position(|s| *s == before)
        .expect("before is a seq");
    assert!(
        kept > 2,
        "the hole holds removed messages: {before} in {seqs:?}"
    );
    for &seq in &seqs[kept..] {
        assert_eq!(next_message(&mut sub).await.0, seq);
    }
}

#[tokio::test]
async fn cli_publishes_on_nats_and_tails_it_back() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(CONFIG);
    let hub = hub(&nats, &cfg, "n1").await;
    let bin = env!("CARGO_BIN_EXE_tribune");
    let run = |args: Vec<String>| async move {
        let out = timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(bin)
                .args(&args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("tribune finished")
        .expect("tribune ran");
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let topic = "results.sdk.cli";
    let client = Client::connect(hub.ws_url()).await.unwrap();
    let mut sub = client.subscribe(topic).await.unwrap();
    let publish = |data: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "publish".into(),
            topic.into(),
            "--data".into(),
            data.into(),
            "--nats".into(),
            nats.url(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run(args)
    };
    // The issue's sequence: three updates, three seqs, the fan sees all three.
    let mut seqs = Vec::new();
    for data in [
        r#"{"status":"live"}"#,
        r#"{"status":"paused"}"#,
        r#"{"status":"live"}"#,
    ] {
        let (code, stdout, stderr) = publish(data, &[]).await;
        assert_eq!(code, Some(0), "{stderr}");
        let seq: u64 = stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("one seq expected, got {stdout:?}"));
        assert_eq!(
            next_message(&mut sub).await,
            (seq, serde_json::from_str(data).unwrap())
        );
        seqs.push(seq);
    }
    assert!(seqs[0] < seqs[1] && seqs[1] < seqs[2], "{seqs:?}");

    // On request, the id comes from the content: the repeat is a duplicate,
    // said on stdout and explained on stderr.
    let (code, stdout, stderr) = publish(r#"{"status":"final"}"#, &["--id-from-content"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let final_seq: u64 = stdout.trim().parse().unwrap();
    let (code, stdout, stderr) = publish(r#"{"status":"final"}"#, &["--id-from-content"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), format!("{final_seq} (duplicate)"));
    assert!(stderr.contains("nothing new published"), "{stderr}");
    // An explicit id too.
    let (code, stdout, stderr) = publish(r#"{"status":"final"}"#, &["--id", "board-final"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let explicit: u64 = stdout.trim().parse().unwrap();
    assert!(explicit > final_seq);
    let (code, stdout, _) = publish(r#"{"status":"final"}"#, &["--id", "board-final"]).await;
    assert_eq!(
        (code, stdout.trim()),
        (Some(0), &*format!("{explicit} (duplicate)"))
    );
    let (code, _, stderr) =
        publish(r#"{"status":"final"}"#, &["--id", "x", "--id-from-content"]).await;
    assert_eq!(code, Some(2), "{stderr}");

    let (code, stdout, stderr) = run(vec![
        "tail".into(),
        topic.into(),
        "--url".into(),
        hub.ws_url(),
        "--history".into(),
        "1".into(),
        "--count".into(),
        "1".into(),
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        format!("{topic} #{explicit} {{\"status\":\"final\"}}\n")
    );
}

#[tokio::test]
async fn publisher_retries_after_a_lost_ack_store_once() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(CONFIG);
    let hub = hub(&nats, &cfg, "n1").await;
    let client = Client::connect(hub.ws_url()).await.unwrap();
    let topic = "clips.sdk.retry";
    let mut sub = client.subscribe(topic).await.unwrap();
    let publisher = Publisher::builder()
        .ack_timeout(Duration::from_millis(200))
        .attempts(30)
        .connect(&nats.url())
        .await
        .unwrap();
    // A hung server: the first attempts time out, then it answers them all.
    nats.pause();
    let started = Instant::now();
    let publishing = {
        let publisher = publisher.clone();
        tokio::spawn(async move { publisher.publish(topic, &json!({"n": 1})).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.resume();
    let stored = timeout(WAIT, publishing)
        .await
        .unwrap()
        .unwrap()
        .expect("published after retries");
    // It outlasted several 200 ms attempts: it was retried, every attempt
    // with the one id made for this publication. The stream stored the first
    // attempt and answered the last as a duplicate of it, which is this
    // publication's own copy, not an earlier publication.
    assert!(stored.attempts > 1, "{stored:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{stored:?}"
    );
    assert!(!stored.duplicate, "{stored:?}");
    assert_eq!(next_message(&mut sub).await, (stored.seq, json!({"n": 1})));
    // Stored once: no other copy took a seq, and the next publication is the
    // next message fans see.
    let next = publisher.publish(topic, &json!({"n": 2})).await.unwrap();
    assert_eq!(next.seq, stored.seq + 1, "a retry was stored twice");
    assert_eq!(next_message(&mut sub).await, (next.seq, json!({"n": 2})));
}
