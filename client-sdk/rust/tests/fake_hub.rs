//! The SDK against a scripted fake hub (a real websocket server on loopback
//! whose frames the test writes by hand): close codes, `drain`, heartbeats,
//! `prev` gaps, announced `gap` frames, resume bookkeeping and local
//! overflow, each forced exactly, which a real hub cannot be made to do on
//! cue.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tribune_client::{
    Client, ConnectionEvent, DisconnectReason, Event, SubscribeOptions, Subscription,
};
use tribune_protocol::{
    Ack, ClientFrame, Drain, Gap, Message, Mode, Pong, ServerFrame, Subscribe, Welcome,
    decode_client, encode_server,
};

const T: &str = "clips.lausanne2020.speed-skating";
const WAIT: Duration = Duration::from_secs(5);

struct FakeHub {
    addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<FakeConn>,
}

struct FakeConn {
    ws: WebSocketStream<TcpStream>,
    accepted: Instant,
}

impl FakeHub {
    async fn start() -> FakeHub {
        Self::serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    // The handshake callback's error type is tungstenite's, not ours.
    #[allow(clippy::result_large_err)]
    fn serve(listener: TcpListener) -> FakeHub {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let accepted = Instant::now();
                // The SDK offers `tribune.v1`; a hub echoes it (PROTOCOL.md section 1).
                let echo = |req: &Request, mut resp: Response| {
                    let offered = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    assert!(
                        offered.split(',').any(|p| p.trim() == "tribune.v1"),
                        "offered {offered:?}"
                    );
                    resp.headers_mut().insert(
                        "sec-websocket-protocol",
                        HeaderValue::from_static("tribune.v1"),
                    );
                    Ok(resp)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, echo).await
                    && tx.send(FakeConn { ws, accepted }).is_err()
                {
                    return;
                }
            }
        });
        FakeHub { addr, conns: rx }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    async fn next_conn(&mut self) -> FakeConn {
        timeout(WAIT, self.conns.recv())
            .await
            .expect("the client reconnects")
            .expect("listener alive")
    }

    /// Asserts that no connection arrives within `d`.
    async fn no_conn_within(&mut self, d: Duration) {
        if let Ok(Some(_)) = timeout(d, self.conns.recv()).await {
            panic!("unexpected reconnection");
        }
    }
}

impl FakeConn {
    async fn send(&mut self, frame: ServerFrame) {
        self.ws
            .send(WsMessage::text(encode_server(&frame)))
            .await
            .unwrap();
    }

    async fn welcome(&mut self, heartbeat_ms: u64) {
        self.send(ServerFrame::Welcome(Welcome {
            protocol: 1,
            node: "fake".into(),
            conn: "c-1".into(),
            heartbeat_ms,
            expires_at: None,
        }))
        .await;
    }

    /// The next client frame (pings and pongs skipped).
    async fn recv(&mut self) -> ClientFrame {
        loop {
            let msg = timeout(WAIT, self.ws.next())
                .await
                .expect("a client frame in time")
                .expect("socket open")
                .expect("socket healthy");
            match msg {
                WsMessage::Text(t) => return decode_client(&t).expect("a valid client frame"),
                WsMessage::Close(_) => panic!("client closed"),
                _ => continue,
            }
        }
    }

    async fn expect_subscribe(&mut self) -> Subscribe {
        match self.recv().await {
            ClientFrame::Subscribe(s) => s,
            other => panic!("expected subscribe, got {other:?}"),
        }
    }

    /// A renewal on the same connection: `unsubscribe` of `T`, then `subscribe`.
    async fn expect_resubscribe(&mut self) -> Subscribe {
        match self.recv().await {
            ClientFrame::Unsubscribe(u) => assert_eq!(u.topic, T),
            other => panic!("expected unsubscribe, got {other:?}"),
        }
        self.expect_subscribe().await
    }

    async fn ack_subscribe(
        &mut self,
        s: &Subscribe,
        mode: Mode,
        epoch: &str,
        seq: u64,
        recovered: Option<bool>,
    ) {
        self.send(ServerFrame::Ack(Ack {
            id: s.id,
            topic: Some(s.topic.clone()),
            mode: Some(mode),
            epoch: Some(epoch.into()),
            seq: Some(seq),
            recovered,
            delta: None,
            expires_at: None,
        }))
        .await;
    }

