//! Audience and reactions on one node over the embedded bus (PROTOCOL.md
//! section 4, `stats`); the cross-node sums run against NATS in `nats_stats.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tribune_tests::hub::ConfigFile;
use tribune_tests::{Hub, WsClient};

const TOPIC: &str = "results.stats.board";

async fn next_stats(c: &mut WsClient) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == "stats" {
            return f;
        }
    }
}

#[tokio::test]
async fn first_stats_already_counts_the_subscriber() {
    let cfg = ConfigFile::new("[stats]\nwindow_ms = 200\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut c, _) = WsClient::connect(&hub.ws_url()).await;
    c.subscribe(TOPIC, json!({})).await;
    let s = next_stats(&mut c).await;
    assert_eq!(s["topic"], TOPIC);
    assert_eq!(s["audience"], 1, "{s}");
    assert_eq!(s["window_ms"], 200);
    assert!(s.get("seq").is_none(), "stats carry no seq");
    let (mut d, _) = WsClient::connect(&hub.ws_url()).await;
    d.subscribe(TOPIC, json!({})).await;
    let s = next_stats(&mut d).await;
    assert_eq!(s["audience"], 2, "{s}");
}

#[tokio::test]
async fn reactions_are_summed_exactly_once() {
    let cfg = ConfigFile::new("[stats]\nwindow_ms = 200\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut watcher, _) = WsClient::connect(&hub.ws_url()).await;
    watcher.subscribe(TOPIC, json!({})).await;
    let mut sent = BTreeMap::new();
    for (i, r) in ["🔥", "👏", "🔥", "😮", "🔥", "😢", "👏"]
        .iter()
        .enumerate()
    {
        let (fan, _) = WsClient::connect(&hub.ws_url()).await;
        let mut fan = fan.without_stats();
        // A reaction is a watching fan's: subscribed first.
        fan.subscribe(TOPIC, json!({})).await;
        let a = fan
            .request(json!({"type": "react", "topic": TOPIC, "reaction": r}))
            .await;
        assert_eq!(a["type"], "ack", "reaction {i}: {a}");
        *sent.entry(r.to_string()).or_insert(0u64) += 1;
    }
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen != sent && tokio::time::Instant::now() < deadline {
        let s = next_stats(&mut watcher).await;
        for (r, n) in s["reactions"].as_object().unwrap() {
            *seen.entry(r.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(
        seen, sent,
        "the sum of all windows equals the reactions accepted"
    );
    // And nothing is counted twice afterwards.
    tokio::time::sleep(Duration::from_millis(600)).await;
    while let Some(f) = watcher.try_recv(Duration::from_millis(300)).await {
        if f["type"] == "stats" {
            assert!(f["reactions"].as_object().unwrap().is_empty(), "{f}");
        }
    }
    assert_eq!(
        hub.metric("tribune_reactions_total{result=\"accepted\"}")
            .await,
        7.0
    );
}

#[tokio::test]
async fn demo_simulates_an_audience_and_reactions() {
    let hub = Hub::start(&["--demo"]).await;
    let (mut c, _) = WsClient::connect(&hub.ws_url()).await;
    c.subscribe(
        "results.demo2026.speed-skating.mixed-team-sprint",
        json!({}),
    )
    .await;
    let (mut audience, mut reactions) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while (audience < 1000 || reactions == 0) && tokio::time::Instant::now() < deadline {
        let s = next_stats(&mut c).await;
        audience = s["audience"].as_u64().unwrap();
        reactions += s["reactions"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>();
    }
    assert!(
        audience >= 20_000,
        "the simulated crowd plus this fan: {audience}"
    );
    assert!(reactions > 0, "the simulated crowd reacts");
}
