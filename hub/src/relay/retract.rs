//! Retractions in a relay (PROTOCOL.md section 13): whether a retraction
//! marker from the bus is taken, and the `retract` frames it and its
//! target are cached as.
//!
//! A marker is a stored message of the topic (its own `seq`, `prev`, `ts`)
//! naming the retracted `seq`. Taken, it goes to fans as
//! `{"type":"retract","topic","seq":<target>,"at":<marker seq>,"prev","ts"}`
//! and keeps its place in the cache, so a resume from anywhere before it
//! gets it; the target, when cached, keeps its place in the chain but its
//! frames become a `retract` frame naming itself (`"at"` = its own `seq`):
//! replays and resumes never send its payload again, and the `prev` chain
//! a client follows has no hole (no false `gap`, no false
//! `recovered:false`).
//!
//! A marker not taken is dropped like an invalid payload (the chain stays
//! whole: the next frame's `prev` is the one sent before), counted by
//! reason in `tribune_retractions_total`.

use std::sync::OnceLock;

use tribune_protocol::{Mode, Retract, ServerFrame, encode_server};

use super::cache::{Cache, Cached, gap_frame};
use crate::outbox::Frame;

/// Whether a marker at `at` retracting `target` is taken, and if not why
/// (an outcome of `RETRACT_OUTCOMES`, `metrics/labels.rs`).
pub(super) fn verdict(
    mode: Mode,
    cache: &mut Cache,
    target: u64,
    at: u64,
) -> Result<(), &'static str> {
    // A state topic's correction is its next state (PROTOCOL.md section 13);
    // the hub refuses to publish such markers, whoever else wrote one.
    if mode == Mode::State {
        return Err("state_topic");
    }
    // A marker is stored after what it retracts: one naming itself or a
    // later seq is forged or broken.
    if target == 0 || target >= at {
        return Err("not_older");
    }
    let oldest = cache.oldest_seq();
    match cache.find_mut(target) {
        Some(c) if c.retracted || c.retracts.is_some() => Err("duplicate"),
        Some(_) => Ok(()),
        // Within what this relay holds but not one of its messages: another
        // topic's seq, or a payload that was never forwarded.
        None if oldest.is_some_and(|o| target > o) => Err("unknown_seq"),
        // Older than what this relay holds: fans may still hold it.
        None => Ok(()),
    }
}

/// The `retract` frame, live and replayed.
fn frames(topic: &str, target: u64, at: u64, prev: u64, ts: u64) -> (Frame, Frame) {
    let mut retract = Retract {
        topic: topic.to_string(),
        seq: target,
        at,
        prev,
        ts,
        replay: false,
    };
    let live = Frame::from(encode_server(&ServerFrame::Retract(retract.clone())));
    retract.replay = true;
    let replay = Frame::from(encode_server(&ServerFrame::Retract(retract)));
    (live, replay)
}

impl Cached {
    /// A taken marker at `at` (`prev`, `ts` as a message's) retracting
    /// `target`; with `hole_after`, messages after that seq and before this
    /// one were lost.
    pub(super) fn marker(
        topic: &str,
        target: u64,
        at: u64,
        prev: u64,
        ts: u64,
        hole_after: Option<u64>,
    ) -> Self {
        let (live, replay) = frames(topic, target, at, prev, ts);
        Self {
            seq: at,
            prev,
            live,
            replay: OnceLock::from(replay),
            delta: None,
            gap: hole_after.map(|after| gap_frame(topic, after, at)),
            retracts: Some(target),
            retracted: false,
            ts,
            charged: 0,
        }
    }