    async fn message(&mut self, seq: u64, prev: u64) {
        self.send(ServerFrame::Message(msg(seq, prev))).await;
    }

    async fn gap(&mut self, after: u64, before: u64) {
        self.send(ServerFrame::Gap(Gap {
            topic: T.into(),
            after,
            before,
        }))
        .await;
    }

    async fn close(&mut self, code: u16) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: "".into(),
            }))
            .await;
    }
}

fn msg(seq: u64, prev: u64) -> Message {
    Message {
        topic: T.into(),
        seq,
        prev,
        ts: 1_579_098_123_456,
        replay: false,
        delta: false,
        data: RawValue::from_string(format!("{{\"n\":{seq}}}")).unwrap(),
    }
}

/// Connects a client to the fake hub and subscribes to `T` (feed, epoch E1, seq `at`).
async fn connected(
    hub: &mut FakeHub,
    builder: tribune_client::ClientBuilder,
    at: u64,
) -> (Client, Subscription, FakeConn) {
    let connecting = tokio::spawn(builder.connect());
    let mut conn = hub.next_conn().await;
    conn.welcome(25_000).await;
    let client = timeout(WAIT, connecting).await.unwrap().unwrap().unwrap();
    let subscribing = {
        let client = client.clone();
        tokio::spawn(async move { client.subscribe(T).await })
    };
    let s = conn.expect_subscribe().await;
    assert_eq!((s.since, s.epoch.as_deref()), (None, None));
    conn.ack_subscribe(&s, Mode::Feed, "E1", at, None).await;
    let sub = timeout(WAIT, subscribing).await.unwrap().unwrap().unwrap();
    (client, sub, conn)
}

async fn next_event(sub: &mut Subscription) -> Event {
    timeout(WAIT, sub.next())
        .await
        .expect("an event in time")
        .expect("stream open")
}

