//! Every scenario at small scale (a few hundred clients, a few seconds),
//! run as the real `tribune-loadtest` binary against the real `tribune-hub`
//! binary and a real nats-server, checking the report's fields and the loss
//! accounting. Figures (latency, throughput, memory) are only checked for
//! presence and consistency: targets are for the benchmark, never for tests.
//!
//! The hub binary is `target/debug/tribune-hub` (`cargo build -p
//! tribune-hub`, done by scripts/test) or `$TRIBUNE_HUB_BIN`; nats-server
//! comes from scripts/install-nats (or `$NATS_SERVER_BIN`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    report: Value,
    stderr: String,
    dir: tempfile::TempDir,
}

impl Run {
    fn target(&self, name: &str) -> &Value {
        self.report["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .find(|r| r["target"] == name)
            .unwrap_or_else(|| panic!("no {name} run in report; stderr:\n{}", self.stderr))
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Runs the harness with `args` plus the binaries, an output directory and
/// bounded time; returns its exit code and parsed report.
fn loadtest(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tribune_tests::hub::binary();
    let nats = tribune_tests::nats::nats_server_bin();
    let out = Command::new(env!("CARGO_BIN_EXE_tribune-loadtest"))
        .args(args)
        .arg("--out")
        .arg(dir.path())
        .args([
            "--no-progress",
            "--max-seconds",
            "150",
            "--settle-ms",
            "5000",
        ])
        .arg("--hub-bin")
        .arg(&hub)
        .arg("--nats-server-bin")
        .arg(nats)
        .output()
        .expect("running tribune-loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = dir.path().join("report.json");
    let report: Value = match std::fs::read_to_string(&json) {
        Ok(text) => serde_json::from_str(&text).expect("report.json is JSON"),
        Err(e) => panic!(
            "no report ({e}); exit {:?}; stderr:\n{stderr}",
            out.status.code()
        ),
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        report,
        stderr,
        dir,
    }
}

/// Fields every run of every scenario has.
fn check_common(run: &Run, target: &str, clients: u64) {
    let r = run.target(target);
    assert_eq!(u(&r["connect"]["requested"]), clients);
    assert_eq!(
        u(&r["connect"]["peak_open"]),
        clients,
        "every client connected: {}",
        run.stderr
    );
    assert!(u(&r["connect"]["established"]) >= clients);
    assert!(f(&r["connect"]["rate_per_s"]) > 0.0);
    assert!(u(&r["connect"]["handshake_us"]["count"]) >= clients);
    let h = &r["connect"]["handshake_us"];
    assert!(u(&h["p50"]) <= u(&h["p99"]) && u(&h["p99"]) <= u(&h["max"]));
    // The measured server appears with its pid and memory readings.
    let servers = r["resources"]["servers"].as_array().expect("servers");
    let measured_role = if target == "tribune" {
        "hub"
    } else {
        "nats-server"
    };
    let s = servers
        .iter()
        .find(|s| s["role"] == measured_role)
        .unwrap_or_else(|| panic!("no {measured_role} in {servers:?}"));
    assert!(u(&s["pid"]) > 0);
    assert!(u(&s["rss_kib_before"]) > 0 && u(&s["rss_kib_connected"]) > 0);
    assert!(f(&s["cpu_s_run"]) >= 0.0);
    assert!(r["resources"]["rss_per_conn_bytes"].is_number());
    assert!(!r["timeline"].as_array().expect("timeline").is_empty());
}

/// Deliveries, latency percentiles and loss of a feed run.
fn check_delivery(run: &Run, target: &str, expected: u64, lost: u64, duplicated: u64) {
    let r = run.target(target);
    let d = &r["delivery"];
    assert_eq!(
        u(&d["loss"]["lost"]),
        lost,
        "{target} lost; stderr:\n{}",
        run.stderr
    );
    assert_eq!(
        u(&d["loss"]["duplicated"]),
        duplicated,
        "{target} duplicated"
    );
    assert_eq!(u(&d["deliveries"]), expected, "{target} deliveries");
    let l = &d["latency_us"];
    assert_eq!(u(&l["count"]), expected);
    for (a, b) in [
        ("p50", "p90"),
        ("p90", "p99"),
        ("p99", "p999"),
        ("p999", "max"),
    ] {
        assert!(u(&l[a]) <= u(&l[b]), "{a} <= {b}: {l}");
    }
    assert!(f(&d["per_s"]) > 0.0);
    assert!(d["percentiles"].as_array().is_some_and(|p| !p.is_empty()));
    assert_eq!(u(&r["publish"]["errors"]), 0);
    assert!(r["resources"]["cpu_us_per_delivery"].is_number());
}

fn published(run: &Run, target: &str) -> u64 {
    u(&run.target(target)["publish"]["acked"])
}

fn html_is_self_contained(dir: &Path) {
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "inline charts");
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
}

#[test]
fn idle_reports_memory_per_connection_for_both_targets() {
    let run = loadtest(&[
        "idle",
        "--target",
        "tribune,nats-ws",
        "-n",
        "150",
        "--hold-s",
        "1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for t in ["tribune", "nats-ws"] {
        check_common(&run, t, 150);
        assert_eq!(u(&run.target(t)["delivery"]["deliveries"]), 0);
    }
    let rep = &run.report;
    assert_eq!(rep["scenario"], "idle");
    assert!(u(&rep["machine"]["nproc"]) >= 1 && u(&rep["machine"]["mem_total_kib"]) > 0);
    assert!(
        rep["versions"]["nats-server"]
            .as_str()
            .is_some_and(|v| v.contains("2."))
    );
    assert!(rep["comparison"]["rss_per_conn_ratio"].is_number());
    assert!(
        rep["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["name"]
                .as_str()
                .is_some_and(|n| n.contains("RSS per idle connection"))),
        "the memory target is checked"
    );
    html_is_self_contained(run.dir.path());
}

#[test]
fn fanout_counts_a_dropped_message_as_exactly_one_loss() {
    let n = 200;
    let run = loadtest(&[
        "fanout",
        "--target",
        "tribune,nats-ws",
        "-n",
        "200",
        "--rate",
        "40",
        "--duration-s",
        "2",
        "--test-drop-one",
    ]);
    // Loss on the hub in a feed scenario fails the run.
    assert_eq!(run.code, 3, "{}", run.stderr);
    for t in ["tribune", "nats-ws"] {
        check_common(&run, t, n);
        let p = published(&run, t);
        assert_eq!(p, 80);
        check_delivery(&run, t, n * p - 1, 1, 0);
        assert_eq!(u(&run.target(t)["subscribe"]["confirmed"]), n);
    }
    assert_eq!(
        u(&run.target("tribune")["delivery"]["prev_mismatch"]),
        0,
        "hub prev chain"
    );
    let c = &run.report["comparison"];
    assert!(c["deliveries_per_s_ratio"].is_number() && c["p99_ratio"].is_number());
    assert!(run.stderr.contains("tribune ÷ nats-ws"));
    html_is_self_contained(run.dir.path());
}

#[test]
fn topics_over_two_workers_and_source_addresses_without_loss() {
    // Embedded bus, publications through POST /v1/publish; a duplicate
    // injected by the test hook must be counted once.
    let run = loadtest(&[
        "topics",
        "-n",
        "200",
        "--topics",
        "30",
        "--per-client",
        "3",
        "--rate",
        "60",
        "--duration-s",
        "2",
        "--procs",
        "2",
        "--source-addrs",
        "2",
        "--bus",
        "embedded",
        "--test-dup-one",
    ]);
    assert_eq!(run.code, 3, "a duplicate fails the run: {}", run.stderr);
    check_common(&run, "tribune", 200);
    let r = run.target("tribune");
    assert_eq!(r["bus"], "embedded");
    assert_eq!(u(&r["subscribe"]["expected"]), 600);
    assert_eq!(u(&r["subscribe"]["confirmed"]), 600);
    // 120 publications over 30 topics: every subscription is owed 4.
    assert_eq!(published(&run, "tribune"), 120);
    check_delivery(&run, "tribune", 600 * 4, 0, 1);
}

#[test]
fn storm_subscribes_everyone_within_the_window() {
    let run = loadtest(&[
        "storm",
        "--target",
        "tribune,nats-ws",
        "-n",
        "200",
        "--rate",
        "20",
        "--duration-s",
        "3",
        "--storm-spread-s",
        "1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for t in ["tribune", "nats-ws"] {
        check_common(&run, t, 200);
        let r = run.target(t);
        assert_eq!(u(&r["subscribe"]["confirmed"]), 200);
        assert!(f(&r["subscribe"]["all_confirmed_s"]) > 0.0);
        assert_eq!(u(&r["subscribe"]["latency_us"]["count"]), 200);
        assert_eq!(u(&r["delivery"]["loss"]["lost"]), 0, "{t}: {}", run.stderr);
        assert!(u(&r["delivery"]["deliveries"]) > 0);
    }
    // Late subscribers with history 1 got the latest message replayed.
    assert!(u(&run.target("tribune")["delivery"]["replayed"]) > 0);
}

#[test]
fn churn_replaces_clients_while_traffic_flows() {
    let run = loadtest(&[
        "churn",
        "-n",
        "150",
        "--rate",
        "50",
        "--duration-s",
        "3",
        "--churn-rate",
        "20",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    check_common(&run, "tribune", 150);
    let r = run.target("tribune");
    assert_eq!(r["bus"], "nats");
    assert!(u(&r["churned"]) >= 20, "churned {}", r["churned"]);
    assert!(u(&r["connect"]["established"]) >= 150 + u(&r["churned"]));
    assert_eq!(u(&r["delivery"]["loss"]["lost"]), 0);
    assert_eq!(u(&r["delivery"]["loss"]["duplicated"]), 0);
    assert!(u(&r["delivery"]["deliveries"]) > 0);
}

#[test]
fn resume_after_a_killed_node_brings_everyone_back_without_loss() {
    let run = loadtest(&[
        "resume",
        "--hubs",
        "2",
        "-n",
        "200",
        "--topics",
        "4",
        "--rate",
        "40",
        "--resume-after-s",
        "1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    check_common(&run, "tribune", 200);
    let r = run.target("tribune");
    let rs = &r["resume"];
    assert_eq!(rs["action"], "kill");
    assert_eq!(u(&rs["affected"]), 100);
    assert_eq!(u(&rs["resumed"]), 100, "{}", run.stderr);
    assert_eq!(u(&rs["still_away"]), 0);
    assert_eq!(u(&rs["recovered"]), 100);
    assert_eq!(u(&rs["not_recovered"]), 0);
    assert!(f(&rs["all_back_ms"]) > 0.0);
    assert_eq!(u(&rs["latency_us"]["count"]), 100);
    assert_eq!(u(&r["delivery"]["loss"]["lost"]), 0);
    assert_eq!(u(&r["delivery"]["loss"]["duplicated"]), 0);
    assert!(
        r["closes"].as_object().is_some_and(|c| !c.is_empty()),
        "the kill was seen"
    );
}

#[test]
fn resume_after_a_drain_on_a_single_restarted_node() {
    let run = loadtest(&[
        "resume",
        "--resume-action",
        "drain",
        "-n",
        "100",
        // A topic retains 100 messages (clips): at 5 msgs/s per topic, the
        // few seconds of drain and restart stay well inside what the
        // stream keeps, so every client can recover.
        "--topics",
        "4",
        "--rate",
        "20",
        "--resume-after-s",
        "1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.target("tribune");
    let rs = &r["resume"];
    assert_eq!(rs["action"], "drain");
    assert_eq!(rs["restarted"], true);
    assert_eq!(u(&rs["affected"]), 100);
    assert_eq!(u(&rs["resumed"]), 100, "{}", run.stderr);
    assert_eq!(u(&rs["recovered"]), 100);
    assert_eq!(u(&r["delivery"]["loss"]["lost"]), 0);
}

#[test]
fn impossible_combinations_are_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_tribune-loadtest"))
        .args(["resume", "--target", "nats-ws"])
        .output()
        .expect("running tribune-loadtest");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resume measures hub nodes"));
    let out = Command::new(env!("CARGO_BIN_EXE_tribune-loadtest"))
        .args(["idle", "-n", "40000"])
        .output()
        .expect("running tribune-loadtest");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--procs 3"));
}

/// `bandwidth`: every variant (full, delta, deflate, both, and a mixed
/// population of the four on one hub; nats-server ws plain and compressed)
/// ends with exactly the published payloads (checked by hash: the run fails
/// otherwise), deflate is negotiated where offered, and deltas and deflate
/// carry the board in fewer bytes (deterministic byte counts, not timings).
#[test]
fn bandwidth_variants_receive_identical_payloads_in_fewer_bytes() {
    let run = loadtest(&[
        "bandwidth",
        "--target",
        "tribune,nats-ws",
        "-n",
        "40",
        "--rate",
        "400",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let read = |t: &str| -> Vec<Value> {
        let path = run.dir.path().join(format!("bandwidth-{t}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("bandwidth json")).unwrap()
    };
    let hub = read("tribune");
    let nats = read("nats-ws");
    assert_eq!((hub.len(), nats.len()), (5, 2));
    for v in hub.iter().chain(&nats) {
        assert_eq!(u(&v["fans"]), 40, "{v}");
        assert_eq!((u(&v["mismatched"]), u(&v["missing"])), (0, 0), "{v}");
        assert_eq!(
            f(&v["messages_per_fan"]),
            111.0,
            "91 boards and 20 clips: {v}"
        );
    }
    let negotiated: Vec<u64> = hub.iter().map(|v| u(&v["deflate_negotiated"])).collect();
    assert_eq!(negotiated, [0, 0, 40, 40, 20]);
    assert_eq!(u(&nats[1]["deflate_negotiated"]), 40);
    let board = |v: &Value| f(&v["board_bytes_per_fan"]);
    assert!(board(&hub[1]) < board(&hub[0]) / 2.0, "delta: {hub:?}");
    assert!(board(&hub[2]) < board(&hub[0]) / 2.0, "deflate: {hub:?}");
    assert!(board(&hub[3]) < board(&hub[1]), "delta + deflate: {hub:?}");
}

/// `regions`: two regions joined through a 20 ms delay proxy, a hub in
/// each; every fan of both regions receives every message once, and the
/// mirror region's fans see the link's delay (a floor, not a speed target).
#[test]
fn regions_report_latency_per_region_without_loss() {
    let run = loadtest(&[
        "regions",
        "-n",
        "20",
        "--rate",
        "20",
        "--duration-s",
        "2",
        "--region-delay-ms",
        "20",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let path = run.dir.path().join("regions-tribune.json");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("regions json")).unwrap();
    assert_eq!(u(&r["published"]), 40, "{r}");
    assert_eq!(u(&r["delay_ms"]), 20, "{r}");
    let regions = r["regions"].as_array().expect("regions");
    assert_eq!(regions.len(), 2, "{r}");
    for g in regions {
        assert_eq!(u(&g["fans"]), 10, "{g}");
        assert_eq!(u(&g["received"]), u(&g["owed"]), "{g}");
        assert_eq!(u(&g["owed"]), 400, "{g}");
        assert_eq!(u(&g["duplicated"]), 0, "{g}");
        assert!(f(&g["p50_ms"]) <= f(&g["p99_ms"]), "{g}");
    }
    assert!(
        f(&regions[1]["p50_ms"]) >= 20.0,
        "a mirror region's fans are at least the link's delay behind: {r}"
    );
    assert_eq!(run.target("tribune")["delivery"]["loss"]["lost"], 0);
}
