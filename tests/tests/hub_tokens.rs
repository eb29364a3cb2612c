//! Tokens on live connections (PROTOCOL.md section 3, `auth`): first-frame
//! login with no token in the URL, refresh past the first token's `exp`,
//! narrowed grants ending exactly their subscriptions with `unsubscribed`,
//! a failed refresh closing at `exp` + grace and not before, and the policy
//! refusals naming their rule. One hub on the embedded bus; tokens live a
//! few seconds (time compressed).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tribune_tests::hub::ConfigFile;
use tribune_tests::jwt;
use tribune_tests::{Hub, WsClient};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn now() -> u64 {
    jwt::unix_now()
}

fn token(claims: Value) -> String {
    jwt::hs256(SECRET, &claims)
}

fn config(extra_auth: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "[auth]\nsecret = \"{SECRET}\"\n{extra_auth}\n\
         [namespaces.premium]\nmode = \"feed\"\nretained = 100\ntoken = true\n"
    ))
}

async fn connect(hub: &Hub) -> (WsClient, Value) {
    let (c, w) = WsClient::connect(&hub.ws_url()).await;
    (c.without_stats(), w)
}

/// Sends `auth` with `token`; the answer.
async fn auth(c: &mut WsClient, token: &str) -> Value {
    c.request(json!({"type": "auth", "token": token})).await
}

#[tokio::test]
async fn first_frame_auth_reads_a_token_topic_with_nothing_in_the_url() {
    let cfg = config("");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut c, welcome) = connect(&hub).await;
    assert!(welcome.get("expires_at").is_none(), "{welcome}");
    // Before any `auth`: forbidden, as before; the connection stays open.
    let refused = c
        .request(json!({"type": "subscribe", "topic": "premium.a.b"}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let exp = now() + 600;
    let ack = auth(
        &mut c,
        &token(json!({"sub": "fan-1", "exp": exp, "topics": ["premium.a."]})),
    )
    .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["expires_at"], exp);
    c.subscribe("premium.a.b", json!({})).await;
    let seq = hub.publish("premium.a.b", json!({"n": 1})).await;
    let m = c.recv().await;
    assert_eq!(
        (m["type"].as_str(), m["seq"].as_u64()),
        (Some("message"), Some(seq))
    );
    assert_eq!(
        hub.metric("tribune_token_auth_frames_total{kind=\"login\"}")
            .await,
        1.0
    );
    // A handshake token is announced in `welcome`.
    let t = token(json!({"sub": "fan-2", "exp": exp, "topics": []}));
    let mut d = WsClient::connect_with(&format!("{}?token={t}", hub.ws_url()), &[])
        .await
        .unwrap();
    assert_eq!(d.recv().await["expires_at"], exp);
}

