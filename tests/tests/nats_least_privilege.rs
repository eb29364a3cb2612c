//! The shipped least-privilege NATS configuration (`nats/least-privilege.conf`,
//! one user per role) on a real nats-server with the real hub binary
//! (issue 13, part 4):
//!
//! - the stream administrator declares the stream
//!   (`tribune-hub --provision-stream`); hubs run as the hub user with
//!   `bus.manage_stream = false`, and a hub that would create the stream is
//!   refused;
//! - an editor publishes and the fans of two hubs receive; history, a resume
//!   on the other hub and the audience summed across the hubs work; a
//!   topic's consumer goes away with its last fan;
//! - an operator's disconnect on one hub closes a fan of the other (the
//!   hub user carries control messages on `tribune.control`);
//! - an editor cannot publish to `tribune.live.>`, `tribune.stats.>` or
//!   `tribune.control`, nor
//!   a hub to `tribune.live.>` or the stream's update: the server reports a
//!   permission violation.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::{Editor, NatsOptions, NatsServer, connect_noting_errors};
use tribune_tests::{Hub, WsClient, eventually};

/// The configuration every deployment ships, as the tests use it.
const LEAST_PRIVILEGE: &str = include_str!("../../nats/least-privilege.conf");
const EDITOR_PASSWORD: &str = "editor-password-for-tests";
const HUB_PASSWORD: &str = "hub-password-for-tests";
const ADMIN_PASSWORD: &str = "stream-admin-password-for-tests";
const KEY: &str = "least-privilege-test-key-0123456789abc";
const SETTLE: Duration = Duration::from_secs(10);
const OPERATOR_KEY: &str = "least-privilege-operator-key-0123456789";

