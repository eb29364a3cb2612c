//! The NATS bus beyond the shared conformance suite, against a real
//! nats-server: exact history reads on interleaved topics with removals, the
//! batched last-sequence check over more than one request, the status through
//! server restarts and a recreated stream (a live feed whose consumer a
//! restart lost ends), a consumer per live feed deleted with it, timeouts on
//! a hung server, operator-owned streams, and the one-line start errors.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tribune_hub::bus::nats::NatsBus;
use tribune_hub::bus::{Bus, BusError, BusErrorKind, BusMessage, BusStatus};
use tribune_hub::config::BusConfig;
use tribune_protocol::Topic;
use tribune_tests::eventually;
use tribune_tests::nats::NatsServer;

fn topic(name: &str) -> Topic {
    Topic::new(name).expect("valid topic")
}

fn config(server: &NatsServer) -> BusConfig {
    BusConfig {
        url: Some(server.url()),
        request_timeout_ms: 1_000,
        ping_interval_ms: 500,
        check_interval_ms: 200,
        ..BusConfig::default()
    }
}

/// A plain NATS client, as an editor or operator would use.
async fn editor(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("editor connects")
}

/// A JetStream API request with a JSON body; the JSON answer.
async fn api(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    let reply = client
        .request(subject.to_string(), Bytes::from(body.to_string()))
        .await
        .expect("JetStream API answers");
    serde_json::from_slice(&reply.payload).expect("JSON answer")
}

async fn wait_status(bus: &NatsBus, what: &str, check: impl Fn(&BusStatus) -> bool) -> BusStatus {
    let mut rx = bus.status();
    let within = Duration::from_secs(15);
    tokio::time::timeout(within, rx.wait_for(|s| check(s)))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "status not within {within:?}: {what}; last {:?}",
                bus.status().borrow()
            )
        })
        .expect("status channel open")
        .clone()
}

fn seqs(msgs: &[BusMessage]) -> Vec<u64> {
    msgs.iter().map(|m| m.seq).collect()
}

/// What the stream should hold for one topic: its retained tail.
struct Model {
    stored: Vec<u64>,
    payload: HashMap<u64, Bytes>,
}

impl Model {
    /// The `prev` a history read must give the stored message at `i`: the
    /// message stored before it, 0 for the oldest one still stored.
    fn prev_at(&self, i: usize) -> u64 {
        if i == 0 { 0 } else { self.stored[i - 1] }
    }

    fn check(&self, got: &[BusMessage], from: usize, what: &str) {
        let want: Vec<u64> = self.stored[from..from + got.len()].to_vec();
        assert_eq!(seqs(got), want, "{what}");
        for (k, m) in got.iter().enumerate() {
            assert_eq!(m.prev, self.prev_at(from + k), "{what}: prev of {}", m.seq);
            assert_eq!(m.data, self.payload[&m.seq], "{what}: payload of {}", m.seq);
            assert!(m.ts > 1_600_000_000_000, "{what}: ts is Unix ms: {}", m.ts);
        }
    }
}

