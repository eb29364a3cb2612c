//! A hub frame built once and shared by every connection it is queued to:
//! the websocket header and the payload, and (made on first need, once) its
//! permessage-deflate form. Server frames are not masked (RFC 6455 section
//! 5.1), so the same bytes go to every connection: a writer hands them to
//! the kernel with vectored writes, never copying the payload per
//! connection.

use std::io::IoSlice;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use prometheus_client::metrics::counter::Counter;

/// Text frames shorter than this go uncompressed: deflate's block overhead
/// eats most of what it could save on a short ack or a small delta.
pub const DEFLATE_MIN_BYTES: usize = 256;

/// RFC 6455 opcodes the hub sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Text = 0x1,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// One encoded frame; cloning shares it.
#[derive(Clone)]
pub struct Frame(Arc<Inner>);

struct Inner {
    /// FIN, opcode and length: the header every connection gets.
    head: [u8; 10],
    head_len: u8,
    payload: Bytes,
    /// Header (RSV1 set) and raw-deflated payload, when that is smaller;
    /// `None` inside when it is not (or the frame is not text).
    deflated: OnceLock<Option<Bytes>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Frame")
            .field(&String::from_utf8_lossy(&self.0.payload))
            .finish()
    }
}

/// The header of an unmasked, final frame of `len` payload bytes.
fn header(first: u8, len: usize, out: &mut [u8; 10]) -> u8 {
    out[0] = first;
    match len {
        0..=125 => {
            out[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    }
}

impl Frame {
    fn build(opcode: OpCode, payload: Bytes) -> Self {
        let mut head = [0u8; 10];
        let head_len = header(0x80 | opcode as u8, payload.len(), &mut head);
        Frame(Arc::new(Inner {
            head,
            head_len,
            payload,
            deflated: OnceLock::new(),
        }))
    }

    /// A control frame (ping, pong, close) with its payload.
    pub fn control(opcode: OpCode, payload: Bytes) -> Self {
        Self::build(opcode, payload)
    }

    /// A close frame with its code and reason (RFC 6455 section 5.5.1).
    pub fn close(code: u16, reason: &str) -> Self {
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        Self::build(OpCode::Close, Bytes::from(payload))
    }

    fn opcode(&self) -> u8 {
        self.0.head[0] & 0x0F
    }

    /// The payload's text (text frames; built from a `String`).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0.payload).expect("text frames are built from strings")
    }

    /// The payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0.payload
    }

    /// The payload's length (what outbox limits count).
    pub fn len(&self) -> usize {
        self.0.payload.len()
    }

    /// The bytes on the wire for a connection with or without
    /// permessage-deflate: the compressed form where it exists (made once,
    /// counted in `compressions`), else the header and the payload.
    pub fn wire<'a>(&'a self, deflate: bool, compressions: &Counter) -> [IoSlice<'a>; 2] {
        if deflate && let Some(d) = self.deflated(compressions) {
            return [IoSlice::new(d), IoSlice::new(&[])];
        }
        [
            IoSlice::new(&self.0.head[..self.0.head_len as usize]),
            IoSlice::new(&self.0.payload),
        ]
    }

    /// The permessage-deflate frame (RFC 7692, no context takeover: each
    /// message compressed alone, so the same bytes serve every connection),
    /// when the frame is text, long enough, and compresses.
    fn deflated(&self, compressions: &Counter) -> Option<&Bytes> {
        self.0
            .deflated
            .get_or_init(|| {
                if self.opcode() != OpCode::Text as u8 || self.len() < DEFLATE_MIN_BYTES {
                    return None;
                }
                compressions.inc();
                let body = deflate_message(&self.0.payload)?;
                if body.len() >= self.len() {
                    return None;
                }
                let mut head = [0u8; 10];
                // FIN, RSV1 (compressed), text.
                let n = header(0xC0 | OpCode::Text as u8, body.len(), &mut head) as usize;
                let mut out = Vec::with_capacity(n + body.len());
                out.extend_from_slice(&head[..n]);
                out.extend_from_slice(&body);
                Some(Bytes::from(out))
            })
            .as_ref()
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Self::build(OpCode::Text, Bytes::from(text))
    }
}

impl From<&'static str> for Frame {
    fn from(text: &'static str) -> Self {
        Self::build(OpCode::Text, Bytes::from_static(text.as_bytes()))
    }
}

/// One message raw-deflated with a sync flush, the trailing
/// `00 00 FF FF` removed (RFC 7692 section 7.2.1).
pub fn deflate_message(data: &[u8]) -> Option<Vec<u8>> {
    let mut c = Compress::new(Compression::default(), false);
    // Deflate's worst case (stored blocks) plus the flush: one call does it.
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    loop {
        let consumed = c.total_in() as usize;
        out.reserve(256);
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .ok()?;
        if c.total_in() as usize == data.len() && out.ends_with(&[0, 0, 0xFF, 0xFF]) {
            break;
        }
    }
    out.truncate(out.len() - 4);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_bytes(f: &Frame, deflate: bool, c: &Counter) -> Vec<u8> {
        f.wire(deflate, c).iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn headers_for_every_length_class() {
        let c = Counter::default();
        for (len, head) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (70_000, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]),
        ] {
            let f = Frame::from("x".repeat(len));
            let w = wire_bytes(&f, false, &c);
            assert_eq!(&w[..head.len()], &head[..], "{len}");
            assert_eq!(w.len(), head.len() + len);
        }
        let close = Frame::close(4008, "slow");
        assert_eq!(wire_bytes(&close, true, &c), b"\x88\x06\x0f\xa8slow");
    }

    #[test]
    fn deflated_once_and_inflates_back() {
        let c = Counter::default();
        let text = format!(
            r#"{{"rows":[{}]}}"#,
            r#"{"name":"Zoë Ødegård","time":"1:55.01"},"#.repeat(30)
        );
        let f = Frame::from(text.clone());
        let shared = f.clone();
        let w = wire_bytes(&f, true, &c);
        let again = wire_bytes(&shared, true, &c);
        assert_eq!(w, again);
        assert_eq!(c.get(), 1, "compressed once for every connection");
        assert_eq!(w[0], 0xC1, "FIN, RSV1, text");
        assert!(w.len() < text.len() / 4, "{} of {}", w.len(), text.len());
        let body = &w[if w[1] == 126 { 4 } else { 2 }..];
        let back = super::super::read::inflate_message(body, 1 << 20).unwrap();
        assert_eq!(back, text.as_bytes());
        // Plain connections get the plain frame from the same object.
        assert_eq!(wire_bytes(&f, false, &c)[0], 0x81);
    }

    #[test]
    fn short_or_incompressible_frames_stay_plain() {
        let c = Counter::default();
        let short = Frame::from("{\"type\":\"pong\",\"id\":1}".to_string());
        assert_eq!(wire_bytes(&short, true, &c)[0], 0x81);
        assert_eq!(c.get(), 0, "not worth trying");
        let noise: String = (0..2000u32)
            .map(|i| char::from_u32(0x4E00 + (i.wrapping_mul(2_654_435_761) % 5000)).unwrap())
            .collect();
        let f = Frame::from(noise);
        let w = wire_bytes(&f, true, &c);
        assert_eq!(c.get(), 1);
        assert!(w[0] == 0x81 || w.len() < f.len(), "never larger than plain");
        let ping = Frame::control(OpCode::Ping, Bytes::new());
        assert_eq!(wire_bytes(&ping, true, &c), [0x89, 0]);
    }
}