async fn next_seq(sub: &mut Subscription) -> u64 {
    match next_event(sub).await {
        Event::Message(m) => m.seq,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn drain_reconnects_within_retry_ms_not_after_backoff() {
    let mut hub = FakeHub::start().await;
    // A backoff this slow would show: only the drain path reconnects quickly.
    let builder =
        Client::builder(hub.url()).backoff(Duration::from_secs(20), Duration::from_secs(20));
    let (client, mut sub, mut conn) = connected(&mut hub, builder, 10).await;
    let mut events = client.events();
    conn.message(11, 10).await;
    assert_eq!(next_seq(&mut sub).await, 11);

    const RETRY_MS: u64 = 400;
    let mut delays = Vec::new();
    for round in 0..5u64 {
        let drained_at = Instant::now();
        conn.send(ServerFrame::Drain(Drain { retry_ms: RETRY_MS }))
            .await;
        conn.close(1001).await;
        let announced = loop {
            match timeout(WAIT, events.next()).await.unwrap().unwrap() {
                ConnectionEvent::Draining {
                    retry_ms,
                    reconnect_in,
                } => {
                    assert_eq!(retry_ms, RETRY_MS);
                    assert!(
                        reconnect_in < Duration::from_millis(RETRY_MS),
                        "{reconnect_in:?}"
                    );
                    break reconnect_in;
                }
                _ => continue,
            }
        };
        conn = hub.next_conn().await;
        let measured = conn.accepted - drained_at;
        delays.push(measured);
        // Within [0, retry_ms) plus scheduling slack, and at the instant announced.
        assert!(
            measured < Duration::from_millis(RETRY_MS + 250),
            "round {round}: {measured:?}"
        );
        assert!(
            measured + Duration::from_millis(250) >= announced,
            "round {round}: reconnected at {measured:?}, before the drawn {announced:?}"
        );
        conn.welcome(25_000).await;
        // The subscription is renewed transparently, with since/epoch.
        let s = conn.expect_subscribe().await;
        let last = 11 + round;
        assert_eq!((s.since, s.epoch.as_deref()), (Some(last), Some("E1")));
        conn.ack_subscribe(&s, Mode::Feed, "E1", last, Some(true))
            .await;
        conn.message(last + 1, last).await;
        assert_eq!(next_seq(&mut sub).await, last + 1);
    }
    // Random draws, not a fixed delay.
    let spread = delays
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*delays.iter().min().unwrap());
    assert!(spread > Duration::from_millis(10), "{delays:?}");
}

#[tokio::test]
async fn slow_consumer_close_resumes_at_once() {
    let mut hub = FakeHub::start().await;
    let builder =
        Client::builder(hub.url()).backoff(Duration::from_secs(20), Duration::from_secs(20));
    let (_client, mut sub, mut conn) = connected(&mut hub, builder, 0).await;
    conn.message(1, 0).await;
    conn.message(2, 1).await;
    assert_eq!(next_seq(&mut sub).await, 1);
    assert_eq!(next_seq(&mut sub).await, 2);
    let closed_at = Instant::now();
    conn.close(4008).await;
    let mut conn = hub.next_conn().await;
    assert!(conn.accepted - closed_at < Duration::from_secs(1));
    conn.welcome(25_000).await;
    let s = conn.expect_subscribe().await;
    assert_eq!((s.since, s.epoch.as_deref()), (Some(2), Some("E1")));
    conn.ack_subscribe(&s, Mode::Feed, "E1", 4, Some(true))
        .await;
    // The replay overlaps what was delivered: nothing twice.
    for (seq, prev) in [(2, 1), (3, 2), (4, 3)] {
        conn.message(seq, prev).await;
    }
    assert_eq!(next_seq(&mut sub).await, 3);
    assert_eq!(next_seq(&mut sub).await, 4);
}

#[tokio::test]
async fn normal_and_policy_closes_are_final() {
    for code in [1000u16, 1008] {
        let mut hub = FakeHub::start().await;
        let builder = Client::builder(hub.url())
            .backoff(Duration::from_millis(10), Duration::from_millis(20));
        let (client, mut sub, mut conn) = connected(&mut hub, builder, 0).await;
        let mut events = client.events();
        conn.close(code).await;
        match next_event(&mut sub).await {
            Event::Closed { code: None, reason } => {
                assert!(reason.contains(&code.to_string()), "{reason}")
            }
            other => panic!("expected Closed, got {other:?}"),
        }
        assert!(timeout(WAIT, sub.next()).await.unwrap().is_none());
        loop {
            match timeout(WAIT, events.next()).await.unwrap().unwrap() {
                ConnectionEvent::Closed { reason } => {
                    assert_eq!(
                        reason,
                        DisconnectReason::Closed {
                            code,
                            reason: String::new()
                        }
                    );
                    break;
                }
                ConnectionEvent::Disconnected { retry_in, .. } => assert_eq!(retry_in, None),
                other => panic!("{other:?}"),
            }
        }
        // With a 10 ms backoff a retry would come at once; none does.
        hub.no_conn_within(Duration::from_millis(500)).await;
        assert_eq!(client.state(), tribune_client::ConnectionState::Closed);
        let err = client.subscribe("clips.a.b").await.unwrap_err();
        assert_eq!(err.kind(), tribune_client::SubscribeErrorKind::Closed);
    }
}

#[tokio::test]
async fn other_closes_reconnect_with_backoff_and_resume() {
    let mut hub = FakeHub::start().await;
    let builder =
        Client::builder(hub.url()).backoff(Duration::from_millis(50), Duration::from_millis(100));
    let (client, mut sub, mut conn) = connected(&mut hub, builder, 7).await;
    let mut events = client.events();
    conn.close(1011).await;
    let mut conn = hub.next_conn().await;
    conn.welcome(25_000).await;
    let s = conn.expect_subscribe().await;
    assert_eq!((s.since, s.epoch.as_deref()), (Some(7), Some("E1")));
    conn.ack_subscribe(&s, Mode::Feed, "E1", 7, Some(true))
        .await;
    let mut seen = Vec::new();
    loop {
        let e = timeout(WAIT, events.next()).await.unwrap().unwrap();
        let done = matches!(e, ConnectionEvent::Resumed { .. });
        seen.push(e);
        if done {
            break;
        }
    }
    assert!(
        matches!(
            &seen[0],
            ConnectionEvent::Disconnected { reason: DisconnectReason::Closed { code: 1011, .. }, retry_in: Some(d) }
                if *d <= Duration::from_millis(100)
        ),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::Connecting { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::Connected { node, .. } if node == "fake")),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().unwrap(),
        &ConnectionEvent::Resumed {
            subscriptions: 1,
            recovered: 1,
            gaps: 0,
            refused: 0
        }
    );
    conn.message(8, 7).await;
    assert_eq!(next_seq(&mut sub).await, 8);
}

