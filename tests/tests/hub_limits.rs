//! Every limit of PROTOCOL.md section 8 and the close codes of section 6,
//! against the real hub: frames, floods, slow consumers, capacity, origins,
//! heartbeats and the paced drain.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tribune_tests::hub::ConfigFile;
use tribune_tests::{Hub, WsClient, eventually};

/// A client of `hub` that skips `stats` frames: this suite is not about them.
async fn connect(hub: &Hub) -> (WsClient, serde_json::Value) {
    let (c, w) = WsClient::connect(&hub.ws_url()).await;
    (c.without_stats(), w)
}

async fn connect_small(hub: &Hub, rcvbuf: u32) -> (WsClient, serde_json::Value) {
    let (c, w) = WsClient::connect_small_buffer(&hub.ws_url(), rcvbuf).await;
    (c.without_stats(), w)
}

const CLIPS: &str = "clips.limits.feed";
const RESULTS: &str = "results.limits.board";

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let hub = Hub::start(&[]).await;
    let (mut c, _) = connect(&hub).await;
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(c.close_code().await, Some(1003));
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let hub = Hub::start(&[]).await;
    let (mut c, _) = connect(&hub).await;
    let big = format!(
        "{{\"type\":\"ping\",\"id\":1,\"pad\":\"{}\"}}",
        "x".repeat(5000)
    );
    c.send_text(&big).await;
    assert_eq!(c.close_code().await, Some(1009));
    // A frame just under the limit is fine.
    let (mut d, _) = connect(&hub).await;
    let ok = format!(
        "{{\"type\":\"ping\",\"id\":1,\"pad\":\"{}\"}}",
        "x".repeat(4000)
    );
    d.send_text(&ok).await;
    assert_eq!(d.recv().await["type"], "pong");
}

