//! Retractions (PROTOCOL.md section 13) on real hubs over a real NATS,
//! two nodes and a third started afterwards: a message an editor retracts
//! disappears for live fans (a `retract` frame), for a fan that was away
//! and resumes on the other node, and on a node that starts after the
//! retraction (history and resume); the `prev` chain stays exact (no `gap`,
//! `recovered: true`); `state` topics refuse retractions and their markers
//! are ignored and counted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tribune_tests::editor::Editor;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsServer;
use tribune_tests::{Hub, WsClient};

const WAIT: Duration = Duration::from_secs(10);

/// What a fan holds of a feed, as an app shows it: items by seq, the
/// position it resumes after, every frame checked against the `prev` chain.
#[derive(Debug, Default)]
struct Feed {
    items: BTreeMap<u64, Value>,
    position: u64,
    frames: Vec<Value>,
}

impl Feed {
    /// Takes frames of `topic` until the position reaches `until`.
    async fn read_until(&mut self, fan: &mut WsClient, topic: &str, until: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.position < until {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = fan.try_recv(left).await.unwrap_or_else(|| {
                panic!(
                    "position {} never reached {until}: {:?}",
                    self.position, self.frames
                )
            });
            self.take(topic, frame);
        }
    }

    fn take(&mut self, topic: &str, frame: Value) {
        match frame["type"].as_str() {
            Some("stats") => return,
            Some("message") | Some("retract") => {}
            _ => panic!("unexpected frame (no gap, no error): {frame}"),
        }
        assert_eq!(frame["topic"], topic, "{frame}");
        let prev = frame["prev"].as_u64().unwrap();
        assert_eq!(
            prev, self.position,
            "prev chain exact: {frame} after {:?}",
            self.frames
        );
        let seq = frame["seq"].as_u64().unwrap();
        if frame["type"] == "message" {
            self.items.insert(seq, frame["data"].clone());
            self.position = seq;
        } else {
            // The app removes the item if it holds it.
            self.items.remove(&seq);
            self.position = frame["at"].as_u64().unwrap();
        }
        self.frames.push(frame);
    }
}

