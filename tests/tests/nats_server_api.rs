//! The server API across a cluster (two real hub nodes on a real NATS):
//! `POST /v1/disconnect {"user"}` on node A closes the user's sockets on
//! node B within a second, with 1008; a token revoked by `jti` on node A is
//! refused at the handshake and in `auth` on both nodes, and the open
//! connection holding it is closed; a user's tokens issued before a time
//! are revoked while a newer one is accepted; the API's key is required; a
//! control message sealed with another cluster key (`stats.key`) is
//! dropped. The same on the embedded bus, in-process.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tribune_tests::hub::ConfigFile;
use tribune_tests::jwt;
use tribune_tests::nats::NatsServer;
use tribune_tests::{Hub, WsClient};

/// One test at a time: each runs two hubs and a nats-server, and the
/// cross-node deadlines (1 s for a disconnect) are the issue's, measured on a
/// shared two-core machine.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const OPERATOR_KEY: &str = "operator-key-0123456789abcdef0123456789";
const CLUSTER_KEY: &str = "cluster-key-0123456789abcdef0123456789ab";

fn now() -> u64 {
    jwt::unix_now()
}

fn token(claims: Value) -> String {
    jwt::hs256(SECRET, &claims)
}

/// Nodes of one cluster: the operator key, the cluster key `stats_key`.
fn config(stats_key: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "operator_key = \"{OPERATOR_KEY}\"\n[stats]\nkey = \"{stats_key}\"\n\
         [auth]\nsecret = \"{SECRET}\"\n\
         [namespaces.premium]\nmode = \"state\"\nretained = 1\ntoken = true\n"
    ))
}

