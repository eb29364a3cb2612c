//! Turning bytes into frames and frames into bytes.
//!
//! Client frames are decoded with serde and every failure becomes the
//! `bad_request` error the client is owed, with its `id` when one can be read.
//! `message` frames, the hot path, are written by [`encode_message`] without a
//! serializer: the hub encodes each message once per node and shares the bytes.
//! That layout is known here and nowhere else: [`encode_replay`] turns a live
//! frame into its replay form (the hub's cache), and [`message_view`] reads
//! one in place (the load-test client, millions of times per run), and
//! [`encode_delta`] writes the delta form of a `state` message.

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
    let flag = if replay { REPLAY_KEY } else { "" };
    encode_with(topic, seq, prev, ts, flag, data)
}

/// Writes a `message` frame whose `data` is a Fossil delta (`"delta":true`,
/// `data` the delta as a JSON string; PROTOCOL.md section 4). `delta` is
/// what [`crate::delta::make`] returns.
pub fn encode_delta(topic: &str, seq: u64, prev: u64, ts: u64, delta: &str) -> Vec<u8> {
    let data = serde_json::to_vec(delta).expect("a string always serializes");
    encode_with(topic, seq, prev, ts, DELTA_KEY, &data)
}

fn encode_with(topic: &str, seq: u64, prev: u64, ts: u64, flag: &str, data: &[u8]) -> Vec<u8> {
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
    out.extend_from_slice(flag.as_bytes());
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

/// The text that ends a `message` frame's header, before its payload.
const DATA_KEY: &str = r#","data":"#;
/// What a replayed `message` frame has before [`DATA_KEY`].
const REPLAY_KEY: &str = r#","replay":true"#;
/// What a delta `message` frame has before [`DATA_KEY`].
const DELTA_KEY: &str = r#","delta":true"#;

/// The replay form of a live `message` frame written by [`encode_message`]:
/// the same bytes with `"replay":true` before `"data"`, equal to
/// `encode_message(.., true, ..)` of the same message. `None` when `live` is
/// not laid out as [`encode_message`] writes it.
pub fn encode_replay(live: &str) -> Option<String> {
    // The topic (validated: no quotes) and the numbers hold no `,"data":`,
    // so the first one ends the header.
    let at = live.find(DATA_KEY)?;
    let (head, tail) = live.split_at(at);
    if !head.starts_with(r#"{"type":"message","#)
        || head.ends_with(REPLAY_KEY)
        || head.ends_with(DELTA_KEY)
    {
        return None;
    }
    let mut out = String::with_capacity(live.len() + REPLAY_KEY.len());
    out.push_str(head);
    out.push_str(REPLAY_KEY);
    out.push_str(tail);
    Some(out)
}

/// A `message` frame read in place, borrowing the frame's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    pub topic: &'a [u8],
    pub seq: u64,
    pub prev: u64,
    pub ts: u64,
    pub replay: bool,
    /// `data` is a Fossil delta from the previous message (a JSON string).
    pub delta: bool,
    /// The payload's JSON text, as published (with `delta`: the delta's
    /// JSON string).
    pub data: &'a [u8],
}

/// Reads a `message` frame laid out exactly as [`encode_message`] writes it,
/// without parsing the payload; `None` for anything else (the caller falls
/// back to the serde types).
pub fn message_view(text: &[u8]) -> Option<MessageView<'_>> {
    let rest = text.strip_prefix(br#"{"type":"message","topic":""#)?;
    let q = rest.iter().position(|&b| b == b'"')?;
    let topic = &rest[..q];
    if topic.contains(&b'\\') {
        return None;
    }
    let rest = rest[q..].strip_prefix(br#"","seq":"#)?;
    let (seq, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(br#","prev":"#)?;
    let (prev, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(br#","ts":"#)?;
    let (ts, rest) = leading_u64(rest)?;
    let (replay, rest) = match rest.strip_prefix(REPLAY_KEY.as_bytes()) {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (delta, rest) = match rest.strip_prefix(DELTA_KEY.as_bytes()) {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.strip_prefix(DATA_KEY.as_bytes())?;
    let data = rest.strip_suffix(b"}")?;
    Some(MessageView {
        topic,
        seq,
        prev,
        ts,
        replay,
        delta,
        data,
    })
}

/// The decimal number at the start of `s` (as `itoa` writes a `u64`) and
/// what follows it.
fn leading_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 20 {
        return None;
    }
    let text = std::str::from_utf8(&s[..n]).ok()?;
    Some((text.parse().ok()?, &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Message;

    #[test]
    fn replay_form_and_view_match_the_encoder() {
        let data = br#"{"a":[1,",\"data\":",{"b":2}]}"#;
        let live = String::from_utf8(encode_message("clips.x.y", 12, 9, 77, false, data)).unwrap();
        let replay = String::from_utf8(encode_message("clips.x.y", 12, 9, 77, true, data)).unwrap();
        assert_eq!(encode_replay(&live).as_deref(), Some(replay.as_str()));
        assert_eq!(encode_replay(&replay), None, "already a replay");
        assert_eq!(encode_replay(r#"{"type":"gap","data":1}"#), None);
        for (text, is_replay) in [(&live, false), (&replay, true)] {
            let view = message_view(text.as_bytes()).unwrap();
            assert_eq!(
                (
                    view.topic,
                    view.seq,
                    view.prev,
                    view.ts,
                    view.replay,
                    view.data
                ),
                (&b"clips.x.y"[..], 12, 9, 77, is_replay, &data[..])
            );
        }
        assert_eq!(
            message_view(br#"{"type":"message","topic":"a","seq":x}"#),
            None
        );
        assert_eq!(
            message_view(&encode_message("a.b", u64::MAX, 0, 1, false, b"1")).map(|v| v.seq),
            Some(u64::MAX)
        );
    }

    #[test]
    fn delta_frames_match_serde_and_the_view() {
        let d = crate::delta::make(br#"{"a":"x\"y"}"#, r#"{"a":"x\"z","b":"é"}"#).unwrap();
        let fast = String::from_utf8(encode_delta("results.a.b", 8, 5, 77, &d)).unwrap();
        let slow = encode_server(&ServerFrame::Message(Message {
            topic: "results.a.b".into(),
            seq: 8,
            prev: 5,
            ts: 77,
            replay: false,
            delta: true,
            data: serde_json::value::RawValue::from_string(serde_json::to_string(&d).unwrap())
                .unwrap(),
        }));
        assert_eq!(fast, slow);
        let view = message_view(fast.as_bytes()).unwrap();
        assert!(view.delta && !view.replay);
        assert_eq!(serde_json::from_slice::<String>(view.data).unwrap(), d);
        assert_eq!(encode_replay(&fast), None, "deltas are never replayed");
    }

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
                delta: false,
                data: serde_json::value::RawValue::from_string(data.into()).unwrap(),
            }));
            assert_eq!(String::from_utf8(fast).unwrap(), slow);
        }
    }
}
