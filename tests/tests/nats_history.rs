//! Issue 19, history by time: real nats-server, two real hubs, real
//! websocket fans and an editor publishing with JetStream.
//!
//! - A `clips` fan away for 4 minutes at 2 msg/s resumes `recovered: true`,
//!   on the other node and on its own. Time is compressed 60 times: a test
//!   second stands for a minute. The namespace keeps `retained_secs = 5`
//!   (5 minutes) at `expected_rate = 150` (2 msg/s × 60, with headroom as
//!   the built-in 10 has over 2); the fan is away 4 s while 480 messages
//!   (4 min × 2 msg/s, all of them) are stored. The count, `retained =
//!   100`, is far below 480, so only the time window can recover the fan:
//!   a second namespace with the same traffic and the count alone is the
//!   control and must answer `recovered: false`.
//! - Paging `GET /v1/history` from the newest to the oldest returns every
//!   retained message once, in order, on both nodes (one serving fans from
//!   its relay, one opening a relay for the request); a subscribe's
//!   `history` reaches as deep.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tribune_tests::editor::Editor;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsServer;
use tribune_tests::{Hub, WsClient};

/// Messages the fan misses: 4 minutes at 2 msg/s.
const AWAY_MESSAGES: usize = 480;

/// The fan's absence: 4 minutes, compressed 60 times.
const AWAY: Duration = Duration::from_secs(4);

/// `clips`: the time window at 60×; `counted`: the same count, no window;
/// `paged`: a window longer than the paging test. The deepest namespace is
/// `clips` (750 messages), so the stream keeps 751 per subject.
fn config() -> ConfigFile {
    ConfigFile::new(
        "[bus]\nrequest_timeout_ms = 2000\ncheck_interval_ms = 500\n\
         [limits]\nhandshakes_per_second = 100000\n\
         [namespaces.clips]\nmode = \"feed\"\nretained = 100\nretained_secs = 5\nexpected_rate = 150\n\
         [namespaces.counted]\nmode = \"feed\"\nretained = 100\n\
         [namespaces.paged]\nmode = \"feed\"\nretained = 40\nretained_secs = 120\nexpected_rate = 5\n",
    )
}

/// A fan skipping `stats` frames.
async fn fan(hub: &Hub) -> WsClient {
    WsClient::connect(&hub.ws_url()).await.0.without_stats()
}

/// Publishes `n` messages to each of `topics`, paced over `over`, each
/// retried until acked (ids unique per `phase`); the stored seqs per topic,
/// in order.
async fn publish_paced(
    editor: &Arc<Editor>,
    phase: &'static str,
    topics: &[&'static str],
    n: usize,
    over: Duration,
) -> Vec<Vec<u64>> {
    let pace = over / n as u32;
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = Vec::with_capacity(n * topics.len());
    for i in 0..n {
        tick.tick().await;
        for topic in topics {
            let editor = editor.clone();
            let topic = *topic;
            tasks.push((
                topic,
                tokio::spawn(async move {
                    editor
                        .publish(
                            topic,
                            &format!("{{\"n\":{i}}}"),
                            &format!("{topic}-{phase}-{i}"),
                        )
                        .await
                }),
            ));
        }
    }
    let mut out = vec![Vec::new(); topics.len()];
    for (topic, task) in tasks {
        let at = topics.iter().position(|t| *t == topic).unwrap();
        out[at].push(task.await.expect("publication"));
    }
    for seqs in &mut out {
        seqs.sort_unstable();
    }
    out
}

/// Reads `message` frames of `topic` until `want` is held (or 20 s):
/// (seq, prev, replay) in arrival order.
async fn collect(c: &mut WsClient, topic: &str, want: &[u64]) -> Vec<(u64, u64, bool)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got: Vec<(u64, u64, bool)> = Vec::new();
    while got.last().map(|m| m.0) != want.last().copied() && Instant::now() < deadline {
        let Some(v) = c.try_recv(Duration::from_secs(1)).await else {
            continue;
        };
        assert_eq!(v["type"], "message", "only messages, no gap: {v}");
        assert_eq!(v["topic"], topic);
        got.push((
            v["seq"].as_u64().unwrap(),
            v["prev"].as_u64().unwrap(),
            v["replay"] == json!(true),
        ));
    }
    got
}

/// Every seq of `want` once, in order, `prev` chaining from `first_prev`.
fn assert_exact(got: &[(u64, u64, bool)], want: &[u64], first_prev: u64, who: &str) {
    let seqs: Vec<u64> = got.iter().map(|m| m.0).collect();
    assert_eq!(seqs, want, "{who}: every missed message once, in order");
    let mut prev = first_prev;
    for &(seq, p, _) in got {
        assert_eq!(p, prev, "{who}: prev chain at {seq}");
        prev = seq;
    }
}

