//! Token providers against real hubs on a real nats-server: a fan whose
//! tokens live 6 s (time compressed: the 60 s tokens over 5 minutes
//! become 6 s tokens over 60 s) on a 10 msg/s feed published on another
//! node stays connected with every message, in order, through its refreshes;
//! a refresh that grants less ends exactly the dropped subscription.
//!
//! Needs `target/debug/tribune-hub` and nats-server 2.11+ (`scripts/install-nats`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;
use tribune_client::{Client, ConnectionEvent, ErrorCode, Event, Publisher, Subscription};
use tribune_tests::Hub;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsServer;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256!";

fn config() -> ConfigFile {
    ConfigFile::new(&format!(
        "[auth]\nsecret = \"{SECRET}\"\nexpiry_grace_ms = 500\nmax_lifetime_secs = 10\n\
         [namespaces.premium]\nmode = \"feed\"\nretained = 2000\ntoken = true\n"
    ))
}

async fn hub(nats: &NatsServer, cfg: &ConfigFile, name: &str) -> Hub {
    Hub::start(&[
        "--nats",
        &nats.url(),
        "--config",
        cfg.path(),
        "--node-name",
        name,
    ])
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for fan-1 granting `topics`, living `secs`.
fn token(topics: &[&str], secs: u64) -> String {
    let claims = json!({"sub": "fan-1", "iat": now(), "exp": now() + secs, "topics": topics});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn next_event(sub: &mut Subscription) -> Event {
    timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap_or_else(|_| panic!("{}: no event within 10 s", sub.topic()))
        .expect("stream open")
}

#[tokio::test]
async fn a_fan_with_a_provider_stays_connected_through_many_token_lifetimes() {
    let nats = NatsServer::start().await;
    let cfg = config();
    let a = hub(&nats, &cfg, "hub-a").await;
    let _b = hub(&nats, &cfg, "hub-b").await;
    let calls = Arc::new(AtomicU32::new(0));
    let client = Client::builder(a.ws_url())
        .token_provider({
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, std::convert::Infallible>(token(&["premium.final."], 6)) }
            }
        })
        .connect()
        .await
        .unwrap();
    let mut events = client.events();
    let mut sub = client.subscribe("premium.final.live").await.unwrap();
    // 10 messages a second for 60 s, published on the bus (as editors do),
    // served to the fan by node A.
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    const COUNT: usize = 600;
    let feed = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut seqs = Vec::with_capacity(COUNT);
        for n in 0..COUNT {
            tick.tick().await;
            let stored = publisher
                .publish("premium.final.live", &json!({ "n": n }))
                .await
                .expect("publish");
            seqs.push(stored.seq);
        }
        seqs
    });
    let mut received = Vec::with_capacity(COUNT);
    while received.len() < COUNT {
        match next_event(&mut sub).await {
            Event::Message(m) => {
                let v: Value = serde_json::from_str(m.data.get()).unwrap();
                assert_eq!(v["n"], received.len(), "in order, none missing");
                received.push(m.seq);
            }
            Event::Stats(_) => {}
            other => panic!("no gap, no close: {other:?}"),
        }
    }
    assert_eq!(received, feed.await.unwrap(), "every message, once");
    let mut refreshed = 0;
    while let Ok(Some(event)) = timeout(Duration::from_millis(50), events.next()).await {
        match event {
            ConnectionEvent::TokenRefreshed { expires_at } => {
                assert!(expires_at.is_some());
                refreshed += 1;
            }
            other => panic!("zero closes, zero failed refreshes: {other:?}"),
        }
    }
    assert!(refreshed >= 4, "{refreshed} refreshes");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        refreshed + 1,
        "connect, then each refresh"
    );
    assert_eq!(
        a.metric("tribune_token_auth_frames_total{kind=\"refresh\"}")
            .await,
        f64::from(refreshed)
    );
    assert_eq!(a.metric("tribune_token_expired_closes_total").await, 0.0);
}

#[tokio::test]
async fn a_refresh_that_grants_less_ends_only_the_dropped_subscription() {
    let nats = NatsServer::start().await;
    let cfg = config();
    let a = hub(&nats, &cfg, "hub-a").await;
    let calls = Arc::new(AtomicU32::new(0));
    let client = Client::builder(a.ws_url())
        .token_provider({
            let calls = calls.clone();
            move || {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    Ok::<_, String>(if first {
                        token(&["premium.a.", "premium.b."], 3)
                    } else {
                        token(&["premium.a."], 3)
                    })
                }
            }
        })
        .connect()
        .await
        .unwrap();
    let mut kept = client.subscribe("premium.a.x").await.unwrap();
    let mut dropped = client.subscribe("premium.b.x").await.unwrap();
    let publisher = Publisher::connect(&nats.url()).await.unwrap();
    // The first refresh comes 1.5 to 2.4 s in; publish across it.
    for n in 0..30 {
        publisher
            .publish("premium.a.x", &json!({ "n": n }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 0..30 {
        match next_event(&mut kept).await {
            Event::Message(m) => {
                let v: Value = serde_json::from_str(m.data.get()).unwrap();
                assert_eq!(v["n"], n);
            }
            other => panic!("the kept subscription goes on: {other:?}"),
        }
    }
    match next_event(&mut dropped).await {
        Event::Closed { code, .. } => assert_eq!(code, Some(ErrorCode::Forbidden)),
        other => panic!("the dropped subscription ends: {other:?}"),
    }
    assert!(
        timeout(Duration::from_secs(1), dropped.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(calls.load(Ordering::SeqCst) >= 2);
}
