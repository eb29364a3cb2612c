//! The NATS client protocol spoken over nats-server's websocket listener:
//! the peer that the hub is compared with.
//!
//! Over a websocket, NATS is the same text protocol as over TCP, cut into
//! frames anywhere, so [`NatsParser`] keeps the bytes of an incomplete
//! operation until the next frame. The client sends `CONNECT` and `PING`,
//! subscribes with `SUB`, answers the server's `PING` with `PONG`, and reads
//! `MSG` and `HMSG` (JetStream republish adds headers). A `PONG` answers the
//! client's own `PING`: the server handles a connection's operations in
//! order, so a `PONG` after a `SUB` proves the subscription is in place.

/// The `CONNECT` line: no echo, no verbose `+OK`, headers allowed (HMSG).
pub fn connect_ops() -> &'static [u8] {
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"echo\":false,\"lang\":\"tribune-loadtest\",\"version\":\"1\",\"protocol\":1}\r\nPING\r\n"
}

/// `SUB <subject> <sid>` followed by `PING`, whose `PONG` confirms it.
pub fn sub_ops(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(format!(" {sid}\r\nPING\r\n").as_bytes());
}

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum NatsOp<'a> {
    Info,
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
    Msg {
        subject: &'a [u8],
        sid: u64,
        /// Header block of an `HMSG` (empty for `MSG`).
        headers: &'a [u8],
        payload: &'a [u8],
    },
}

/// A protocol violation by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsError(pub String);

/// Reassembles operations from websocket payloads.
#[derive(Debug, Default)]
pub struct NatsParser {
    buf: Vec<u8>,
    /// First unparsed byte.
    pos: usize,
}

/// Longest control line accepted (an `INFO` line is the longest).
const MAX_LINE: usize = 64 * 1024;
/// Largest message accepted.
const MAX_MSG: usize = 8 << 20;

impl NatsParser {
    /// Adds the payload of one websocket frame.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete operation, `None` when more bytes are needed.
    pub fn next_op(&mut self) -> Result<Option<NatsOp<'_>>, NatsError> {
        let avail = &self.buf[self.pos..];
        let Some(eol) = avail.windows(2).position(|w| w == b"\r\n") else {
            if avail.len() > MAX_LINE {
                return Err(NatsError("control line too long".into()));
            }
            return Ok(None);
        };
        let line = &avail[..eol];
        let after = eol + 2;
        let word_end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(line.len());
        let word = &line[..word_end];
        let start = self.pos;
        let op = if word.eq_ignore_ascii_case(b"MSG") || word.eq_ignore_ascii_case(b"HMSG") {
            let hmsg = word.len() == 4;
            // Fields as offsets into `avail`, so that `self.pos` can move
            // before the returned slices are taken.
            let mut fields: Vec<(usize, usize)> = Vec::with_capacity(5);
            let mut i = word_end;
            while i < eol {
                while i < eol && (line[i] == b' ' || line[i] == b'\t') {
                    i += 1;
                }
                let f = i;
                while i < eol && line[i] != b' ' && line[i] != b'\t' {
                    i += 1;
                }
                if i > f {
                    fields.push((f, i));
                }
            }
            // MSG subject sid [reply] size | HMSG subject sid [reply] hsize size
            let need = if hmsg { 4 } else { 3 };
            if fields.len() != need && fields.len() != need + 1 {
                return Err(NatsError(format!(
                    "bad {} line '{}'",
                    if hmsg { "HMSG" } else { "MSG" },
                    String::from_utf8_lossy(line)
                )));
            }
            let num = |(a, b): (usize, usize)| -> Result<usize, NatsError> {
                std::str::from_utf8(&line[a..b])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        NatsError(format!("bad number in '{}'", String::from_utf8_lossy(line)))
                    })
            };
            let total = num(fields[fields.len() - 1])?;
            let hsize = if hmsg {
                num(fields[fields.len() - 2])?
            } else {
                0
            };
            let sid = num(fields[1])? as u64;
            if total > MAX_MSG || hsize > total {
                return Err(NatsError("message size out of range".into()));
            }
            if avail.len() < after + total + 2 {
                return Ok(None);
            }
            if &avail[after + total..after + total + 2] != b"\r\n" {
                return Err(NatsError("message not followed by CRLF".into()));
            }
            self.pos = start + after + total + 2;
            let avail = &self.buf[start..];
            let (s0, s1) = fields[0];
            return Ok(Some(NatsOp::Msg {
                subject: &avail[s0..s1],
                sid,
                headers: &avail[after..after + hsize],
                payload: &avail[after + hsize..after + total],
            }));
        } else if word.eq_ignore_ascii_case(b"PING") {
            NatsOp::Ping
        } else if word.eq_ignore_ascii_case(b"PONG") {
            NatsOp::Pong
        } else if word.eq_ignore_ascii_case(b"INFO") {
            NatsOp::Info
        } else if word.eq_ignore_ascii_case(b"+OK") {
            NatsOp::Ok
        } else if word.eq_ignore_ascii_case(b"-ERR") {
            self.pos = start + after;
            let avail = &self.buf[start..];
            return Ok(Some(NatsOp::Err(avail[word_end..eol].trim_ascii())));
        } else {
            return Err(NatsError(format!(
                "unknown operation '{}'",
                String::from_utf8_lossy(&line[..line.len().min(40)])
            )));
        };
        self.pos = start + after;
        Ok(Some(op))
    }
}

