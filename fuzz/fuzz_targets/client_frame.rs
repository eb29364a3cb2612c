//! Fuzz target `client_frame`: whatever a client sends in a text frame.
//!
//! Properties checked on every input, beyond "never panics":
//! - a frame that decodes re-encodes to JSON that decodes to the same frame
//!   (the encoding is a fixed point after one round);
//! - a frame that does not decode yields a `bad_request` message to send back;
//! - a topic the validator accepts behaves as a topic (`Topic`, namespace,
//!   `is_under` itself and its namespace);
//! - for a `publish` with a valid topic, the encode-once fast path
//!   (`encode_message`) writes the very bytes of the serde encoder, whatever
//!   the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tribune_protocol::{
    ClientFrame, Message, ServerFrame, Topic, decode_client, encode_message, encode_server,
    validate_topic,
};

fuzz_target!(|data: &[u8]| {
    // The hub only ever sees UTF-8 text frames (tungstenite refuses others);
    // lossy conversion keeps every input useful.
    let text = String::from_utf8_lossy(data);

    match decode_client(&text) {
        Ok(frame) => {
            let encoded = serde_json::to_string(&frame).expect("a decoded frame encodes");
            let again = decode_client(&encoded).expect("a re-encoded frame decodes");
            assert_eq!(again.id(), frame.id());
            let encoded_again = serde_json::to_string(&again).expect("encodes again");
            assert_eq!(encoded, encoded_again, "encoding is not a fixed point");
            if let ClientFrame::Publish(publish) = &frame {
                check_fast_encoder(&publish.topic, frame.id(), &publish.data);
            }
            let topic = match &frame {
                ClientFrame::Subscribe(f) => Some(&f.topic),
                ClientFrame::Unsubscribe(f) => Some(&f.topic),
                ClientFrame::Publish(f) => Some(&f.topic),
                ClientFrame::React(f) => Some(&f.topic),
                ClientFrame::Ping(_) | ClientFrame::Auth(_) => None,
            };
            if let Some(topic) = topic {
                check_topic(topic);
            }
        }
        Err(err) => assert!(!err.message.is_empty(), "bad_request without a message"),
    }
    check_topic(&text);
});

fn check_topic(name: &str) {
    match validate_topic(name) {
        Ok(()) => {
            let topic = Topic::new(name).expect("validated topic wraps");
            assert_eq!(topic.as_str(), name);
            assert!(!topic.namespace().is_empty());
            assert!(topic.is_under(name));
            assert!(topic.is_under(topic.namespace()));
            assert!(!topic.is_under(&format!("{name}x")));
        }
        Err(_) => assert!(Topic::new(name).is_err()),
    }
}

fn check_fast_encoder(topic: &str, id: u64, data: &RawValue) {
    if validate_topic(topic).is_err() {
        return;
    }
    let (seq, prev, ts, replay) = (id, id / 2, id.rotate_left(7), id % 2 == 1);
    let fast = encode_message(topic, seq, prev, ts, replay, data.get().as_bytes());
    let slow = encode_server(&ServerFrame::Message(Message {
        topic: topic.to_string(),
        seq,
        prev,
        ts,
        replay,
        delta: false,
        data: data.to_owned(),
    }));
    assert_eq!(fast, slow.as_bytes(), "encode_message differs from serde");
}
