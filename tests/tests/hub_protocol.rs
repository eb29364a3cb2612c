//! The hub on its embedded bus, over real sockets: welcome, subscriptions,
//! history, live order, modes, resume, unsubscribe, publishing, errors,
//! HTTP endpoints (PROTOCOL.md sections 1-5, 7, 9).

use std::time::Duration;

use serde_json::{Value, json};
use tribune_tests::hub::ConfigFile;
use tribune_tests::{Hub, WsClient};

/// A client of `hub` that skips `stats` frames: this suite is not about them.
async fn connect(hub: &Hub) -> (WsClient, serde_json::Value) {
    let (c, w) = WsClient::connect(&hub.ws_url()).await;
    (c.without_stats(), w)
}

const RESULTS: &str = "results.t2026.speed-skating.sprint";
const CLIPS: &str = "clips.t2026.speed-skating";

fn assert_message(m: &Value, topic: &str, seq: u64, prev: u64) {
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["topic"], topic, "{m}");
    assert_eq!(m["seq"], seq, "{m}");
    assert_eq!(m["prev"], prev, "{m}");
    assert!(
        m["ts"].as_u64().unwrap() > 1_600_000_000_000,
        "ts in ms: {m}"
    );
}

#[tokio::test]
async fn welcome_has_every_field() {
    let hub = Hub::start(&["--node-name", "hub-test-1"]).await;
    let (_c, w) = connect(&hub).await;
    assert_eq!(w["protocol"], 1);
    assert_eq!(w["node"], "hub-test-1");
    assert!(w["conn"].as_str().unwrap().starts_with("c-"));
    assert_eq!(w["heartbeat_ms"], 25_000);
    let (_c2, w2) = connect(&hub).await;
    assert_ne!(w["conn"], w2["conn"], "connection ids are unique");
}

#[tokio::test]
async fn subprotocol_is_echoed() {
    let hub = Hub::start(&[]).await;
    let c = WsClient::connect_with(&hub.ws_url(), &[("sec-websocket-protocol", "tribune.v1")])
        .await
        .unwrap();
    drop(c);
    // The handshake would fail in tungstenite if the hub did not echo it.
}

#[tokio::test]
async fn ack_then_history_then_live_in_order() {
    let hub = Hub::start(&[]).await;
    let mut seqs = Vec::new();
    for i in 0..4 {
        seqs.push(hub.publish(CLIPS, json!({"n": i})).await);
    }
    let (mut c, _) = connect(&hub).await;
    let ack = c.subscribe(CLIPS, json!({"history": 2})).await;
    assert_eq!(ack["topic"], CLIPS);
    assert_eq!(ack["mode"], "feed");
    assert_eq!(ack["seq"], seqs[3]);
    assert!(ack["epoch"].as_str().unwrap().starts_with("TRIBUNE@"));
    assert!(ack.get("recovered").is_none());
    let r1 = c.recv().await;
    assert_message(&r1, CLIPS, seqs[2], seqs[1]);
    assert_eq!(r1["replay"], true);
    assert_eq!(r1["data"], json!({"n": 2}));
    let r2 = c.recv().await;
    assert_message(&r2, CLIPS, seqs[3], seqs[2]);
    assert_eq!(r2["replay"], true);
    let live = hub.publish(CLIPS, json!({"n": 4})).await;
    let m = c.recv().await;
    assert_message(&m, CLIPS, live, seqs[3]);
    assert!(
        m.get("replay").is_none(),
        "live messages carry no replay flag"
    );
}

