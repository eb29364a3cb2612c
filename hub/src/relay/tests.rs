//! The relay against buses that lose, lag and remove: payload checks, gap
//! repair, catching up, and holes announced (PROTOCOL.md section 5).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tribune_protocol::{Mode, Topic};

use super::testing::{LaggingBus, drain_frames, feed_subscriber, kinds, publish_n, subscriber};
use super::{JoinRequest, Relay, RelayTask, Settings};
use crate::bus::Bus;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Invalid JSON and oversized payloads from the (real, embedded) bus are
/// counted and dropped; the `prev` chain clients see stays whole.
#[tokio::test]
async fn invalid_payloads_are_dropped_and_chain_kept() {
    use crate::bus::memory::MemoryBus;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(
        std::collections::HashMap::from([("clips".to_string(), 100)]),
        Duration::from_secs(60),
    ));
    let topic = Topic::new("clips.relay.test").unwrap();
    let (outbox, metrics) = feed_subscriber(bus.clone(), &topic, 32).await;
    let good1 = bus
        .publish(&topic, Bytes::from_static(b"{\"a\":1}"), None)
        .await
        .unwrap();
    bus.publish(&topic, Bytes::from_static(b"{broken"), None)
        .await
        .unwrap();
    bus.publish(&topic, Bytes::from(format!("\"{}\"", "x".repeat(64))), None)
        .await
        .unwrap();
    let good2 = bus
        .publish(&topic, Bytes::from_static(b"[2]"), None)
        .await
        .unwrap();
    let mut frames = Vec::new();
    for _ in 0..100 {
        let mut batch = VecDeque::new();
        outbox.take(&mut batch);
        frames.extend(batch.into_iter().map(|q| q.frame.as_str().to_string()));
        if frames.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let messages: Vec<serde_json::Value> = frames[1..]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert_eq!(messages.len(), 2, "{frames:?}");
    assert_eq!(
        (messages[0]["seq"].as_u64(), messages[0]["prev"].as_u64()),
        (Some(good1), Some(0))
    );
    assert_eq!(
        (messages[1]["seq"].as_u64(), messages[1]["prev"].as_u64()),
        (Some(good2), Some(good1))
    );
    let text = metrics.render();
    assert!(
        text.contains("tribune_payloads_dropped_total{reason=\"invalid_json\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tribune_payloads_dropped_total{reason=\"too_large\"} 1"),
        "{text}"
    );
}

