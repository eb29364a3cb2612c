//! The golden frames in `protocol/vectors/` decode and re-encode exactly.

use serde_json::Value;
use tribune_protocol::{ClientFrame, ServerFrame, decode_client, encode_server, validate_topic};

fn load(name: &str) -> Value {
    let path = format!("{}/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn client_frames_round_trip() {
    let v = load("client.json");
    let frames = v["frames"].as_array().unwrap();
    assert!(frames.len() >= 5);
    let mut kinds = std::collections::HashSet::new();
    for case in frames {
        let text = case["frame"].to_string();
        let frame = decode_client(&text).unwrap_or_else(|e| panic!("{}: {e:?}", case["name"]));
        kinds.insert(std::mem::discriminant(&frame));
        let again: Value = serde_json::to_value(&frame).unwrap();
        assert_eq!(again, case["frame"], "{}", case["name"]);
        let _: ClientFrame = serde_json::from_value(again).unwrap();
    }
    assert_eq!(kinds.len(), 6, "every client frame type has a vector");
}

#[test]
fn server_frames_round_trip_byte_for_byte() {
    let v = load("server.json");
    let mut kinds = std::collections::HashSet::new();
    for case in v["frames"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let frame: ServerFrame =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: {e}", case["name"]));
        kinds.insert(std::mem::discriminant(&frame));
        assert_eq!(encode_server(&frame), text, "{}", case["name"]);
        if let ServerFrame::Message(m) = &frame {
            let fast = if m.delta {
                let d: String = serde_json::from_str(m.data.get()).unwrap();
                tribune_protocol::encode_delta(&m.topic, m.seq, m.prev, m.ts, &d)
            } else {
                tribune_protocol::encode_message(
                    &m.topic,
                    m.seq,
                    m.prev,
                    m.ts,
                    m.replay,
                    m.data.get().as_bytes(),
                )
            };
            assert_eq!(std::str::from_utf8(&fast).unwrap(), text);
        }
    }
    assert_eq!(kinds.len(), 9, "every server frame type has a vector");
}

#[test]
fn invalid_client_frames_are_bad_requests() {
    let v = load("invalid_client.json");
    for case in v["frames"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let err = decode_client(text).expect_err(case["name"].as_str().unwrap());
        assert_eq!(err.id, case["id"].as_u64(), "{}", case["name"]);
    }
}

#[test]
fn topic_rules() {
    let v = load("topics.json");
    for t in v["valid"].as_array().unwrap() {
        let t = t.as_str().unwrap();
        assert_eq!(validate_topic(t), Ok(()), "{t:?}");
    }
    for t in v["invalid"].as_array().unwrap() {
        let t = t.as_str().unwrap();
        assert!(validate_topic(t).is_err(), "{t:?} must be refused");
    }
}

#[test]
fn deltas_rebuild_their_targets() {
    let v = load("deltas.json");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let base = case["base"].as_str().unwrap();
        let target = case["target"].as_str().unwrap();
        let delta = case["delta"].as_str().unwrap();
        assert_eq!(
            tribune_protocol::delta::make(base.as_bytes(), target).as_deref(),
            Some(delta),
            "{name}: the hub makes this delta"
        );
        assert_eq!(
            tribune_protocol::delta::apply(base.as_bytes(), delta.as_bytes()).unwrap(),
            target.as_bytes(),
            "{name}"
        );
    }
}
