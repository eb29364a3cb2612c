//! The real hub binary on a real NATS (`tribune-hub --nats <url>`), end to
//! end: editors publish with plain async-nats to `tribune.fan.<topic>`, fans
//! read websockets, and every guarantee of PROTOCOL.md section 5 holds
//! through resumes on another node, retried publications, a SIGKILLed
//! nats-server, a cut link, a recreated stream, a cluster leader's death and a
//! subscribe storm.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tribune_tests::editor::Editor;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::{NatsCluster, NatsServer, TcpProxy};
use tribune_tests::{Hub, WsClient, eventually};

/// Short bus intervals so that faults are noticed quickly (`check_ms`: the
/// periodic last-sequence check), `extra` `[bus]` lines, and no handshake
/// rate limit in the way of many clients from one address.
fn config(check_ms: u64, extra: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "[bus]\nrequest_timeout_ms = 1000\nping_interval_ms = 500\ncheck_interval_ms = {check_ms}\n{extra}\n\
         [limits]\nhandshakes_per_second = 100000\n"
    ))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A `message` frame as the fan saw it, with its payload's raw text.
#[derive(Debug, Clone)]
struct Received {
    seq: u64,
    prev: u64,
    ts: u64,
    replay: bool,
    raw_data: String,
}

/// The next text frame, raw; panics on a close or after `within`.
async fn recv_raw(c: &mut WsClient, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.stream.next())
            .await
            .ok()??
        {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Close(frame)) => panic!("closed by the hub: {frame:?}"),
            Ok(_) => continue,
            Err(e) => panic!("websocket error: {e}"),
        }
    }
}

/// Reads the next `message` frame of `topic` (skipping `stats`).
async fn next_message(c: &mut WsClient, topic: &str, within: Duration) -> Option<Received> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = recv_raw(
            c,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await?;
        let v: Value = serde_json::from_str(&text).expect("frames are JSON");
        if v["type"] == "stats" {
            continue;
        }
        assert_eq!(v["type"], "message", "{text}");
        assert_eq!(v["topic"], topic, "{text}");
        let marker = "\"data\":";
        let at = text.find(marker).expect("a data field");
        let raw_data = text[at + marker.len()..text.len() - 1].to_string();
        return Some(Received {
            seq: v["seq"].as_u64().unwrap(),
            prev: v["prev"].as_u64().unwrap(),
            ts: v["ts"].as_u64().unwrap(),
            replay: v["replay"] == json!(true),
            raw_data,
        });
    }
}

/// Reads messages until `want` seqs were seen (or `within` passed).
async fn collect(
    c: &mut WsClient,
    topic: &str,
    want: &BTreeSet<u64>,
    within: Duration,
) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_message(c, topic, left).await {
            Some(m) => {
                seen.insert(m.seq);
                got.push(m);
            }
            None => break,
        }
    }
    got
}

/// Every acked seq exactly once, in order, each `prev` the seq before it.
fn assert_exactly_once_in_order(
    got: &[Received],
    acked: &BTreeSet<u64>,
    first_prev: u64,
    who: &str,
) {
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    let want: Vec<u64> = acked.iter().copied().collect();
    assert_eq!(seqs, want, "{who}: every message exactly once, in order");
    let mut prev = first_prev;
    for m in got {
        assert_eq!(m.prev, prev, "{who}: prev chain at {}", m.seq);
        prev = m.seq;
    }
}

async fn ready_status(hub: &Hub) -> u16 {
    hub.get("/readyz").await.0
}

