//! Regions (PROTOCOL.md section 10 "Regions", k8s/README.md "Regions"): two
//! real nats-servers as two regions (JetStream domains `A` and `B`, B a leaf
//! node of A), the stream `TRIBUNE` in A, B's hub creating and reading the
//! mirror `TRIBUNE_B`, one real hub in each region, real websocket fans.
//!
//! - an editor publishes in A (and through B's hub, forwarded to the
//!   origin); fans in A and B receive every message with the same `seq`,
//!   `prev` and `ts`, payload byte for byte, and the same epoch;
//! - a fan disconnected in A resumes in B with `since`/`epoch` and gets
//!   exactly the missed messages, `recovered: true`; and from B back to A;
//! - region A's server is killed: B's fans keep their connections, B's hub
//!   stays ready with its bus connected while publications fail; after
//!   `tribune-hub --promote-region` new publications reach B's fans, who
//!   resume under the promoted epoch with `recovered: true`;
//! - messages stored in A but never copied to B: after the promotion a
//!   resume beyond the copy is `recovered: false` (the new messages reuse
//!   those numbers), one within it recovers exactly;
//! - the audience of a topic watched in both regions adds up once;
//! - a hub of B started before its mirror ever learnt the origin's epoch is
//!   not ready (and a promotion refused) until the origin answers;
//! - region B runs with `nats/least-privilege-region.conf`: the stream Job
//!   creates the mirror, the hub user reads it, the stream administrator
//!   promotes it.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tribune_tests::editor::Editor;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsOptions;
use tribune_tests::region::Regions;
use tribune_tests::{Hub, WsClient, eventually};

const TOPIC: &str = "clips.regions.test";
/// `results` counts its audience (`clips` does not).
const WATCHED: &str = "results.regions.test";
/// Bound on anything crossing regions or a restart: correctness, not speed.
const SETTLE: Duration = Duration::from_secs(20);
const KEY: &str = "regions-stats-test-key-0123456789-abcdefgh";
const WINDOW_MS: u64 = 200;

/// Short bus intervals so that faults are noticed quickly; `extra`: `[bus]` lines.
fn config(extra: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "[bus]\nrequest_timeout_ms = 1000\nping_interval_ms = 500\ncheck_interval_ms = 300\n{extra}\n\
         [stats]\nwindow_ms = {WINDOW_MS}\nkey = \"{KEY}\"\n\
         [limits]\nhandshakes_per_second = 100000\n"
    ))
}

/// Region B's `[bus]`: its own mirror of A's stream, which the hub creates.
fn mirror_lines() -> String {
    format!(
        "stream = \"TRIBUNE_B\"\nmirror_of = \"TRIBUNE\"\nmirror_api = \"{}\"",
        Regions::a_api()
    )
}

/// Both regions with a hub each (A's first: it creates the stream).
struct World {
    hub_a: Hub,
    hub_b: Hub,
    regions: Regions,
    config_b: ConfigFile,
    _config_a: ConfigFile,
}

async fn world() -> World {
    let regions = Regions::start().await;
    let config_a = config("");
    let config_b = config(&mirror_lines());
    let hub_a = Hub::on_nats(&regions.a.url(), &config_a, "region-a-1").await;
    let hub_b = Hub::on_nats(&regions.b.url(), &config_b, "region-b-1").await;
    World {
        hub_a,
        hub_b,
        regions,
        config_b,
        _config_a: config_a,
    }
}

/// A `message` frame as the fan saw it, with its payload's raw text.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    seq: u64,
    prev: u64,
    ts: u64,
    raw_data: String,
}

/// What `next_frame` read: a message, another frame, or the socket's close code.
enum Frame {
    Message(Received),
    Other(Value),
    Closed(Option<u16>),
}

