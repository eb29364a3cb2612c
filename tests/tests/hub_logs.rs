//! Logs an operator can use, on the real binary: `log_format = "json"`
//! writes one JSON object per line, a refused fan is logged at debug with its
//! reason, status and peer, and lines written to a file carry no colour codes.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tribune_tests::hub::{ConfigFile, HubOptions};
use tribune_tests::{Hub, WsClient, eventually};

#[tokio::test]
async fn json_format_writes_one_object_per_line_and_refused_fans_at_debug() {
    let cfg = ConfigFile::new("allowed_origins = [\"https://fans.example.org\"]\n");
    let mut opts = HubOptions::for_tests(&["--config", cfg.path()]);
    opts.env.push(("TRIBUNE_LOG_FORMAT".into(), "json".into()));
    opts.log_level = "info,tribune_hub=debug".into();
    let hub = Hub::launch(opts).await.expect("hub starts");
    let refused = WsClient::connect_with(&hub.ws_url(), &[("origin", "https://evil.example")])
        .await
        .err()
        .expect("a foreign origin is refused");
    assert_eq!(refused.status, 403);

    let line = eventually("the refusal is logged", Duration::from_secs(5), || async {
        hub.log()
            .lines()
            .find(|l| l.contains("handshake refused"))
            .map(str::to_string)
    })
    .await;
    let refusal: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(refusal["level"], "DEBUG", "{refusal}");
    assert_eq!(refusal["fields"]["reason"], "origin", "{refusal}");
    assert_eq!(refusal["fields"]["status"], 403, "{refusal}");
    let peer = refusal["fields"]["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "{refusal}");

    let log = hub.log();
    let mut audit = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line:?}\n{log}"));
        assert!(v.is_object() && v["timestamp"].is_string(), "{line}");
        assert!(!line.contains('\u{1b}'), "colour codes: {line:?}");
        if v["target"] == "tribune::audit" {
            assert_eq!(v["level"], "INFO", "{line}");
            assert_eq!(v["fields"]["reason"], "origin", "{line}");
            audit += 1;
        }
    }
    assert_eq!(audit, 1, "one audit line for one refusal:\n{log}");
}

#[tokio::test]
async fn text_lines_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.log");
    let file = std::fs::File::create(&path).unwrap();
    // Straight to a file (not through the harness's pipe), as a service
    // manager or `2> hub.log` would.
    let mut child = tokio::process::Command::new(tribune_tests::hub::binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "debug")
        .env_remove("TRIBUNE_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("the hub runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("listening on ") {
                return;
            }
        }
        panic!("the hub exited before listening");
    })
    .await
    .expect("the hub listens");
    // The start-up log line follows the listening line: wait for it.
    let text = tribune_tests::eventually(
        "the start-up line in the file",
        Duration::from_secs(10),
        || {
            let path = path.clone();
            async move {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                text.contains("hub node started").then_some(text)
            }
        },
    )
    .await;
    child.kill().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains(" INFO ") && l.contains("hub node started")),
        "plain level names:\n{text}"
    );
    assert!(
        text.lines().count() >= 3 && !text.contains('\u{1b}'),
        "no colour codes in a file:\n{text:?}"
    );
}
