//! The SDK against the real `tribune-hub` binary on its embedded bus:
//! subscribe, receive, unsubscribe, reactions and stats, client publishing,
//! and explicit gaps (epoch change, retention run out).
//!
//! Needs `target/debug/tribune-hub` (`cargo build -p tribune-hub`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tribune_client::{
    Client, ConnectionEvent, ErrorCode, Event, Mode, PublishErrorKind, ReactErrorKind,
    SubscribeErrorKind, SubscribeOptions, Subscription,
};
use tribune_tests::Hub;
use tribune_tests::hub::ConfigFile;

const WAIT: Duration = Duration::from_secs(10);

async fn client(hub: &Hub) -> Client {
    Client::builder(hub.ws_url())
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("connect to the hub")
}

async fn next_event(sub: &mut Subscription) -> Event {
    timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{}: no event within {WAIT:?}", sub.topic()))
        .expect("stream open")
}

/// The next message's (seq, data), failing on anything else but stats.
async fn next_message(sub: &mut Subscription) -> (u64, Value) {
    loop {
        match next_event(sub).await {
            Event::Message(m) => return (m.seq, serde_json::from_str(m.data.get()).unwrap()),
            Event::Stats(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Reads events until `pick` returns something, within `WAIT`.
async fn until<T>(
    sub: &mut Subscription,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, sub.next()).await {
            Ok(Some(e)) => {
                if let Some(v) = pick(&e) {
                    return v;
                }
            }
            Ok(None) => panic!("stream ended while waiting for {what}"),
            Err(_) => panic!("not within {WAIT:?}: {what}"),
        }
    }
}

#[tokio::test]
async fn subscribe_receive_in_order_then_unsubscribe() {
    let cfg = ConfigFile::new("[stats]\nwindow_ms = 200\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let a = client(&hub).await;
    let b = client(&hub).await;

    let feed = "clips.sdk.order";
    let mut clips = a.subscribe(feed).await.unwrap();
    assert_eq!(clips.mode(), Mode::Feed);
    assert_eq!(clips.info().seq, 0);
    let mut seqs = Vec::new();
    for n in 0..5 {
        seqs.push(hub.publish(feed, json!({"kind": "clip", "n": n})).await);
    }
    for (n, seq) in seqs.iter().enumerate() {
        assert_eq!(
            next_message(&mut clips).await,
            (*seq, json!({"kind": "clip", "n": n}))
        );
    }

    // A state topic replays its latest state; the audience follows
    // subscriptions, so it shows that `unsubscribe` really left the hub.
    let board = "results.sdk.unsubscribe";
    let latest = hub.publish(board, json!({"status": "live"})).await;
    let mut on_a = a.subscribe(board).await.unwrap();
    assert_eq!(on_a.mode(), Mode::State);
    assert_eq!(
        next_message(&mut on_a).await,
        (latest, json!({"status": "live"}))
    );
    let on_b = b.subscribe(board).await.unwrap();
    until(&mut on_a, "audience 2", |e| match e {
        Event::Stats(s) if s.audience == 2 => Some(()),
        _ => None,
    })
    .await;
    on_b.unsubscribe().await.unwrap();
    until(&mut on_a, "audience back to 1", |e| match e {
        Event::Stats(s) if s.audience == 1 => Some(()),
        _ => None,
    })
    .await;

    // The topic is free again on that client.
    let again = b.subscribe(board).await.unwrap();
    assert_eq!(again.info().seq, latest);
    let err = b.subscribe(board).await.unwrap_err();
    assert_eq!(err.kind(), SubscribeErrorKind::AlreadySubscribed);
    let err = b.subscribe("results").await.unwrap_err();
    assert_eq!(err.kind(), SubscribeErrorKind::InvalidTopic);
    let err = b.subscribe("nowhere.sdk.x").await.unwrap_err();
    assert_eq!(
        err.kind(),
        SubscribeErrorKind::Refused(ErrorCode::UnknownNamespace)
    );
}

#[tokio::test]
async fn history_and_since_options() {
    let hub = Hub::start(&[]).await;
    let c = client(&hub).await;
    let feed = "clips.sdk.history";
    let mut seqs = Vec::new();
    for n in 0..4 {
        seqs.push(hub.publish(feed, json!({"n": n})).await);
    }
    let mut sub = c
        .subscribe_with(feed, SubscribeOptions::new().history(2))
        .await
        .unwrap();
    assert_eq!(sub.info().seq, seqs[3]);
    assert_eq!(next_message(&mut sub).await, (seqs[2], json!({"n": 2})));
    assert_eq!(next_message(&mut sub).await, (seqs[3], json!({"n": 3})));
    let epoch = sub.epoch();
    sub.unsubscribe().await.unwrap();

    // A later session resumes from a stored position.
    let mut sub = c
        .subscribe_with(feed, SubscribeOptions::new().since(seqs[0], epoch.clone()))
        .await
        .unwrap();
    assert_eq!(sub.info().recovered, Some(true));
    for (n, seq) in seqs.iter().enumerate().skip(1) {
        assert_eq!(next_message(&mut sub).await, (*seq, json!({"n": n})));
    }
    sub.unsubscribe().await.unwrap();

    // A position from another epoch cannot be recovered: the stream says so first.
    let mut sub = c
        .subscribe_with(feed, SubscribeOptions::new().since(1, "TRIBUNE@0"))
        .await
        .unwrap();
    assert_eq!(sub.info().recovered, Some(false));
    match next_event(&mut sub).await {
        Event::Gap {
            after_seq,
            epoch_changed,
            epoch: new_epoch,
            ..
        } => {
            assert_eq!((after_seq, epoch_changed), (1, true));
            assert_eq!(new_epoch, Some(epoch));
        }
        other => panic!("expected Gap, got {other:?}"),
    }
}

#[tokio::test]
async fn reactions_come_back_as_stats() {
    let cfg = ConfigFile::new("[stats]\nwindow_ms = 200\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let c = client(&hub).await;
    let board = "results.sdk.reactions";
    let mut sub = c.subscribe(board).await.unwrap();
    c.react(board, "🔥").await.unwrap();
    c.react(board, "👏").await.unwrap();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    until(&mut sub, "both reactions counted in stats", |e| {
        if let Event::Stats(s) = e {
            assert_eq!(s.topic, board);
            assert_eq!(s.window_ms, 200);
            for (r, n) in &s.reactions {
                *seen.entry(r.clone()).or_default() += n;
            }
        }
        (seen.contains_key("🔥") && seen.contains_key("👏")).then_some(())
    })
    .await;

    let err = c.react(board, "🍕").await.unwrap_err();
    assert_eq!(err.kind(), ReactErrorKind::Refused(ErrorCode::BadRequest));
    let err = c.react("clips.sdk.reactions", "🔥").await.unwrap_err();
    assert_eq!(err.kind(), ReactErrorKind::Refused(ErrorCode::Forbidden));
    let err = c.react("clips..x", "🔥").await.unwrap_err();
    assert_eq!(err.kind(), ReactErrorKind::InvalidTopic);
}

#[tokio::test]
async fn client_publish_where_the_namespace_allows_it() {
    let cfg =
        ConfigFile::new("[namespaces.cheers]\nmode = \"feed\"\nretained = 10\npublish = true\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let c = client(&hub).await;
    c.publish("cheers.sdk.x", &json!({"emoji": "🔥"}))
        .await
        .unwrap();
    let err = c
        .publish("results.sdk.x", &json!({"status": "live"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::Refused(ErrorCode::Forbidden));
    let err = c.publish_json("cheers.sdk.x", "{\"a\":").await.unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::InvalidJson);
    // Over the hub's 4 KiB frame limit: refused before it is sent.
    let big = "x".repeat(5000);
    let err = c
        .publish("cheers.sdk.x", &json!({ "big": big }))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::PayloadTooLarge);
    assert!(c.ping().await.unwrap() < WAIT);
}

#[tokio::test]
async fn a_new_epoch_after_restart_is_an_explicit_gap() {
    // The embedded bus starts a new epoch at every start, by design.
    let mut hub = Hub::start(&[]).await;
    let c = client(&hub).await;
    let mut events = c.events();
    let feed = "clips.sdk.epoch";
    let mut sub = c.subscribe(feed).await.unwrap();
    let before = hub.publish(feed, json!({"n": 1})).await;
    assert_eq!(next_message(&mut sub).await.0, before);
    let old_epoch = sub.epoch();

    hub.restart().await;
    match next_event(&mut sub).await {
        Event::Gap {
            after_seq,
            epoch_changed,
            epoch,
            ..
        } => {
            assert_eq!(after_seq, before);
            assert!(epoch_changed);
            assert_ne!(epoch.unwrap(), old_epoch);
        }
        other => panic!("expected Gap, got {other:?}"),
    }
    let resumed = loop {
        match timeout(WAIT, events.next()).await.unwrap().unwrap() {
            ConnectionEvent::Resumed {
                subscriptions,
                gaps,
                ..
            } => break (subscriptions, gaps),
            _ => continue,
        }
    };
    assert_eq!(resumed, (1, 1));
    let after = hub.publish(feed, json!({"n": 2})).await;
    assert_eq!(next_message(&mut sub).await, (after, json!({"n": 2})));
    assert_ne!(sub.epoch(), old_epoch);
}

#[tokio::test]
async fn resume_after_retention_ran_out_is_a_gap_never_silence() {
    let cfg = ConfigFile::new("[namespaces.tiny]\nmode = \"feed\"\nretained = 3\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    // A two-event buffer: the application stops reading, the client suspends
    // the subscription (unsubscribes), and renews it with `since` once the
    // application reads again, by which time the hub only retains 3 messages.
    let c = Client::builder(hub.ws_url())
        .subscription_buffer(2)
        .connect()
        .await
        .unwrap();
    let feed = "tiny.sdk.gap";
    let mut sub = c.subscribe(feed).await.unwrap();
    // Another fan, reading promptly: when it has seen the last message, the
    // hub has forwarded everything and retains only the last 3.
    let observer = client(&hub).await;
    let mut watch = observer.subscribe(feed).await.unwrap();
    let mut seqs = Vec::new();
    for n in 0..10 {
        seqs.push(hub.publish(feed, json!({"n": n})).await);
    }
    for seq in &seqs {
        assert_eq!(next_message(&mut watch).await.0, *seq);
    }
    // A ping is answered after the frames queued before it: once it is
    // back, the slow fan's client has seen all ten messages, holds the
    // first two, and suspended the subscription at the third.
    c.ping().await.unwrap();
    assert_eq!(sub.pending(), 2);
    assert_eq!(next_message(&mut sub).await, (seqs[0], json!({"n": 0})));
    assert_eq!(next_message(&mut sub).await, (seqs[1], json!({"n": 1})));
    match next_event(&mut sub).await {
        Event::Gap {
            after_seq,
            epoch_changed,
            ..
        } => {
            assert_eq!(after_seq, seqs[1]);
            assert!(!epoch_changed);
        }
        other => panic!("expected Gap after seq {}, got {other:?}", seqs[1]),
    }
    let live = hub.publish(feed, json!({"n": 10})).await;
    assert_eq!(next_message(&mut sub).await, (live, json!({"n": 10})));

    // With enough retention, the same suspension loses nothing.
    let mut sub = c.subscribe("clips.sdk.nogap").await.unwrap();
    let mut seqs = Vec::new();
    for n in 0..3 {
        seqs.push(hub.publish("clips.sdk.nogap", json!({"n": n})).await);
    }
    tribune_tests::eventually("the first two messages queued", WAIT, || async {
        (sub.pending() == 2).then_some(())
    })
    .await;
    for n in 3..10 {
        seqs.push(hub.publish("clips.sdk.nogap", json!({"n": n})).await);
    }
    for (n, seq) in seqs.iter().enumerate() {
        assert_eq!(next_message(&mut sub).await, (*seq, json!({"n": n})));
    }
}
