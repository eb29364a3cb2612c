//! The spoiler shield through a relay (PROTOCOL.md section 13): one delay
//! line per delay value, frames released at `ts` + delay, joins, resumes
//! from ahead, retractions of held messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tribune_protocol::{Mode, Topic};

use super::delay::now_ms;
use super::testing::{LaggingBus, drain_frames, subscriber};
use super::{JoinRequest, Relay};
use crate::bus::Bus;
use crate::outbox::Outbox;

fn join(relay: &Arc<Relay>, delay_ms: u64, extra: JoinRequest) -> (Arc<Outbox>, usize) {
    let outbox = Arc::new(Outbox::new(1 << 20, 1024));
    let req = JoinRequest {
        id: 7,
        delay_ms,
        ..extra
    };
    let key = relay.join(&outbox, &req).unwrap();
    (outbox, key)
}

fn messages(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect()
}

/// Six subscribers on two delay values make two lines, each holding a
/// message once; every message reaches each delayed subscriber at or
/// after `ts` + its delay, in order, none lost; the last one out of a
/// line removes it.
#[tokio::test]
async fn one_line_per_delay_value_released_on_time() {
    let bus = LaggingBus::new();
    let topic = Topic::new("clips.delay.lines").unwrap();
    let (relay, live, metrics) = subscriber(bus.clone(), &topic, Mode::Feed, 1024).await;
    let short: Vec<_> = (0..4)
        .map(|_| join(&relay, 300, JoinRequest::default()))
        .collect();
    let long: Vec<_> = (0..2)
        .map(|_| join(&relay, 600, JoinRequest::default()))
        .collect();
    assert_eq!(metrics.delay_lines.get(), 2);
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(
            bus.publish(&topic, Bytes::from(format!("{{\"i\":{i}}}")), None)
                .await
                .unwrap(),
        );
    }
    let now = drain_frames(&live, 6).await;
    assert_eq!(messages(&now), seqs, "live subscribers are not delayed");
    assert_eq!(
        metrics.delay_held.get(),
        10,
        "each message held once per line"
    );
    for (line, delay) in [(&short, 300), (&long, 600)] {
        for (outbox, _) in line.iter() {
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while got.len() < 6 && std::time::Instant::now() < deadline {
                let mut batch = std::collections::VecDeque::new();
                outbox.take(&mut batch);
                let at = now_ms();
                for q in batch {
                    let f: Value = serde_json::from_str(q.frame.as_str()).unwrap();
                    if f["type"] == "message" {
                        let due = f["ts"].as_u64().unwrap() + delay;
                        assert!(at >= due, "released at {at}, due {due}: {f}");
                    }
                    got.push(f);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(got[0]["type"], "ack");
            assert_eq!(messages(&got), seqs, "every message, in order");
        }
    }
    assert_eq!(metrics.delay_held.get(), 0);
    for (_, key) in &long {
        relay.leave(*key);
    }
    assert_eq!(metrics.delay_lines.get(), 1);
}

/// A delayed join is answered at once, at the line's position, with the
/// history that is due; a resume from ahead of the line skips what it
/// holds; a message retracted while held leaves as its retraction.
#[tokio::test]
async fn joins_resumes_and_retractions_on_a_line() {
    let bus = LaggingBus::new();
    let topic = Topic::new("clips.delay.joins").unwrap();
    let (relay, live, metrics) = subscriber(bus.clone(), &topic, Mode::Feed, 1024).await;
    let old = bus
        .publish(&topic, Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    drain_frames(&live, 2).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let fresh = bus
        .publish(&topic, Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    drain_frames(&live, 1).await;
    let history = JoinRequest {
        history: Some(10),
        ..JoinRequest::default()
    };
    let (early, _) = join(&relay, 400, history);
    let got = drain_frames(&early, 2).await;
    assert_eq!(
        got[0]["seq"],
        serde_json::json!(old),
        "ack at the line's position"
    );
    assert_eq!(messages(&got), vec![old], "only what is due: {got:?}");
    // A fan that holds `fresh` already (it came from a live subscription).
    let epoch = bus.status().borrow().epoch.to_string();
    let ahead = JoinRequest {
        since: Some((fresh, epoch)),
        ..JoinRequest::default()
    };
    let (skipping, _) = join(&relay, 400, ahead);
    let ack = drain_frames(&skipping, 1).await;
    assert_eq!(ack[0]["recovered"], serde_json::json!(true));
    let retracted = bus
        .publish(&topic, Bytes::from_static(b"{\"spoiler\":1}"), None)
        .await
        .unwrap();
    let marker = bus.retract(&topic, retracted).await.unwrap();
    let got = drain_frames(&early, 4).await;
    let kinds: Vec<(String, u64)> = got
        .iter()
        .map(|f| {
            (
                f["type"].as_str().unwrap().to_string(),
                f["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("message".to_string(), fresh),
            ("retract".to_string(), retracted),
            ("retract".to_string(), retracted)
        ],
        "{got:?}"
    );
    assert_eq!(got[2]["at"], serde_json::json!(marker));
    assert!(
        got.iter()
            .all(|f| f["data"] != serde_json::json!({"spoiler": 1}))
    );
    let got = drain_frames(&skipping, 2).await;
    assert_eq!(
        got.iter()
            .filter(|f| f["seq"] == serde_json::json!(fresh))
            .count(),
        0,
        "{got:?}"
    );
    assert_eq!(got.len(), 2, "{got:?}");
    // What a new line started with is counted as held, and released.
    assert_eq!(metrics.delay_held.get(), 0);
    assert_eq!(
        metrics.delay_lines.get(),
        1,
        "one line for both subscribers"
    );
}
