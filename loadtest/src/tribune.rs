//! The hub's protocol (PROTOCOL.md) as the load client speaks it.
//!
//! Every frame goes through `tribune_protocol`'s types except `message`,
//! the one frame received millions of times: it is read in place by
//! `tribune_protocol::message_view`, which knows the layout of the hub's
//! encode-once path (`encode_message`), with the serde types for anything
//! else.

use tribune_protocol::{ClientFrame, ServerFrame, Subscribe};
pub use tribune_protocol::{MessageView, message_view};

/// A hub frame, as much of it as the load client needs.
#[derive(Debug, PartialEq)]
pub enum HubFrame<'a> {
    Welcome,
    SubscribeAck {
        id: u64,
        topic: String,
        seq: u64,
        epoch: Option<String>,
        recovered: Option<bool>,
    },
    OtherAck,
    Message(MessageView<'a>),
    /// A `message` frame that only the serde path could read (owned).
    OwnedMessage {
        topic: String,
        seq: u64,
        prev: u64,
        ts: u64,
        replay: bool,
        data: String,
    },
    Error {
        id: Option<u64>,
        code: String,
    },
    Drain {
        retry_ms: u64,
    },
    Pong,
    Stats,
    /// Messages of a feed the hub could not deliver (PROTOCOL.md section 5).
    Gap {
        topic: String,
        after: u64,
        before: u64,
    },
    /// Not JSON, or not a frame of PROTOCOL.md.
    Invalid(String),
}

/// Classifies one text frame from the hub.
pub fn classify(text: &[u8]) -> HubFrame<'_> {
    if let Some(m) = message_view(text) {
        return HubFrame::Message(m);
    }
    let frame: ServerFrame = match serde_json::from_slice(text) {
        Ok(f) => f,
        Err(e) => return HubFrame::Invalid(e.to_string()),
    };
    match frame {
        ServerFrame::Welcome(_) => HubFrame::Welcome,
        ServerFrame::Ack(a) => match a.topic {
            Some(topic) => HubFrame::SubscribeAck {
                id: a.id,
                topic,
                seq: a.seq.unwrap_or(0),
                epoch: a.epoch,
                recovered: a.recovered,
            },
            None => HubFrame::OtherAck,
        },
        ServerFrame::Message(m) => HubFrame::OwnedMessage {
            topic: m.topic,
            seq: m.seq,
            prev: m.prev,
            ts: m.ts,
            replay: m.replay,
            data: m.data.get().to_string(),
        },
        ServerFrame::Error(e) => HubFrame::Error {
            id: e.id,
            code: e.code.as_str().to_string(),
        },
        ServerFrame::Drain(d) => HubFrame::Drain {
            retry_ms: d.retry_ms,
        },
        ServerFrame::Pong(_) => HubFrame::Pong,
        ServerFrame::Stats(_) => HubFrame::Stats,
        ServerFrame::Gap(g) => HubFrame::Gap {
            topic: g.topic,
            after: g.after,
            before: g.before,
        },
        // Load scenarios never retract: a retraction would also move the
        // chain the fan checks, so one is counted as an error.
        ServerFrame::Retract(_) => HubFrame::Error {
            id: None,
            code: "retract".to_string(),
        },
        // Load-test fans hold no tokens, so the hub never ends their
        // subscriptions; one that did is counted as an error.
        ServerFrame::Unsubscribed(u) => HubFrame::Error {
            id: None,
            code: u.code.as_str().to_string(),
        },
    }
}

/// The text of a `subscribe` frame.
pub fn subscribe_frame(
    id: u64,
    topic: &str,
    history: Option<u32>,
    resume: Option<(u64, &str)>,
) -> String {
    let frame = ClientFrame::Subscribe(Subscribe {
        id,
        topic: topic.to_string(),
        history,
        since: resume.map(|r| r.0),
        epoch: resume.map(|r| r.1.to_string()),
        delta: None,
        delay_ms: None,
    });
    serde_json::to_string(&frame).expect("client frames always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tribune_protocol::encode_message;

    #[test]
    fn fast_reader_matches_the_protocol_encoder() {
        for replay in [false, true] {
            let data = br#"{"c":7,"t":123,"p":"xx"}"#;
            let frame = encode_message("clips.lt1.t3", 1041, 1017, 1579098123456, replay, data);
            let m = message_view(&frame).expect("fast path");
            assert_eq!(m.topic, b"clips.lt1.t3");
            assert_eq!(
                (m.seq, m.prev, m.ts, m.replay),
                (1041, 1017, 1579098123456, replay)
            );
            assert_eq!(m.data, data);
            assert_eq!(classify(&frame), HubFrame::Message(m));
        }
    }

    #[test]
    fn other_layouts_take_the_serde_path() {
        let text =
            br#"{"topic":"clips.a.b","type":"message","seq":5,"prev":0,"ts":9,"data":{"c":1}}"#;
        assert!(message_view(text).is_none());
        match classify(text) {
            HubFrame::OwnedMessage {
                topic, seq, data, ..
            } => {
                assert_eq!(
                    (topic.as_str(), seq, data.as_str()),
                    ("clips.a.b", 5, r#"{"c":1}"#)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classifies_control_frames_from_the_golden_vectors() {
        let welcome = br#"{"type":"welcome","protocol":1,"node":"hub-7f9c","conn":"c-1","heartbeat_ms":25000}"#;
        assert_eq!(classify(welcome), HubFrame::Welcome);
        let ack = br#"{"type":"ack","id":1,"topic":"clips.x.y","mode":"feed","epoch":"TRIBUNE@1","seq":1041,"recovered":true}"#;
        assert_eq!(
            classify(ack),
            HubFrame::SubscribeAck {
                id: 1,
                topic: "clips.x.y".into(),
                seq: 1041,
                epoch: Some("TRIBUNE@1".into()),
                recovered: Some(true)
            }
        );
        assert_eq!(
            classify(br#"{"type":"drain","retry_ms":5000}"#),
            HubFrame::Drain { retry_ms: 5000 }
        );
        assert!(matches!(
            classify(br#"{"type":"error","id":null,"code":"rate_limited","message":"slow down"}"#),
            HubFrame::Error { id: None, .. }
        ));
        assert!(matches!(classify(b"{nope"), HubFrame::Invalid(_)));
    }

    #[test]
    fn subscribe_frames_decode_as_the_hub_would() {
        let text = subscribe_frame(3, "clips.a.b", Some(1), Some((812, "TRIBUNE@9")));
        match tribune_protocol::decode_client(&text).unwrap() {
            ClientFrame::Subscribe(s) => {
                assert_eq!(s.id, 3);
                assert_eq!(s.since, Some(812));
                assert_eq!(s.epoch.as_deref(), Some("TRIBUNE@9"));
                assert_eq!(s.history, Some(1));
            }
            other => panic!("{other:?}"),
        }
    }
}
