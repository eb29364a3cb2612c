//! A lean RFC 6455 client: one TCP socket, one small read buffer, frames
//! parsed in place.
//!
//! The load generator shares two cores with the hub it measures, so every
//! delivery it reads must cost as little as possible: no per-frame
//! allocation, no copy of the payload, no wakeup beyond the socket's own.
//! `tokio-tungstenite` copies every payload into its own buffer and validates
//! it again; here a text frame is handed to the caller as a slice of the read
//! buffer. Only what the harness needs is implemented: the client side of the
//! handshake (checked with tungstenite's accept-key derivation), unmasked
//! server frames with continuation, pings answered at once, masked client
//! frames, and close; permessage-deflate on request (the `bandwidth`
//! scenario): offered with no context takeover, compressed messages
//! inflated into a buffer of their own.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

/// Largest frame (or reassembled message) the client accepts.
const MAX_MESSAGE: usize = 1 << 20;
/// Largest HTTP response head accepted during the upgrade.
const MAX_HEAD: usize = 8 * 1024;

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP bind or connect failed.
    Tcp(io::Error),
    /// The server answered the upgrade with another status (401, 429, 503...).
    Refused(u16),
    /// The answer was not a valid websocket upgrade.
    Protocol(String),
    /// No answer within the time allowed.
    Timeout,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Tcp(e) => write!(f, "tcp: {e}"),
            ConnectError::Refused(s) => write!(f, "refused with HTTP {s}"),
            ConnectError::Protocol(m) => write!(f, "bad upgrade: {m}"),
            ConnectError::Timeout => f.write_str("timeout"),
        }
    }
}

impl ConnectError {
    /// A short label for counting failures by kind in reports.
    pub fn label(&self) -> String {
        match self {
            ConnectError::Tcp(e) => format!("tcp_{:?}", e.kind()).to_lowercase(),
            ConnectError::Refused(s) => format!("http_{s}"),
            ConnectError::Protocol(_) => "bad_upgrade".into(),
            ConnectError::Timeout => "timeout".into(),
        }
    }
}

/// A `ws://host:port/path` address split into what the handshake needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    pub path: String,
}

impl WsUrl {
    /// Parses `ws://IP:PORT[/path]`; only literal loopback-style addresses are
    /// accepted, never names, so the harness can only reach what it is told.
    pub fn parse(url: &str) -> Result<WsUrl, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("'{url}': only ws:// URLs are supported"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = hostport
            .parse()
            .map_err(|_| format!("'{url}': expected a literal IP:PORT"))?;
        Ok(WsUrl {
            addr,
            host: hostport.to_string(),
            path: path.to_string(),
        })
    }
}

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

/// Appends one masked client frame (FIN set) to `out`.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask: [u8; 4] = rand::random();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Appends a close frame with `code` to `out`.
pub fn encode_close(out: &mut Vec<u8>, code: u16) {
    encode_client_frame(out, 0x8, &code.to_be_bytes());
}

/// An open websocket: the socket and its frame reader.
#[derive(Debug)]
pub struct WsConn {
    pub stream: TcpStream,
    pub reader: FrameReader,
    /// The subprotocol the server selected, if any.
    pub subprotocol: Option<String>,
    /// The server accepted permessage-deflate.
    pub deflate: bool,
}

impl WsConn {
    /// Opens a TCP connection from `source` (port chosen by the kernel) and
    /// performs the upgrade within `timeout`.
    pub async fn connect(
        url: &WsUrl,
        source: Option<IpAddr>,
        subprotocol: Option<&str>,
        read_buf: usize,
        timeout: Duration,
    ) -> Result<WsConn, ConnectError> {
        Self::connect_offering(url, source, subprotocol, read_buf, timeout, false).await
    }