async fn hub_on(nats: &NatsServer, cfg: &ConfigFile, name: &str) -> Hub {
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

/// A fan of `hub` with `token` in the Authorization header.
async fn fan(hub: &Hub, token: &str) -> WsClient {
    let auth = format!("Bearer {token}");
    let mut c = WsClient::connect_with(&hub.ws_url(), &[("authorization", &auth)])
        .await
        .unwrap()
        .without_stats();
    assert_eq!(c.recv().await["type"], "welcome");
    c
}

/// `POST path` on `hub`'s internal listener with `key`; (status, body).
async fn api(hub: &Hub, path: &str, key: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", hub.internal_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn disconnect_on_node_a_closes_the_users_sockets_on_node_b_within_a_second() {
    let _alone = ALONE.lock().await;
    let nats = NatsServer::start().await;
    let cfg = config(CLUSTER_KEY);
    let a = hub_on(&nats, &cfg, "hub-a").await;
    let b = hub_on(&nats, &cfg, "hub-b").await;
    let u1 = token(json!({"sub": "u1", "exp": now() + 600, "topics": ["premium."]}));
    let u2 = token(json!({"sub": "u2", "exp": now() + 600, "topics": ["premium."]}));
    let mut on_b = fan(&b, &u1).await;
    let mut also_on_b = fan(&b, &u1).await;
    let mut other = fan(&b, &u2).await;
    on_b.subscribe("premium.a.b", json!({})).await;
    // Wrong key, no key: refused, nothing happens.
    let (status, _) = api(
        &a,
        "/v1/disconnect",
        "wrong-key-0123456789abcdef0123456789",
        json!({"user": "u1"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = api(
        &a,
        "/v1/disconnect",
        OPERATOR_KEY,
        json!({"user": "u1", "conn": "c-1"}),
    )
    .await;
    assert_eq!(status, 400);
    let asked = Instant::now();
    let (status, body) = api(&a, "/v1/disconnect", OPERATOR_KEY, json!({"user": "u1"})).await;
    assert_eq!(
        (status, &body["node"], &body["closed"]),
        (200, &json!("hub-a"), &json!(0))
    );
    assert_eq!(on_b.close_code().await, Some(1008));
    assert_eq!(also_on_b.close_code().await, Some(1008));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "closed on node B after {took:?}"
    );
    // Another user is untouched.
    assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(b.metric("tribune_operator_disconnects_total").await, 2.0);
    assert_eq!(
        a.metric("tribune_server_api_calls_total{endpoint=\"disconnect\",result=\"ok\"}")
            .await,
        1.0
    );
    // One connection, by its `conn` and `node`, from node A.
    let mut one = fan(&b, &u2).await;
    let welcome_conn = {
        let auth = format!("Bearer {u2}");
        let mut c = WsClient::connect_with(&b.ws_url(), &[("authorization", &auth)])
            .await
            .unwrap();
        let w = c.recv().await;
        (c, w["conn"].as_str().unwrap().to_string())
    };
    let (mut target, conn) = welcome_conn;
    let (status, _) = api(
        &a,
        "/v1/disconnect",
        OPERATOR_KEY,
        json!({"conn": conn, "node": "hub-b"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(target.close_code().await, Some(1008));
    assert_eq!(one.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn unsubscribe_on_node_a_ends_exactly_that_topic_of_the_user_on_node_b() {
    let _alone = ALONE.lock().await;
    let nats = NatsServer::start().await;
    let cfg = config(CLUSTER_KEY);
    let a = hub_on(&nats, &cfg, "hub-a").await;
    let b = hub_on(&nats, &cfg, "hub-b").await;
    let u1 = token(json!({"sub": "u1", "exp": now() + 600, "topics": ["premium."]}));
    let u2 = token(json!({"sub": "u2", "exp": now() + 600, "topics": ["premium."]}));
    let mut fan1 = fan(&b, &u1).await;
    let mut fan2 = fan(&b, &u2).await;
    for c in [&mut fan1, &mut fan2] {
        c.subscribe("premium.x.y", json!({"history": 0})).await;
        c.subscribe("premium.x.z", json!({"history": 0})).await;
    }
    let (status, body) = api(
        &a,
        "/v1/unsubscribe",
        OPERATOR_KEY,
        json!({"user": "u1", "topic": "premium.x.y"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fan1.recv().await,
        json!({"type": "unsubscribed", "topic": "premium.x.y", "code": "forbidden"})
    );
    let seq = b.publish("premium.x.y", json!({})).await;
    let other = b.publish("premium.x.z", json!({})).await;
    // u1 keeps the other topic; u2 keeps both (in either order: two
    // topics' feeds are independent).
    let f = fan1.recv().await;
    assert_eq!(
        (f["topic"].as_str(), f["seq"].as_u64()),
        (Some("premium.x.z"), other.into()),
        "{f}"
    );
    let mut got = [fan2.recv().await, fan2.recv().await];
    got.sort_by_key(|f| f["seq"].as_u64());
    assert_eq!(
        got.iter()
            .map(|f| (f["topic"].as_str(), f["seq"].as_u64()))
            .collect::<Vec<_>>(),
        [
            (Some("premium.x.y"), Some(seq)),
            (Some("premium.x.z"), Some(other))
        ]
    );
    fan1.expect_silence(Duration::from_millis(300)).await;
    let (status, _) = api(
        &a,
        "/v1/unsubscribe",
        OPERATOR_KEY,
        json!({"user": "u1", "topic": "not a topic"}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_revoked_jti_is_refused_on_both_nodes_and_its_connection_closed() {
    let _alone = ALONE.lock().await;
    let nats = NatsServer::start().await;
    let cfg = config(CLUSTER_KEY);
    let a = hub_on(&nats, &cfg, "hub-a").await;
    let b = hub_on(&nats, &cfg, "hub-b").await;
    let revoked = token(
        json!({"sub": "u1", "jti": "t-1", "iat": now(), "exp": now() + 600, "topics": ["premium."]}),
    );
    let kept = token(
        json!({"sub": "u1", "jti": "t-2", "iat": now(), "exp": now() + 600, "topics": ["premium."]}),
    );
    let mut holder = fan(&b, &revoked).await;
    let mut neighbour = fan(&b, &kept).await;
    let (status, _) = api(&a, "/v1/revoke", OPERATOR_KEY, json!({"jti": "t-1"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        holder.close_code().await,
        Some(1008),
        "its connection closed"
    );
    for hub in [&a, &b] {
        // Refused at the handshake, naming the rule, on both nodes...
        let r = WsClient::connect_with(&format!("{}?token={revoked}", hub.ws_url()), &[])
            .await
            .err()
            .expect("refused");
        assert_eq!(r.status, 401);
        assert!(r.body.contains("revoked"), "{}", r.body);
        // ...and in `auth`.
        let (c, _) = WsClient::connect(&hub.ws_url()).await;
        let mut c = c.without_stats();
        let e = c.request(json!({"type": "auth", "token": revoked})).await;
        assert_eq!(e["code"], "forbidden", "{e}");
        let ok = c.request(json!({"type": "auth", "token": kept})).await;
        assert_eq!(ok["type"], "ack", "{ok}");
    }
    assert_eq!(
        neighbour.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    assert_eq!(
        b.metric("tribune_token_revocations_total{kind=\"jti\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_users_tokens_before_a_time_are_revoked_a_newer_one_is_not() {
    let _alone = ALONE.lock().await;
    let nats = NatsServer::start().await;
    let cfg = config(CLUSTER_KEY);
    let a = hub_on(&nats, &cfg, "hub-a").await;
    let b = hub_on(&nats, &cfg, "hub-b").await;
    let old = token(json!({"sub": "u1", "iat": now() - 100, "exp": now() + 600, "topics": []}));
    let mut holder = fan(&b, &old).await;
    let (status, _) = api(
        &a,
        "/v1/revoke",
        OPERATOR_KEY,
        json!({"user": "u1", "before": now() - 10}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(holder.close_code().await, Some(1008));
    let r = WsClient::connect_with(&format!("{}?token={old}", b.ws_url()), &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status, 401);
    let newer = token(json!({"sub": "u1", "iat": now(), "exp": now() + 600, "topics": []}));
    fan(&b, &newer).await;
    fan(&a, &newer).await;
}

#[tokio::test]
async fn a_control_message_sealed_with_another_cluster_key_is_dropped() {
    let _alone = ALONE.lock().await;
    let nats = NatsServer::start().await;
    let a_cfg = config("another-cluster-key-0123456789abcdef0123");
    let b_cfg = config(CLUSTER_KEY);
    let a = hub_on(&nats, &a_cfg, "hub-a").await;
    let b = hub_on(&nats, &b_cfg, "hub-b").await;
    let u1 = token(json!({"sub": "u1", "exp": now() + 600, "topics": []}));
    let mut on_b = fan(&b, &u1).await;
    let (status, _) = api(&a, "/v1/disconnect", OPERATOR_KEY, json!({"user": "u1"})).await;
    assert_eq!(status, 200);
    tribune_tests::eventually(
        "the dropped message counted",
        Duration::from_secs(5),
        || async {
            (b.metric("tribune_control_dropped_total{reason=\"bad_signature\"}")
                .await
                == 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(on_b.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn on_the_embedded_bus_the_api_works_on_its_one_node_and_is_off_without_a_key() {
    let _alone = ALONE.lock().await;
    let cfg = config(CLUSTER_KEY);
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let u1 = token(json!({"sub": "u1", "exp": now() + 600, "topics": []}));
    let mut c = fan(&hub, &u1).await;
    let (status, body) = api(&hub, "/v1/disconnect", OPERATOR_KEY, json!({"user": "u1"})).await;
    assert_eq!((status, &body["closed"]), (200, &json!(1)));
    assert_eq!(c.close_code().await, Some(1008));
    let off = ConfigFile::new(&format!("[auth]\nsecret = \"{SECRET}\"\n"));
    // Without an operator key, the API is off.
    let hub = Hub::start(&["--config", off.path()]).await;
    let (status, _) = api(&hub, "/v1/disconnect", OPERATOR_KEY, json!({"user": "u1"})).await;
    assert_eq!(status, 403);
}
