//! Reading the server's frames: [`FrameReader`] parses unmasked frames in
//! place out of its buffer (continuation, pings answered at once, close
//! codes), and inflates permessage-deflate messages into a buffer of their
//! own; pure, no I/O.

use super::write::encode_client_frame;

/// Largest frame (or reassembled message) the client accepts.
const MAX_MESSAGE: usize = 1 << 20;

/// One frame or message read from the server, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
    /// The server closed the websocket, with its close code if it gave one.
    Close(Option<u16>),
}

/// Errors while reading frames: the peer broke the framing rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

/// Parses server frames out of a byte buffer; pure, no I/O.
///
/// Pings are answered by appending a pong to `out`, which the caller writes.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// First unparsed byte in `buf`.
    start: usize,
    /// One past the last byte read into `buf`.
    end: usize,
    /// Payload of a fragmented message being reassembled.
    frag: Vec<u8>,
    /// Opcode of the fragmented message (1 text, 2 binary), 0 when none.
    frag_op: u8,
    /// Bytes that the previous call handed out and that must be skipped now.
    consumed: usize,
    /// Whether the last handed-out message lives in `frag` (to clear it).
    frag_handed: bool,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// Whether the fragmented message being reassembled is compressed.
    frag_deflated: bool,
    /// The last compressed message, inflated.
    inflated: Vec<u8>,
    /// Bytes on the wire of the fragments of the message being reassembled.
    frag_wire: usize,
}

impl FrameReader {
    pub fn new(capacity: usize) -> FrameReader {
        FrameReader {
            buf: vec![0; capacity.max(256)],
            start: 0,
            end: 0,
            frag: Vec::new(),
            frag_op: 0,
            consumed: 0,
            frag_handed: false,
            deflate: false,
            frag_deflated: false,
            inflated: Vec::new(),
            frag_wire: 0,
        }
    }

    /// Accept compressed messages (permessage-deflate was negotiated).
    pub fn set_deflate(&mut self, on: bool) {
        self.deflate = on;
    }

