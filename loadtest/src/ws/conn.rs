//! Opening a connection: the `ws://` URL, the TCP socket, the HTTP upgrade
//! (checked with tungstenite's accept-key derivation, subprotocol and
//! permessage-deflate negotiation) and reading more bytes into the frame
//! reader.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::read::FrameReader;

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
