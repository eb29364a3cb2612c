//! Reading a client's websocket frames (RFC 6455 section 5): masked frames
//! only, text messages (fragmented or not, permessage-deflate'd when
//! negotiated), pings, pongs and the close frame. Every rule a client can
//! break maps to the close code PROTOCOL.md section 6 owes it.
//!
//! The buffer starts small (a fan's frames are ~100 bytes) and grows only
//! for a larger frame; a compressed message is inflated alone (the hub asks
//! for `client_no_context_takeover`), so no inflate window outlives it.

use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};
use tribune_protocol::CloseCode;

/// Initial capacity of a connection's read buffer.
const READ_BUFFER: usize = 128;

/// What the peer sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Ping(bytes::Bytes),
    Pong,
    /// The peer's close frame, with its code if it gave one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// End of stream or a socket error: nobody left to tell.
    Gone,
    /// The peer broke a rule: close with this code.
    Refused(CloseCode),
}

/// A message being assembled from fragments.
struct Partial {
    data: Vec<u8>,
    compressed: bool,
}

/// Reads one connection's frames.
pub struct Reader<R> {
    io: R,
    buf: BytesMut,
    /// Largest message (and frame) accepted; larger is 1009.
    max: usize,
    deflate: bool,
    partial: Option<Partial>,
}

/// A parsed frame header: FIN, RSV bits, opcode, mask, payload length and
/// the header's own length.
struct Head {
    fin: bool,
    rsv1: bool,
    rsv23: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    size: usize,
}