#[tokio::test]
async fn prev_gap_resubscribes_with_since_on_the_same_connection() {
    let mut hub = FakeHub::start().await;
    let builder = Client::builder(hub.url());
    let (_client, mut sub, mut conn) = connected(&mut hub, builder, 0).await;
    conn.message(1, 0).await;
    conn.message(2, 1).await;
    // 3 was lost by the hub: 4 says its predecessor is 3.
    conn.message(4, 3).await;
    // Still in flight from the old subscription: ignored.
    conn.message(5, 4).await;
    let s = conn.expect_resubscribe().await;
    assert_eq!((s.since, s.epoch.as_deref()), (Some(2), Some("E1")));
    conn.ack_subscribe(&s, Mode::Feed, "E1", 5, Some(true))
        .await;
    for (seq, prev) in [(3, 2), (4, 3), (5, 4), (6, 5)] {
        conn.message(seq, prev).await;
    }
    let got: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(next_seq(&mut sub).await);
        }
        v
    };
    assert_eq!(got, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn announced_gap_is_reported_and_the_feed_goes_on_without_resubscribing() {
    let mut hub = FakeHub::start().await;
    let builder = Client::builder(hub.url());
    let (client, mut sub, mut conn) = connected(&mut hub, builder, 0).await;
    conn.message(1, 0).await;
    conn.message(2, 1).await;
    // 3..6 aged out of the bus before the hub could repair: it says so, then
    // sends 7 with the `prev` the bus knows (5, inside the hole, above 2).
    conn.gap(2, 7).await;
    conn.message(7, 5).await;
    conn.message(8, 7).await;
    assert_eq!(next_seq(&mut sub).await, 1);
    assert_eq!(next_seq(&mut sub).await, 2);
    match next_event(&mut sub).await {
        Event::Gap {
            topic,
            after_seq,
            before_seq,
            epoch_changed,
            epoch,
        } => {
            assert_eq!((topic.as_str(), after_seq, before_seq), (T, 2, Some(7)));
            assert!(!epoch_changed);
            assert_eq!(epoch.as_deref(), Some("E1"));
        }
        other => panic!("expected Gap, got {other:?}"),
    }
    assert_eq!(next_seq(&mut sub).await, 7);
    assert_eq!(next_seq(&mut sub).await, 8);
    // The task handled 7 and 8 before this ping: had it resubscribed, an
    // unsubscribe and a subscribe would come first.
    let pinging = tokio::spawn(async move { client.ping().await });
    let id = match conn.recv().await {
        ClientFrame::Ping(p) => p.id,
        other => panic!("expected only the ping, got {other:?}"),
    };
    conn.send(ServerFrame::Pong(Pong { id })).await;
    timeout(WAIT, pinging).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn gap_frame_past_what_was_received_resubscribes_with_since() {
    let mut hub = FakeHub::start().await;
    let builder = Client::builder(hub.url());
    let (_client, mut sub, mut conn) = connected(&mut hub, builder, 0).await;
    conn.message(1, 0).await;
    assert_eq!(next_seq(&mut sub).await, 1);
    // The hole starts after 3, but 2 and 3 never arrived.
    conn.gap(3, 7).await;
    let s = conn.expect_resubscribe().await;
    assert_eq!((s.since, s.epoch.as_deref()), (Some(1), Some("E1")));
    conn.ack_subscribe(&s, Mode::Feed, "E1", 7, Some(true))
        .await;
    conn.message(2, 1).await;
    conn.message(3, 2).await;
    conn.gap(3, 7).await;
    conn.message(7, 0).await;
    assert_eq!(next_seq(&mut sub).await, 2);
    assert_eq!(next_seq(&mut sub).await, 3);
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Gap {
            after_seq: 3,
            before_seq: Some(7),
            ..
        }
    ));
    assert_eq!(next_seq(&mut sub).await, 7);
}