async fn next_frame(c: &mut WsClient, within: Duration) -> Option<Frame> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.stream.next())
            .await
            .ok()?
        {
            Some(Ok(Message::Text(t))) => {
                let text = t.to_string();
                let v: Value = serde_json::from_str(&text).expect("frames are JSON");
                if v["type"] != "message" {
                    return Some(Frame::Other(v));
                }
                let marker = "\"data\":";
                let at = text.find(marker).expect("a data field");
                return Some(Frame::Message(Received {
                    seq: v["seq"].as_u64().unwrap(),
                    prev: v["prev"].as_u64().unwrap(),
                    ts: v["ts"].as_u64().unwrap(),
                    raw_data: text[at + marker.len()..text.len() - 1].to_string(),
                }));
            }
            Some(Ok(Message::Close(frame))) => {
                return Some(Frame::Closed(frame.map(|f| u16::from(f.code))));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Some(Frame::Closed(None)),
        }
    }
}

/// Messages of the topic until every seq of `want` was seen; panics on a
/// close, or after `SETTLE` with what was read.
async fn collect(c: &mut WsClient, want: &BTreeSet<u64>) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut got: Vec<Received> = Vec::new();
    while !want.iter().all(|s| got.iter().any(|m| m.seq == *s)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(c, left).await {
            Some(Frame::Message(m)) => got.push(m),
            Some(Frame::Other(_)) => {}
            Some(Frame::Closed(code)) => panic!("closed ({code:?}) with {got:?}"),
            None => panic!("not every seq of {want:?} within {SETTLE:?}: {got:?}"),
        }
    }
    got
}

/// Exactly the seqs of `want`, each once, in order, each `prev` the one before.
fn assert_exactly(got: &[Received], want: &BTreeSet<u64>, first_prev: u64) {
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, want.iter().copied().collect::<Vec<_>>(), "{got:?}");
    let mut prev = first_prev;
    for m in got {
        assert_eq!(m.prev, prev, "{got:?}");
        prev = m.seq;
    }
}

async fn fan(hub: &Hub, extra: Value) -> (WsClient, Value) {
    let (mut c, _) = WsClient::connect(&hub.ws_url()).await;
    let ack = c.subscribe(TOPIC, extra).await;
    (c, ack)
}

async fn watcher(hub: &Hub) -> WsClient {
    let (mut c, _) = WsClient::connect(&hub.ws_url()).await;
    c.subscribe(WATCHED, json!({})).await;
    c
}

/// Nothing but `stats` for `within`: no close, no message.
async fn stays_open(c: &mut WsClient, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(c, left).await {
            None => return,
            Some(Frame::Other(v)) if v["type"] == "stats" => {}
            Some(Frame::Other(v)) => panic!("unexpected frame {v}"),
            Some(Frame::Message(m)) => panic!("unexpected message {m:?}"),
            Some(Frame::Closed(code)) => panic!("closed ({code:?})"),
        }
    }
}

