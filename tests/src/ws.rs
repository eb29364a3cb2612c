//! A raw websocket client speaking JSON frames, for protocol-level assertions.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long `recv` waits for a frame before failing the test.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A websocket connection to a hub.
pub struct WsClient {
    pub stream: Stream,
    next_id: u64,
    /// Skip `stats` frames in `recv`: they come every window on namespaces
    /// with audience or reactions, whatever else a test checks.
    pub skip_stats: bool,
}

/// A refused handshake: the HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
}

impl Refused {
    /// What a failed client handshake says: the HTTP refusal (status, body,
    /// `Retry-After`), or status 0 with the error for anything else.
    pub fn from_handshake(err: tokio_tungstenite::tungstenite::Error) -> Refused {
        match err {
            tokio_tungstenite::tungstenite::Error::Http(res) => Refused {
                status: res.status().as_u16(),
                retry_after: res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from),
                body: res
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            e => Refused {
                status: 0,
                body: e.to_string(),
                retry_after: None,
            },
        }
    }
}

impl WsClient {
    /// Connects and reads the `welcome` frame (returned by [`WsClient::welcome`]).
    pub async fn connect(url: &str) -> (WsClient, Value) {
        let mut c = Self::connect_with(url, &[])
            .await
            .unwrap_or_else(|r| panic!("refused: {r:?}"));
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (c, welcome)
    }

    /// Connects with extra request headers; no frame is read.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, Refused> {
        let mut req = url.into_client_request().expect("valid ws url");
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Self::finish(tokio_tungstenite::connect_async(req).await)
    }

    /// Connects from a chosen local address (Linux routes all of
    /// 127.0.0.0/8 to `lo`, so each test case can be its own client
    /// address), with request headers appended in order: a name may repeat,
    /// as proxies make it. No frame is read.
    pub async fn connect_from(
        url: &str,
        source: std::net::IpAddr,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, Refused> {
        let addr = Self::addr_of(url);
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .expect("socket");
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .expect("bind source");
        let tcp = socket.connect(addr).await.map_err(|e| Refused {
            status: 0,
            body: e.to_string(),
            retry_after: None,
        })?;
        Self::connect_over(tcp, url, headers).await
    }

    /// Completes the websocket handshake on a socket already connected (a
    /// PROXY protocol header written first, say), headers appended in order.
    pub async fn connect_over(
        tcp: TcpStream,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, Refused> {
        let mut req = url.into_client_request().expect("valid ws url");
        for (k, v) in headers {
            req.headers_mut().append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Self::finish(tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await)
    }

    /// The `ip:port` of a `ws://ip:port/...` URL.
    pub fn addr_of(url: &str) -> std::net::SocketAddr {
        let req = url.into_client_request().expect("valid ws url");
        req.uri()
            .authority()
            .expect("authority")
            .as_str()
            .parse()
            .expect("ip:port url")
    }

    /// Connects over a socket with a small receive buffer, so that a client
    /// that stops reading is seen as slow after little data.
    pub async fn connect_small_buffer(url: &str, rcvbuf: u32) -> (WsClient, Value) {
        let req = url.into_client_request().expect("valid ws url");
        let host = req
            .uri()
            .authority()
            .expect("authority")
            .as_str()
            .to_string();
        let addr: std::net::SocketAddr = host.parse().expect("ip:port url");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("rcvbuf");
        let tcp = socket.connect(addr).await.expect("connect");
        let (stream, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
            .await
            .expect("handshake");
        let mut c = WsClient {
            stream,
            next_id: 1000,
            skip_stats: false,
        };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome");
        (c, welcome)
    }

    fn finish(
        r: Result<
            (
                Stream,
                tokio_tungstenite::tungstenite::handshake::client::Response,
            ),
            tokio_tungstenite::tungstenite::Error,
        >,
    ) -> Result<WsClient, Refused> {
        match r {
            Ok((stream, _)) => Ok(WsClient {
                stream,
                next_id: 1000,
                skip_stats: false,
            }),
            Err(e) => Err(Refused::from_handshake(e)),
        }
    }

    /// The same client, skipping `stats` frames (see [`WsClient::skip_stats`]).
    pub fn without_stats(mut self) -> Self {
        self.skip_stats = true;
        self
    }

    /// A fresh request id.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.stream.send(msg).await.expect("send");
    }

    /// The next text frame as JSON (pings are answered and skipped).
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(RECV_TIMEOUT).await {
            Some(v) => v,
            None => panic!("no frame within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next text frame within `within`, or None (timeout or closed).
    pub async fn try_recv(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("hub frames are JSON");
                    if self.skip_stats && v["type"] == "stats" {
                        continue;
                    }
                    return Some(v);
                }
                Ok(Message::Close(c)) => panic!("closed by the hub: {c:?}"),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Asserts nothing arrives within `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(v) = self.try_recv(within).await {
            panic!("expected nothing, got {v}");
        }
    }

    /// Reads (and discards) text frames until the close frame; its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let msg = tokio::time::timeout(RECV_TIMEOUT, self.stream.next())
                .await
                .expect("close within timeout");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => return Some(frame.code.into()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Subscribes with extra fields; returns the `ack`.
    pub async fn subscribe(&mut self, topic: &str, extra: Value) -> Value {
        let id = self.id();
        let mut frame = json!({"type": "subscribe", "id": id, "topic": topic});
        if let (Some(f), Some(e)) = (frame.as_object_mut(), extra.as_object()) {
            f.extend(e.clone());
        }
        self.send(frame).await;
        let ack = self.recv().await;
        assert_eq!(ack["type"], "ack", "subscribe {topic}: {ack}");
        assert_eq!(ack["id"], id);
        ack
    }

    /// Sends a request and returns the answer (the next frame).
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let id = self.id();
        frame["id"] = json!(id);
        self.send(frame).await;
        self.recv().await
    }
}