#[tokio::test]
async fn editors_publish_on_nats_and_fans_get_every_byte() {
    let server = NatsServer::start().await;
    let cfg = config(500, "");
    let hub = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let editor = Editor::connect(&server.url()).await;
    let topic = "clips.e2e.bytes";

    // A state topic with history before anyone subscribes: replay with exact prev.
    let mut state = Vec::new();
    for i in 0..4 {
        state.push(
            editor
                .publish(
                    "results.e2e.bytes",
                    &format!("{{\"v\":{i}}}"),
                    &format!("s{i}"),
                )
                .await,
        );
    }
    let (mut fan, _) = WsClient::connect(&hub.ws_url()).await;
    let ack = fan
        .subscribe("results.e2e.bytes", json!({"history": 2}))
        .await;
    assert_eq!(ack["seq"], json!(state[3]));
    let r1 = next_message(&mut fan, "results.e2e.bytes", Duration::from_secs(5))
        .await
        .unwrap();
    let r2 = next_message(&mut fan, "results.e2e.bytes", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r1.replay && r2.replay);
    assert_eq!(
        (r1.seq, r1.prev, r2.seq, r2.prev),
        (state[2], state[1], state[3], state[2])
    );
    assert_eq!(r2.raw_data, "{\"v\":3}");

    let ack = fan.subscribe(topic, json!({})).await;
    assert_eq!(ack["seq"], json!(0), "nothing stored on the feed topic yet");
    let payloads = [
        "{\"a\":1}",
        "{ \"spaced\" : [1, 2,\t3],\n \"é\": \"\\u00e9\" }",
        "[]",
        "{not json",
        "\"a string\"",
        "12.50",
    ];
    let before = now_ms();
    let mut acked = BTreeSet::new();
    for (i, p) in payloads.iter().enumerate() {
        let seq = editor.publish(topic, p, &format!("m{i}")).await;
        if !p.starts_with("{not") {
            acked.insert(seq);
        }
    }
    // A retried publication (same Nats-Msg-Id) is stored once and reaches fans once.
    let first = editor.publish(topic, payloads[0], "m0").await;
    assert_eq!(
        first,
        *acked.first().unwrap(),
        "the retry answers the first seq"
    );
    let marker = editor.publish(topic, "{\"marker\":true}", "marker").await;
    acked.insert(marker);
    let after = now_ms();

    let got = collect(&mut fan, topic, &acked, Duration::from_secs(10)).await;
    // The invalid payload is dropped and the chain skips it (prev is what the fan had).
    assert_exactly_once_in_order(&got, &acked, 0, "fan");
    let valid: Vec<&str> = payloads
        .iter()
        .filter(|p| !p.starts_with("{not"))
        .copied()
        .collect();
    for (m, p) in got
        .iter()
        .zip(valid.iter().chain(["{\"marker\":true}"].iter()))
    {
        assert_eq!(m.raw_data, *p, "payload byte for byte");
        assert!(!m.replay);
        assert!(
            m.ts + 1_000 >= before && m.ts <= after + 1_000,
            "ts is the storage time: {}",
            m.ts
        );
    }
    fan.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_fan_resumes_on_another_node_with_exactly_what_it_missed() {
    let server = NatsServer::start().await;
    let cfg = config(500, "");
    let hub_a = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let hub_b = Hub::on_nats(&server.url(), &cfg, "hub-b").await;
    let editor = Editor::connect(&server.url()).await;
    let topic = "clips.e2e.resume";

    let (mut fan, welcome) = WsClient::connect(&hub_a.ws_url()).await;
    assert_eq!(welcome["node"], "hub-a");
    let ack = fan.subscribe(topic, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    assert!(epoch.starts_with("TRIBUNE@"), "{epoch}");
    let mut seen = BTreeSet::new();
    for i in 0..3 {
        seen.insert(
            editor
                .publish(topic, &format!("{{\"i\":{i}}}"), &format!("r{i}"))
                .await,
        );
    }
    let got = collect(&mut fan, topic, &seen, Duration::from_secs(10)).await;
    assert_exactly_once_in_order(&got, &seen, 0, "fan on A");
    let since = *seen.last().unwrap();
    drop(fan);

    let mut missed = BTreeSet::new();
    for i in 3..7 {
        missed.insert(
            editor
                .publish(topic, &format!("{{\"i\":{i}}}"), &format!("r{i}"))
                .await,
        );
    }
    let (mut fan, welcome) = WsClient::connect(&hub_b.ws_url()).await;
    assert_eq!(welcome["node"], "hub-b");
    let ack = fan
        .subscribe(topic, json!({"since": since, "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    assert_eq!(ack["epoch"], json!(epoch), "one epoch across nodes");
    let got = collect(&mut fan, topic, &missed, Duration::from_secs(10)).await;
    assert_exactly_once_in_order(&got, &missed, since, "fan resumed on B");
    assert!(got.iter().all(|m| m.replay));
    let live = editor.publish(topic, "{\"i\":7}", "r7").await;
    let m = next_message(&mut fan, topic, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (m.seq, m.prev, m.replay),
        (live, *missed.last().unwrap(), false)
    );

    // A resume from another epoch, or from the future, is not a recovery.
    let (mut other, _) = WsClient::connect(&hub_b.ws_url()).await;
    let ack = other
        .subscribe(topic, json!({"since": since, "epoch": "TRIBUNE@1"}))
        .await;
    assert_eq!(ack["recovered"], json!(false), "{ack}");
}

/// Publishes `count` messages at about `per_second`, retrying each until
/// acked; returns the acked seqs. `progress` counts acked ones.
fn feed(
    editor: Arc<Editor>,
    topic: &'static str,
    tag: &'static str,
    count: usize,
    progress: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<BTreeSet<u64>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut acked = BTreeSet::new();
        for i in 0..count {
            tick.tick().await;
            acked.insert(
                editor
                    .publish(topic, &format!("{{\"n\":{i}}}"), &format!("{tag}-{i}"))
                    .await,
            );
            progress.fetch_add(1, Ordering::SeqCst);
        }
        acked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_nats_server_loses_no_message() {
    let mut server = NatsServer::start().await;
    let cfg = config(500, "");
    let hub = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let topic = "clips.e2e.sigkill";
    let mut fans = Vec::new();
    for _ in 0..4 {
        let (mut fan, _) = WsClient::connect(&hub.ws_url()).await;
        let ack = fan.subscribe(topic, json!({})).await;
        assert_eq!(ack["seq"], json!(0));
        fans.push(fan);
    }
    let editor = Arc::new(Editor::connect(&server.url()).await);
    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = feed(editor, topic, "k", 300, progress.clone());

    eventually(
        "100 messages published",
        Duration::from_secs(20),
        || async { (progress.load(Ordering::SeqCst) >= 100).then_some(()) },
    )
    .await;
    server.kill();
    eventually(
        "/readyz says 503 while NATS is down",
        Duration::from_secs(10),
        || async { (ready_status(&hub).await == 503).then_some(()) },
    )
    .await;
    server.restart().await;
    eventually(
        "/readyz says 200 again",
        Duration::from_secs(15),
        || async { (ready_status(&hub).await == 200).then_some(()) },
    )
    .await;
    let acked = publisher.await.unwrap();
    assert_eq!(acked.len(), 300, "every publication stored once");
    for (i, fan) in fans.iter_mut().enumerate() {
        let got = collect(fan, topic, &acked, Duration::from_secs(20)).await;
        assert_exactly_once_in_order(&got, &acked, 0, &format!("fan {i}"));
    }
    assert!(hub.metric("tribune_bus_reconnects_total").await >= 1.0);
    eprintln!(
        "sigkill: gaps repaired {}, history requests {}",
        hub.metric("tribune_gaps_repaired_total").await,
        hub.metric("tribune_history_requests_total").await
    );
}

#[tokio::test]
async fn a_topic_that_moved_while_the_link_was_cut_is_repaired_without_a_new_message() {
    let server = NatsServer::start().await;
    let proxy = TcpProxy::start(&server.url()).await;
    // The periodic check is far away: the repair must come from the reconnect.
    let cfg = config(600_000, "");
    let hub = Hub::on_nats(&proxy.url(), &cfg, "hub-a").await;
    let editor = Editor::connect(&server.url()).await;
    let topic = "clips.e2e.cut";
    let (mut fan, _) = WsClient::connect(&hub.ws_url()).await;
    fan.subscribe(topic, json!({})).await;
    let mut all = BTreeSet::new();
    for i in 0..2 {
        all.insert(
            editor
                .publish(topic, &format!("{{\"i\":{i}}}"), &format!("c{i}"))
                .await,
        );
    }
    let got = collect(&mut fan, topic, &all, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);

    proxy.cut();
    eventually(
        "/readyz 503 while the link is cut",
        Duration::from_secs(10),
        || async { (ready_status(&hub).await == 503).then_some(()) },
    )
    .await;
    let mut missed = BTreeSet::new();
    for i in 2..5 {
        missed.insert(
            editor
                .publish(topic, &format!("{{\"i\":{i}}}"), &format!("c{i}"))
                .await,
        );
    }
    proxy.restore();
    // The topic's consumer outlived the cut: once the hub listens again it
    // delivers what was stored meanwhile. (A delivery lost in the cut would
    // show as a gap in its sequence: the hub would read it from the stream,
    // as it does after the check that follows a reconnect.)
    let got = collect(&mut fan, topic, &missed, Duration::from_secs(15)).await;
    assert_exactly_once_in_order(&got, &missed, *all.last().unwrap(), "fan after the cut");
}

#[tokio::test]
async fn a_recreated_stream_is_a_new_epoch_and_old_positions_do_not_recover() {
    let server = NatsServer::start().await;
    let cfg = config(300, "");
    let hub = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let editor = Editor::connect(&server.url()).await;
    let topic = "clips.e2e.epoch";
    let (mut fan, _) = WsClient::connect(&hub.ws_url()).await;
    let ack = fan.subscribe(topic, json!({})).await;
    let old_epoch = ack["epoch"].as_str().unwrap().to_string();
    let mut seen = BTreeSet::new();
    for i in 0..2 {
        seen.insert(
            editor
                .publish(topic, &format!("{{\"i\":{i}}}"), &format!("e{i}"))
                .await,
        );
    }
    collect(&mut fan, topic, &seen, Duration::from_secs(10)).await;
    let since = *seen.last().unwrap();

    let deleted = editor.api("$JS.API.STREAM.DELETE.TRIBUNE").await;
    assert_eq!(deleted["success"], json!(true), "{deleted}");
    // The hub owns the stream: it recreates it and reports the new epoch.
    let new_epoch = eventually("a new epoch in acks", Duration::from_secs(15), || async {
        // Until the stream is back, a subscription may be answered `unavailable`.
        let (mut probe, _) = WsClient::connect(&hub.ws_url()).await;
        let answer = probe
            .request(json!({"type": "subscribe", "topic": "clips.e2e.probe"}))
            .await;
        let epoch = answer["epoch"].as_str().unwrap_or_default().to_string();
        (answer["type"] == "ack" && epoch != old_epoch).then_some(epoch)
    })
    .await;
    let (mut resumed, _) = WsClient::connect(&hub.ws_url()).await;
    let ack = resumed
        .subscribe(topic, json!({"since": since, "epoch": old_epoch}))
        .await;
    assert_eq!(ack["recovered"], json!(false), "{ack}");
    assert_eq!(ack["epoch"], json!(new_epoch), "{ack}");
    let seq = editor.publish(topic, "{\"after\":true}", "e-new").await;
    assert_eq!(seq, 1, "the new stream's sequence starts again");
    let m = next_message(&mut resumed, topic, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((m.seq, m.prev), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_of_a_3_node_cluster_loses_nothing() {
    let mut cluster = NatsCluster::start(3).await;
    let cfg = config(500, "replicas = 3");
    // Hub A knows every node; it creates the R3 stream.
    let hub_a = Hub::on_nats(&cluster.urls(), &cfg, "hub-a").await;
    let editor = Arc::new(Editor::connect(&cluster.urls()).await);
    let info = editor.api("$JS.API.STREAM.INFO.TRIBUNE").await;
    assert_eq!(info["config"]["num_replicas"], json!(3), "{info}");
    let leader = info["cluster"]["leader"]
        .as_str()
        .expect("a stream leader")
        .to_string();
    let index = cluster.index_of(&leader).expect("leader is one of ours");
    // Hub B is given the leader's node only: it loses its connection with the
    // leader and must find the others (from the server's INFO) by itself.
    let hub_b = Hub::on_nats(&cluster.url(index), &cfg, "hub-b").await;
    let topic = "clips.e2e.cluster";
    let mut fans = Vec::new();
    for hub in [&hub_a, &hub_a, &hub_b, &hub_b] {
        let (mut fan, _) = WsClient::connect(&hub.ws_url()).await;
        fan.subscribe(topic, json!({})).await;
        fans.push(fan);
    }
    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = feed(editor.clone(), topic, "l", 300, progress.clone());
    eventually(
        "100 messages published",
        Duration::from_secs(20),
        || async { (progress.load(Ordering::SeqCst) >= 100).then_some(()) },
    )
    .await;
    cluster.kill(index);
    let acked = publisher.await.unwrap();
    assert_eq!(acked.len(), 300);
    let info = editor.api("$JS.API.STREAM.INFO.TRIBUNE").await;
    assert_ne!(
        info["cluster"]["leader"],
        json!(leader),
        "a new leader took over"
    );
    for (i, fan) in fans.iter_mut().enumerate() {
        let got = collect(fan, topic, &acked, Duration::from_secs(20)).await;
        assert_exactly_once_in_order(&got, &acked, 0, &format!("fan {i}"));
    }
    assert!(
        hub_b.metric("tribune_bus_reconnects_total").await >= 1.0,
        "hub B moved to another node"
    );
    for hub in [&hub_a, &hub_b] {
        eprintln!(
            "leader killed: gaps repaired {}, history requests {}, bus reconnects {}",
            hub.metric("tribune_gaps_repaired_total").await,
            hub.metric("tribune_history_requests_total").await,
            hub.metric("tribune_bus_reconnects_total").await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_storm_costs_a_handful_of_history_reads() {
    let server = NatsServer::start().await;
    let cfg = config(500, "");
    let hub = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let editor = Editor::connect(&server.url()).await;
    let topic = "results.e2e.storm";
    let mut last = 0;
    for i in 0..20 {
        last = editor
            .publish(topic, &format!("{{\"score\":{i}}}"), &format!("st{i}"))
            .await;
    }
    let clients = 2_000;
    let mut fans = Vec::with_capacity(clients);
    for chunk in 0..clients / 200 {
        let url = hub.ws_url();
        let batch = futures::future::join_all((0..200).map(|_| {
            let url = url.clone();
            async move { WsClient::connect(&url).await.0 }
        }))
        .await;
        fans.extend(batch);
        assert_eq!(fans.len(), (chunk + 1) * 200);
    }
    let before = hub.metric("tribune_history_requests_total").await;
    let failed = Arc::new(AtomicBool::new(false));
    let latest = Arc::new(Mutex::new(Vec::<(u64, u64, String)>::new()));
    // Every client subscribes at once (within a second), then reads its state.
    let results = futures::future::join_all(fans.iter_mut().map(|fan| {
        let failed = failed.clone();
        let latest = latest.clone();
        async move {
            let ack = fan.subscribe(topic, json!({})).await;
            let m = next_message(fan, topic, Duration::from_secs(20)).await;
            match m {
                Some(m) => {
                    latest
                        .lock()
                        .unwrap()
                        .push((ack["seq"].as_u64().unwrap(), m.seq, m.raw_data))
                }
                None => failed.store(true, Ordering::SeqCst),
            }
        }
    }))
    .await;
    assert_eq!(results.len(), clients);
    assert!(
        !failed.load(Ordering::SeqCst),
        "every client got the latest state"
    );
    let latest = latest.lock().unwrap().clone();
    assert_eq!(latest.len(), clients);
    let want = (last, last, "{\"score\":19}".to_string());
    assert!(
        latest.iter().all(|l| *l == want),
        "every client: ack seq, replayed seq, payload = {want:?}"
    );
    let reads = hub.metric("tribune_history_requests_total").await - before;
    eprintln!("storm: {clients} subscriptions, {reads} history requests");
    assert!(
        reads <= 5.0,
        "{reads} history requests for {clients} subscriptions"
    );
}
