//! Retractions through the SDK on a real hub over a real nats-server
//! (PROTOCOL.md section 13): `Publisher::retract`, `HubPublisher::retract`
//! and `tribune retract` store a marker; a subscription yields
//! `Event::Retract` and goes on without a gap (its tracker moved past the
//! marker); a resume after the retraction recovers and never yields the
//! retracted message.
//!
//! Needs `target/debug/tribune-hub` and nats-server 2.11+ (`scripts/install-nats`).

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::time::timeout;
use tribune_client::{Client, Event, HubPublisher, Publisher, SubscribeOptions, Subscription};
use tribune_tests::Hub;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(10);

async fn next_event(sub: &mut Subscription) -> Event {
    loop {
        match timeout(WAIT, sub.next()).await {
            Ok(Some(Event::Stats(_))) => continue,
            Ok(Some(event)) => return event,
            Ok(None) => panic!("{}: stream ended", sub.topic()),
            Err(_) => panic!("{}: no event within {WAIT:?}", sub.topic()),
        }
    }
}

fn seq_of(event: &Event) -> u64 {
    match event {
        Event::Message(m) => m.seq,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn retractions_from_the_publisher_the_hub_and_the_cli_reach_the_sdk() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new("[bus]\nrequest_timeout_ms = 1000\n");
    let hub = Hub::start(&["--nats", &nats.url(), "--config", cfg.path()]).await;
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    let topic = "clips.sdk.retract";
    let client = Client::connect(hub.ws_url()).await.unwrap();
    let mut sub = client.subscribe(topic).await.unwrap();

    let a = publisher
        .publish(topic, &json!({"n": 1}))
        .await
        .unwrap()
        .seq;
    let b = publisher
        .publish(topic, &json!({"n": 2}))
        .await
        .unwrap()
        .seq;
    assert_eq!(seq_of(&next_event(&mut sub).await), a);
    assert_eq!(seq_of(&next_event(&mut sub).await), b);

    // On NATS, with the SDK's publisher; again: stored once.
    let marker = publisher.retract(topic, b).await.unwrap();
    assert!(!marker.duplicate);
    let again = publisher.retract(topic, b).await.unwrap();
    assert_eq!((again.seq, again.duplicate), (marker.seq, true));
    match next_event(&mut sub).await {
        Event::Retract { topic: t, seq, at } => {
            assert_eq!((t.as_str(), seq, at), (topic, b, marker.seq));
        }
        other => panic!("expected a retraction, got {other:?}"),
    }
    // The chain goes on past the marker: no gap, no resubscription.
    let c = publisher
        .publish(topic, &json!({"n": 3}))
        .await
        .unwrap()
        .seq;
    assert_eq!(seq_of(&next_event(&mut sub).await), c);

    // Through the hub's endpoint.
    let hub_publisher = HubPublisher::new(&hub.internal_url())
        .unwrap()
        .key(hub.publish_key());
    let at = hub_publisher.retract(topic, c).await.unwrap();
    assert!(
        matches!(next_event(&mut sub).await, Event::Retract { seq, at: got, .. } if seq == c && got == at)
    );
    let refused = hub_publisher
        .retract("results.sdk.retract", 1)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("state topic"), "{refused}");

    // With the CLI.
    let out = timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tribune"))
            .args(["retract", topic, &a.to_string(), "--nats", &nats.url()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("tribune finished")
    .expect("tribune ran");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let cli_at: u64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        matches!(next_event(&mut sub).await, Event::Retract { seq, at, .. } if seq == a && at == cli_at)
    );

    // A later session resuming from the start: recovered, nothing retracted
    // comes back as a message.
    let epoch = sub.epoch();
    let d = publisher
        .publish(topic, &json!({"n": 4}))
        .await
        .unwrap()
        .seq;
    assert_eq!(seq_of(&next_event(&mut sub).await), d);
    let other = Client::connect(hub.ws_url()).await.unwrap();
    let mut resumed = other
        .subscribe_with(topic, SubscribeOptions::new().since(a, epoch))
        .await
        .unwrap();
    assert_eq!(resumed.info().recovered, Some(true));
    let mut messages = Vec::new();
    while messages.last() != Some(&d) {
        match next_event(&mut resumed).await {
            Event::Message(m) => messages.push(m.seq),
            Event::Retract { .. } => {}
            other => panic!("no gap on a resume across retractions: {other:?}"),
        }
    }
    assert_eq!(messages, vec![d], "b and c were retracted");
}