async fn nats() -> NatsServer {
    NatsServer::try_start(&NatsOptions {
        extra_config: Some(LEAST_PRIVILEGE.to_string()),
        env: vec![
            ("EDITOR_PASSWORD".into(), EDITOR_PASSWORD.into()),
            ("HUB_PASSWORD".into(), HUB_PASSWORD.into()),
            ("STREAM_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ],
        ..NatsOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `tribune-hub --provision-stream` as the stream administrator; its output.
fn provision(url: &str) -> std::process::Output {
    std::process::Command::new(tribune_tests::hub::binary())
        .args(["--provision-stream", "--nats", url])
        .env("TRIBUNE_BUS__USER", "stream-admin")
        .env("TRIBUNE_BUS__PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the hub binary runs")
}

/// A hub as the hub user, not managing the stream (unless `manage`).
fn hub_config(manage: bool) -> ConfigFile {
    ConfigFile::new(&format!(
        "relay_linger_ms = 200\noperator_key = \"{OPERATOR_KEY}\"\n\
         [bus]\nuser = \"hub\"\npassword = \"{HUB_PASSWORD}\"\nmanage_stream = {manage}\n\
         request_timeout_ms = 1000\ncheck_interval_ms = 500\n\
         [stats]\nwindow_ms = 200\nkey = \"{KEY}\"\n\
         [limits]\nhandshakes_per_second = 1000\n"
    ))
}

async fn hub_on(url: &str, cfg: &ConfigFile, name: &str) -> Hub {
    Hub::start(&["--nats", url, "--config", cfg.path(), "--node-name", name]).await
}

/// Reads `c` until `want` holds for a frame; that frame.
async fn until(c: &mut WsClient, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = c
            .try_recv(left)
            .await
            .unwrap_or_else(|| panic!("not within {SETTLE:?}: {what}"));
        if want(&f) {
            return f;
        }
    }
}

#[tokio::test]
async fn every_role_has_what_it_needs_and_no_more() {
    let nats = nats().await;
    let url = nats.url();

    // The stream is declared by its administrator, not by the hubs.
    let out = provision(&url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("stream TRIBUNE ready, epoch TRIBUNE@"),
        "{:?} {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let managing = hub_config(true);
    let refused = Hub::try_start(&["--nats", &url, "--config", managing.path()])
        .await
        .expect_err("the hub user may not create or update the stream");
    assert!(
        refused.contains("cannot provision stream TRIBUNE"),
        "{refused}"
    );

    let cfg = hub_config(false);
    let a = hub_on(&url, &cfg, "lp-a").await;
    let b = hub_on(&url, &cfg, "lp-b").await;
    let editor = Editor::connect_with(
        &url,
        async_nats::ConnectOptions::with_user_and_password("editor".into(), EDITOR_PASSWORD.into()),
    )
    .await;
    let topic = "results.lp.final";
    let (mut fan_a, _) = WsClient::connect(&a.ws_url()).await;
    fan_a.subscribe(topic, json!({})).await;
    let (mut fan_b, _) = WsClient::connect(&b.ws_url()).await;
    let ack = fan_b.subscribe(topic, json!({})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();

    // Live on both hubs.
    let s1 = editor.publish(topic, r#"{"leader":"NED"}"#).await;
    let s2 = editor.publish(topic, r#"{"leader":"NOR"}"#).await;
    for fan in [&mut fan_a, &mut fan_b] {
        until(fan, "s1", |f| f["type"] == "message" && f["seq"] == s1).await;
        let m2 = until(fan, "s2", |f| f["type"] == "message" && f["seq"] == s2).await;
        assert_eq!(m2["prev"], s1, "{m2}");
    }
    // History on one hub, a resume on the other.
    let (newcomer, _) = WsClient::connect(&a.ws_url()).await;
    let mut newcomer = newcomer.without_stats();
    newcomer.subscribe(topic, json!({"history": 10})).await;
    let first = until(&mut newcomer, "history", |f| f["type"] == "message").await;
    assert_eq!(first["seq"], s1, "{first}");
    let (resumer, _) = WsClient::connect(&b.ws_url()).await;
    let mut resumer = resumer.without_stats();
    let ack = resumer
        .subscribe(topic, json!({"since": s1, "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], true, "{ack}");
    let resumed = until(&mut resumer, "the resume", |f| f["type"] == "message").await;
    assert_eq!(
        (resumed["seq"].as_u64(), resumed["prev"].as_u64()),
        (Some(s2), Some(s1))
    );
    // The audience of both hubs, summed on each (statistics partials flow).
    for fan in [&mut fan_a, &mut fan_b] {
        until(fan, "an audience of 4 across the hubs", |f| {
            f["type"] == "stats" && f["audience"] == 4
        })
        .await;
    }

    // What the editor and the hub may not do, the server refuses.
    let (editor_conn, mut editor_errors) = connect_noting_errors(
        &url,
        async_nats::ConnectOptions::with_user_and_password("editor".into(), EDITOR_PASSWORD.into()),
    )
    .await;
    // An operator's call on hub A reaches hub B through tribune.control.
    let (mut leaving, welcome) = WsClient::connect(&b.ws_url()).await;
    let res = reqwest::Client::new()
        .post(format!("{}/v1/disconnect", a.internal_url()))
        .bearer_auth(OPERATOR_KEY)
        .json(&json!({"conn": welcome["conn"], "node": "lp-b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(leaving.close_code().await, Some(1008));

    for subject in [
        format!("tribune.live.{topic}"),
        "tribune.stats.evil".into(),
        "tribune.control".into(),
    ] {
        editor_conn
            .publish(
                subject.clone(),
                Bytes::from_static(br#"{"leader":"FORGED"}"#),
            )
            .await
            .unwrap();
        editor_conn.flush().await.unwrap();
        let e = editor_errors
            .expect("Permissions Violation for Publish", SETTLE)
            .await;
        assert!(e.contains(&subject), "{e}");
    }
    let (hub_conn, mut hub_errors) = connect_noting_errors(
        &url,
        async_nats::ConnectOptions::with_user_and_password("hub".into(), HUB_PASSWORD.into()),
    )
    .await;
    for subject in [
        format!("tribune.live.{topic}"),
        "$JS.API.STREAM.UPDATE.TRIBUNE".into(),
    ] {
        hub_conn
            .publish(subject.clone(), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        hub_conn.flush().await.unwrap();
        let e = hub_errors
            .expect("Permissions Violation for Publish", SETTLE)
            .await;
        assert!(e.contains(&subject), "{e}");
    }

    // Every fan leaves: each hub deletes its topic's consumer (the hub user
    // may), long before the server's inactivity threshold would.
    drop((fan_a, fan_b, newcomer, resumer));
    let admin = async_nats::ConnectOptions::with_user_and_password(
        "stream-admin".into(),
        ADMIN_PASSWORD.into(),
    )
    .connect(&url)
    .await
    .unwrap();
    eventually("no consumer left", SETTLE, || async {
        let reply = admin
            .request("$JS.API.STREAM.INFO.TRIBUNE", Bytes::new())
            .await
            .ok()?;
        let info: Value = serde_json::from_slice(&reply.payload).ok()?;
        (info["state"]["consumer_count"] == 0).then_some(())
    })
    .await;
}
