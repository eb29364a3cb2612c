//! Turning bytes into frames and frames into bytes.
//!
//! Client frames are decoded with serde and every failure becomes the
//! `bad_request` error the client is owed, with its `id` when one can be read.
//! `message` frames, the hot path, are written by [`encode_message`] without a
//! serializer: the hub encodes each message once per node and shares the bytes.

use serde::Deserialize;

use crate::frame::{ClientFrame, ServerFrame};

/// A client frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The frame's `id` when it could still be read, for the error's `id`.
    pub id: Option<u64>,
    /// What was wrong, for the error's `message`.
    pub message: String,
}

/// Decodes one client text frame.
pub fn decode_client(text: &str) -> Result<ClientFrame, DecodeError> {
    serde_json::from_str::<ClientFrame>(text).map_err(|err| {
        #[derive(Deserialize)]
        struct IdOnly {
            id: Option<serde_json::Value>,
        }
        let id = serde_json::from_str::<IdOnly>(text)
            .ok()
            .and_then(|f| f.id)
            .and_then(|v| v.as_u64());
        let message = if err.is_syntax() || err.is_eof() {
            format!("invalid JSON: {err}")
        } else {
            format!("invalid frame: {err}")
        };
        DecodeError { id, message }
    })
}

/// Encodes any hub frame. Not for the per-message hot path.
pub fn encode_server(frame: &ServerFrame) -> String {
    serde_json::to_string(frame).expect("server frames always serialize")
}

/// Writes a `message` frame around a payload that is already valid JSON.
///
/// Equal, byte for byte, to [`encode_server`] of the same
/// [`crate::frame::Message`]; the golden-vector tests hold both to that.
/// `topic` must be a validated topic: its characters never need escaping.
pub fn encode_message(
    topic: &str,
    seq: u64,
    prev: u64,
    ts: u64,
    replay: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + topic.len() + data.len());
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(br#"{"type":"message","topic":""#);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(br#"","seq":"#);
    out.extend_from_slice(num.format(seq).as_bytes());
    out.extend_from_slice(br#","prev":"#);
    out.extend_from_slice(num.format(prev).as_bytes());
    out.extend_from_slice(br#","ts":"#);
    out.extend_from_slice(num.format(ts).as_bytes());
    if replay {
        out.extend_from_slice(br#","replay":true"#);
    }
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Message;

    #[test]
    fn decode_error_keeps_id() {
        let err = decode_client(r#"{"type":"subscribe","id":7}"#).unwrap_err();
        assert_eq!(err.id, Some(7));
        assert!(err.message.contains("topic"), "{}", err.message);
        let err = decode_client("{not json").unwrap_err();
        assert_eq!(err.id, None);
        assert!(err.message.starts_with("invalid JSON"));
    }

    #[test]
    fn fast_encoder_matches_serde() {
        for replay in [false, true] {
            let data = r#"{"a":[1,2,{"b":"é\n"}]}"#;
            let fast = encode_message("clips.x.y", 12, 9, 1579098123456, replay, data.as_bytes());
            let slow = encode_server(&ServerFrame::Message(Message {
                topic: "clips.x.y".into(),
                seq: 12,
                prev: 9,
                ts: 1579098123456,
                replay,
                data: serde_json::value::RawValue::from_string(data.into()).unwrap(),
            }));
            assert_eq!(String::from_utf8(fast).unwrap(), slow);
        }
    }
}
