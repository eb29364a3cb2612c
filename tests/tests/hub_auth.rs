//! Tokens on open connections (PROTOCOL.md sections 1 and 6): a token that
//! expires while its connection is open closes it with 1008 after the grace
//! period; a token in the query or the header grants its topics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use tribune_tests::hub::ConfigFile;
use tribune_tests::{Hub, WsClient};

/// A client of `hub` that skips `stats` frames: this suite is not about them.
async fn connect(hub: &Hub) -> (WsClient, serde_json::Value) {
    let (c, w) = WsClient::connect(&hub.ws_url()).await;
    (c.without_stats(), w)
}

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn config(grace_ms: u64) -> ConfigFile {
    ConfigFile::new(&format!(
        "[auth]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\nexpiry_grace_ms = {grace_ms}\n\
         [namespaces.premium]\nmode = \"state\"\nretained = 1\ntoken = true\n"
    ))
}

#[tokio::test]
async fn expiring_token_closes_the_connection_with_1008() {
    let cfg = config(300);
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let short = token(json!({"sub": "fan-1", "exp": now() + 2, "topics": ["premium.a."]}));
    let mut c = WsClient::connect_with(&format!("{}?token={short}", hub.ws_url()), &[])
        .await
        .unwrap();
    assert_eq!(c.recv().await["type"], "welcome");
    c.subscribe("premium.a.b", json!({})).await;
    let long = token(json!({"sub": "fan-2", "exp": now() + 3600, "topics": ["premium.a."]}));
    let auth = format!("Bearer {long}");
    let mut d = WsClient::connect_with(&hub.ws_url(), &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(d.recv().await["type"], "welcome");
    d.subscribe("premium.a.b", json!({})).await;
    assert_eq!(
        c.close_code().await,
        Some(1008),
        "closed once the token expired"
    );
    // The other fan's connection is untouched.
    d.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(d.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn token_grants_only_its_topics() {
    let cfg = config(0);
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let t = token(
        json!({"exp": now() + 3600, "topics": ["premium.lausanne2020.", "premium.exact.topic"]}),
    );
    let mut c = WsClient::connect_with(&format!("{}?token={t}", hub.ws_url()), &[])
        .await
        .unwrap();
    c.recv().await;
    c.subscribe("premium.lausanne2020.sprint", json!({})).await;
    c.subscribe("premium.exact.topic", json!({})).await;
    for topic in [
        "premium.lausanne2021.sprint",
        "premium.exact.topic2",
        "premium.lausanne",
    ] {
        let a = c
            .request(json!({"type": "subscribe", "topic": topic}))
            .await;
        assert_eq!(a["code"], "forbidden", "{topic}: {a}");
    }
    // Namespaces without tokens do not care.
    c.subscribe("results.a.b", json!({})).await;
    // No token: the token namespace refuses, the others serve.
    let (mut anon, _) = connect(&hub).await;
    assert_eq!(
        anon.request(json!({"type": "subscribe", "topic": "premium.exact.topic"}))
            .await["code"],
        "forbidden"
    );
    anon.subscribe("clips.a.b", json!({})).await;
}