#[tokio::test]
async fn state_replays_latest_by_default_and_feed_nothing() {
    let hub = Hub::start(&[]).await;
    let s1 = hub.publish(RESULTS, json!({"v": 1})).await;
    let s2 = hub.publish(RESULTS, json!({"v": 2})).await;
    hub.publish(CLIPS, json!({"c": 1})).await;
    let (mut c, _) = connect(&hub).await;
    let ack = c.subscribe(RESULTS, json!({})).await;
    assert_eq!(ack["mode"], "state");
    let m = c.recv().await;
    assert_message(&m, RESULTS, s2, s1);
    assert_eq!(m["data"], json!({"v": 2}));
    let ack = c.subscribe(CLIPS, json!({})).await;
    assert_eq!(ack["mode"], "feed");
    c.expect_silence(Duration::from_millis(300)).await;
    // History is capped by the namespace's retention (10 for results).
    for i in 0..12 {
        hub.publish(RESULTS, json!({"v": i})).await;
    }
    // Barrier: the relay forwards asynchronously; once `c` has the last one,
    // the relay's cache holds all of them.
    while c.recv().await["data"]["v"] != 11 {}
    let (mut d, _) = connect(&hub).await;
    d.subscribe(RESULTS, json!({"history": 50})).await;
    for _ in 0..10 {
        assert_eq!(d.recv().await["replay"], true);
    }
    d.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn resume_recovers_exactly_what_was_missed() {
    let hub = Hub::start(&[]).await;
    // An observer fan stays subscribed: once it has a message, the relay has
    // processed it (the relay forwards asynchronously after the bus stored it).
    let (mut observer, _) = connect(&hub).await;
    observer.subscribe(CLIPS, json!({})).await;
    let (mut c, _) = connect(&hub).await;
    let ack = c.subscribe(CLIPS, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let first = hub.publish(CLIPS, json!({"n": 1})).await;
    assert_eq!(c.recv().await["seq"], first);
    drop(c);
    let missed: Vec<u64> = [
        hub.publish(CLIPS, json!({"n": 2})).await,
        hub.publish(CLIPS, json!({"n": 3})).await,
    ]
    .to_vec();
    for s in [first, missed[0], missed[1]] {
        assert_eq!(observer.recv().await["seq"], s);
    }
    hub.publish(RESULTS, json!({"other": true})).await;

    let (mut c, _) = connect(&hub).await;
    let ack = c
        .subscribe(CLIPS, json!({"since": first, "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], true);
    assert_eq!(ack["seq"], missed[1]);
    let m = c.recv().await;
    assert_message(&m, CLIPS, missed[0], first);
    assert_eq!(m["replay"], true);
    assert_message(&c.recv().await, CLIPS, missed[1], missed[0]);
    c.expect_silence(Duration::from_millis(300)).await;
    // Live goes on after the replay, chained to it.
    let live = hub.publish(CLIPS, json!({"n": 4})).await;
    assert_message(&c.recv().await, CLIPS, live, missed[1]);

    // Up to date: recovered, nothing replayed.
    while observer.recv().await["seq"] != live {}
    let (mut d, _) = connect(&hub).await;
    let ack = d
        .subscribe(CLIPS, json!({"since": live, "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], true);
    d.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn resume_with_wrong_epoch_or_aged_out_since_is_not_recovered() {
    let hub = Hub::start(&[]).await;
    let mut seqs = Vec::new();
    for i in 0..15 {
        seqs.push(hub.publish(RESULTS, json!({"v": i})).await);
    }
    let (mut c, _) = connect(&hub).await;
    let ack = c
        .subscribe(RESULTS, json!({"since": seqs[10], "epoch": "TRIBUNE@1"}))
        .await;
    assert_eq!(ack["recovered"], false, "wrong epoch");
    // Not recovered: replays as for history (state default: the latest one).
    let m = c.recv().await;
    assert_eq!(m["seq"], seqs[14]);
    c.expect_silence(Duration::from_millis(200)).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();

    let (mut d, _) = connect(&hub).await;
    let ack = d
        .subscribe(
            RESULTS,
            json!({"since": seqs[2], "epoch": epoch, "history": 2}),
        )
        .await;
    assert_eq!(
        ack["recovered"], false,
        "seq {} aged out of a retention of 10",
        seqs[2]
    );
    assert_eq!(d.recv().await["seq"], seqs[13]);
    assert_eq!(d.recv().await["seq"], seqs[14]);

    // The message before the oldest retained one still recovers.
    let (mut e, _) = connect(&hub).await;
    let ack = e
        .subscribe(RESULTS, json!({"since": seqs[4], "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], true);
    for s in &seqs[5..] {
        assert_eq!(e.recv().await["seq"], *s);
    }

    // since without epoch is a bad request.
    let answer = e
        .request(json!({"type": "subscribe", "topic": CLIPS, "since": 3}))
        .await;
    assert_eq!(answer["code"], "bad_request");
}

#[tokio::test]
async fn resubscribe_acks_and_changes_nothing() {
    let hub = Hub::start(&[]).await;
    let s = hub.publish(RESULTS, json!({"v": 1})).await;
    let (mut c, _) = connect(&hub).await;
    c.subscribe(RESULTS, json!({})).await;
    assert_eq!(c.recv().await["seq"], s);
    let again = c.subscribe(RESULTS, json!({"history": 5})).await;
    assert_eq!(again["seq"], s);
    c.expect_silence(Duration::from_millis(300)).await;
    let s2 = hub.publish(RESULTS, json!({"v": 2})).await;
    assert_eq!(c.recv().await["seq"], s2, "delivered once, not twice");
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let hub = Hub::start(&[]).await;
    let (mut c, _) = connect(&hub).await;
    c.subscribe(CLIPS, json!({})).await;
    let answer = c
        .request(json!({"type": "unsubscribe", "topic": CLIPS}))
        .await;
    assert_eq!(answer["type"], "ack");
    assert!(answer.get("topic").is_none());
    hub.publish(CLIPS, json!({"after": true})).await;
    let pong = c.request(json!({"type": "ping"})).await;
    assert_eq!(
        pong["type"], "pong",
        "nothing arrived before the pong: {pong}"
    );
    // Unsubscribing from a topic never subscribed still answers ack.
    let answer = c
        .request(json!({"type": "unsubscribe", "topic": "clips.never.seen"}))
        .await;
    assert_eq!(answer["type"], "ack");
}

#[tokio::test]
async fn ping_answers_pong_with_the_id() {
    let hub = Hub::start(&[]).await;
    let (mut c, _) = connect(&hub).await;
    c.send(json!({"type": "ping", "id": 77})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "id": 77}));
}

#[tokio::test]
async fn every_error_code_from_bad_frames() {
    let cfg = ConfigFile::new(
        r#"
        [limits]
        max_subscriptions = 2
        max_payload_bytes = 64
        [namespaces.cheers]
        mode = "feed"
        retained = 5
        publish = true
        [namespaces.premium]
        mode = "state"
        retained = 1
        token = true
        "#,
    );
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut c, _) = connect(&hub).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"type": "subscribe", "topic": "results.*"}),
            "bad_topic",
        ),
        (
            json!({"type": "subscribe", "topic": "nope.a"}),
            "unknown_namespace",
        ),
        (
            json!({"type": "publish", "topic": "results.a", "data": {}}),
            "forbidden",
        ),
        (
            json!({"type": "subscribe", "topic": "premium.a"}),
            "forbidden",
        ),
        (
            json!({"type": "react", "topic": "clips.a", "reaction": "🔥"}),
            "forbidden",
        ),
        (
            json!({"type": "react", "topic": "results.a", "reaction": "💩"}),
            "bad_request",
        ),
        (
            json!({"type": "publish", "topic": "cheers.a", "data": {"text": "x".repeat(100)}}),
            "payload_too_large",
        ),
        (json!({"type": "shout"}), "bad_request"),
    ];
    for (frame, code) in cases {
        let answer = c.request(frame.clone()).await;
        assert_eq!(answer["type"], "error", "{frame} → {answer}");
        assert_eq!(answer["code"], code, "{frame} → {answer}");
        assert!(
            answer["id"].is_u64(),
            "error carries the request id: {answer}"
        );
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    c.send_text("{not json").await;
    let answer = c.recv().await;
    assert_eq!(
        (answer["code"].as_str(), answer["id"].is_null()),
        (Some("bad_request"), true)
    );
    c.subscribe("clips.a", json!({})).await;
    c.subscribe("clips.b", json!({})).await;
    let answer = c
        .request(json!({"type": "subscribe", "topic": "clips.c"}))
        .await;
    assert_eq!(answer["code"], "too_many_subscriptions");
    // A fan's publication is acknowledged and never reaches subscribers.
    let answer = c
        .request(json!({"type": "publish", "topic": "cheers.a", "data": {"ok": 1}}))
        .await;
    assert_eq!(answer["type"], "ack");
    // Reactions (on a topic this connection watches): the burst passes,
    // then rate_limited.
    c.request(json!({"type": "unsubscribe", "topic": "clips.b"}))
        .await;
    c.subscribe("results.a", json!({})).await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        let a = c
            .request(json!({"type": "react", "topic": "results.a", "reaction": "🔥"}))
            .await;
        codes.push(a["code"].as_str().unwrap_or("ack").to_string());
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "ack").count(),
        10,
        "{codes:?}"
    );
    assert_eq!(codes.last().unwrap(), "rate_limited");
    // The connection stayed open through all of it.
    assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn http_publish_checks_key_body_topic_and_size() {
    let cfg = ConfigFile::new("[limits]\nmax_payload_bytes = 100\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let key = hub.publish_key().to_string();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/publish", hub.internal_url());
    let body = json!({"topic": CLIPS, "data": {"a": 1}});
    let res = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 401, "no key");
    let res = http
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "wrong key");
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unauthorized");
    let res = http
        .post(&url)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.json::<Value>().await.unwrap()["seq"].as_u64().unwrap() > 0);
    for (body, status, code) in [
        ("{\"topic\":", 400, "bad_request"),
        (
            "{\"topic\":\"clips.x\",\"data\":{\"a\":}",
            400,
            "bad_request",
        ),
        ("{\"topic\":\"clips x\",\"data\":1}", 400, "bad_topic"),
        (
            "{\"topic\":\"nope.x\",\"data\":1}",
            400,
            "unknown_namespace",
        ),
    ] {
        let res = http
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{body}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            code,
            "{body}"
        );
    }
    let big = json!({"topic": CLIPS, "data": {"x": "y".repeat(200)}});
    let res = http
        .post(&url)
        .bearer_auth(&key)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn invalid_publications_are_never_forwarded() {
    let hub = Hub::start(&[]).await;
    let (mut c, _) = connect(&hub).await;
    c.subscribe(CLIPS, json!({})).await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/v1/publish", hub.internal_url()))
        .bearer_auth(hub.publish_key())
        .header("content-type", "application/json")
        .body(format!("{{\"topic\":\"{CLIPS}\",\"data\":{{bad json}}}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let good = hub.publish(CLIPS, json!({"good": true})).await;
    let m = c.recv().await;
    assert_eq!(
        (m["seq"].as_u64(), m["prev"].as_u64()),
        (Some(good), Some(0))
    );
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let hub = Hub::start(&[]).await;
    assert_eq!(hub.get("/healthz").await.0, 200);
    assert_eq!(hub.get("/readyz").await.0, 200);
    assert_eq!(hub.get_internal("/healthz").await.0, 200);
    assert_eq!(hub.get_internal("/readyz").await.0, 200);
    let (mut c, _) = connect(&hub).await;
    c.subscribe(RESULTS, json!({})).await;
    hub.publish(RESULTS, json!({"v": 1})).await;
    c.recv().await;
    let (status, text) = hub.get_internal("/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "tribune_connections",
        "tribune_relays",
        "tribune_deliveries",
        "tribune_history_requests",
        "tribune_slow_consumers",
        "tribune_gaps_repaired",
        "tribune_bus_connected",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert_eq!(hub.metric("tribune_connections").await, 1.0);
    assert_eq!(hub.metric("tribune_relays").await, 1.0);
    assert_eq!(hub.metric("tribune_deliveries_total").await, 1.0);
    assert_eq!(hub.metric("tribune_http_publishes_total").await, 1.0);
    assert_eq!(hub.metric("tribune_bus_connected").await, 1.0);
}

#[tokio::test]
async fn web_assets_are_served() {
    let hub = Hub::start(&[]).await;
    let (status, page) = hub.get("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"),
        "{page}"
    );
    assert_eq!(hub.get("/sdk/does-not-exist.js").await.0, 404);
}

#[tokio::test]
async fn check_config_refuses_unusable_auth_and_unknown_keys() {
    let bin = tribune_tests::hub::binary();
    for (toml, needle) in [
        (
            "[auth]\nalgorithm = \"HS256\"\nsecret = \"short\"\n",
            "auth",
        ),
        ("heartbeat = 5\n", "heartbeat"),
    ] {
        let cfg = ConfigFile::new(toml);
        let out = std::process::Command::new(&bin)
            .args(["--check-config", "--config", cfg.path()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{err}");
    }
    let cfg = ConfigFile::new(
        "[auth]\nalgorithm = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    );
    let out = std::process::Command::new(&bin)
        .args(["--check-config", "--config", cfg.path()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("algorithm = \"HS256\""));
}

/// Reads one server frame (unmasked, as RFC 6455 has servers send) from a
/// raw socket: its opcode and payload.
async fn raw_frame(tcp: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            tcp.read_exact(&mut l).await.ok()?;
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            tcp.read_exact(&mut l).await.ok()?;
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0f, payload))
}

/// A client's Close 1000 is answered with a Close frame (RFC 6455 section
/// 5.5.1), not a dropped socket that browsers report as 1006. Checked on a
/// raw socket, so no websocket library answers anything on our behalf.
#[tokio::test]
async fn a_clients_close_is_echoed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = Hub::start(&[]).await;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr()).await.unwrap();
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        hub.addr()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        response.push(byte[0]);
    }
    assert!(
        response.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let (opcode, welcome) = tokio::time::timeout(Duration::from_secs(5), raw_frame(&mut tcp))
        .await
        .unwrap()
        .expect("welcome");
    assert_eq!(opcode, 0x1, "a text frame");
    assert!(String::from_utf8_lossy(&welcome).contains("\"welcome\""));
    // Close 1000, masked as a client must.
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let body = 1000u16.to_be_bytes();
    let mut frame = vec![0x88, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(body.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), raw_frame(&mut tcp))
        .await
        .expect("an answer within 5 s");
    let (opcode, payload) = answer.expect("a Close frame before the socket closes");
    assert_eq!(opcode, 0x8, "a Close frame");
    assert_eq!(&payload[..2], &body, "the peer's code echoed");
}

/// The README's HTTP answers: a plain `GET /v1/ws` is told, in the JSON of
/// every refusal before the upgrade, to open a WebSocket; and a node with no
/// key configured does not check tokens, so a fan's token (well formed or
/// not) is ignored rather than refused with 401.
#[tokio::test]
async fn http_answers_match_the_readme() {
    let hub = Hub::start(&[]).await;
    let (status, body) = hub.get("/v1/ws").await;
    assert_eq!(status, 426, "{body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    for token in ["abc", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"] {
        let url = format!("{}?token={token}", hub.ws_url());
        let (_c, welcome) = WsClient::connect(&url).await;
        assert_eq!(welcome["type"], "welcome");
    }
}
