//! The `reactions` scenario at small scale: the real `tribune-loadtest`
//! binary against two real `tribune-hub` nodes on a real nats-server, with
//! 200 ms stats windows. Every node's summed `stats` must equal the
//! reactions accepted on all nodes, per kind; a watcher that discards one
//! frame (test hook) must make the run fail with exit status 3.
//!
//! Binaries as in `scenarios.rs`: `target/debug/tribune-hub` (or
//! `$TRIBUNE_HUB_BIN`) and nats-server from scripts/install-nats.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

const KINDS: [&str; 4] = ["🔥", "👏", "😮", "😢"];

/// Runs `tribune-loadtest reactions` with `extra`; returns exit code, the
/// tribune run of the report, and stderr.
fn reactions(extra: &[&str]) -> (i32, Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_tribune-loadtest"))
        .args([
            "reactions",
            "-n",
            "100",
            "--hubs",
            "2",
            "--bus",
            "nats",
            "--rate",
            "200",
            "--duration-s",
            "3",
            "--stats-window-ms",
            "200",
            "--settle-ms",
            "10000",
            "--max-seconds",
            "120",
            "--no-progress",
        ])
        .args(extra)
        .arg("--out")
        .arg(dir.path())
        .arg("--hub-bin")
        .arg(tribune_tests::hub::binary())
        .arg("--nats-server-bin")
        .arg(tribune_tests::nats::nats_server_bin())
        .output()
        .expect("running tribune-loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(dir.path().join("report.json"))
        .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{stderr}"));
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    assert_eq!(report["scenario"], "reactions");
    let run = report["runs"][0].clone();
    assert_eq!(run["target"], "tribune", "{stderr}");
    (out.status.code().unwrap_or(-1), run, stderr)
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a map: {v}"))
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().expect("a count")))
        .collect()
}

#[test]
fn every_nodes_summed_stats_equal_the_accepted_reactions() {
    let (code, run, stderr) = reactions(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(run["connect"]["established"], 100, "{stderr}");
    let r = &run["reactions"];
    assert!(r["topic"].as_str().unwrap().starts_with("results."));
    assert_eq!(r["per_client_rate"].as_f64(), Some(2.0));
    // 100 clients × 2/s × 3 s, under the hub's 5/s limit: all accepted.
    let sent = r["sent"].as_u64().unwrap();
    assert!((550..=650).contains(&sent), "sent {sent}");
    assert_eq!(r["rate_limited"], 0);
    assert_eq!(r["unanswered"], 0);
    let accepted = counts(&r["accepted"]);
    assert_eq!(accepted.values().sum::<u64>(), sent);
    assert_eq!(r["accepted_total"].as_u64(), Some(sent));
    for k in KINDS {
        assert!(
            accepted.get(k).copied().unwrap_or(0) > 100,
            "{k}: {accepted:?}"
        );
    }
    let nodes = r["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    let mut here = 0;
    for n in nodes {
        assert_eq!(n["clients"], 50);
        here += counts(&n["accepted_here"]).values().sum::<u64>();
        // Stats are across all nodes: each node's sum is the whole.
        assert_eq!(counts(&n["stats_sum"]), accepted, "node {}", n["node"]);
        assert_eq!(n["equal"], true);
        assert_eq!(n["window_ms"], 200);
        // 3 s of reacting at 200 ms windows: about 15 frames with reactions.
        assert!(n["stats_frames"].as_u64().unwrap() >= 10, "{n}");
        // 100 reactors and 2 watchers.
        assert_eq!(n["audience_max"], 102, "{n}");
        assert!(n["cpu_s"].as_f64().unwrap() >= 0.0);
        assert!(n["cpu_ms_per_window"].is_number());
    }
    assert_eq!(here, sent);
    assert_eq!(r["all_equal"], true);
    assert!(run["problems"].as_array().unwrap().is_empty(), "{run}");
    assert!(stderr.contains("reactions: sent"), "{stderr}");
}

#[test]
fn a_missed_stats_frame_is_found_and_fails_the_run() {
    let (code, run, stderr) = reactions(&["--test-drop-one"]);
    assert_eq!(code, 3, "{stderr}");
    let r = &run["reactions"];
    assert_eq!(r["all_equal"], false);
    let nodes = r["nodes"].as_array().expect("nodes");
    let accepted: u64 = r["accepted_total"].as_u64().unwrap();
    let sum0: u64 = counts(&nodes[0]["stats_sum"]).values().sum();
    assert_eq!(nodes[0]["equal"], false);
    assert!(sum0 < accepted, "{sum0} vs {accepted}");
    assert_eq!(nodes[1]["equal"], true);
    assert!(
        run["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("node 0: stats summed to"),
        "{run}"
    );
}

#[test]
fn reactions_refuses_the_nats_ws_target() {
    let out = Command::new(env!("CARGO_BIN_EXE_tribune-loadtest"))
        .args(["reactions", "--target", "nats-ws"])
        .output()
        .expect("running tribune-loadtest");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reactions measures hub nodes"));
}