#[tokio::test]
async fn unrecovered_resume_yields_an_explicit_gap() {
    let mut hub = FakeHub::start().await;
    let builder =
        Client::builder(hub.url()).backoff(Duration::from_millis(10), Duration::from_millis(20));
    let (_client, mut sub, mut conn) = connected(&mut hub, builder, 0).await;
    conn.message(1, 0).await;
    assert_eq!(next_seq(&mut sub).await, 1);
    conn.close(1011).await;
    let mut conn = hub.next_conn().await;
    conn.welcome(25_000).await;
    let s = conn.expect_subscribe().await;
    assert_eq!(s.since, Some(1));
    conn.ack_subscribe(&s, Mode::Feed, "E1", 50, Some(false))
        .await;
    conn.message(51, 50).await;
    match next_event(&mut sub).await {
        Event::Gap {
            topic,
            after_seq,
            before_seq,
            epoch_changed,
            epoch,
        } => {
            assert_eq!((topic.as_str(), after_seq, epoch_changed), (T, 1, false));
            assert_eq!(
                before_seq, None,
                "a failed resume does not know where loss ends"
            );
            assert_eq!(epoch.as_deref(), Some("E1"));
        }
        other => panic!("expected Gap, got {other:?}"),
    }
    assert_eq!(next_seq(&mut sub).await, 51);
}

#[tokio::test]
async fn silent_hub_is_left_after_two_heartbeats() {
    let mut hub = FakeHub::start().await;
    let builder = Client::builder(hub.url())
        .heartbeat(Duration::from_millis(150))
        .backoff(Duration::from_millis(10), Duration::from_millis(20));
    let (client, _sub, conn) = connected(&mut hub, builder, 0).await;
    let mut events = client.events();
    let silent_since = Instant::now();
    // The fake never reads again, so it never answers the client's pings.
    let _conn = conn;
    let reason = loop {
        if let ConnectionEvent::Disconnected { reason, .. } =
            timeout(WAIT, events.next()).await.unwrap().unwrap()
        {
            break reason;
        }
    };
    assert_eq!(reason, DisconnectReason::HeartbeatTimeout);
    let after = silent_since.elapsed();
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(2),
        "{after:?}"
    );
    let _next = hub.next_conn().await;
}