    /// [`WsConn::connect`], offering permessage-deflate when `deflate`
    /// (`permessage-deflate; client_no_context_takeover`, as browsers offer
    /// it, plus no context takeover on our side: the client never compresses).
    pub async fn connect_offering(
        url: &WsUrl,
        source: Option<IpAddr>,
        subprotocol: Option<&str>,
        read_buf: usize,
        timeout: Duration,
        deflate: bool,
    ) -> Result<WsConn, ConnectError> {
        match tokio::time::timeout(
            timeout,
            Self::connect_inner(url, source, subprotocol, read_buf, deflate),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn connect_inner(
        url: &WsUrl,
        source: Option<IpAddr>,
        subprotocol: Option<&str>,
        read_buf: usize,
        deflate: bool,
    ) -> Result<WsConn, ConnectError> {
        let socket = match url.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(ConnectError::Tcp)?;
        if let Some(ip) = source {
            // Without this, bind() reserves a port for the address alone and
            // searches the port range for a free one each time: quadratic
            // CPU in the kernel once thousands are taken, and at most ~28,000
            // per address. Deferred to connect(), the port only has to make
            // the 4-tuple unique.
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            )
            .map_err(|e| ConnectError::Tcp(e.into()))?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(ConnectError::Tcp)?;
        }
        let mut stream = socket.connect(url.addr).await.map_err(ConnectError::Tcp)?;
        stream.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let key = generate_key();
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            url.path, url.host
        );
        if let Some(p) = subprotocol {
            req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        if deflate {
            req.push_str(
                "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n",
            );
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(ConnectError::Tcp)?;

        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            let n = stream.read(&mut chunk).await.map_err(ConnectError::Tcp)?;
            if n == 0 {
                return Err(ConnectError::Protocol(
                    "connection closed during upgrade".into(),
                ));
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(i) = find(&head, b"\r\n\r\n") {
                break i + 4;
            }
            if head.len() > MAX_HEAD {
                return Err(ConnectError::Protocol("response head too large".into()));
            }
        };
        let text = std::str::from_utf8(&head[..head_end])
            .map_err(|_| ConnectError::Protocol("response head is not UTF-8".into()))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ConnectError::Protocol(format!("bad status line '{status_line}'")))?;
        if status != 101 {
            return Err(ConnectError::Refused(status));
        }
        let mut accept = None;
        let mut selected = None;
        let mut deflated = false;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("sec-websocket-accept") {
                    accept = Some(value.to_string());
                } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                    selected = Some(value.to_string());
                } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                    deflated |= value.starts_with("permessage-deflate");
                }
            }
        }
        if accept.as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
            return Err(ConnectError::Protocol("wrong Sec-WebSocket-Accept".into()));
        }
        if deflated && !deflate {
            return Err(ConnectError::Protocol("an extension nobody offered".into()));
        }
        let mut reader = FrameReader::new(read_buf);
        reader.set_deflate(deflated);
        // Frames the server sent right behind its 101 (a welcome, an INFO).
        reader.push(&head[head_end..]);
        Ok(WsConn {
            stream,
            reader,
            subprotocol: selected,
            deflate: deflated,
        })
    }

    /// Reads more bytes into the frame reader; `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let spare = self.reader.spare();
        let n = self.stream.read(spare).await?;
        self.reader.filled(n);
        Ok(n)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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

    #[test]
    fn client_frames_are_masked_and_sized() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            encode_client_frame(&mut out, 1, &payload);
            // Decode it as a server would.
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0);
            let (n, head) = match out[1] & 0x7f {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert_eq!(n, len);
            let mask = &out[head..head + 4];
            let body: Vec<u8> = out[head + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i & 3])
                .collect();
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn parses_urls() {
        let u = WsUrl::parse("ws://127.0.0.1:8080/v1/ws").unwrap();
        assert_eq!(u.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(u.path, "/v1/ws");
        assert_eq!(WsUrl::parse("ws://127.0.0.1:4223").unwrap().path, "/");
        assert!(WsUrl::parse("wss://127.0.0.1:1/").is_err());
        assert!(WsUrl::parse("ws://example.org:80/").is_err());
    }
}