#[tokio::test]
async fn refreshes_keep_a_fan_connected_past_each_exp_with_no_gap() {
    let cfg = config("expiry_grace_ms = 500");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut c, _) = connect(&hub).await;
    let grant = |exp: u64| token(json!({"sub": "fan-1", "exp": exp, "topics": ["premium."]}));
    assert_eq!(auth(&mut c, &grant(now() + 3)).await["type"], "ack");
    let ack = c.subscribe("premium.x.y", json!({})).await;
    let mut last = ack["seq"].as_u64().unwrap();
    // 8 s with 3 s tokens, refreshed every 1.5 s, a message every 200 ms.
    let started = Instant::now();
    let mut refreshes = 0;
    let mut next_refresh = Instant::now() + Duration::from_millis(1500);
    let mut published = 0;
    while started.elapsed() < Duration::from_secs(8) {
        hub.publish("premium.x.y", json!({"n": published})).await;
        published += 1;
        if Instant::now() >= next_refresh {
            let id = c.id();
            c.send(json!({"type": "auth", "id": id, "token": grant(now() + 3)}))
                .await;
            refreshes += 1;
            next_refresh += Duration::from_millis(1500);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Some(f) = c.try_recv(Duration::from_millis(20)).await {
            match f["type"].as_str() {
                Some("message") => {
                    assert_eq!(f["prev"].as_u64(), Some(last), "chain whole: {f}");
                    last = f["seq"].as_u64().unwrap();
                }
                Some("ack") => assert!(f["expires_at"].as_u64().is_some(), "{f}"),
                _ => panic!("unexpected {f}"),
            }
        }
    }
    assert!(refreshes >= 4, "{refreshes}");
    assert_eq!(
        hub.metric("tribune_token_auth_frames_total{kind=\"refresh\"}")
            .await,
        f64::from(refreshes)
    );
    assert_eq!(hub.metric("tribune_token_expired_closes_total").await, 0.0);
    assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_narrowed_grant_ends_exactly_the_topics_it_drops() {
    let cfg = config("");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut c, _) = connect(&hub).await;
    let exp = now() + 600;
    let wide = token(json!({"sub": "fan-1", "exp": exp, "topics": ["premium.a.", "premium.b."]}));
    auth(&mut c, &wide).await;
    let mut last = std::collections::HashMap::new();
    for topic in ["premium.a.x", "premium.b.x", "results.a.x"] {
        let ack = c.subscribe(topic, json!({})).await;
        last.insert(topic.to_string(), ack["seq"].as_u64().unwrap());
    }
    for n in 0..3 {
        for topic in ["premium.a.x", "premium.b.x", "results.a.x"] {
            hub.publish(topic, json!({"n": n})).await;
        }
    }
    let check = |c_last: &mut std::collections::HashMap<String, u64>, f: &Value| {
        let topic = f["topic"].as_str().unwrap().to_string();
        assert_eq!(f["prev"].as_u64(), c_last.get(&topic).copied(), "{f}");
        c_last.insert(topic, f["seq"].as_u64().unwrap());
    };
    for _ in 0..9 {
        let f = c.recv().await;
        check(&mut last, &f);
    }
    let narrow = token(json!({"sub": "fan-1", "exp": exp, "topics": ["premium.a."]}));
    let id = c.id();
    c.send(json!({"type": "auth", "id": id, "token": narrow}))
        .await;
    let ended = c.recv().await;
    assert_eq!(
        ended,
        json!({"type": "unsubscribed", "topic": "premium.b.x", "code": "forbidden"})
    );
    let ack = c.recv().await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_u64()),
        (Some("ack"), Some(id))
    );
    for n in 3..6 {
        for topic in ["premium.a.x", "premium.b.x", "results.a.x"] {
            hub.publish(topic, json!({"n": n})).await;
        }
    }
    for _ in 0..6 {
        let f = c.recv().await;
        assert_ne!(f["topic"], "premium.b.x", "ended: {f}");
        check(&mut last, &f);
    }
    c.expect_silence(Duration::from_millis(300)).await;
    // The dropped topic stays refused; the kept ones were never interrupted.
    let again = c
        .request(json!({"type": "subscribe", "topic": "premium.b.x"}))
        .await;
    assert_eq!(again["code"], "forbidden");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_token_until_exp_plus_grace() {
    let cfg = config("expiry_grace_ms = 1500");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let (mut c, _) = connect(&hub).await;
    let exp = now() + 2;
    auth(
        &mut c,
        &token(json!({"sub": "fan-1", "exp": exp, "topics": ["premium."]})),
    )
    .await;
    c.subscribe("premium.a.b", json!({})).await;
    // Refused refreshes: another sub, a bad signature, garbage.
    let other = token(json!({"sub": "fan-2", "exp": now() + 600, "topics": ["premium."]}));
    let e = auth(&mut c, &other).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    let forged = encode(
        &Header::default(),
        &json!({"sub": "fan-1", "exp": now() + 600}),
        &EncodingKey::from_secret(b"not-the-hub-secret-not-the-hub-secret!!"),
    )
    .unwrap();
    let e = auth(&mut c, &forged).await;
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(e["message"].as_str().unwrap().contains("signature"), "{e}");
    assert!(!e.to_string().contains(&forged), "the token is not echoed");
    assert_eq!(auth(&mut c, "not a token").await["code"], "bad_request");
    // The old token still serves until its exp plus the grace.
    let seq = hub.publish("premium.a.b", json!({})).await;
    assert_eq!(c.recv().await["seq"], seq);
    let deadline = UNIX_EPOCH + Duration::from_secs(exp) + Duration::from_millis(1500);
    let early = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(300));
    c.expect_silence(early).await;
    assert_eq!(c.close_code().await, Some(1008));
    assert!(
        SystemTime::now() + Duration::from_millis(100) >= deadline,
        "closed before exp + grace"
    );
    assert_eq!(
        hub.metric("tribune_token_auth_failures_total{rule=\"sub_changed\"}")
            .await,
        1.0
    );
    assert_eq!(
        hub.metric("tribune_token_auth_failures_total{rule=\"signature\"}")
            .await,
        1.0
    );
    assert_eq!(hub.metric("tribune_token_expired_closes_total").await, 1.0);
}