#[tokio::test]
async fn a_slow_application_loses_nothing_on_a_feed() {
    let mut hub = FakeHub::start().await;
    let builder = Client::builder(hub.url()).subscription_buffer(4);
    let (_client, mut sub, mut conn) = connected(&mut hub, builder, 0).await;
    for seq in 1..=10 {
        conn.message(seq, seq - 1).await;
    }
    // The buffer holds 4; the 5th overflows and the client stops the flow.
    match conn.recv().await {
        ClientFrame::Unsubscribe(u) => assert_eq!(u.topic, T),
        other => panic!("expected unsubscribe, got {other:?}"),
    }
    assert_eq!(sub.pending(), 4);
    // Consuming down to half the buffer renews it from the last queued seq.
    assert_eq!(next_seq(&mut sub).await, 1);
    assert_eq!(next_seq(&mut sub).await, 2);
    let s = conn.expect_subscribe().await;
    assert_eq!((s.since, s.epoch.as_deref()), (Some(4), Some("E1")));
    conn.ack_subscribe(&s, Mode::Feed, "E1", 10, Some(true))
        .await;
    // The replay, at a pace the application keeps up with this time.
    let mut got = vec![1, 2];
    for pair in [[5, 6], [7, 8], [9, 10]] {
        for seq in pair {
            conn.message(seq, seq - 1).await;
        }
        while sub.pending() > 0 || got.len() < pair[1] as usize {
            got.push(next_seq(&mut sub).await);
        }
    }
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn subscription_refused_on_renewal_ends_with_closed() {
    let mut hub = FakeHub::start().await;
    let builder =
        Client::builder(hub.url()).backoff(Duration::from_millis(10), Duration::from_millis(20));
    let (client, mut sub, mut conn) = connected(&mut hub, builder, 3).await;
    conn.close(1011).await;
    let mut conn = hub.next_conn().await;
    conn.welcome(25_000).await;
    let s = conn.expect_subscribe().await;
    conn.send(ServerFrame::Error(tribune_protocol::Error {
        id: Some(s.id),
        code: tribune_protocol::ErrorCode::Forbidden,
        message: "token no longer grants it".into(),
    }))
    .await;
    match next_event(&mut sub).await {
        Event::Closed { code, reason } => {
            assert_eq!(code, Some(tribune_protocol::ErrorCode::Forbidden));
            assert_eq!(reason, "token no longer grants it");
        }
        other => panic!("{other:?}"),
    }
    assert!(timeout(WAIT, sub.next()).await.unwrap().is_none());
    // The topic is free again for a new subscription.
    let again = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .subscribe_with(T, SubscribeOptions::new().history(2))
                .await
        })
    };
    let s = conn.expect_subscribe().await;
    assert_eq!((s.history, s.since), (Some(2), None));
    conn.ack_subscribe(&s, Mode::Feed, "E1", 3, None).await;
    timeout(WAIT, again).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn retry_initial_connect_waits_for_the_hub_and_sends_early_subscriptions() {
    // A port with nobody listening yet.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::builder(format!("ws://{addr}"))
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .retry_initial_connect(true)
        .connect()
        .await
        .expect("returns at once");
    let mut events = client.events();
    let subscribing = {
        let client = client.clone();
        tokio::spawn(async move { client.subscribe(T).await })
    };
    // At least one attempt fails first.
    loop {
        match timeout(WAIT, events.next()).await.unwrap().unwrap() {
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Io(_),
                retry_in: Some(d),
            } => {
                assert!(d <= Duration::from_millis(100));
                break;
            }
            ConnectionEvent::Connecting { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
    let err = client.react("results.a.b", "🔥").await.unwrap_err();
    assert_eq!(err.kind(), tribune_client::ReactErrorKind::NotConnected);
    let mut hub = FakeHub::serve(TcpListener::bind(addr).await.unwrap());
    let mut conn = hub.next_conn().await;
    conn.welcome(25_000).await;
    let s = conn.expect_subscribe().await;
    conn.ack_subscribe(&s, Mode::Feed, "E1", 0, None).await;
    let mut sub = timeout(WAIT, subscribing).await.unwrap().unwrap().unwrap();
    conn.message(1, 0).await;
    assert_eq!(next_seq(&mut sub).await, 1);
    assert_eq!(client.state(), tribune_client::ConnectionState::Connected);
    assert_eq!(client.node().as_deref(), Some("fake"));
}

/// A delta that does not rebuild (made from another base) is never shown:
/// the SDK resubscribes with `since` at the last board it delivered, and the
/// full board the hub replays is what the application sees next. A good
/// delta is rebuilt transparently.
#[tokio::test]
async fn bad_delta_resubscribes_and_is_never_delivered() {
    let board = |t: &str| {
        let rows: Vec<String> = (0..30)
            .map(|i| format!(r#"{{"name":"Skåter {i}","time":"{t}"}}"#))
            .collect();
        format!(r#"{{"rows":[{}],"venue":"Milano"}}"#, rows.join(","))
    };
    let frame = |seq: u64, prev: u64, delta: bool, data: String| {
        ServerFrame::Message(Message {
            topic: T.into(),
            seq,
            prev,
            ts: 1,
            replay: false,
            delta,
            data: RawValue::from_string(data).unwrap(),
        })
    };
    let delta = |from: &str, to: &str| {
        serde_json::to_string(&tribune_protocol::delta::make(from.as_bytes(), to).unwrap()).unwrap()
    };
    let mut hub = FakeHub::start().await;
    let connecting = tokio::spawn(Client::builder(hub.url()).connect());
    let mut conn = hub.next_conn().await;
    conn.welcome(25_000).await;
    let client = timeout(WAIT, connecting).await.unwrap().unwrap().unwrap();
    let subscribing = {
        let client = client.clone();
        tokio::spawn(async move { client.subscribe(T).await })
    };
    let s = conn.expect_subscribe().await;
    assert_eq!(
        s.delta.as_deref(),
        Some("fossil"),
        "the SDK asks for deltas"
    );
    conn.ack_subscribe(&s, Mode::State, "E1", 0, None).await;
    let mut sub = timeout(WAIT, subscribing).await.unwrap().unwrap().unwrap();
    let (a, b, c) = (board("1:55.01"), board("1:54.99"), board("1:54.80"));
    conn.send(frame(1, 0, false, a.clone())).await;
    conn.send(frame(2, 1, true, delta(&a, &b))).await;
    // Made from a board this client never had (shifted offsets): the
    // rebuilt text fails the delta's checksum.
    let other = a.replace("Skåter", "Skater");
    conn.send(frame(3, 2, true, delta(&other, &c))).await;
    let s = conn.expect_resubscribe().await;
    assert_eq!((s.since, s.epoch.as_deref()), (Some(2), Some("E1")));
    conn.ack_subscribe(&s, Mode::State, "E1", 3, Some(true))
        .await;
    conn.send(frame(3, 2, false, c.clone())).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Event::Message(m) = next_event(&mut sub).await {
            got.push((m.seq, m.data.get().to_string()));
        }
    }
    assert_eq!(got, [(1, a), (2, b), (3, c)]);
}