#[tokio::test]
async fn a_retracted_message_disappears_everywhere_and_the_chain_stays_exact() {
    let server = NatsServer::start().await;
    let cfg = ConfigFile::new(
        "[bus]\nrequest_timeout_ms = 1000\ncheck_interval_ms = 500\n\
         [namespaces.clips]\nmode = \"feed\"\nretained = 100\n",
    );
    let hub_a = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let hub_b = Hub::on_nats(&server.url(), &cfg, "hub-b").await;
    let editor = Editor::connect(&server.url()).await;
    let topic = "clips.e2e.retract";

    let (mut live, _) = WsClient::connect(&hub_a.ws_url()).await;
    let (mut away, _) = WsClient::connect(&hub_a.ws_url()).await;
    let ack = live.subscribe(topic, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    away.subscribe(topic, json!({})).await;
    let (mut live_feed, mut away_feed) = (Feed::default(), Feed::default());

    let a = editor.publish(topic, r#"{"clip":"a"}"#, "a").await;
    let b = editor.publish(topic, r#"{"clip":"b"}"#, "b").await;
    away_feed.read_until(&mut away, topic, b).await;
    assert!(away_feed.items.contains_key(&b));
    drop(away);

    // While the fan is away: a message, the retraction of the one it
    // holds, another message.
    let c = editor.publish(topic, r#"{"clip":"c"}"#, "c").await;
    let marker = editor.retract(topic, b).await;
    assert_eq!(
        editor.retract(topic, b).await,
        marker,
        "a repeated retraction is stored once"
    );
    let d = editor.publish(topic, r#"{"clip":"d"}"#, "d").await;

    live_feed.read_until(&mut live, topic, d).await;
    let kinds: Vec<(&str, u64)> = live_feed
        .frames
        .iter()
        .map(|f| (f["type"].as_str().unwrap(), f["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("message", a),
            ("message", b),
            ("message", c),
            ("retract", b),
            ("message", d)
        ]
    );
    assert_eq!(live_feed.frames[3]["at"], json!(marker));
    assert_eq!(
        live_feed.items.keys().copied().collect::<Vec<_>>(),
        vec![a, c, d]
    );

    // The fan comes back on the other node: recovered, and b is gone.
    let (mut back, _) = WsClient::connect(&hub_b.ws_url()).await;
    let ack = back
        .subscribe(topic, json!({"since": b, "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    away_feed.read_until(&mut back, topic, d).await;
    assert_eq!(
        away_feed.items.keys().copied().collect::<Vec<_>>(),
        vec![a, c, d]
    );

    // A fan resuming from before b never sees its payload.
    let (mut early, _) = WsClient::connect(&hub_b.ws_url()).await;
    let ack = early
        .subscribe(topic, json!({"since": a, "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let mut early_feed = Feed {
        position: a,
        ..Feed::default()
    };
    early_feed.read_until(&mut early, topic, d).await;
    assert_eq!(
        early_feed.items.keys().copied().collect::<Vec<_>>(),
        vec![c, d]
    );
    assert!(
        early_feed
            .frames
            .iter()
            .all(|f| f["data"] != json!({"clip": "b"}))
    );

    // A node started after the retraction: history and resume alike.
    let hub_c = Hub::on_nats(&server.url(), &cfg, "hub-c").await;
    let (mut late, _) = WsClient::connect(&hub_c.ws_url()).await;
    late.subscribe(topic, json!({"history": 100})).await;
    let mut late_feed = Feed::default();
    late_feed.read_until(&mut late, topic, d).await;
    assert_eq!(
        late_feed.items.keys().copied().collect::<Vec<_>>(),
        vec![a, c, d]
    );
    assert!(
        late_feed
            .frames
            .iter()
            .all(|f| f["data"] != json!({"clip": "b"}))
    );
    let (mut late_resume, _) = WsClient::connect(&hub_c.ws_url()).await;
    let ack = late_resume
        .subscribe(topic, json!({"since": a, "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let mut resume_feed = Feed {
        position: a,
        ..Feed::default()
    };
    resume_feed.read_until(&mut late_resume, topic, d).await;
    assert_eq!(
        resume_feed.items.keys().copied().collect::<Vec<_>>(),
        vec![c, d]
    );

    // Live goes on after the marker on every node.
    let e = editor.publish(topic, r#"{"clip":"e"}"#, "e").await;
    for (fan, feed) in [
        (&mut live, &mut live_feed),
        (&mut back, &mut away_feed),
        (&mut late, &mut late_feed),
    ] {
        feed.read_until(fan, topic, e).await;
        assert!(!feed.items.contains_key(&b));
    }
    for hub in [&hub_a, &hub_b, &hub_c] {
        assert_eq!(
            hub.metric("tribune_retractions_total{outcome=\"applied\"}")
                .await,
            1.0,
            "one marker taken on each node"
        );
        assert_eq!(
            hub.metric("tribune_gaps_unrepairable_total{mode=\"feed\"}")
                .await,
            0.0
        );
    }
}

#[tokio::test]
async fn the_retract_endpoint_retracts_feeds_and_refuses_state_topics() {
    let server = NatsServer::start().await;
    let cfg = ConfigFile::new("[bus]\nrequest_timeout_ms = 1000\n");
    let hub = Hub::on_nats(&server.url(), &cfg, "hub-a").await;
    let editor = Editor::connect(&server.url()).await;
    let http = reqwest::Client::new();
    let retract = |body: Value, key: Option<&str>| {
        let mut req = http
            .post(format!("{}/v1/retract", hub.internal_url()))
            .json(&body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };

    let topic = "clips.e2e.endpoint";
    let (mut fan, _) = WsClient::connect(&hub.ws_url()).await;
    fan.subscribe(topic, json!({})).await;
    let a = editor.publish(topic, "{\"n\":1}", "n1").await;
    let res = retract(json!({"topic": topic, "seq": a}), None)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401, "the publish key is needed");
    let res = retract(json!({"topic": topic, "seq": a}), Some(hub.publish_key()))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let marker = res.json::<Value>().await.unwrap()["seq"].as_u64().unwrap();
    let mut feed = Feed::default();
    feed.read_until(&mut fan, topic, marker).await;
    assert!(feed.items.is_empty(), "{:?}", feed.frames);

    // A state topic: refused at the endpoint, and a marker written on the
    // bus by anyone else is ignored (the chain skips it) and counted.
    let state = "results.e2e.endpoint";
    let (mut board, _) = WsClient::connect(&hub.ws_url()).await;
    board.subscribe(state, json!({})).await;
    let s1 = editor.publish(state, "{\"s\":1}", "s1").await;
    let res = retract(json!({"topic": state, "seq": s1}), Some(hub.publish_key()))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 409);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("state topic"),
        "{body}"
    );
    editor.retract(state, s1).await;
    let s2 = editor.publish(state, "{\"s\":2}", "s2").await;
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let f = board.try_recv(WAIT).await.expect("state messages");
        if f["type"] != "stats" {
            frames.push(f);
        }
    }
    assert_eq!(
        (frames[0]["seq"].as_u64(), frames[1]["seq"].as_u64()),
        (Some(s1), Some(s2))
    );
    assert_eq!(frames[1]["prev"], json!(s1), "{frames:?}");
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"retract_state_topic\"}")
            .await,
        1.0
    );
    assert_eq!(
        hub.metric("tribune_retractions_total{outcome=\"state_topic\"}")
            .await,
        1.0
    );

    // Bad bodies and unknown namespaces are refused.
    for (body, status) in [
        (json!({"topic": topic}), 400),
        (json!({"topic": "nope.a", "seq": 1}), 400),
        (json!({"topic": topic, "seq": 0}), 400),
    ] {
        let res = retract(body.clone(), Some(hub.publish_key()))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{body}");
    }
}
