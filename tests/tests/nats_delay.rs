//! The spoiler shield (PROTOCOL.md section 13) on real hubs over a real
//! NATS, two nodes: a fan subscribed with `delay_ms` 30,000 gets every
//! message 30 s (± 0.5 s) after a live fan on the other node, in order,
//! none lost, none before its `ts` + 30 s, also across a resume with
//! `since` on another node half-way; a `delay_ms` out of range is an
//! error. The 30 s are kept, not compressed: the test mostly waits
//! (one run takes about 35 s of wall time and next to no CPU).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::time::Instant;
use tribune_tests::editor::Editor;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsServer;
use tribune_tests::{Hub, WsClient};

const DELAY_MS: u64 = 30_000;
const TOLERANCE_MS: i64 = 500;
const COUNT: usize = 10;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// When each message arrived: seq → (instant, wall clock ms, `ts`, `prev`).
type Arrivals = BTreeMap<u64, (Instant, u64, u64, u64)>;

/// Reads `fan`'s frames of `topic` until `count` messages arrived or
/// `within` passed; only `message` (and `stats`) frames are expected.
async fn arrivals(fan: &mut WsClient, topic: &str, count: usize, within: Duration) -> Arrivals {
    let deadline = Instant::now() + within;
    let mut got = Arrivals::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = fan.try_recv(left).await else {
            break;
        };
        let (at, wall) = (Instant::now(), now_ms());
        match frame["type"].as_str() {
            Some("stats") => continue,
            Some("message") => {}
            _ => panic!("unexpected frame: {frame}"),
        }
        assert_eq!(frame["topic"], topic);
        let seq = frame["seq"].as_u64().unwrap();
        let (ts, prev) = (
            frame["ts"].as_u64().unwrap(),
            frame["prev"].as_u64().unwrap(),
        );
        assert!(
            got.insert(seq, (at, wall, ts, prev)).is_none(),
            "seq {seq} twice"
        );
    }
    got
}

#[tokio::test]
async fn a_delayed_fan_gets_everything_thirty_seconds_late_and_never_early() {
    let server = NatsServer::start().await;
    let cfg = ConfigFile::new(
        "[bus]\nrequest_timeout_ms = 1000\ncheck_interval_ms = 500\n\
         [namespaces.clips]\nmode = \"feed\"\nretained = 100\n",
    );
    let hub_a = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let hub_b = Hub::on_nats(&server.url(), &cfg, "hub-b").await;
    let editor = Editor::connect(&server.url()).await;
    let topic = "clips.e2e.spoiler";

    // Out of range: a clear error, the connection stays.
    let (mut wrong, _) = WsClient::connect(&hub_b.ws_url()).await;
    let refused = wrong
        .request(json!({"type": "subscribe", "topic": topic, "delay_ms": 120_001}))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "bad_request", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("delay_ms"),
        "{refused}"
    );

    let (mut live, _) = WsClient::connect(&hub_a.ws_url()).await;
    let (mut delayed, _) = WsClient::connect(&hub_b.ws_url()).await;
    live.subscribe(topic, json!({})).await;
    let started = Instant::now();
    let ack = delayed
        .subscribe(topic, json!({"delay_ms": DELAY_MS}))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the ack is immediate"
    );
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    assert_eq!(hub_b.metric("tribune_delay_lines").await, 1.0);

    let publisher = tokio::spawn(async move {
        let mut seqs = Vec::new();
        for i in 0..COUNT {
            seqs.push(
                editor
                    .publish(topic, &format!("{{\"goal\":{i}}}"), &format!("g{i}"))
                    .await,
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        seqs
    });
    let now = arrivals(&mut live, topic, COUNT, Duration::from_secs(15)).await;
    let seqs = publisher.await.unwrap();
    assert_eq!(now.keys().copied().collect::<Vec<_>>(), seqs);

    // Half of them, then the delayed fan moves to the other node and
    // resumes where it was, still 30 s behind.
    let mut late = arrivals(
        &mut delayed,
        topic,
        COUNT / 2,
        Duration::from_millis(DELAY_MS + 10_000),
    )
    .await;
    assert_eq!(late.len(), COUNT / 2, "{late:?}");
    let since = *late.keys().last().unwrap();
    drop(delayed);
    let (mut resumed, _) = WsClient::connect(&hub_a.ws_url()).await;
    let ack = resumed
        .subscribe(
            topic,
            json!({"since": since, "epoch": epoch, "delay_ms": DELAY_MS}),
        )
        .await;
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    late.extend(
        arrivals(
            &mut resumed,
            topic,
            COUNT - COUNT / 2,
            Duration::from_secs(15),
        )
        .await,
    );

    assert_eq!(
        late.keys().copied().collect::<Vec<_>>(),
        seqs,
        "none lost, none twice"
    );
    let mut prev = None;
    let mut spread = (i64::MAX, i64::MIN);
    for (seq, (at, wall, ts, frame_prev)) in &late {
        let (live_at, ..) = now[seq];
        let behind = at.duration_since(live_at).as_millis() as i64;
        spread = (spread.0.min(behind), spread.1.max(behind));
        assert!(
            (behind - DELAY_MS as i64).abs() <= TOLERANCE_MS,
            "seq {seq}: {behind} ms after the live fan"
        );
        assert!(
            *wall >= ts + DELAY_MS,
            "seq {seq} early: at {wall}, ts {ts}"
        );
        if let Some(prev) = prev {
            assert_eq!(*frame_prev, prev, "prev chain at {seq}");
        }
        prev = Some(*seq);
    }
    eprintln!(
        "delayed fan behind the live fan: {} to {} ms over {COUNT} messages (D = {DELAY_MS} ms)",
        spread.0, spread.1
    );
}