#[tokio::test]
async fn history_reads_are_exact_on_interleaved_topics_with_removals() {
    let server = NatsServer::start().await;
    let retained = 20u32;
    let bus = NatsBus::connect(&config(&server), retained).await.unwrap();
    let names = ["clips.hist.dense", "clips.hist.medium", "clips.hist.sparse"];
    let topics: Vec<Topic> = names.iter().map(|n| topic(n)).collect();
    let mut all: Vec<Vec<u64>> = vec![Vec::new(); 3];
    let mut payload = HashMap::new();
    // A fixed pseudo-random interleaving: 60 % dense, 30 % medium, 10 % sparse.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = match x % 10 {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        };
        let data = Bytes::from(format!("{{\"i\":{i}}}"));
        let seq = bus.publish(&topics[k], data.clone(), None).await.unwrap();
        all[k].push(seq);
        payload.insert(seq, data);
    }
    for (k, t) in topics.iter().enumerate() {
        let keep = all[k].len().saturating_sub(retained as usize);
        let model = Model {
            stored: all[k][keep..].to_vec(),
            payload: payload.clone(),
        };
        let len = model.stored.len();
        assert!(len > 5, "{t}: enough messages for the test");
        for n in [1usize, 2, 3, 5, 10, len - 1, len, len + 1, 100] {
            let got = bus.last(t, n as u32).await.unwrap();
            assert_eq!(got.len(), n.min(len), "{t}: last {n}");
            model.check(&got, len - got.len(), &format!("{t}: last {n}"));
        }
        let other = all[(k + 1) % 3][all[(k + 1) % 3].len() / 2];
        let aged_out = all[k].first().copied().filter(|_| keep > 0);
        let mut starts = vec![
            0,
            model.stored[0],
            model.stored[len / 2],
            model.stored[len - 1],
            other,
        ];
        starts.extend(aged_out);
        for after in starts {
            for limit in [1usize, 3, 1000] {
                let read = bus.after(t, after, limit as u32).await.unwrap();
                let got = &read.messages;
                let from = model.stored.iter().position(|s| *s > after).unwrap_or(len);
                assert_eq!(
                    got.len(),
                    (len - from).min(limit),
                    "{t}: after {after} limit {limit}"
                );
                model.check(got, from, &format!("{t}: after {after} limit {limit}"));
                // A hole is possible only when the read starts at the oldest
                // stored message, `after` is not stored, and the subject is
                // full (its per-subject limit removed older ones).
                let hole = from == 0
                    && !got.is_empty()
                    && !model.stored.contains(&after)
                    && len as u32 >= retained;
                assert_eq!(read.hole, hole, "{t}: hole after {after} limit {limit}");
            }
        }
    }
    assert!(
        bus.last(&topic("clips.hist.none"), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        bus.after(&topic("clips.hist.none"), 3, 5)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert!(bus.last(&topics[0], 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn last_seqs_batches_past_1024_topics() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&config(&server), 10).await.unwrap();
    let topics: Vec<Topic> = (0..1_500)
        .map(|i| topic(&format!("clips.many.t{i}")))
        .collect();
    let acks = futures::future::join_all(
        topics[..1_400]
            .iter()
            .map(|t| bus.publish(t, Bytes::from_static(b"{}"), None)),
    )
    .await;
    let expected: HashMap<Topic, u64> = topics[..1_400]
        .iter()
        .cloned()
        .zip(acks.into_iter().map(|a| a.unwrap()))
        .collect();
    let got = bus.last_seqs(&topics).await.unwrap();
    assert_eq!(
        got.len(),
        1_400,
        "the 100 topics without messages are absent"
    );
    assert_eq!(got, expected);
    assert!(bus.last_seqs(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn restart_keeps_the_epoch_and_bumps_the_generation() {
    let mut server = NatsServer::start().await;
    let bus = NatsBus::connect(&config(&server), 100).await.unwrap();
    let before = bus.status().borrow().clone();
    assert!(before.connected);
    let t = topic("clips.restart.a");
    let mut feed = bus.live(&t).await.unwrap();
    let s1 = bus
        .publish(&t, Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    assert_eq!(feed.next().await.unwrap().seq, s1);

    server.kill();
    wait_status(&bus, "disconnected after SIGKILL", |s| !s.connected).await;
    // Every call fails within its timeout instead of hanging.
    let bound = Duration::from_secs(5);
    let unavailable = |r: Result<(), BusError>| {
        assert!(
            matches!(&r, Err(e) if e.kind() == BusErrorKind::Unavailable),
            "{r:?}"
        )
    };
    unavailable(
        tokio::time::timeout(bound, bus.last(&t, 5))
            .await
            .expect("bounded")
            .map(drop),
    );
    unavailable(
        tokio::time::timeout(bound, bus.after(&t, 0, 5))
            .await
            .expect("bounded")
            .map(drop),
    );
    unavailable(
        tokio::time::timeout(bound, bus.last_seqs(std::slice::from_ref(&t)))
            .await
            .expect("bounded")
            .map(drop),
    );
    unavailable(
        tokio::time::timeout(bound, bus.publish(&t, Bytes::from_static(b"2"), None))
            .await
            .expect("bounded")
            .map(drop),
    );

    server.restart().await;
    let after = wait_status(&bus, "connected again", |s| {
        s.connected && s.generation > before.generation
    })
    .await;
    assert_eq!(
        after.epoch, before.epoch,
        "a file stream survives a restart: same epoch"
    );
    let s2 = bus
        .publish(&t, Bytes::from_static(b"3"), None)
        .await
        .unwrap();
    assert!(s2 > s1);
    // The feed's consumer (kept in the server's memory) did not survive the
    // restart: the feed ends within a heartbeat or two instead of staying
    // silent, and whoever held it opens another and reads what was stored
    // meanwhile, as a relay does.
    let end = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("the feed ends rather than staying silent");
    assert_eq!(end, None);
    let mut feed = bus.live(&t).await.unwrap();
    let missed = bus.after(&t, s1, 10).await.unwrap();
    assert_eq!(seqs(&missed.messages), [s2]);
    let s3 = bus
        .publish(&t, Bytes::from_static(b"4"), None)
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.seq, s3);
}

#[tokio::test]
async fn a_hung_server_is_a_timeout_not_a_hang() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&config(&server), 100).await.unwrap();
    let t = topic("clips.hung.a");
    bus.publish(&t, Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    server.pause();
    let bound = Duration::from_secs(5);
    let r = tokio::time::timeout(bound, bus.last(&t, 1))
        .await
        .expect("bounded");
    assert!(
        matches!(&r, Err(e) if e.kind() == BusErrorKind::Unavailable),
        "{r:?}"
    );
    let r = tokio::time::timeout(bound, bus.publish(&t, Bytes::from_static(b"2"), None))
        .await
        .expect("bounded");
    assert!(
        matches!(&r, Err(e) if e.kind() == BusErrorKind::Unavailable),
        "{r:?}"
    );
    let r = tokio::time::timeout(bound, bus.live(&t))
        .await
        .expect("bounded");
    assert!(r.is_err(), "live on a hung server fails");
    server.resume();
    let got = eventually("the bus answers again", Duration::from_secs(10), || async {
        bus.last(&t, 1).await.ok()
    })
    .await;
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn a_memory_stream_lost_in_a_restart_is_recreated_with_a_new_epoch() {
    let mut server = NatsServer::start().await;
    let cfg = BusConfig {
        storage: "memory".into(),
        ..config(&server)
    };
    let bus = NatsBus::connect(&cfg, 100).await.unwrap();
    let before = bus.status().borrow().clone();
    let t = topic("clips.mem.a");
    bus.publish(&t, Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    bus.publish(&t, Bytes::from_static(b"2"), None)
        .await
        .unwrap();
    server.restart().await;
    let after = wait_status(&bus, "a new epoch", |s| {
        s.connected && s.epoch != before.epoch
    })
    .await;
    assert!(after.generation > before.generation);
    assert!(
        bus.last(&t, 5).await.unwrap().is_empty(),
        "the old messages are gone"
    );
    assert_eq!(
        bus.publish(&t, Bytes::from_static(b"3"), None)
            .await
            .unwrap(),
        1,
        "a new sequence"
    );
}

#[tokio::test]
async fn a_deleted_stream_is_recreated_with_a_new_epoch() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&config(&server), 100).await.unwrap();
    let before = bus.status().borrow().clone();
    let nc = editor(&server).await;
    let deleted = api(&nc, "$JS.API.STREAM.DELETE.TRIBUNE", json!({})).await;
    assert_eq!(deleted["success"], json!(true), "{deleted}");
    let after = wait_status(&bus, "a new epoch", |s| {
        s.connected && s.epoch != before.epoch
    })
    .await;
    assert!(after.generation > before.generation);
    let info = api(&nc, "$JS.API.STREAM.INFO.TRIBUNE", json!({})).await;
    assert_eq!(info["config"]["allow_direct"], json!(true));
    assert_eq!(info["config"]["republish"]["dest"], json!("tribune.live.>"));
}

#[tokio::test]
async fn the_stream_is_provisioned_as_protocol_section_10_says() {
    let server = NatsServer::start().await;
    let cfg = BusConfig {
        max_age_secs: 3_600,
        duplicate_window_secs: 60,
        ..config(&server)
    };
    let _bus = NatsBus::connect(&cfg, 42).await.unwrap();
    let nc = editor(&server).await;
    let info = api(&nc, "$JS.API.STREAM.INFO.TRIBUNE", json!({})).await;
    let c = &info["config"];
    assert_eq!(c["subjects"], json!(["tribune.fan.>"]));
    assert_eq!(c["republish"]["src"], json!("tribune.fan.>"));
    assert_eq!(c["republish"]["dest"], json!("tribune.live.>"));
    assert_eq!(c["allow_direct"], json!(true));
    assert_eq!(c["max_msgs_per_subject"], json!(42));
    assert_eq!(c["max_age"], json!(3_600_000_000_000u64));
    assert_eq!(c["duplicate_window"], json!(60_000_000_000u64));
    assert_eq!(c["storage"], json!("file"));
    assert_eq!(c["num_replicas"], json!(1));
    // A hub started with other settings updates the stream it owns.
    let _again = NatsBus::connect(
        &BusConfig {
            max_age_secs: 7_200,
            ..cfg.clone()
        },
        50,
    )
    .await
    .unwrap();
    let info = api(&nc, "$JS.API.STREAM.INFO.TRIBUNE", json!({})).await;
    assert_eq!(info["config"]["max_msgs_per_subject"], json!(50));
    assert_eq!(info["config"]["max_age"], json!(7_200_000_000_000u64));
}

#[tokio::test]
async fn an_operator_owned_stream_is_checked_not_changed() {
    let server = NatsServer::start().await;
    let cfg = BusConfig {
        manage_stream: false,
        ..config(&server)
    };
    let err = NatsBus::connect(&cfg, 100)
        .await
        .err()
        .expect("no stream, not managed: refused")
        .to_string();
    assert!(
        err.contains("does not exist") && !err.contains('\n'),
        "{err}"
    );

    let nc = editor(&server).await;
    let mut stream = json!({
        "name": "TRIBUNE", "subjects": ["tribune.fan.>"], "storage": "file", "num_replicas": 1,
        "max_msgs_per_subject": 5, "retention": "limits", "discard": "old",
        "max_consumers": -1, "max_msgs": -1, "max_bytes": -1, "max_age": 0,
    });
    let created = api(&nc, "$JS.API.STREAM.CREATE.TRIBUNE", stream.clone()).await;
    assert!(created.get("error").is_none(), "{created}");
    let err = NatsBus::connect(&cfg, 100)
        .await
        .err()
        .expect("no direct get: refused")
        .to_string();
    assert!(err.contains("allow_direct"), "{err}");

    stream["allow_direct"] = json!(true);
    stream["republish"] = json!({"src": "tribune.fan.>", "dest": "tribune.live.>"});
    let updated = api(&nc, "$JS.API.STREAM.UPDATE.TRIBUNE", stream).await;
    assert!(updated.get("error").is_none(), "{updated}");
    let bus = NatsBus::connect(&cfg, 100)
        .await
        .expect("a fit operator stream is used");
    let t = topic("clips.operator.a");
    let mut feed = bus.live(&t).await.unwrap();
    let s = bus
        .publish(&t, Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    assert_eq!(feed.next().await.unwrap().seq, s);
    let info = api(&nc, "$JS.API.STREAM.INFO.TRIBUNE", json!({})).await;
    assert_eq!(
        info["config"]["max_msgs_per_subject"],
        json!(5),
        "the hub left the operator's limits alone"
    );

    // Not ours: when it goes, the hub reports it and does not recreate it.
    let deleted = api(&nc, "$JS.API.STREAM.DELETE.TRIBUNE", json!({})).await;
    assert_eq!(deleted["success"], json!(true));
    wait_status(&bus, "not connected without its stream", |s| !s.connected).await;
    let info = api(&nc, "$JS.API.STREAM.INFO.TRIBUNE", json!({})).await;
    assert_eq!(info["error"]["code"], json!(404), "{info}");
}

#[tokio::test]
async fn start_errors_are_one_line() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = BusConfig {
        url: Some(format!("nats://127.0.0.1:{closed}")),
        ..BusConfig::default()
    };
    let err = NatsBus::connect(&cfg, 100)
        .await
        .err()
        .expect("nothing listens there");
    assert!(err.kind() == BusErrorKind::Unusable, "{err:?}");
    let err = err.to_string();
    assert!(
        err.starts_with("cannot connect to NATS at nats://127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    let err = NatsBus::connect(&BusConfig::default(), 100)
        .await
        .err()
        .expect("no url")
        .to_string();
    assert!(err.contains("--nats"), "{err}");
}

#[tokio::test]
async fn dropping_a_live_feed_unsubscribes_and_deletes_its_consumer() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&config(&server), 100).await.unwrap();
    let operator = editor(&server).await;
    let http = reqwest::Client::new();
    let subscriptions = || async {
        let v: Value = http
            .get(format!("{}/subsz", server.monitor_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["num_subscriptions"].as_u64().unwrap()
    };
    let consumers = || async {
        let info = api(&operator, "$JS.API.STREAM.INFO.TRIBUNE", json!({})).await;
        info["state"]["consumer_count"].as_u64().unwrap()
    };
    // (The operator's first request subscribes its reply subject: before
    // the base count.)
    assert_eq!(consumers().await, 0);
    let base = subscriptions().await;
    let feeds = futures::future::join_all((0..5).map(|i| {
        let t = topic(&format!("clips.unsub.t{i}"));
        let bus = &bus;
        async move { bus.live(&t).await.unwrap() }
    }))
    .await;
    eventually("a consumer per feed", Duration::from_secs(5), || async {
        (consumers().await == 5 && subscriptions().await >= base + 5).then_some(())
    })
    .await;
    drop(feeds);
    eventually(
        "no consumer left, back to the base count",
        Duration::from_secs(5),
        || async { (consumers().await == 0 && subscriptions().await == base).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn oversized_payloads_are_refused() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&config(&server), 100).await.unwrap();
    let big = Bytes::from(vec![b'1'; 2 * 1024 * 1024]);
    let r = bus.publish(&topic("clips.big.a"), big, None).await;
    assert!(
        matches!(&r, Err(e) if e.kind() == BusErrorKind::Rejected),
        "{r:?}"
    );
}

#[tokio::test]
async fn editors_publish_with_plain_nats() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&config(&server), 100).await.unwrap();
    let t = topic("clips.editor.a");
    let mut feed = bus.live(&t).await.unwrap();
    let nc = editor(&server).await;
    let js = async_nats::jetstream::new(nc);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "editor-1");
    let payload = Bytes::from_static(b"{ \"odd\" :\t[1,2] }");
    let ack = js
        .publish_with_headers(
            "tribune.fan.clips.editor.a",
            headers.clone(),
            payload.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let again = js
        .publish_with_headers("tribune.fan.clips.editor.a", headers, payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(again.duplicate, "the retry was recognised");
    assert_eq!(again.sequence, ack.sequence, "and answered the first seq");
    let m = feed.next().await.unwrap();
    assert_eq!((m.seq, m.prev, &m.data), (ack.sequence, 0, &payload));
    let last = bus.last(&t, 10).await.unwrap();
    assert_eq!(seqs(&last), vec![ack.sequence], "stored once");
    assert_eq!(last[0].ts, m.ts, "live and history agree on ts");
}