    /// Makes this cached message a retracted one: its place in the chain
    /// stays, its payload is never sent again.
    pub(super) fn retract_in_place(&mut self, topic: &str) {
        let (live, replay) = frames(topic, self.seq, self.seq, self.prev, self.ts);
        self.live = live;
        self.replay = OnceLock::from(replay);
        self.delta = None;
        self.retracted = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(seqs: &[u64]) -> Cache {
        let mut c = Cache::new(crate::relay::Retention::count(100));
        let mut prev = 0;
        for &seq in seqs {
            c.push(Cached::new("clips.a", seq, prev, 1, b"{}", None));
            prev = seq;
        }
        c
    }

    #[test]
    fn verdicts() {
        let mut c = cache(&[5, 8, 9]);
        assert_eq!(verdict(Mode::Feed, &mut c, 8, 10), Ok(()));
        assert_eq!(verdict(Mode::State, &mut c, 8, 10), Err("state_topic"));
        assert_eq!(verdict(Mode::Feed, &mut c, 10, 10), Err("not_older"));
        assert_eq!(verdict(Mode::Feed, &mut c, 11, 10), Err("not_older"));
        assert_eq!(verdict(Mode::Feed, &mut c, 0, 10), Err("not_older"));
        assert_eq!(verdict(Mode::Feed, &mut c, 7, 10), Err("unknown_seq"));
        assert_eq!(
            verdict(Mode::Feed, &mut c, 3, 10),
            Ok(()),
            "older than the cache"
        );
        c.find_mut(8).unwrap().retract_in_place("clips.a");
        assert_eq!(verdict(Mode::Feed, &mut c, 8, 10), Err("duplicate"));
        c.push(Cached::marker("clips.a", 5, 10, 9, 2, None));
        assert_eq!(
            verdict(Mode::Feed, &mut c, 10, 11),
            Err("duplicate"),
            "a marker"
        );
    }

    #[test]
    fn retracted_frames_keep_the_chain() {
        let mut c = cache(&[5, 8, 9]);
        c.find_mut(8).unwrap().retract_in_place("clips.a");
        let m = Cached::marker("clips.a", 8, 12, 9, 3, None);
        assert_eq!(
            m.live.as_str(),
            r#"{"type":"retract","topic":"clips.a","seq":8,"at":12,"prev":9,"ts":3}"#
        );
        c.push(m);
        let replayed: Vec<String> = c
            .replay(0..usize::MAX, None, true)
            .map(|r| match r {
                super::super::cache::Replayed::Message(f) => f.as_str().to_string(),
                super::super::cache::Replayed::Gap(f) => f.as_str().to_string(),
            })
            .collect();
        assert_eq!(replayed.len(), 4);
        assert!(replayed[0].starts_with(r#"{"type":"message","topic":"clips.a","seq":5,"#));
        assert_eq!(
            replayed[1],
            r#"{"type":"retract","topic":"clips.a","seq":8,"at":8,"prev":5,"ts":1,"replay":true}"#
        );
        assert!(replayed[2].contains(r#""seq":9,"prev":8,"#));
        assert_eq!(
            replayed[3],
            r#"{"type":"retract","topic":"clips.a","seq":8,"at":12,"prev":9,"ts":3,"replay":true}"#
        );
        assert!(replayed.iter().all(|f| !f.contains(r#""seq":8,"prev""#)));
        assert_eq!(
            c.resume_point(12, 9, false),
            Some(3),
            "a resume after the target"
        );
        assert_eq!(c.resume_point(12, 8, false), Some(2));
    }
}

/// A relay over the embedded bus, live and loaded after the retraction.
#[cfg(test)]
mod relay_tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tribune_protocol::{Mode, Topic};

    use super::super::testing::{LaggingBus, drain_frames, subscriber};
    use super::super::{JoinRequest, Relay, RelayTask, Settings};
    use crate::bus::Bus;
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;

    fn shape(f: &serde_json::Value) -> (String, u64, u64, u64) {
        let n = |k: &str| f[k].as_u64().unwrap_or(0);
        (
            f["type"].as_str().unwrap().to_string(),
            n("seq"),
            n("at"),
            n("prev"),
        )
    }

    #[tokio::test]
    async fn retraction_live_and_after_a_restart() {
        let bus = LaggingBus::new();
        let topic = Topic::new("clips.retract.test").unwrap();
        let (_relay, outbox, metrics) = subscriber(bus.clone(), &topic, Mode::Feed, 1024).await;
        let mut seqs = Vec::new();
        for i in 0..3 {
            seqs.push(
                bus.publish(&topic, Bytes::from(format!("{{\"i\":{i}}}")), None)
                    .await
                    .unwrap(),
            );
        }
        let (a, b, c) = (seqs[0], seqs[1], seqs[2]);
        let m = bus.retract(&topic, b).await.unwrap();
        // Forged: a marker naming a later seq, and one naming another topic's.
        let other = bus
            .publish(
                &Topic::new("clips.other.t").unwrap(),
                Bytes::from_static(b"{}"),
                None,
            )
            .await
            .unwrap();
        bus.retract(&topic, other).await.unwrap();
        let d = bus
            .publish(&topic, Bytes::from_static(b"{\"i\":3}"), None)
            .await
            .unwrap();
        let live = drain_frames(&outbox, 6).await;
        let got: Vec<_> = live.iter().skip(1).map(shape).collect();
        let msg = |s, p| ("message".to_string(), s, 0, p);
        assert_eq!(
            got,
            vec![
                msg(a, 0),
                msg(b, a),
                msg(c, b),
                ("retract".to_string(), b, m, c),
                msg(d, m)
            ],
            "{live:?}"
        );
        let text = metrics.render();
        assert!(
            text.contains("tribune_retractions_total{outcome=\"applied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tribune_retractions_total{outcome=\"unknown_seq\"} 1"),
            "{text}"
        );

        // A relay started after the retraction, a fan resuming after `a`.
        let metrics = Arc::new(Metrics::new());
        let epoch = bus.status().borrow().epoch.clone();
        let settings = Settings {
            mode: Mode::Feed,
            delta: false,
            retained: 100,
            retention: crate::relay::Retention::count(100),
            max_payload: 1024,
        };
        let (relay, ctl) = Relay::new(2, topic.clone(), settings, epoch.clone(), metrics);
        let task = RelayTask::new(
            relay.clone(),
            bus.clone(),
            ctl,
            std::time::Duration::from_secs(60),
            Box::new(|_| {}),
        );
        tokio::spawn(task.run());
        relay.ready().await.unwrap();
        let outbox = Arc::new(Outbox::new(1 << 20, 1024));
        let req = JoinRequest {
            id: 1,
            since: Some((a, epoch.to_string())),
            ..Default::default()
        };
        relay.join(&outbox, &req).unwrap();
        let resumed = drain_frames(&outbox, 5).await;
        assert_eq!(
            resumed[0]["recovered"],
            serde_json::json!(true),
            "{resumed:?}"
        );
        let got: Vec<_> = resumed.iter().skip(1).map(shape).collect();
        assert_eq!(
            got,
            vec![
                ("retract".to_string(), b, b, a),
                msg(c, b),
                ("retract".to_string(), b, m, c),
                msg(d, m)
            ],
            "{resumed:?}"
        );
        // History replays never carry the retracted payload either.
        let outbox = Arc::new(Outbox::new(1 << 20, 1024));
        relay
            .join(
                &outbox,
                &JoinRequest {
                    id: 2,
                    history: Some(100),
                    ..Default::default()
                },
            )
            .unwrap();
        let history = drain_frames(&outbox, 6).await;
        assert_eq!(history.len(), 6, "{history:?}");
        assert!(
            history
                .iter()
                .all(|f| f["data"] != serde_json::json!({"i": 1})),
            "{history:?}"
        );
    }

    #[tokio::test]
    async fn markers_on_state_topics_are_ignored() {
        let bus = LaggingBus::new();
        let topic = Topic::new("results.retract.test").unwrap();
        let (_relay, outbox, metrics) = subscriber(bus.clone(), &topic, Mode::State, 1024).await;
        let a = bus
            .publish(&topic, Bytes::from_static(b"{\"s\":1}"), None)
            .await
            .unwrap();
        bus.retract(&topic, a).await.unwrap();
        let b = bus
            .publish(&topic, Bytes::from_static(b"{\"s\":2}"), None)
            .await
            .unwrap();
        let frames = drain_frames(&outbox, 3).await;
        let got: Vec<_> = frames.iter().skip(1).map(shape).collect();
        assert_eq!(
            got,
            vec![
                ("message".to_string(), a, 0, 0),
                ("message".to_string(), b, 0, a)
            ],
            "the chain skips the ignored marker: {frames:?}"
        );
        let text = metrics.render();
        assert!(
            text.contains("tribune_retractions_total{outcome=\"state_topic\"} 1"),
            "{text}"
        );
    }
}