fn parse_head(b: &[u8]) -> Option<Head> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => (u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as u64, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (n as u64, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    Some(Head {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        rsv23: b0 & 0x30 != 0,
        opcode: b0 & 0x0F,
        mask,
        len,
        size: at,
    })
}

/// Inflates one permessage-deflate message (the `00 00 FF FF` tail
/// restored, RFC 7692 section 7.2.2); `None` when it is not valid deflate
/// or inflates past `max` bytes.
pub fn inflate_message(data: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut d = Decompress::new(false);
    let mut input = Vec::with_capacity(data.len() + 4);
    input.extend_from_slice(data);
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut out = Vec::new();
    loop {
        let (before_in, before_out) = (d.total_in(), d.total_out());
        // Room for progress, never much past the limit.
        out.reserve(4096.min(max + 1 - out.len().min(max)));
        let status = d
            .decompress_vec(
                &input[before_in as usize..],
                &mut out,
                FlushDecompress::Sync,
            )
            .ok()?;
        if out.len() > max {
            return None;
        }
        let all_in = d.total_in() as usize == input.len();
        if status == Status::StreamEnd || (all_in && out.len() < out.capacity()) {
            return Some(out);
        }
        if (d.total_in(), d.total_out()) == (before_in, before_out) {
            return None;
        }
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader of `io`; `early`: bytes already read from it (the HTTP
    /// layer's, past the upgrade request), parsed first.
    pub fn new(io: R, early: &[u8], max: usize, deflate: bool) -> Self {
        let mut buf = BytesMut::with_capacity(READ_BUFFER.max(early.len()));
        buf.extend_from_slice(early);
        Self {
            io,
            buf,
            max,
            deflate,
            partial: None,
        }
    }

    /// The next message or control frame.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        use ReadError::Refused;
        loop {
            let Some(head) = parse_head(&self.buf) else {
                self.fill().await?;
                continue;
            };
            let control = head.opcode & 0x08 != 0;
            if head.len > self.max as u64 {
                return Err(Refused(CloseCode::FRAME_TOO_LARGE));
            }
            let Some(mask) = head.mask else {
                // Clients must mask every frame (RFC 6455 section 5.1).
                return Err(Refused(CloseCode::PROTOCOL_ERROR));
            };
            let len = head.len as usize;
            if head.rsv23
                || (head.rsv1 && (!self.deflate || control || head.opcode == 0))
                || (control && (!head.fin || len > 125))
            {
                return Err(Refused(CloseCode::PROTOCOL_ERROR));
            }
            while self.buf.len() < head.size + len {
                self.fill().await?;
            }
            self.buf.advance(head.size);
            let mut payload = self.buf.split_to(len);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            match head.opcode {
                0x1 => {
                    if self.partial.is_some() {
                        return Err(Refused(CloseCode::PROTOCOL_ERROR));
                    }
                    let partial = Partial {
                        data: payload.to_vec(),
                        compressed: head.rsv1,
                    };
                    if head.fin {
                        return self.finish(partial);
                    }
                    self.partial = Some(partial);
                }
                0x0 => {
                    let Some(mut partial) = self.partial.take() else {
                        return Err(Refused(CloseCode::PROTOCOL_ERROR));
                    };
                    if partial.data.len() + len > self.max {
                        return Err(Refused(CloseCode::FRAME_TOO_LARGE));
                    }
                    partial.data.extend_from_slice(&payload);
                    if head.fin {
                        return self.finish(partial);
                    }
                    self.partial = Some(partial);
                }
                0x2 => return Err(Refused(CloseCode::BINARY_FRAME)),
                0x8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Incoming::Close(code));
                }
                0x9 => return Ok(Incoming::Ping(payload.freeze())),
                0xA => return Ok(Incoming::Pong),
                _ => return Err(Refused(CloseCode::PROTOCOL_ERROR)),
            }
            self.shrink();
        }
    }

    fn finish(&mut self, partial: Partial) -> Result<Incoming, ReadError> {
        self.shrink();
        let data = if partial.compressed {
            inflate_message(&partial.data, self.max)
                .ok_or(ReadError::Refused(CloseCode::INVALID_PAYLOAD))?
        } else {
            partial.data
        };
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| ReadError::Refused(CloseCode::INVALID_PAYLOAD))
    }

    /// After a large frame, an idle connection goes back to a small buffer.
    fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_BUFFER {
            self.buf = BytesMut::with_capacity(READ_BUFFER);
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.buf.capacity() - self.buf.len() < 64 {
            self.buf.reserve(READ_BUFFER.max(self.buf.len()));
        }
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(ReadError::Gone),
            Ok(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    async fn read_all(bytes: Vec<u8>, deflate: bool) -> Vec<Result<Incoming, ReadError>> {
        // Some bytes arrive "early" (read by the HTTP layer), the rest from
        // the socket: one stream.
        let (early, rest) = bytes.split_at(bytes.len().min(3));
        let mut r = Reader::new(rest, early, 4096, deflate);
        let mut out = Vec::new();
        loop {
            let next = r.next().await;
            let end = next.is_err();
            out.push(next);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn messages_fragments_and_control_frames() {
        let mut b = client_frame(0x81, "héllo".as_bytes());
        b.extend(client_frame(0x01, b"{\"a\":"));
        b.extend(client_frame(0x89, b"p"));
        b.extend(client_frame(0x80, b"1}"));
        b.extend(client_frame(0x8A, b""));
        b.extend(client_frame(0x88, &1000u16.to_be_bytes()));
        assert_eq!(
            read_all(b, false).await,
            [
                Ok(Incoming::Text("héllo".into())),
                Ok(Incoming::Ping(bytes::Bytes::from_static(b"p"))),
                Ok(Incoming::Text("{\"a\":1}".into())),
                Ok(Incoming::Pong),
                Ok(Incoming::Close(Some(1000))),
                Err(ReadError::Gone),
            ]
        );
    }

    #[tokio::test]
    async fn compressed_messages_when_negotiated_only() {
        let text = r#"{"type":"subscribe","id":1,"topic":"results.a.b","delta":"fossil"}"#;
        let body = super::super::frame::deflate_message(text.as_bytes()).unwrap();
        let frame = client_frame(0xC1, &body);
        assert_eq!(
            read_all(frame.clone(), true).await[0],
            Ok(Incoming::Text(text.into()))
        );
        assert_eq!(
            read_all(frame, false).await[0],
            Err(ReadError::Refused(CloseCode::PROTOCOL_ERROR))
        );
        assert_eq!(
            read_all(client_frame(0xC1, b"\xff\xfe not deflate"), true).await[0],
            Err(ReadError::Refused(CloseCode::INVALID_PAYLOAD))
        );
        // A bomb: small on the wire, past the limit inflated.
        let bomb = super::super::frame::deflate_message(&vec![b'a'; 100_000]).unwrap();
        assert_eq!(
            read_all(client_frame(0xC1, &bomb), true).await[0],
            Err(ReadError::Refused(CloseCode::INVALID_PAYLOAD))
        );
    }

    #[tokio::test]
    async fn every_broken_rule_has_its_code() {
        use CloseCode as C;
        let refused = |c| Err(ReadError::Refused(c));
        let cases: Vec<(Vec<u8>, Result<Incoming, ReadError>)> = vec![
            (client_frame(0x82, b"\x01"), refused(C::BINARY_FRAME)),
            (client_frame(0x81, &[0xC3]), refused(C::INVALID_PAYLOAD)),
            (
                client_frame(0x81, &vec![b'x'; 5000]),
                refused(C::FRAME_TOO_LARGE),
            ),
            (vec![0x81, 0x01, b'x'], refused(C::PROTOCOL_ERROR)),
            (client_frame(0xA1, b"x"), refused(C::PROTOCOL_ERROR)),
            (client_frame(0x80, b"x"), refused(C::PROTOCOL_ERROR)),
            (client_frame(0x09, b""), refused(C::PROTOCOL_ERROR)),
            (client_frame(0x83, b""), refused(C::PROTOCOL_ERROR)),
            (client_frame(0x89, &[0; 126]), refused(C::PROTOCOL_ERROR)),
            (
                client_frame(0x81, b"ab")[..5].to_vec(),
                Err(ReadError::Gone),
            ),
        ];
        for (i, (bytes, want)) in cases.into_iter().enumerate() {
            assert_eq!(read_all(bytes, false).await[0], want, "case {i}");
        }
        let mut two = client_frame(0x01, b"a");
        two.extend(client_frame(0x81, b"b"));
        assert_eq!(
            read_all(two, false).await[0],
            Err(ReadError::Refused(C::PROTOCOL_ERROR)),
            "a new message inside a fragmented one"
        );
    }
}
