//! Mobile lifecycle against the real hub binary (embedded bus), through a
//! loopback proxy that can black-hole a socket: `network_changed()` on a
//! silently dead socket resumes within a second, with nothing lost, and
//! `pause()`/`resume()` close in the background and resume with `since`.
//!
//! Needs `target/debug/tribune-hub` (`cargo build -p tribune-hub`).

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tribune_client::{
    Client, ConnectionEvent, ConnectionEvents, DisconnectReason, Event, Subscription,
};
use tribune_tests::Hub;
use tribune_tests::nats::TcpProxy;

const WAIT: Duration = Duration::from_secs(10);

/// A client whose own mechanisms would take long to notice a dead socket
/// (heartbeat 20 s) and to come back (backoff from 5 s): whatever is fast
/// below is the lifecycle's doing.
async fn client(proxy: &TcpProxy) -> Client {
    Client::builder(format!("ws://{}{}", proxy.addr(), "/v1/ws"))
        .heartbeat(Duration::from_secs(20))
        .backoff(Duration::from_secs(5), Duration::from_secs(30))
        .connect()
        .await
        .expect("connect through the proxy")
}

async fn next_message(sub: &mut Subscription, within: Duration) -> Option<(u64, Value)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, sub.next()).await.ok()?? {
            Event::Message(m) => {
                return Some((m.seq, serde_json::from_str(m.data.get()).unwrap()));
            }
            Event::Stats(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn next_event(events: &mut ConnectionEvents, what: &str) -> ConnectionEvent {
    timeout(WAIT, events.next())
        .await
        .unwrap_or_else(|_| panic!("no connection event within {WAIT:?}: {what}"))
        .expect("events open")
}

#[tokio::test]
async fn network_changed_on_a_silently_dead_socket_resumes_within_a_second() {
    let hub = Hub::start(&[]).await;
    let proxy = TcpProxy::start(&hub.addr().to_string()).await;
    let client = client(&proxy).await;
    let topic = "clips.sdk.lifecycle";
    let mut sub = client.subscribe(topic).await.unwrap();
    let mut events = client.events();
    let first = hub.publish(topic, json!({"n": 1})).await;
    assert_eq!(next_message(&mut sub, WAIT).await.unwrap().0, first);

    // The phone moved to another network: its socket is dead, and says
    // nothing. A message is published meanwhile.
    proxy.silence();
    let missed = hub.publish(topic, json!({"n": 2})).await;
    assert!(
        next_message(&mut sub, Duration::from_millis(300))
            .await
            .is_none(),
        "the dead socket delivers nothing"
    );
    let started = Instant::now();
    client.network_changed();
    let (seq, data) = next_message(&mut sub, WAIT)
        .await
        .expect("the missed message");
    let took = started.elapsed();
    assert_eq!((seq, data), (missed, json!({"n": 2})), "nothing lost");
    eprintln!("network_changed() on a dead socket: the missed message after {took:?}");
    assert!(took < Duration::from_secs(1), "resumed in {took:?}");
    match next_event(&mut events, "the disconnect").await {
        ConnectionEvent::Disconnected { reason, retry_in } => {
            assert_eq!(reason, DisconnectReason::Unresponsive);
            assert_eq!(retry_in, Some(Duration::ZERO), "no backoff");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }

    // On a live socket the check changes nothing.
    client.network_changed();
    let live = hub.publish(topic, json!({"n": 3})).await;
    assert_eq!(next_message(&mut sub, WAIT).await.unwrap().0, live);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let state_events: Vec<ConnectionEvent> =
        std::iter::from_fn(|| futures::FutureExt::now_or_never(events.next()).flatten())
            .filter(|e| matches!(e, ConnectionEvent::Disconnected { .. }))
            .collect();
    assert!(
        state_events.is_empty(),
        "a live socket passes the check: {state_events:?}"
    );
}

#[tokio::test]
async fn pause_closes_and_resume_comes_back_at_once_without_loss() {
    let hub = Hub::start(&[]).await;
    let proxy = TcpProxy::start(&hub.addr().to_string()).await;
    let client = client(&proxy).await;
    let topic = "clips.sdk.background";
    let mut sub = client.subscribe(topic).await.unwrap();
    let mut events = client.events();
    let first = hub.publish(topic, json!({"n": 1})).await;
    assert_eq!(next_message(&mut sub, WAIT).await.unwrap().0, first);

    client.pause();
    match next_event(&mut events, "the pause").await {
        ConnectionEvent::Disconnected { reason, retry_in } => {
            assert_eq!(reason, DisconnectReason::Paused);
            assert_eq!(retry_in, None, "a paused client does not come back alone");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let mut missed = Vec::new();
    for n in 2..5 {
        missed.push(hub.publish(topic, json!({"n": n})).await);
    }
    // Paused means away: no attempt while in the background, not even
    // when the network changes meanwhile.
    client.network_changed();
    assert!(
        timeout(Duration::from_millis(500), events.next())
            .await
            .is_err(),
        "no connection attempt while paused"
    );
    let started = Instant::now();
    client.resume();
    let mut got = Vec::new();
    while got.len() < missed.len() {
        got.push(
            next_message(&mut sub, WAIT)
                .await
                .expect("missed messages")
                .0,
        );
    }
    let took = started.elapsed();
    assert_eq!(got, missed, "exactly the messages missed in the background");
    eprintln!("resume() after pause(): the missed messages after {took:?}");
    assert!(took < Duration::from_secs(1), "resumed in {took:?}");
}
