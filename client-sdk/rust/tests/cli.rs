//! The `tribune` binary against the real hub (embedded bus): publish then
//! tail round trips, and the one-line errors with exit code 2.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tribune_tests::Hub;

const BIN: &str = env!("CARGO_BIN_EXE_tribune");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `tribune args...` with `stdin`, bounded in time.
async fn tribune(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("TRIBUNE_NATS")
        .env_remove("TRIBUNE_HUB")
        .env_remove("TRIBUNE_URL")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tribune");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("tribune {args:?} did not finish"))
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn seqs(run: &Run) -> Vec<u64> {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    run.stdout
        .lines()
        .map(|l| l.trim().parse().expect("a seq a line"))
        .collect()
}

/// A usage error: exit 2 and exactly one line on stderr containing `needle`.
fn assert_usage_error(run: &Run, needle: &str) {
    assert_eq!(
        run.code, 2,
        "stdout {:?} stderr {:?}",
        run.stdout, run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {:?}", run.stderr);
    assert!(lines[0].starts_with("tribune: "), "{}", lines[0]);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
    assert!(run.stdout.is_empty(), "{:?}", run.stdout);
}

#[tokio::test]
async fn publish_then_tail_history_round_trip() {
    let hub = Hub::start(&[]).await;
    // Publishing goes to the internal listener, with the hub's key.
    let http = hub.internal_url();
    let key = hub.publish_key().to_string();
    let ws = hub.ws_url();
    let topic = "results.cli.board";

    let published = seqs(
        &tribune(
            &[
                "publish",
                topic,
                "--data",
                r#"{"status":"final","rows":[]}"#,
                "--hub",
                &http,
                "--key",
                &key,
            ],
            None,
        )
        .await,
    );
    assert_eq!(published.len(), 1);

    let tail = tribune(
        &[
            "tail",
            topic,
            "--url",
            &ws,
            "--history",
            "1",
            "--count",
            "1",
        ],
        None,
    )
    .await;
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    assert_eq!(
        tail.stdout,
        format!(
            "{topic} #{} {{\"status\":\"final\",\"rows\":[]}}\n",
            published[0]
        )
    );

    // JSON lines from stdin, then the feed's history as JSON.
    let feed = "clips.cli.feed";
    let lines = "{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}\n";
    let published = seqs(
        &tribune(
            &["publish", feed, "-", "--hub", &http, "--key", &key],
            Some(lines),
        )
        .await,
    );
    assert_eq!(published.len(), 3);
    let tail = tribune(
        &[
            "tail",
            feed,
            "--url",
            &ws,
            "--history",
            "3",
            "--count",
            "3",
            "--json",
        ],
        None,
    )
    .await;
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    let frames: Vec<Value> = tail
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 3);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame["type"], "message");
        assert_eq!(frame["topic"], feed);
        assert_eq!(frame["seq"], published[i]);
        assert_eq!(frame["replay"], true);
        assert_eq!(frame["data"], json!({"n": i + 1}));
    }

    // A resume point from one tail, used by the next.
    let tail = tribune(
        &[
            "tail",
            feed,
            "--url",
            &ws,
            "--since",
            &published[0].to_string(),
            "--epoch",
            &epoch_of(&hub, feed).await,
            "--count",
            "2",
        ],
        None,
    )
    .await;
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    let got: Vec<&str> = tail.stdout.lines().collect();
    assert_eq!(
        got,
        [
            format!("{feed} #{} {{\"n\":2}}", published[1]),
            format!("{feed} #{} {{\"n\":3}}", published[2])
        ]
    );
}