#[tokio::test]
async fn policy_refuses_no_exp_a_long_lifetime_and_a_wrong_issuer() {
    let cfg = config("issuer = \"https://tickets.example.org\"\nmax_lifetime_secs = 900");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let iss = "https://tickets.example.org";
    let cases = [
        (
            json!({"iss": iss, "topics": ["premium."]}),
            "auth.require_exp",
        ),
        (
            json!({"iss": iss, "iat": now(), "exp": now() + 3600, "topics": ["premium."]}),
            "auth.max_lifetime_secs",
        ),
        (
            json!({"iss": "https://evil.example.org", "exp": now() + 60, "topics": ["premium."]}),
            "auth.issuer",
        ),
    ];
    for (claims, rule) in &cases {
        let t = token(claims.clone());
        // At the handshake: 401 naming the rule.
        let r = WsClient::connect_with(&format!("{}?token={t}", hub.ws_url()), &[])
            .await
            .err()
            .expect("refused");
        assert_eq!(r.status, 401);
        assert!(r.body.contains(rule), "{rule}: {}", r.body);
        assert!(!r.body.contains(&t));
        // In an `auth` frame: forbidden naming the rule.
        let (mut c, _) = connect(&hub).await;
        let e = auth(&mut c, &t).await;
        assert_eq!(e["code"], "forbidden", "{e}");
        assert!(e["message"].as_str().unwrap().contains(rule), "{rule}: {e}");
        // The audit log writes one line per reason a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let good = token(json!({"iss": iss, "iat": now(), "exp": now() + 600, "topics": ["premium."]}));
    let (mut c, _) = connect(&hub).await;
    assert_eq!(auth(&mut c, &good).await["type"], "ack");
    // The audit log names the rule, never the token.
    tribune_tests::eventually("audit lines", Duration::from_secs(5), || async {
        let log = hub.log();
        ["rule=require_exp", "rule=max_lifetime", "rule=issuer"]
            .iter()
            .all(|rule| log.contains(rule))
            .then_some(())
    })
    .await;
    let log = hub.log();
    for (claims, _) in &cases {
        assert!(!log.contains(&token(claims.clone())));
    }
    assert!(!log.contains(&good));
}

#[tokio::test]
async fn a_first_frame_login_counts_towards_the_users_share_of_the_node() {
    let cfg = ConfigFile::new(&format!(
        "[auth]\nsecret = \"{SECRET}\"\n[limits]\nmax_connections_per_user = 1\n\
         [namespaces.premium]\nmode = \"feed\"\nretained = 100\ntoken = true\n"
    ));
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let t = token(json!({"sub": "fan-1", "exp": now() + 600, "topics": ["premium."]}));
    let (mut first, _) = connect(&hub).await;
    assert_eq!(auth(&mut first, &t).await["type"], "ack");
    let (mut second, _) = connect(&hub).await;
    let e = auth(&mut second, &t).await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    // Refused, it stays without a token: token topics stay closed to it.
    let refused = second
        .request(json!({"type": "subscribe", "topic": "premium.a.b"}))
        .await;
    assert_eq!(refused["code"], "forbidden");
    // At the handshake too, the share is taken.
    let r = WsClient::connect_with(&format!("{}?token={t}", hub.ws_url()), &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status, 429);
    // Once the first leaves, the share is free again.
    drop(first);
    tribune_tests::eventually("the share given back", Duration::from_secs(5), || async {
        let (mut c, _) = connect(&hub).await;
        (auth(&mut c, &t).await["type"] == "ack").then_some(())
    })
    .await;
}