/// `POST /v1/publish` on `hub`; (status, answer).
async fn publish_raw(hub: &Hub, data: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/publish", hub.internal_url()))
        .bearer_auth(hub.publish_key())
        .json(&json!({"topic": TOPIC, "data": data}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("publish request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `tribune-hub --promote-region` against region B, as the operator runs
/// it (k8s/README.md "Regions"); its exit success and stdout.
async fn promote(b_url: &str, config_b: &ConfigFile) -> (bool, String) {
    let out = tokio::process::Command::new(tribune_harness::binaries::hub_bin())
        .args([
            "--promote-region",
            "--nats",
            b_url,
            "--config",
            config_b.path(),
        ])
        .output()
        .await
        .expect("tribune-hub runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fans_in_both_regions_see_the_same_messages() {
    let w = world().await;
    let (mut fan_a, ack_a) = fan(&w.hub_a, json!({})).await;
    let (mut fan_b, ack_b) = fan(&w.hub_b, json!({})).await;
    assert_eq!(ack_a["epoch"], ack_b["epoch"], "one epoch in every region");
    for hub in [&w.hub_a, &w.hub_b] {
        assert_eq!(hub.metric("tribune_bus_writable").await, 1.0);
    }
    assert!(
        ack_a["epoch"].as_str().unwrap().starts_with("TRIBUNE@"),
        "{ack_a}"
    );

    let editor = Editor::connect(&w.regions.a.url()).await;
    let mut want = BTreeSet::new();
    for i in 0..20 {
        // Payloads as editors send them: spacing and key order kept.
        let data = format!("{{ \"i\": {i},\"clip\" :\"r{i}\\u00e9\" }}");
        want.insert(editor.publish(TOPIC, &data, &format!("m{i}")).await);
    }
    // Published through region B's hub: forwarded to the origin's stream.
    let (status, answer) = publish_raw(&w.hub_b, json!({"via": "b"})).await;
    assert_eq!(status, 200, "{answer}");
    want.insert(answer["seq"].as_u64().expect("seq"));

    let got_a = collect(&mut fan_a, &want).await;
    let got_b = collect(&mut fan_b, &want).await;
    assert_exactly(&got_a, &want, 0);
    assert_eq!(
        got_a, got_b,
        "same seq, prev, ts and payload in both regions"
    );
    assert!(got_b.last().unwrap().raw_data.contains("\"via\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_moves_between_regions_without_losing_anything() {
    let w = world().await;
    let editor = Editor::connect(&w.regions.a.url()).await;
    let (mut fan_a, ack) = fan(&w.hub_a, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let first: BTreeSet<u64> = [
        editor.publish(TOPIC, "{\"n\":1}", "n1").await,
        editor.publish(TOPIC, "{\"n\":2}", "n2").await,
    ]
    .into();
    collect(&mut fan_a, &first).await;
    drop(fan_a);

    // Missed while away, then resumed in region B.
    let mut missed = BTreeSet::new();
    for i in 3..=6 {
        missed.insert(
            editor
                .publish(TOPIC, &format!("{{\"n\":{i}}}"), &format!("n{i}"))
                .await,
        );
    }
    let since = *first.last().unwrap();
    let (mut fan_b, ack) = fan(&w.hub_b, json!({"since": since, "epoch": epoch})).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["epoch"], epoch.as_str(), "{ack}");
    let got = collect(&mut fan_b, &missed).await;
    assert_exactly(&got, &missed, since);
    drop(fan_b);

    // And back to region A.
    let mut missed_again = BTreeSet::new();
    for i in 7..=9 {
        missed_again.insert(
            editor
                .publish(TOPIC, &format!("{{\"n\":{i}}}"), &format!("n{i}"))
                .await,
        );
    }
    let since = *missed.last().unwrap();
    let (mut fan_a, ack) = fan(&w.hub_a, json!({"since": since, "epoch": epoch})).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    let got = collect(&mut fan_a, &missed_again).await;
    assert_exactly(&got, &missed_again, since);

    // An epoch of another stream never recovers.
    let (_, ack) = fan(&w.hub_b, json!({"since": 1, "epoch": "TRIBUNE_B@1"})).await;
    assert_eq!(ack["recovered"], false, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_b_serves_on_without_a_and_after_its_promotion() {
    let mut w = world().await;
    let editor = Editor::connect(&w.regions.a.url()).await;
    let (mut fan_b, ack) = fan(&w.hub_b, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let mut stored = BTreeSet::new();
    for i in 1..=3 {
        stored.insert(
            editor
                .publish(TOPIC, &format!("{{\"n\":{i}}}"), &format!("n{i}"))
                .await,
        );
    }
    collect(&mut fan_b, &stored).await;
    let (ok, text) = promote(&w.regions.b.url(), &w.config_b).await;
    assert!(!ok, "promotion refused while the origin answers: {text}");
    assert!(text.contains("still answers"), "{text}");

    // Region A is lost.
    w.regions.a.kill();
    drop(editor);
    stays_open(&mut fan_b, Duration::from_secs(3)).await;
    assert_eq!(w.hub_b.get_internal("/readyz").await.0, 200);
    assert_eq!(w.hub_b.metric("tribune_bus_connected").await, 1.0);
    eventually("region B's hub says publications fail", SETTLE, || async {
        (w.hub_b.metric("tribune_bus_writable").await == 0.0).then_some(())
    })
    .await;
    let (status, answer) = publish_raw(&w.hub_b, json!({"lost": true})).await;
    assert_eq!(status, 503, "no origin, no publication: {answer}");
    // A fan arriving now is served from the mirror, under the same epoch.
    let (mut late, ack) = fan(&w.hub_b, json!({"history": 3})).await;
    assert_eq!(ack["epoch"], epoch.as_str(), "{ack}");
    collect(&mut late, &stored).await;

    // The operator promotes region B's mirror.
    let (ok, text) = promote(&w.regions.b.url(), &w.config_b).await;
    assert!(ok, "{text}");
    let last = *stored.last().unwrap();
    let promoted = format!("{epoch}+{last}");
    assert!(text.contains(&promoted), "{text}");
    let (ok, again) = promote(&w.regions.b.url(), &w.config_b).await;
    assert!(ok && again.contains("already promoted"), "{again}");

    // B's hub takes the new epoch: its fans are told (1001) and resume.
    let closed = loop {
        match next_frame(&mut fan_b, SETTLE).await {
            Some(Frame::Closed(code)) => break code,
            Some(Frame::Other(v)) if v["type"] == "stats" => {}
            other => panic!(
                "expected a close for the new epoch, got {:?}",
                other.is_some()
            ),
        }
    };
    assert_eq!(closed, Some(1001));
    let (mut fan_b, ack) = fan(&w.hub_b, json!({"since": last, "epoch": epoch})).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["epoch"], promoted.as_str(), "{ack}");
    assert_eq!(w.hub_b.metric("tribune_bus_writable").await, 1.0);

    // New publications reach region B's fans: through B's hub...
    let (status, answer) = publish_raw(&w.hub_b, json!({"after": "promotion"})).await;
    assert_eq!(status, 200, "{answer}");
    let seq = answer["seq"].as_u64().unwrap();
    assert_eq!(seq, last + 1, "the promoted copy continues the sequence");
    // ...and an editor of region B.
    let editor_b = Editor::connect(&w.regions.b.url()).await;
    let seq2 = editor_b.publish(TOPIC, "{\"editor\":\"b\"}", "b1").await;
    let want: BTreeSet<u64> = [seq, seq2].into();
    let got = collect(&mut fan_b, &want).await;
    assert_exactly(&got, &want, last);
    assert_eq!(w.hub_b.get_internal("/readyz").await.0, 200);

    // Region B is the origin now: a hub configured as one (no mirror_of,
    // managing the stream) keeps the promoted epoch, and so the resumes.
    let config_origin = config("stream = \"TRIBUNE_B\"");
    let hub_b2 = Hub::on_nats(&w.regions.b.url(), &config_origin, "region-b-2").await;
    let (_, ack) = fan(&hub_b2, json!({"since": last, "epoch": epoch})).await;
    assert_eq!(ack["epoch"], promoted.as_str(), "{ack}");
    assert_eq!(ack["recovered"], true, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_beyond_what_the_promoted_copy_held_does_not_recover() {
    let mut w = world().await;
    let editor = Editor::connect(&w.regions.a.url()).await;
    let (mut fan_a, ack) = fan(&w.hub_a, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let copied: BTreeSet<u64> = [
        editor.publish(TOPIC, "{\"n\":1}", "n1").await,
        editor.publish(TOPIC, "{\"n\":2}", "n2").await,
    ]
    .into();
    let (mut fan_b, _) = fan(&w.hub_b, json!({})).await;
    collect(&mut fan_b, &copied).await;
    drop(fan_b);

    // Region B is cut off while A stores two more; then A is lost.
    w.regions.b.kill();
    let lost: BTreeSet<u64> = [
        editor.publish(TOPIC, "{\"n\":3}", "n3").await,
        editor.publish(TOPIC, "{\"n\":4}", "n4").await,
    ]
    .into();
    let all: BTreeSet<u64> = copied.union(&lost).copied().collect();
    collect(&mut fan_a, &all).await;
    w.regions.a.kill();
    drop(editor);
    w.regions.b.restart().await;
    // B's hub comes back on its own server and names the origin's epoch,
    // recorded in the mirror: A is unreachable.
    eventually("region B's hub ready again", SETTLE, || async {
        (w.hub_b.get_internal("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let (_, ack) = fan(&w.hub_b, json!({})).await;
    assert_eq!(ack["epoch"], epoch.as_str(), "{ack}");

    let (ok, text) = promote(&w.regions.b.url(), &w.config_b).await;
    assert!(ok, "{text}");
    let copy_last = *copied.last().unwrap();
    let promoted = format!("{epoch}+{copy_last}");
    assert!(text.contains(&promoted), "{text}");
    eventually(
        "region B's hub takes the promoted epoch",
        SETTLE,
        || async {
            let (_, ack) = fan(&w.hub_b, json!({})).await;
            (ack["epoch"] == promoted.as_str()).then_some(())
        },
    )
    .await;
    // The new message takes the number of a lost one.
    let (status, answer) = publish_raw(&w.hub_b, json!({"new": 1})).await;
    assert_eq!(status, 200, "{answer}");
    let new = answer["seq"].as_u64().unwrap();
    assert_eq!(new, copy_last + 1);
    assert!(lost.contains(&new));

    // The fan of region A saw the lost messages: told, not misled.
    for since in lost.iter() {
        let (_, ack) = fan(&w.hub_b, json!({"since": since, "epoch": epoch})).await;
        assert_eq!(ack["recovered"], false, "since {since}: {ack}");
        assert_eq!(ack["epoch"], promoted.as_str(), "{ack}");
    }
    // A fan within the copy recovers exactly: the copy's messages and the new one.
    let since = *copied.first().unwrap();
    let (mut fan, ack) = fan(&w.hub_b, json!({"since": since, "epoch": epoch})).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    let want: BTreeSet<u64> = [copy_last, new].into();
    let got = collect(&mut fan, &want).await;
    assert_exactly(&got, &want, since);
    assert!(got[1].raw_data.contains("\"new\""), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_counts_add_up_once_across_regions() {
    let w = world().await;
    let mut a1 = watcher(&w.hub_a).await;
    let mut a2 = watcher(&w.hub_a).await;
    let mut b1 = watcher(&w.hub_b).await;
    for (name, c) in [("a1", &mut a1), ("a2", &mut a2), ("b1", &mut b1)] {
        await_audience(c, 3, name).await;
    }
    // Stays at three over ten windows (a `stats` goes out only when a
    // figure changes): no partial counted twice.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WINDOW_MS * 10);
    for c in [&mut a1, &mut b1] {
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match next_frame(c, left).await {
                None => break,
                Some(Frame::Other(f)) if f["type"] == "stats" => {
                    assert_eq!(f["audience"], 3, "{f}");
                }
                Some(Frame::Other(_)) => {}
                Some(Frame::Message(m)) => panic!("unexpected message {m:?}"),
                Some(Frame::Closed(code)) => panic!("closed ({code:?})"),
            }
        }
    }
    drop(a2);
    await_audience(&mut b1, 2, "b1 after a2 left").await;
    await_audience(&mut a1, 2, "a1 after a2 left").await;
}

async fn next_stats(c: &mut WsClient) -> Value {
    loop {
        match next_frame(c, SETTLE).await {
            Some(Frame::Other(v)) if v["type"] == "stats" && v["topic"] == WATCHED => return v,
            Some(Frame::Other(_)) => {}
            Some(Frame::Message(m)) => panic!("unexpected message {m:?}"),
            Some(Frame::Closed(code)) => panic!("closed ({code:?})"),
            None => panic!("no stats within {SETTLE:?}"),
        }
    }
}

async fn await_audience(c: &mut WsClient, n: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let f = next_stats(c).await;
        if f["audience"] == n {
            return;
        }
        last = f;
    }
    panic!("{what}: audience {n} not seen within {SETTLE:?}; last {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_hub_waits_for_the_origins_epoch() {
    let mut regions = Regions::start().await;
    let config_a = config("");
    let hub_a = Hub::on_nats(&regions.a.url(), &config_a, "region-a-1").await;
    let (_, ack) = fan(&hub_a, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    // Region A unreachable before B's mirror ever learnt the origin's epoch.
    regions.a.kill();
    let config_b = config(&mirror_lines());
    let hub_b = Hub::on_nats(&regions.b.url(), &config_b, "region-b-1").await;
    assert_eq!(hub_b.get_internal("/readyz").await.0, 503);
    assert_eq!(hub_b.metric("tribune_bus_connected").await, 0.0);
    let (ok, text) = promote(&regions.b.url(), &config_b).await;
    assert!(!ok && text.contains("epoch is unknown"), "{text}");

    // Region A is back: B's hub names its epoch and is ready.
    regions.a.restart().await;
    regions.linked(2).await.expect("B joins A again");
    eventually("region B's hub ready", SETTLE, || async {
        (hub_b.get_internal("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let (_, ack) = fan(&hub_b, json!({})).await;
    assert_eq!(ack["epoch"], epoch.as_str(), "{ack}");
}

/// `nats/least-privilege-region.conf` with this test's names: the mirror
/// `TRIBUNE_B` of the stream in domain `A`.
fn region_least_privilege() -> String {
    include_str!("../../nats/least-privilege-region.conf")
        .replace("TRIBUNE_US", "TRIBUNE_B")
        .replace("$JS.eu.API", "$JS.A.API")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_region_runs_with_the_shipped_least_privilege() {
    const HUB_PASSWORD: &str = "region-hub-password-for-tests";
    const ADMIN_PASSWORD: &str = "region-admin-password-for-tests";
    let b_opts = NatsOptions {
        extra_config: Some(region_least_privilege()),
        env: vec![
            ("EDITOR_PASSWORD".into(), "region-editor-password".into()),
            ("HUB_PASSWORD".into(), HUB_PASSWORD.into()),
            ("STREAM_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ],
        ..NatsOptions::default()
    };
    let mut regions = Regions::try_start_each(&NatsOptions::default(), &b_opts, Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let config_a = config("");
    let hub_a = Hub::on_nats(&regions.a.url(), &config_a, "region-a-1").await;
    let (_, ack) = fan(&hub_a, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();

    // The stream Job of region B, as the stream administrator: creates the
    // mirror and records the origin's epoch.
    let config_b = config(&format!("{}\nmanage_stream = false", mirror_lines()));
    let as_admin = |args: &[&str]| {
        std::process::Command::new(tribune_harness::binaries::hub_bin())
            .args(args)
            .args(["--nats", &regions.b.url(), "--config", config_b.path()])
            .env("TRIBUNE_BUS__USER", "stream-admin")
            .env("TRIBUNE_BUS__PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "warn")
            .output()
            .expect("the hub binary runs")
    };
    let out = as_admin(&["--provision-stream"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&epoch), "the origin's epoch: {text}");

    // B's hub as the hub user.
    let hub_b = Hub::start_with_env(
        &[
            "--nats",
            &regions.b.url(),
            "--config",
            config_b.path(),
            "--node-name",
            "region-b-1",
        ],
        &[
            ("TRIBUNE_BUS__USER", "hub"),
            ("TRIBUNE_BUS__PASSWORD", HUB_PASSWORD),
        ],
    )
    .await;
    let (mut fan_b, ack) = fan(&hub_b, json!({})).await;
    assert_eq!(ack["epoch"], epoch.as_str(), "{ack}");
    let editor = Editor::connect(&regions.a.url()).await;
    let want: BTreeSet<u64> = [
        editor.publish(TOPIC, "{\"n\":1}", "n1").await,
        editor.publish(TOPIC, "{\"n\":2}", "n2").await,
    ]
    .into();
    let got = collect(&mut fan_b, &want).await;
    assert_exactly(&got, &want, 0);
    // The hub user may ask the origin: the epoch is the origin's answer.
    assert_eq!(hub_b.metric("tribune_bus_writable").await, 1.0);

    // Region A lost: B's hub serves on; the promotion Job as the stream
    // administrator.
    regions.a.kill();
    drop(editor);
    eventually("region B's hub says publications fail", SETTLE, || async {
        (hub_b.metric("tribune_bus_writable").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(hub_b.get_internal("/readyz").await.0, 200);
    let out = as_admin(&["--promote-region"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let last = *want.last().unwrap();
    assert!(text.contains(&format!("{epoch}+{last}")), "{text}");
    assert!(
        !hub_b.log().contains("Permissions Violation") && !text.contains("Permissions Violation"),
        "{}",
        hub_b.log()
    );
}
