//! `tribune token` against a real hub configured with the same HS256
//! secret and an audience: its tokens open a `token = true` namespace for
//! the granted topics only, carry `aud`, and are refused after their ttl.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::time::timeout;
use tribune_client::{Client, ConnectErrorKind, Event, SubscribeErrorKind};
use tribune_tests::Hub;
use tribune_tests::hub::ConfigFile;

const BIN: &str = env!("CARGO_BIN_EXE_tribune");
const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256!";
const AUDIENCE: &str = "tribune-test";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `tribune token args...`, with `env` added and no secret inherited.
async fn token(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("token")
        .args(args)
        .env_remove("TRIBUNE_TOKEN_SECRET")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = timeout(Duration::from_secs(20), command.output())
        .await
        .expect("tribune token finished")
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The token printed by a successful run.
fn minted(run: &Run) -> String {
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let token = run.stdout.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    token
}

async fn hub() -> (Hub, ConfigFile) {
    let cfg = ConfigFile::new(&format!(
        "[auth]\nsecret = \"{SECRET}\"\naudience = \"{AUDIENCE}\"\nleeway_secs = 0\n\
         [namespaces.premium]\nmode = \"state\"\nretained = 1\ntoken = true\n"
    ));
    let hub = Hub::start(&["--config", cfg.path()]).await;
    (hub, cfg)
}

#[tokio::test]
async fn a_minted_token_opens_its_topics_until_its_ttl() {
    let (hub, _cfg) = hub().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hub.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let secret_file = secret_file.to_str().unwrap();

    // The secret from a file (its newline ignored); a short ttl.
    let t = minted(
        &token(
            &[
                "--secret-file",
                secret_file,
                "--topics",
                "premium.sdk.",
                "--ttl",
                "3s",
                "--sub",
                "fan-1",
                "--aud",
                AUDIENCE,
            ],
            &[],
        )
        .await,
    );
    let client = Client::builder(hub.ws_url())
        .token(&t)
        .connect()
        .await
        .expect("the hub accepts the minted token");
    let topic = "premium.sdk.board";
    let mut sub = client.subscribe(topic).await.expect("a granted topic");
    let seq = hub.publish(topic, json!({"rank": 1})).await;
    let got = loop {
        match timeout(Duration::from_secs(10), sub.next()).await.unwrap() {
            Some(Event::Message(m)) => break m,
            Some(Event::Stats(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((got.seq, got.data.get()), (seq, r#"{"rank":1}"#));
    // Only the granted topics.
    let err = client.subscribe("premium.other.board").await.unwrap_err();
    assert!(
        matches!(err.kind(), SubscribeErrorKind::Refused(_)),
        "{err}"
    );

    // The secret from the environment works the same.
    let from_env = minted(
        &token(
            &["--topics", "premium.sdk.", "--aud", AUDIENCE],
            &[("TRIBUNE_TOKEN_SECRET", SECRET)],
        )
        .await,
    );
    Client::builder(hub.ws_url())
        .token(&from_env)
        .connect()
        .await
        .expect("a token minted with the secret from the environment");
    // Without the audience this hub wants, or signed with another secret: refused.
    let no_aud = minted(&token(&["--secret", SECRET, "--topics", "premium.sdk."], &[]).await);
    let other_secret = minted(
        &token(
            &[
                "--secret",
                "another-secret-that-is-long-enough-for-hs256",
                "--topics",
                "premium.sdk.",
                "--aud",
                AUDIENCE,
            ],
            &[],
        )
        .await,
    );
    for bad in [no_aud, other_secret] {
        let err = Client::builder(hub.ws_url())
            .token(bad)
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::Unauthorized, "{err}");
    }

    // After its ttl the first token opens nothing. Polled at a pace the
    // hub's per-address handshake limit allows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let refused = loop {
        match Client::builder(hub.ws_url()).token(&t).connect().await {
            Ok(client) => client.close().await,
            Err(e) => break e,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token still opens the hub after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(refused.kind(), ConnectErrorKind::Unauthorized, "{refused}");
    assert!(refused.to_string().contains("expired"), "{refused}");
}

#[tokio::test]
async fn bad_secrets_and_grants_are_bad_input() {
    let short = token(&["--secret", "short", "--topics", "premium.a"], &[]).await;
    assert_eq!(short.code, Some(2), "{}", short.stderr);
    assert!(short.stderr.contains("at least 32"), "{}", short.stderr);
    let none = token(&["--topics", "premium.a"], &[]).await;
    assert_eq!(none.code, Some(2), "{}", none.stderr);
    assert!(
        none.stderr.contains("TRIBUNE_TOKEN_SECRET"),
        "{}",
        none.stderr
    );
    let grant = token(&["--secret", SECRET, "--topics", "premium.*"], &[]).await;
    assert_eq!(grant.code, Some(2), "{}", grant.stderr);
    assert!(grant.stderr.contains("premium.*"), "{}", grant.stderr);
    let ttl = token(
        &["--secret", SECRET, "--topics", "premium.a", "--ttl", "1w"],
        &[],
    )
    .await;
    assert_eq!(ttl.code, Some(2), "{}", ttl.stderr);
    assert!(
        token(&["--secret", SECRET, "--topics", "premium.a"], &[])
            .await
            .stdout
            .len()
            > 20
    );

    // --help says how to keep the secret off the command line.
    let help = token(&["--help"], &[]).await;
    assert_eq!(help.code, Some(0));
    for needle in ["--secret-file", "TRIBUNE_TOKEN_SECRET", "shell history"] {
        assert!(help.stdout.contains(needle), "{needle}: {}", help.stdout);
    }
}