/// A gap whose first repair read comes back short is retried, never
/// forwarded with a hole.
#[tokio::test]
async fn gap_repair_insists_on_a_lagging_read() {
    let bus = LaggingBus::new();
    let topic = Topic::new("clips.relay.gap").unwrap();
    let (outbox, metrics) = feed_subscriber(bus.clone(), &topic, 1 << 20).await;
    let s1 = bus
        .publish(&topic, Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    bus.drop_live_from(s1 + 1, 1);
    bus.lagging_reads
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let s2 = bus
        .publish(&topic, Bytes::from_static(b"2"), None)
        .await
        .unwrap();
    let s3 = bus
        .publish(&topic, Bytes::from_static(b"3"), None)
        .await
        .unwrap();
    assert_eq!(s2, s1 + 1);
    let frames = drain_frames(&outbox, 4).await;
    let seqs: Vec<(u64, u64)> = frames[1..]
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["prev"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        seqs,
        vec![(s1, 0), (s2, s1), (s3, s2)],
        "the missed message was repaired in order"
    );
    let text = metrics.render();
    assert!(text.contains("tribune_gaps_repaired_total 1"), "{text}");
}

/// A feed that ended is opened again; when the read of what was stored in
/// between fails, the new feed's first message (`prev` unknown, as on NATS)
/// is checked against the stream before it is forwarded: the message stored
/// while no feed was open is repaired, never skipped without a word.
#[tokio::test]
async fn a_reopened_feed_is_checked_when_the_read_in_between_failed() {
    use std::sync::atomic::Ordering::SeqCst;
    let bus = LaggingBus::new();
    bus.first_prev_unknown.store(true, SeqCst);
    let topic = Topic::new("clips.relay.reopened").unwrap();
    let (outbox, _metrics) = feed_subscriber(bus.clone(), &topic, 1 << 20).await;
    let s1 = bus
        .publish(&topic, Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    assert_eq!(drain_frames(&outbox, 2).await.len(), 2, "ack and s1");
    // The feed ends; every read of the next check fails; the new feed
    // misses s2 (stored while it opened).
    bus.drop_live_from(s1 + 1, 1);
    bus.failing_reads.store(3, SeqCst);
    bus.end_feeds();
    let s2 = bus
        .publish(&topic, Bytes::from_static(b"2"), None)
        .await
        .unwrap();
    for _ in 0..200 {
        if bus.failing_reads.load(SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bus.failing_reads.load(SeqCst), 0, "the reopen's reads ran");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s3 = bus
        .publish(&topic, Bytes::from_static(b"3"), None)
        .await
        .unwrap();
    let frames = drain_frames(&outbox, 2).await;
    assert_eq!(
        kinds(&frames),
        vec![
            ("message".to_string(), s2, s1),
            ("message".to_string(), s3, s2)
        ],
        "{frames:?}"
    );
}

/// A fan resuming from a node that was ahead of this one recovers: the
/// relay reads what it had not seen yet instead of answering
/// `recovered: false` and replaying what the fan already holds.
#[tokio::test]
async fn resume_from_ahead_catches_up_and_recovers() {
    let bus = LaggingBus::new();
    let topic = Topic::new("clips.relay.ahead").unwrap();
    let metrics = Arc::new(Metrics::new());
    let epoch = bus.status().borrow().epoch.clone();
    let (relay, ctl) = Relay::new(
        1,
        topic.clone(),
        Settings {
            mode: Mode::Feed,
            delta: false,
            retained: 100,
            retention: super::Retention::count(100),
            max_payload: 1 << 20,
        },
        epoch.clone(),
        metrics,
    );
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    tokio::spawn(
        RelayTask::new(
            relay.clone(),
            dyn_bus,
            ctl,
            Duration::from_secs(60),
            Box::new(|_| {}),
        )
        .run(),
    );
    relay.ready().await.unwrap();
    let s1 = bus
        .publish(&topic, Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    // The live feed misses the next one: this node is behind the stream.
    bus.drop_live_from(s1 + 1, 1);
    let s2 = bus
        .publish(&topic, Bytes::from_static(b"2"), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let req = JoinRequest {
        id: 7,
        history: None,
        since: Some((s2, epoch.to_string())),
        delta: None,
        delay_ms: 0,
    };
    relay.catch_up(&req).await;
    let outbox = Arc::new(Outbox::new(1 << 20, 1024));
    relay.join(&outbox, &req).unwrap();
    let frames = drain_frames(&outbox, 1).await;
    assert_eq!(frames[0]["recovered"], true, "{:?}", frames[0]);
    assert_eq!(frames[0]["seq"], s2);
    assert_eq!(
        frames.len(),
        1,
        "nothing the fan holds is replayed: {frames:?}"
    );
    let s3 = bus
        .publish(&topic, Bytes::from_static(b"3"), None)
        .await
        .unwrap();
    let frames = drain_frames(&outbox, 1).await;
    assert_eq!(
        (frames[0]["seq"].as_u64(), frames[0]["prev"].as_u64()),
        (Some(s3), Some(s2))
    );
}

/// Messages the live feed missed and the bus removed before the repair:
/// one `gap` names them, and the next message carries the bus's `prev`
/// (its real predecessor), not the seq before the hole. A resume across
/// the hole replays the `gap` in place; so does a history replay.
#[tokio::test]
async fn unrepairable_hole_yields_one_gap_and_the_true_prev() {
    let bus = LaggingBus::keeping(3);
    let topic = Topic::new("clips.relay.hole").unwrap();
    let (relay, outbox, metrics) = subscriber(bus.clone(), &topic, Mode::Feed, 1 << 20).await;
    let s1 = publish_n(&bus, &topic, 1).await[0];
    assert_eq!(drain_frames(&outbox, 2).await.len(), 2, "ack and s1");
    // Five messages the live feed misses; the bus keeps only 3 per topic,
    // so when the next live message shows the hole, s2 and s3 are gone.
    bus.drop_live_from(s1 + 1, 5);
    let missed = publish_n(&bus, &topic, 5).await;
    let s7 = publish_n(&bus, &topic, 1).await[0];
    let frames = drain_frames(&outbox, 4).await;
    assert_eq!(
        kinds(&frames),
        vec![
            ("gap".into(), s1, missed[3]),
            ("message".into(), missed[3], missed[2]),
            ("message".into(), missed[4], missed[3]),
            ("message".into(), s7, missed[4]),
        ],
        "{frames:?}"
    );
    assert_eq!(frames[0]["topic"], topic.as_str());
    let text = metrics.render();
    assert!(
        text.contains("tribune_gaps_unrepairable_total{mode=\"feed\"} 1"),
        "{text}"
    );
    let epoch = bus.status().borrow().epoch.to_string();
    let resumed = Arc::new(Outbox::new(1 << 20, 1024));
    relay
        .join(
            &resumed,
            &JoinRequest {
                id: 2,
                history: None,
                since: Some((s1, epoch)),
                delta: None,
                delay_ms: 0,
            },
        )
        .unwrap();
    let frames = drain_frames(&resumed, 5).await;
    assert_eq!(frames[0]["recovered"], true, "{frames:?}");
    assert_eq!(
        kinds(&frames[1..]),
        vec![
            ("gap".into(), s1, missed[3]),
            ("message".into(), missed[3], missed[2]),
            ("message".into(), missed[4], missed[3]),
            ("message".into(), s7, missed[4]),
        ]
    );
    let history = Arc::new(Outbox::new(1 << 20, 1024));
    relay
        .join(
            &history,
            &JoinRequest {
                id: 3,
                history: Some(3),
                since: None,
                delta: None,
                delay_ms: 0,
            },
        )
        .unwrap();
    let frames = drain_frames(&history, 4).await;
    assert_eq!(
        kinds(&frames[1..]),
        vec![
            ("message".into(), missed[3], missed[2]),
            ("message".into(), missed[4], missed[3]),
            ("message".into(), s7, missed[4]),
        ],
        "a history replay starting at the hole owes no gap"
    );
}

/// A `state` topic sends no `gap` (the next state supersedes), but a
/// resume across the hole is not `recovered: true`.
#[tokio::test]
async fn state_resume_across_a_hole_is_not_recovered() {
    let bus = LaggingBus::keeping(2);
    let topic = Topic::new("results.relay.hole").unwrap();
    let (relay, outbox, metrics) = subscriber(bus.clone(), &topic, Mode::State, 1 << 20).await;
    let s1 = publish_n(&bus, &topic, 1).await[0];
    bus.drop_live_from(s1 + 1, 4);
    let missed = publish_n(&bus, &topic, 4).await;
    let s6 = publish_n(&bus, &topic, 1).await[0];
    let frames = drain_frames(&outbox, 4).await;
    assert!(
        frames.iter().all(|f| f["type"] != "gap"),
        "no gap frame on a state topic: {frames:?}"
    );
    assert_eq!(
        kinds(&frames).last().cloned(),
        Some(("message".into(), s6, missed[3]))
    );
    assert!(
        metrics
            .render()
            .contains("tribune_gaps_unrepairable_total{mode=\"state\"} 1")
    );
    let epoch = bus.status().borrow().epoch.to_string();
    let resumed = Arc::new(Outbox::new(1 << 20, 1024));
    relay
        .join(
            &resumed,
            &JoinRequest {
                id: 2,
                history: None,
                since: Some((s1, epoch.clone())),
                delta: None,
                delay_ms: 0,
            },
        )
        .unwrap();
    let frames = drain_frames(&resumed, 2).await;
    assert_eq!(frames[0]["recovered"], false, "{frames:?}");
    assert_eq!(frames[1]["seq"], s6, "the replay ends on the latest state");
    // A resume after the hole recovers.
    let after = Arc::new(Outbox::new(1 << 20, 1024));
    relay
        .join(
            &after,
            &JoinRequest {
                id: 3,
                history: None,
                since: Some((missed[3], epoch)),
                delta: None,
                delay_ms: 0,
            },
        )
        .unwrap();
    let frames = drain_frames(&after, 2).await;
    assert_eq!(frames[0]["recovered"], true, "{frames:?}");
}

/// Delta updates cost one delta per message per topic, whatever the number
/// of subscribers (counted); every primed subscriber gets the same delta
/// frame, the others the full one, and a fresh join is primed by its replay.
#[tokio::test]
async fn one_delta_per_message_whatever_the_audience() {
    use crate::bus::memory::MemoryBus;
    for audience in [1usize, 10, 300] {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(
            std::collections::HashMap::from([("results".to_string(), 10)]),
            Duration::from_secs(60),
        ));
        let topic = Topic::new("results.relay.delta").unwrap();
        let board = |n: usize| {
            let rows: Vec<String> = (0..30)
                .map(|r| {
                    format!(
                        r#"{{"rank":{r},"name":"Skater Nº{r}","time":{}}}"#,
                        1000 + r * n
                    )
                })
                .collect();
            Bytes::from(format!(r#"{{"rows":[{}]}}"#, rows.join(",")))
        };
        bus.publish(&topic, board(1), None).await.unwrap();
        let (relay, _first, metrics) = subscriber(bus.clone(), &topic, Mode::State, 1 << 20).await;
        let outboxes: Vec<Arc<Outbox>> = (0..audience)
            .map(|i| {
                let outbox = Arc::new(Outbox::new(1 << 20, 1024));
                let req = JoinRequest {
                    id: 1,
                    delta: Some(i % 2 == 0),
                    delay_ms: 0,
                    ..Default::default()
                };
                relay.join(&outbox, &req).unwrap();
                outbox
            })
            .collect();
        let published = 6;
        for n in 2..2 + published {
            bus.publish(&topic, board(n), None).await.unwrap();
        }
        let mut frames = Vec::new();
        for outbox in &outboxes {
            frames.push(drain_frames(outbox, 2 + published).await);
        }
        let text = metrics.render();
        assert!(
            text.contains(&format!("tribune_deltas_total {published}\n")),
            "one delta per message for {audience} subscribers: {text}"
        );
        let asked = audience.div_ceil(2);
        assert!(
            text.contains(&format!(
                "tribune_delta_deliveries_total {}\n",
                published * asked
            )),
            "{text}"
        );
        for (i, got) in frames.iter().enumerate() {
            assert_eq!(got[0]["delta"], i % 2 == 0, "the ack says: {:?}", got[0]);
            let deltas = got[2..].iter().filter(|f| f["delta"] == true).count();
            assert_eq!(deltas, if i % 2 == 0 { published } else { 0 });
            assert!(
                got[1]["delta"].is_null(),
                "the replay is full: {:?}",
                got[1]
            );
        }
    }
}