/// The epoch as the hub announces it (what `tail` prints on stderr).
async fn epoch_of(hub: &Hub, topic: &str) -> String {
    let run = tribune(
        &["tail", topic, "--url", &hub.ws_url(), "--count", "0"],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("epoch"))
        .expect("subscription line");
    line.split("epoch ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn bad_input_is_one_line_and_exit_code_2() {
    let hub = Hub::start(&[]).await;
    // Publishing goes to the internal listener, with the hub's key.
    let http = hub.internal_url();
    let key = hub.publish_key().to_string();

    let run = tribune(
        &[
            "publish",
            "results.bad topic",
            "--data",
            "{}",
            "--hub",
            &http,
            "--key",
            &key,
        ],
        None,
    )
    .await;
    assert_usage_error(&run, "invalid topic 'results.bad topic'");
    let run = tribune(
        &[
            "publish", "results", "--data", "{}", "--hub", &http, "--key", &key,
        ],
        None,
    )
    .await;
    assert_usage_error(&run, "invalid topic 'results'");
    let run = tribune(
        &[
            "publish",
            "results.cli.x",
            "--data",
            "{\"status\":",
            "--hub",
            &http,
            "--key",
            &key,
        ],
        None,
    )
    .await;
    assert_usage_error(&run, "invalid JSON");
    let run = tribune(
        &[
            "publish",
            "results.cli.x",
            "--data",
            "{} {}",
            "--hub",
            &http,
            "--key",
            &key,
        ],
        None,
    )
    .await;
    assert_usage_error(&run, "invalid JSON");
    // A bad line in the middle of stdin: nothing is published.
    let run = tribune(
        &["publish", "clips.cli.bad", "--hub", &http, "--key", &key],
        Some("{\"n\":1}\nnot json\n"),
    )
    .await;
    assert_usage_error(&run, "stdin line 2: invalid JSON");
    let tail = tribune(
        &[
            "tail",
            "clips.cli.bad",
            "--url",
            &hub.ws_url(),
            "--count",
            "0",
        ],
        None,
    )
    .await;
    assert!(
        tail.stderr.contains("seq 0"),
        "nothing may have been published: {}",
        tail.stderr
    );

    // Too big for one argument: from a file.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!("\"{}\"", "x".repeat(256 * 1024))).unwrap();
    let run = tribune(
        &[
            "publish",
            "clips.cli.x",
            "--file",
            big.to_str().unwrap(),
            "--hub",
            &http,
            "--key",
            &key,
        ],
        None,
    )
    .await;
    assert_usage_error(&run, "payload too large");
    let run = tribune(&["publish", "clips.cli.x", "--data", "{}"], None).await;
    assert_usage_error(&run, "--nats URL or --hub URL");
    let run = tribune(&["tail", "clips.*.x", "--url", &hub.ws_url()], None).await;
    assert_usage_error(&run, "invalid topic 'clips.*.x'");

    // A failure that is not the input's: exit 1.
    let run = tribune(
        &[
            "publish",
            "nowhere.cli.x",
            "--data",
            "{}",
            "--hub",
            &http,
            "--key",
            &key,
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("unknown_namespace"), "{}", run.stderr);
}

/// `tribune disconnect` and `tribune revoke` against a hub with an operator
/// key: a user's fan is closed with 1008, a revoked `jti` is refused at the
/// handshake; a wrong key fails with exit code 1, a bad combination with 2.
#[tokio::test]
async fn disconnect_and_revoke_through_the_server_api() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    const SECRET: &str = "a-cli-test-secret-that-is-long-enough-for-hs256";
    const KEY: &str = "cli-operator-key-0123456789abcdef0123456789";
    let cfg = tribune_tests::hub::ConfigFile::new(&format!(
        "operator_key = \"{KEY}\"\n[auth]\nsecret = \"{SECRET}\"\n"
    ));
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |jti: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "u1", "jti": jti, "exp": now + 600, "topics": []}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let connect = |token: String| {
        let url = hub.ws_url();
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            tokio_tungstenite::connect_async(req).await
        }
    };
    let (mut ws, _) = connect(token("t-1")).await.unwrap();
    let internal = hub.internal_url();
    let wrong = tribune(
        &[
            "disconnect",
            "--user",
            "u1",
            "--hub",
            &internal,
            "--key",
            "not-the-key-0123456789abcdef0123",
        ],
        None,
    )
    .await;
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("401"), "{}", wrong.stderr);
    let run = tribune(
        &[
            "disconnect",
            "--user",
            "u1",
            "--hub",
            &internal,
            "--key",
            KEY,
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(answer["closed"], 1);
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Close(frame) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(close, Some(1008));
    let _ = ws.send(Message::Close(None)).await;
    let run = tribune(
        &["revoke", "--jti", "t-2", "--hub", &internal, "--key", KEY],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        connect(token("t-2")).await.is_err(),
        "revoked at the handshake"
    );
    assert!(connect(token("t-3")).await.is_ok());
    let both = tribune(
        &[
            "revoke", "--jti", "t-2", "--user", "u1", "--hub", &internal, "--key", KEY,
        ],
        None,
    )
    .await;
    assert_eq!(both.code, 2, "{}", both.stderr);
}