    /// Bytes read but not parsed yet.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Room to read into, after compacting or growing the buffer as needed.
    pub fn spare(&mut self) -> &mut [u8] {
        self.release();
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // One frame larger than the buffer: grow it (bounded by the frame
            // check in `next`, which refuses oversized frames).
            let len = (self.buf.len() * 2).min(MAX_MESSAGE + 14);
            self.buf.resize(len, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records `n` bytes read into [`FrameReader::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Appends bytes as if read from the socket (bytes that arrived with the
    /// HTTP response, and unit tests).
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }

    fn release(&mut self) {
        self.start += self.consumed;
        self.consumed = 0;
        if self.frag_handed {
            self.frag.clear();
            self.frag_handed = false;
        }
    }

    /// The next complete message, `None` when more bytes are needed.
    pub fn next(&mut self, out: &mut Vec<u8>) -> Result<Option<Incoming<'_>>, FrameError> {
        let mut wire = 0;
        self.next_sized(out, &mut wire)
    }

    /// [`FrameReader::next`], setting `wire` to the bytes the message took
    /// on the wire (frame headers included, every fragment).
    pub fn next_sized(
        &mut self,
        out: &mut Vec<u8>,
        wire: &mut usize,
    ) -> Result<Option<Incoming<'_>>, FrameError> {
        self.release();
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() < 2 {
                return Ok(None);
            }
            let fin = avail[0] & 0x80 != 0;
            let op = avail[0] & 0x0f;
            let rsv1 = avail[0] & 0x40 != 0;
            if avail[0] & 0x30 != 0 || (rsv1 && !self.deflate) {
                return Err(FrameError(
                    "reserved bits set (no extension was negotiated)".into(),
                ));
            }
            if avail[1] & 0x80 != 0 {
                return Err(FrameError("server frames must not be masked".into()));
            }
            let (len, head) = match avail[1] & 0x7f {
                126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4),
                127 if avail.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&avail[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => return Ok(None),
                n => (n as usize, 2),
            };
            if len > MAX_MESSAGE {
                return Err(FrameError(format!("frame of {len} bytes is too large")));
            }
            if avail.len() < head + len {
                return Ok(None);
            }
            let payload_at = self.start + head;
            let frame_end = payload_at + len;
            *wire = head + len;
            match op {
                0x9 => {
                    // Ping: answer at once with the same payload.
                    let payload = self.buf[payload_at..frame_end].to_vec();
                    encode_client_frame(out, 0xA, &payload);
                    self.start = frame_end;
                }
                0xA => self.start = frame_end,
                0x8 => {
                    let code = (len >= 2).then(|| {
                        u16::from_be_bytes([self.buf[payload_at], self.buf[payload_at + 1]])
                    });
                    self.start = frame_end;
                    return Ok(Some(Incoming::Close(code)));
                }
                0x1 | 0x2 if fin && self.frag_op == 0 && rsv1 => {
                    self.inflated = inflate(&self.buf[payload_at..frame_end])?;
                    self.start = frame_end;
                    return Ok(Some(if op == 1 {
                        Incoming::Text(&self.inflated)
                    } else {
                        Incoming::Binary(&self.inflated)
                    }));
                }
                0x1 | 0x2 if fin && self.frag_op == 0 => {
                    // The payload stays in place until the next call.
                    self.start = payload_at;
                    self.consumed = len;
                    let payload = &self.buf[payload_at..frame_end];
                    return Ok(Some(if op == 1 {
                        Incoming::Text(payload)
                    } else {
                        Incoming::Binary(payload)
                    }));
                }
                0x1 | 0x2 if self.frag_op == 0 => {
                    self.frag_op = op;
                    self.frag_deflated = rsv1;
                    self.frag_wire = head + len;
                    self.frag
                        .extend_from_slice(&self.buf[payload_at..frame_end]);
                    self.start = frame_end;
                }
                0x0 if self.frag_op != 0 => {
                    if self.frag.len() + len > MAX_MESSAGE {
                        return Err(FrameError("fragmented message too large".into()));
                    }
                    self.frag
                        .extend_from_slice(&self.buf[payload_at..frame_end]);
                    self.start = frame_end;
                    self.frag_wire += head + len;
                    if fin {
                        *wire = std::mem::take(&mut self.frag_wire);
                        let op = std::mem::take(&mut self.frag_op);
                        self.frag_handed = true;
                        if std::mem::take(&mut self.frag_deflated) {
                            self.inflated = inflate(&self.frag)?;
                            return Ok(Some(if op == 1 {
                                Incoming::Text(&self.inflated)
                            } else {
                                Incoming::Binary(&self.inflated)
                            }));
                        }
                        return Ok(Some(if op == 1 {
                            Incoming::Text(&self.frag)
                        } else {
                            Incoming::Binary(&self.frag)
                        }));
                    }
                }
                other => {
                    return Err(FrameError(format!("unexpected opcode {other:#x}")));
                }
            }
        }
    }
}

/// Inflates one permessage-deflate message (RFC 7692 section 7.2.2: the
/// `00 00 FF FF` tail restored); the server compresses each message alone.
fn inflate(data: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut input = Vec::with_capacity(data.len() + 4);
    input.extend_from_slice(data);
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut d = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(data.len() * 4 + 64);
    loop {
        let before = (d.total_in(), d.total_out());
        out.reserve(4096);
        let status = d
            .decompress_vec(
                &input[d.total_in() as usize..],
                &mut out,
                flate2::FlushDecompress::Sync,
            )
            .map_err(|e| FrameError(format!("bad deflate data: {e}")))?;
        if out.len() > MAX_MESSAGE {
            return Err(FrameError("inflated message too large".into()));
        }
        let all_in = d.total_in() as usize == input.len();
        if status == flate2::Status::StreamEnd || (all_in && out.len() < out.capacity()) {
            return Ok(out);
        }
        if (d.total_in(), d.total_out()) == before {
            return Err(FrameError("truncated deflate data".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | op];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else if payload.len() <= 65535 {
            f.push(126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    fn deflated(text: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compressed_messages_inflate_when_negotiated() {
        let text = "{\"rows\":[".to_string() + &"{\"name\":\"Zoë\",\"t\":1},".repeat(50) + "]}";
        let body = deflated(text.as_bytes());
        let mut one = server_frame(1, true, &body);
        one[0] |= 0x40;
        let half = body.len() / 2;
        let mut first = server_frame(1, false, &body[..half]);
        first[0] |= 0x40;
        let mut stream = one.clone();
        stream.extend(first);
        stream.extend(server_frame(0, true, &body[half..]));
        stream.extend(server_frame(1, true, b"plain"));
        let mut r = FrameReader::new(256);
        r.set_deflate(true);
        r.push(&stream);
        let mut out = Vec::new();
        for want in [text.as_bytes(), text.as_bytes(), b"plain"] {
            match r.next(&mut out).unwrap() {
                Some(Incoming::Text(t)) => assert_eq!(t, want),
                other => panic!("{other:?}"),
            }
        }
        let mut plain = FrameReader::new(256);
        plain.push(&one);
        assert!(
            plain.next(&mut out).is_err(),
            "RSV1 without deflate negotiated"
        );
    }

    #[test]
    fn parses_frames_split_anywhere() {
        let big = vec![b'x'; 70_000];
        let mut stream = server_frame(1, true, b"{\"a\":1}");
        stream.extend(server_frame(9, true, b"hi"));
        stream.extend(server_frame(2, true, &big));
        stream.extend(server_frame(1, false, b"par"));
        stream.extend(server_frame(0, true, b"ts"));
        stream.extend(server_frame(8, true, &1001u16.to_be_bytes()));
        for chunk in [1, 3, 7, 1000, stream.len()] {
            let mut r = FrameReader::new(256);
            let mut out = Vec::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                r.push(piece);
                while let Some(ev) = r.next(&mut out).unwrap() {
                    got.push(match ev {
                        Incoming::Text(t) => format!("T{}", String::from_utf8_lossy(t)),
                        Incoming::Binary(b) => format!("B{}", b.len()),
                        Incoming::Close(c) => format!("C{c:?}"),
                    });
                }
            }
            assert_eq!(
                got,
                ["T{\"a\":1}", "B70000", "Tparts", "CSome(1001)"],
                "chunk {chunk}"
            );
            // The ping was answered with a masked pong carrying "hi".
            assert_eq!(out[0], 0x8A);
            assert_eq!(out[1], 0x82);
            let mask = &out[2..6];
            let unmasked: Vec<u8> = out[6..8].iter().zip(mask).map(|(b, m)| b ^ m).collect();
            assert_eq!(unmasked, b"hi");
        }
    }

    #[test]
    fn refuses_masked_or_reserved_frames() {
        let mut r = FrameReader::new(256);
        r.push(&[0x81, 0x81, 0, 0, 0, 0, b'a']);
        assert!(r.next(&mut Vec::new()).is_err());
        let mut r = FrameReader::new(256);
        r.push(&[0xC1, 0x01, b'a']);
        assert!(r.next(&mut Vec::new()).is_err());
    }
}
