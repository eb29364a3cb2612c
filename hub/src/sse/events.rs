//! The hub's frames as server-sent events (PROTOCOL.md section 11), pure:
//! no socket, no clock, unit-tested alone.
//!
//! A `message` frame goes out as it is, the same bytes the websocket sends,
//! under the default event type (`message`) with `id: <epoch>:<seq>`, so
//! that a browser's `EventSource` sends `Last-Event-ID` back on its own.
//! Every other frame keeps its JSON and takes its `type` as event name.

use bytes::Bytes;
use tribune_protocol::{CloseCode, ServerFrame};

/// A frame's `type`: the first member of every frame the hub encodes
/// (serde writes an internally tagged enum's tag first).
pub fn frame_type(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix(r#"{"type":""#)?;
    rest.split('"').next()
}

/// Reads `Last-Event-ID` (or the ids this module writes): `<epoch>:<seq>`.
/// The epoch may hold colons itself; the seq is after the last one.
pub fn parse_event_id(id: &str) -> Option<(String, u64)> {
    let (epoch, seq) = id.trim().rsplit_once(':')?;
    if epoch.is_empty() || epoch.len() > 200 {
        return None;
    }
    Some((epoch.to_string(), seq.parse().ok()?))
}

/// Appends `data:` lines for `text`. A frame is one line of JSON but for
/// whitespace between a payload's tokens, which the publisher may have
/// written with line breaks: each LF starts a new `data:` line (the reader
/// joins them with LF again), and a CR (not representable: SSE reads it as a
/// line end) is sent as a LF, which is the same JSON.
fn push_data(out: &mut Vec<u8>, text: &str) {
    for line in text.split(['\n', '\r']) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// What the stream does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// The stream's one subscription ended (`unsubscribed`): nothing more
    /// will come.
    End,
}

/// Turns one stream's frames into events; remembers the subscription's
/// epoch (from its `ack`) for the ids of its messages.
#[derive(Debug, Default)]
pub struct Translator {
    /// The `since` the stream resumed from (query or `Last-Event-ID`).
    since: Option<u64>,
    epoch: Option<String>,
}

impl Translator {
    pub fn new(since: Option<u64>) -> Translator {
        Translator { since, epoch: None }
    }

    /// Appends the event for `frame` to `out` (nothing for frames a stream
    /// has no use for, such as `pong`).
    pub fn push(&mut self, out: &mut Vec<u8>, frame: &str) -> After {
        match frame_type(frame) {
            Some("message") => {
                if let Some(epoch) = &self.epoch
                    && let Some(seq) = message_seq(frame)
                {
                    out.extend_from_slice(format!("id: {epoch}:{seq}\n").as_bytes());
                }
                push_data(out, frame);
                out.push(b'\n');
                After::Continue
            }
            Some("ack") => {
                if let Ok(ServerFrame::Ack(ack)) = serde_json::from_str::<ServerFrame>(frame)
                    && let (Some(epoch), Some(seq)) = (ack.epoch, ack.seq)
                {
                    // The ack's id is where a reconnect resumes when no
                    // message came yet: after `since` when that resume
                    // recovered (its replay may not have arrived), else
                    // after the topic's latest seq at the subscription.
                    let from = match (ack.recovered, self.since) {
                        (Some(true), Some(since)) => since,
                        _ => seq,
                    };
                    out.extend_from_slice(format!("id: {epoch}:{from}\n").as_bytes());
                    self.epoch = Some(epoch);
                }
                named(out, "ack", frame);
                After::Continue
            }
            Some("drain") => {
                if let Ok(ServerFrame::Drain(d)) = serde_json::from_str::<ServerFrame>(frame) {
                    // `EventSource` waits this long before it reconnects
                    // (to another node, through the load balancer).
                    out.extend_from_slice(format!("retry: {}\n", d.retry_ms).as_bytes());
                }
                named(out, "drain", frame);
                After::Continue
            }
            Some("retract") => {
                // A retraction takes its own place in the chain (`at`,
                // PROTOCOL.md section 13): a reconnect resumes after it.
                if let Some(epoch) = &self.epoch
                    && let Ok(ServerFrame::Retract(r)) = serde_json::from_str::<ServerFrame>(frame)
                {
                    out.extend_from_slice(format!("id: {epoch}:{}\n", r.at).as_bytes());
                }
                named(out, "retract", frame);
                After::Continue
            }
            Some("unsubscribed") => {
                named(out, "unsubscribed", frame);
                After::End
            }
            Some(kind @ ("welcome" | "stats" | "gap" | "error")) => {
                named(out, kind, frame);
                After::Continue
            }
            _ => After::Continue,
        }
    }
}

fn named(out: &mut Vec<u8>, event: &str, frame: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
    push_data(out, frame);
    out.push(b'\n');
}

fn message_seq(frame: &str) -> Option<u64> {
    if let Some(view) = tribune_protocol::message_view(frame.as_bytes()) {
        return Some(view.seq);
    }
    match serde_json::from_str::<ServerFrame>(frame) {
        Ok(ServerFrame::Message(m)) => Some(m.seq),
        _ => None,
    }
}

/// The last event of a stream the hub ends: the websocket's close code and
/// reason, so that a client knows what it would have known from a close
/// frame (PROTOCOL.md section 6).
pub fn close(code: CloseCode) -> Bytes {
    let data = serde_json::json!({"type": "close", "code": code.0, "reason": code.reason()});
    let mut out = Vec::new();
    named(&mut out, "close", &data.to_string());
    Bytes::from(out)
}

/// A comment line: ignored by readers, it keeps proxies from closing an
/// idle stream (PROTOCOL.md section 11).
pub const HEARTBEAT: &[u8] = b": hb\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn messages_keep_their_bytes_and_carry_epoch_and_seq() {
        let mut t = Translator::new(None);
        let mut out = Vec::new();
        t.push(
            &mut out,
            r#"{"type":"ack","id":1,"topic":"clips.a","mode":"feed","epoch":"T@1","seq":7}"#,
        );
        let frame =
            r#"{"type":"message","topic":"clips.a","seq":9,"prev":7,"ts":1,"data":{"a":1}}"#;
        out.clear();
        assert_eq!(t.push(&mut out, frame), After::Continue);
        assert_eq!(text(&out), format!("id: T@1:9\ndata: {frame}\n\n"));
    }

    #[test]
    fn the_ack_names_where_a_reconnect_resumes() {
        let ack = |recovered: &str| {
            format!(
                r#"{{"type":"ack","id":1,"topic":"clips.a","mode":"feed","epoch":"T@1","seq":20{recovered}}}"#
            )
        };
        let mut out = Vec::new();
        Translator::new(Some(12)).push(&mut out, &ack(r#","recovered":true"#));
        assert!(
            text(&out).starts_with("id: T@1:12\nevent: ack\ndata: {"),
            "{}",
            text(&out)
        );
        out.clear();
        Translator::new(Some(12)).push(&mut out, &ack(r#","recovered":false"#));
        assert!(text(&out).starts_with("id: T@1:20\n"), "{}", text(&out));
        out.clear();
        Translator::new(None).push(&mut out, &ack(""));
        assert!(text(&out).starts_with("id: T@1:20\n"), "{}", text(&out));
    }

    #[test]
    fn line_breaks_in_a_payload_become_data_lines() {
        let mut t = Translator::new(None);
        let mut out = Vec::new();
        t.push(
            &mut out,
            "{\"type\":\"stats\",\"topic\":\"results.a\",\r\n\"audience\":3}",
        );
        assert_eq!(
            text(&out),
            "event: stats\ndata: {\"type\":\"stats\",\"topic\":\"results.a\",\ndata: \ndata: \"audience\":3}\n\n"
        );
    }

    #[test]
    fn drain_carries_a_retry_hint_and_unsubscribed_ends() {
        let mut t = Translator::new(None);
        let mut out = Vec::new();
        assert_eq!(
            t.push(&mut out, r#"{"type":"drain","retry_ms":2500}"#),
            After::Continue
        );
        assert!(text(&out).starts_with("retry: 2500\nevent: drain\n"));
        out.clear();
        assert_eq!(
            t.push(
                &mut out,
                r#"{"type":"unsubscribed","topic":"results.a","code":"forbidden"}"#
            ),
            After::End
        );
        out.clear();
        assert_eq!(
            t.push(&mut out, r#"{"type":"pong","id":1}"#),
            After::Continue
        );
        assert!(out.is_empty());
    }

    #[test]
    fn event_ids_parse_back() {
        assert_eq!(parse_event_id("T@1:42"), Some(("T@1".into(), 42)));
        assert_eq!(parse_event_id("a:b:7"), Some(("a:b".into(), 7)));
        assert_eq!(parse_event_id(":7"), None);
        assert_eq!(parse_event_id("T@1:x"), None);
        assert_eq!(parse_event_id("nothing"), None);
    }

    #[test]
    fn close_names_code_and_reason() {
        let c = close(CloseCode::DRAINING);
        let s = std::str::from_utf8(&c).unwrap();
        assert!(s.starts_with("event: close\ndata: {"), "{s}");
        assert!(s.contains("\"code\":1001"), "{s}");
    }

    #[test]
    fn a_retraction_is_an_event_whose_id_is_its_own_place() {
        let mut t = Translator::new(None);
        let mut out = Vec::new();
        t.push(
            &mut out,
            r#"{"type":"ack","id":1,"topic":"clips.a","mode":"feed","epoch":"T@1","seq":7}"#,
        );
        out.clear();
        let frame = r#"{"type":"retract","topic":"clips.a","seq":5,"at":8,"prev":7,"ts":1}"#;
        assert_eq!(t.push(&mut out, frame), After::Continue);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("id: T@1:8\nevent: retract\ndata: {frame}\n\n")
        );
    }
}