#[tokio::test]
async fn frame_flood_closes_with_4029() {
    let hub = Hub::start(&[]).await;
    let (mut c, _) = connect(&hub).await;
    // The burst of 40 is served...
    for i in 0..40 {
        c.send(json!({"type": "ping", "id": i})).await;
    }
    for i in 0..40 {
        assert_eq!(c.recv().await, json!({"type": "pong", "id": i}));
    }
    // ...and what goes past the rate closes the connection.
    for i in 0..20 {
        // The hub may close before all of them are sent.
        let frame = json!({"type": "ping", "id": i}).to_string();
        let _ = futures::SinkExt::send(&mut c.stream, Message::text(frame)).await;
    }
    assert_eq!(c.close_code().await, Some(4029));
    // Counted once the connection is done, just after its close frame left.
    eventually(
        "the 4029 close is counted",
        Duration::from_secs(5),
        || async { (hub.metric("tribune_closes_total{code=\"4029\"}").await == 1.0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn repeated_bad_frames_close_with_4029() {
    let hub = Hub::start(&[]).await;
    let (mut c, _) = connect(&hub).await;
    for _ in 0..10 {
        c.send_text("nonsense").await;
        assert_eq!(c.recv().await["code"], "bad_request");
    }
    c.send_text("nonsense").await;
    assert_eq!(c.close_code().await, Some(4029));
}

#[tokio::test]
async fn connection_limit_answers_503_before_the_upgrade() {
    // One address may hold the whole node here: this is about the cap.
    let cfg = ConfigFile::new("[limits]\nmax_connections = 2\naddress_share_percent = 100\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (_a, _) = connect(&hub).await;
    let (_b, _) = connect(&hub).await;
    let refused = WsClient::connect_with(&hub.ws_url(), &[])
        .await
        .err()
        .expect("third is refused");
    assert_eq!(refused.status, 503);
    assert!(refused.retry_after.is_some());
    assert!(refused.body.contains("\"unavailable\""), "{}", refused.body);
    drop(_a);
    eventually("a slot frees up", Duration::from_secs(5), || async {
        WsClient::connect_with(&hub.ws_url(), &[]).await.ok()
    })
    .await;
}

#[tokio::test]
async fn upgrades_reset_by_the_client_give_their_place_back_once() {
    use tokio::io::AsyncWriteExt;
    // A client that resets its socket while the hub answers 101 makes the
    // upgrade fail after the handshake was counted. Its place must come back
    // exactly once: counted back twice, the open count drops below zero and
    // wraps, and the node answers 503 to every fan after.
    let cfg = ConfigFile::new("[limits]\nhandshakes_per_second = 1000\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {}\r\n\r\n",
        tribune_protocol::WS_PATH,
        hub.addr(),
        tribune_protocol::SUBPROTOCOL
    );
    // The race (the reset lands before the 101 is written) is won by a few
    // attempts in a hundred on loopback.
    for _ in 0..200 {
        let mut tcp = tokio::net::TcpStream::connect(hub.addr()).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        tcp.set_zero_linger().unwrap();
        drop(tcp);
    }
    let (mut c, _) = connect(&hub).await;
    c.send(json!({"type": "ping", "id": 1})).await;
    assert_eq!(c.recv().await["type"], "pong");
    // Once every reset upgrade has ended, only this one is open.
    eventually(
        "every reset upgrade is counted out",
        Duration::from_secs(5),
        || async { (hub.metric("tribune_connections").await == 1.0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn handshake_rate_per_address_answers_429() {
    let cfg = ConfigFile::new("[limits]\nhandshakes_per_second = 3\nhandshakes_burst = 3\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(match WsClient::connect_with(&hub.ws_url(), &[]).await {
            Ok(_) => 101,
            Err(r) => {
                assert!(r.body.contains("rate_limited"), "{}", r.body);
                r.status
            }
        });
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 101).count(),
        3,
        "{statuses:?}"
    );
    assert!(statuses.contains(&429));
    assert!(
        hub.metric("tribune_handshakes_refused_total{reason=\"rate\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn origins_outside_the_allowlist_get_403() {
    let cfg = ConfigFile::new("allowed_origins = [\"https://fans.example.org\"]\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let refused = WsClient::connect_with(&hub.ws_url(), &[("origin", "https://evil.example.com")])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 403);
    assert!(
        WsClient::connect_with(&hub.ws_url(), &[("origin", "https://fans.example.org")])
            .await
            .is_ok()
    );
    // Apps that send no Origin are not browsers: allowed.
    assert!(WsClient::connect_with(&hub.ws_url(), &[]).await.is_ok());
}

#[tokio::test]
async fn silent_peers_are_closed_after_two_heartbeats() {
    let cfg = ConfigFile::new("heartbeat_ms = 200\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    // A reading client answers pings (tungstenite does) and stays.
    let (mut alive, w) = connect(&hub).await;
    assert_eq!(w["heartbeat_ms"], 200);
    // A client that never reads never answers pings.
    let (mut silent, _) = connect(&hub).await;
    alive.expect_silence(Duration::from_millis(1200)).await;
    assert_eq!(alive.request(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(silent.close_code().await, Some(1001));
}

#[tokio::test]
async fn slow_feed_client_gets_4008_and_fast_client_everything() {
    let cfg = ConfigFile::new(
        "slow_close_grace_ms = 20000\n[limits]\nqueue_messages = 64\nqueue_bytes = 65536\n",
    );
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut fast, _) = connect(&hub).await;
    fast.subscribe(CLIPS, json!({})).await;
    let (mut slow, _) = connect_small(&hub, 4096).await;
    slow.subscribe(CLIPS, json!({})).await;
    // Large messages, so that the sockets' buffers fill and the hub's queue
    // is what overflows.
    let pad = "p".repeat(20_000);
    let total = 400;
    // The publisher never runs more than two messages ahead of the fast
    // client, so only the stalled one can fall behind, however busy the
    // machine is.
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut prev = None;
        for i in 0..total {
            let m = fast.recv().await;
            assert_eq!(
                m["data"]["i"], i,
                "fast client receives every message in order"
            );
            if let Some(p) = prev {
                assert_eq!(m["prev"], p);
            }
            prev = Some(m["seq"].clone());
            let _ = progress_tx.send(i + 1);
        }
    });
    for i in 0..total {
        progress
            .wait_for(|got| got + 2 >= i)
            .await
            .expect("fast reader alive");
        hub.publish(CLIPS, json!({"i": i, "pad": pad})).await;
    }
    reader.await.unwrap();
    assert_eq!(slow.close_code().await, Some(4008));
    assert_eq!(hub.metric("tribune_slow_consumers_total").await, 1.0);
}

#[tokio::test]
async fn slow_state_client_ends_on_the_latest_state() {
    let cfg = ConfigFile::new("[limits]\nqueue_messages = 16\nqueue_bytes = 65536\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut slow, _) = connect_small(&hub, 4096).await;
    slow.subscribe(RESULTS, json!({})).await;
    let pad = "p".repeat(20_000);
    let mut last = 0;
    for i in 0..300 {
        last = hub.publish(RESULTS, json!({"i": i, "pad": pad})).await;
    }
    let mut received = 0;
    let mut prev_seq = 0;
    loop {
        let m = slow.recv().await;
        received += 1;
        let seq = m["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("a message: {m}"));
        assert!(seq > prev_seq, "seq strictly increases even when conflated");
        prev_seq = seq;
        if seq == last {
            assert_eq!(m["data"]["i"], 299);
            break;
        }
    }
    assert!(
        received < 300,
        "superseded states were dropped ({received} of 300)"
    );
    assert!(hub.metric("tribune_conflated_total").await > 0.0);
    assert_eq!(
        hub.metric("tribune_slow_consumers_total").await,
        0.0,
        "state clients are not closed"
    );
    slow.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn sigterm_drains_clients_then_exits_zero() {
    let cfg = ConfigFile::new("[drain]\nwindow_ms = 400\nretry_ms = 1500\ngrace_ms = 5000\n");
    let mut hub = Hub::start(&["--config", cfg.path()]).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(&hub).await.0);
    }
    hub.terminate();
    for c in &mut clients {
        let m = c.recv().await;
        assert_eq!(m, json!({"type": "drain", "retry_ms": 1500}));
        assert_eq!(c.close_code().await, Some(1001));
    }
    let status = hub
        .wait(Duration::from_secs(6))
        .await
        .expect("exits within the grace period");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn draining_node_is_not_ready_and_refuses_handshakes() {
    let cfg = ConfigFile::new("[drain]\nwindow_ms = 3000\ngrace_ms = 6000\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (_keep, _) = connect(&hub).await;
    let http = reqwest::Client::new();
    let ready = format!("{}/readyz", hub.http_url());
    assert_eq!(http.get(&ready).send().await.unwrap().status(), 200);
    hub.terminate();
    // The listener stops accepting: either refused at TCP or with 503.
    eventually("not ready or gone", Duration::from_secs(3), || {
        let http = http.clone();
        let ready = ready.clone();
        async move {
            match http.get(&ready).send().await {
                Ok(r) if r.status() == 503 => Some(()),
                Err(_) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(WsClient::connect_with(&hub.ws_url(), &[]).await.is_err());
}

#[tokio::test]
async fn file_limit_caps_connections_with_503_not_emfile() {
    // 300 files: the hub keeps a reserve of 256, so 44 connections fit.
    let cfg =
        ConfigFile::new("[limits]\nhandshakes_per_second = 1000\naddress_share_percent = 100\n");
    let hub = Hub::start_with_file_limit(&["--config", cfg.path()], 300).await;
    let addr = hub.addr();
    let url = format!("ws://{addr}/v1/ws");
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..60 {
        match WsClient::connect_with(&url, &[]).await {
            Ok(c) => open.push(c),
            Err(r) => {
                refused = Some(r);
                break;
            }
        }
    }
    let refused = refused.expect("the cap refuses before the file limit");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(open.len(), 44);
    // The node still works for the connections it holds.
    let c = &mut open[0];
    assert_eq!(c.recv().await["type"], "welcome");
    assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
}