#[tokio::test]
async fn a_clips_fan_away_four_minutes_at_two_per_second_recovers() {
    let server = NatsServer::start().await;
    let cfg = config();
    let hub_a = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let hub_b = Hub::on_nats(&server.url(), &cfg, "hub-b").await;
    let editor = Arc::new(Editor::connect(&server.url()).await);
    let (timed, counted) = ("clips.e2e.away", "counted.e2e.away");

    // The stream holds the window in messages: 5 s × 150 = 750, plus the
    // oldest one's predecessor.
    let info = editor.api("$JS.API.STREAM.INFO.TRIBUNE").await;
    assert_eq!(
        info["config"]["max_msgs_per_subject"],
        json!(751),
        "the stream covers retained_secs × expected_rate: {info}"
    );

    // Two fans on A (one leaves, one stays, so A's relay keeps following
    // the topic while the first is away) and a fan on A for the control.
    let mut leaver = fan(&hub_a).await;
    let mut stayer = fan(&hub_a).await;
    let mut control = fan(&hub_a).await;
    let ack = leaver.subscribe(timed, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    stayer.subscribe(timed, json!({})).await;
    let control_ack = control.subscribe(counted, json!({})).await;
    assert_eq!(control_ack["epoch"], json!(epoch));

    let before = publish_paced(
        &editor,
        "before",
        &[timed, counted],
        20,
        Duration::from_millis(500),
    )
    .await;
    let got = collect(&mut leaver, timed, &before[0]).await;
    assert_exact(&got, &before[0], 0, "before leaving");
    let since = *before[0].last().unwrap();
    let got = collect(&mut control, counted, &before[1]).await;
    assert_exact(&got, &before[1], 0, "control before leaving");
    let control_since = *before[1].last().unwrap();
    drop(leaver);
    drop(control);

    // Away: 480 messages on each topic, paced over the 4 compressed minutes.
    let started = Instant::now();
    let missed = publish_paced(&editor, "away", &[timed, counted], AWAY_MESSAGES, AWAY).await;
    let away = started.elapsed();
    assert!(
        away < Duration::from_secs(5),
        "the machine stored 4 compressed minutes in {away:?}: past the 5 s window, \
         the test would not be measuring the hub"
    );
    assert_eq!(missed[0].len(), AWAY_MESSAGES);

    // Back on the other node (no relay there yet: its history load reads
    // the stream) and on the same node (a relay that trimmed as it went).
    for (hub, who) in [(&hub_b, "resumed on B"), (&hub_a, "resumed on A")] {
        let mut back = fan(hub).await;
        let ack = back
            .subscribe(timed, json!({"since": since, "epoch": epoch}))
            .await;
        assert_eq!(ack["recovered"], json!(true), "{who}: {ack}");
        let got = collect(&mut back, timed, &missed[0]).await;
        assert_exact(&got, &missed[0], since, who);
        assert!(got.iter().all(|m| m.2), "{who}: replayed");
    }
    // The stayer on A got them live, nothing twice.
    let got = collect(&mut stayer, timed, &missed[0]).await;
    let tail: Vec<_> = got
        .iter()
        .copied()
        .filter(|m| m.0 > since)
        .collect::<Vec<_>>();
    assert_exact(&tail, &missed[0], since, "the fan that stayed");

    // The control: the count alone (100) cannot cover 480 missed messages.
    let mut back = fan(&hub_b).await;
    let ack = back
        .subscribe(counted, json!({"since": control_since, "epoch": epoch}))
        .await;
    assert_eq!(
        ack["recovered"],
        json!(false),
        "count retention alone loses the fan: {ack}"
    );
}

/// Every page of `topic` on `hub`, newest first as requested, `limit` each;
/// the seqs in the order the pages give them, oldest first overall. Checks
/// every page's shape and that no seq of `never` appears.
async fn page_through(
    http: &reqwest::Client,
    hub: &Hub,
    topic: &str,
    limit: usize,
    never: &BTreeSet<u64>,
) -> (String, Vec<(u64, u64, String)>) {
    let mut pages: Vec<Vec<(u64, u64, String)>> = Vec::new();
    let mut before: Option<u64> = None;
    let mut epoch;
    // Bounded: at most this many pages for the few hundred retained.
    for _ in 0..50 {
        let mut url = format!("{}/v1/history?topic={topic}&limit={limit}", hub.http_url());
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let res = http.get(&url).send().await.expect("GET /v1/history");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let page: Value = res.json().await.expect("a JSON page");
        assert_eq!(page["topic"], topic);
        epoch = page["epoch"].as_str().unwrap().to_string();
        let messages = page["messages"].as_array().unwrap();
        assert!(messages.len() <= limit, "{page}");
        let mut this = Vec::new();
        for m in messages {
            assert_eq!(m["type"], "message", "no hole on this topic: {m}");
            assert_eq!(m["replay"], json!(true));
            let seq = m["seq"].as_u64().unwrap();
            assert!(before.is_none_or(|b| seq < b), "older than before");
            assert!(!never.contains(&seq), "{seq} must never be served");
            this.push((seq, m["prev"].as_u64().unwrap(), m["data"].to_string()));
        }
        pages.push(this);
        match page["before"].as_u64() {
            Some(b) => {
                assert_eq!(Some(b), pages.last().unwrap().first().map(|m| m.0));
                before = Some(b);
            }
            None => {
                assert!(page["before"].is_null(), "{page}");
                pages.reverse();
                return (epoch, pages.into_iter().flatten().collect());
            }
        }
    }
    panic!("paging {topic} did not end");
}

#[tokio::test]
async fn paging_history_returns_every_retained_message_once_on_both_nodes() {
    let server = NatsServer::start().await;
    let cfg = config();
    let hub_a = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let hub_b = Hub::on_nats(&server.url(), &cfg, "hub-b").await;
    let editor = Arc::new(Editor::connect(&server.url()).await);
    let http = reqwest::Client::new();
    let topic = "paged.e2e.history";

    // A fan on A: its relay serves the pages there; B opens one for them.
    let mut watcher = fan(&hub_a).await;
    watcher.subscribe(topic, json!({})).await;
    // 230 messages within the 120 s window, above the count (40): all of
    // them are retained (the depth is 600).
    let stored = publish_paced(&editor, "paged", &[topic], 230, Duration::from_millis(1500))
        .await
        .remove(0);
    let got = collect(&mut watcher, topic, &stored).await;
    assert_eq!(got.len(), stored.len(), "A's relay holds everything");

    // What no page may ever hold (another part of issue 19 fills it).
    let never = BTreeSet::new();
    let mut epochs = BTreeSet::new();
    for (hub, who) in [(&hub_a, "A"), (&hub_b, "B")] {
        for limit in [100, 7] {
            let (epoch, all) = page_through(&http, hub, topic, limit, &never).await;
            epochs.insert(epoch);
            let seqs: Vec<u64> = all.iter().map(|m| m.0).collect();
            assert_eq!(
                seqs, stored,
                "{who}, pages of {limit}: every one once, in order"
            );
            let mut prev = 0;
            for (i, (seq, p, data)) in all.iter().enumerate() {
                assert_eq!(*p, prev, "{who}: prev chain at {seq}");
                assert_eq!(data, &format!("{{\"n\":{i}}}"), "{who}: payload of {seq}");
                prev = *seq;
            }
        }
    }
    assert_eq!(epochs.len(), 1, "one epoch on both nodes: {epochs:?}");

    // A subscribe's `history` reaches as deep as the retention, not the count.
    let mut late = fan(&hub_b).await;
    late.subscribe(topic, json!({"history": 500})).await;
    let got = collect(&mut late, topic, &stored).await;
    assert_exact(&got, &stored, 0, "history replay on B");

    // A page before the oldest is empty, and says there is nothing older.
    let url = format!(
        "{}/v1/history?topic={topic}&before={}",
        hub_b.http_url(),
        stored[0]
    );
    let page: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["messages"], json!([]));
    assert_eq!(page["before"], Value::Null);

    // An editor retracts a message (PROTOCOL.md section 13): no page holds
    // it again, on the node whose fan saw the retraction live, on the other
    // (its history relay lingers or reads the marker anew), and on a node
    // started after it; the marker is no message either.
    let retracted = stored[100];
    let marker = editor.retract(topic, retracted).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let frame = watcher
            .try_recv(Duration::from_millis(500))
            .await
            .unwrap_or(Value::Null);
        if frame["type"] == "retract" {
            assert_eq!(frame["seq"], json!(retracted), "{frame}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's fan never got the retraction"
        );
    }
    let never = BTreeSet::from([retracted, marker]);
    let kept: Vec<u64> = stored.iter().copied().filter(|s| *s != retracted).collect();
    let hub_c = Hub::on_nats(&server.url(), &cfg, "hub-c").await;
    for (hub, who) in [(&hub_a, "A"), (&hub_b, "B"), (&hub_c, "C, started after")] {
        for limit in [100, 7] {
            let (_, all) = page_through(&http, hub, topic, limit, &never).await;
            let seqs: Vec<u64> = all.iter().map(|m| m.0).collect();
            assert_eq!(seqs, kept, "{who}, pages of {limit}: all but the retracted");
        }
    }
}