/// The value of header `name` in an HMSG header block.
pub fn header<'a>(headers: &'a [u8], name: &str) -> Option<&'a [u8]> {
    headers.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(p: &mut NatsParser) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(op) = p.next_op().unwrap() {
            got.push(match op {
                NatsOp::Msg {
                    subject,
                    sid,
                    headers,
                    payload,
                } => format!(
                    "{} {sid} seq={:?} {}",
                    String::from_utf8_lossy(subject),
                    header(headers, "Nats-Sequence")
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                    String::from_utf8_lossy(payload)
                ),
                other => format!("{other:?}"),
            });
        }
        got
    }

    #[test]
    fn parses_operations_split_anywhere() {
        let hdr = "NATS/1.0\r\nNats-Stream: TRIBUNE\r\nNats-Sequence: 42\r\n\r\n";
        let body = r#"{"c":1,"t":2}"#;
        let stream = format!(
            "INFO {{\"server_id\":\"x\"}}\r\nPING\r\nMSG a.b 1 5\r\nhello\r\n+OK\r\nHMSG tribune.live.clips.x.t1 7 {} {}\r\n{hdr}{body}\r\nPONG\r\n-ERR 'Slow Consumer'\r\n",
            hdr.len(),
            hdr.len() + body.len()
        );
        for chunk in [1, 2, 5, 17, stream.len()] {
            let mut p = NatsParser::default();
            let mut got = Vec::new();
            for piece in stream.as_bytes().chunks(chunk) {
                p.push(piece);
                got.extend(collect(&mut p));
            }
            assert_eq!(
                got,
                [
                    "Info".to_string(),
                    "Ping".into(),
                    "a.b 1 seq=None hello".into(),
                    "Ok".into(),
                    format!("tribune.live.clips.x.t1 7 seq=Some(\"42\") {body}"),
                    "Pong".into(),
                    "Err([39, 83, 108, 111, 119, 32, 67, 111, 110, 115, 117, 109, 101, 114, 39])"
                        .into(),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn refuses_garbage() {
        let mut p = NatsParser::default();
        p.push(b"WHAT now\r\n");
        assert!(p.next_op().is_err());
        let mut p = NatsParser::default();
        p.push(b"MSG a\r\n");
        assert!(p.next_op().is_err());
    }

    #[test]
    fn builds_sub_ops() {
        let mut out = Vec::new();
        sub_ops(&mut out, "tribune.live.clips.a.b", 3);
        assert_eq!(out, b"SUB tribune.live.clips.a.b 3\r\nPING\r\n");
        assert!(connect_ops().ends_with(b"PING\r\n"));
    }
}
