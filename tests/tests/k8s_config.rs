//! The hub configuration files shipped for Kubernetes are configurations the
//! real hub accepts, and it reads them as written.
//!
//! `k8s/base/tribune.toml` (dev and base) and `k8s/overlays/prod/tribune.toml`
//! become the ConfigMap mounted at `/etc/tribune/tribune.toml`. Each test runs
//! the real `tribune-hub` binary with `--check-config`, as an operator would
//! before applying a change (k8s/README.md), with the node name set through
//! `TRIBUNE_NODE_NAME` as the Deployment sets it from the pod name. A broken
//! file must be refused with exit code 2 and one line saying why, because that
//! line is what `kubectl logs` shows for a pod in CrashLoopBackOff.
//!
//! Two tests then run each file as the pod would, with only the addresses
//! changed to loopback (`--listen`, `--nats` override the file), after the
//! stream Job's `--provision-stream` with the same file (hubs run with
//! `bus.manage_stream = false`): the base file beside a real nats-server,
//! through the probes the Deployment uses and a SIGTERM drain that must end
//! before the kubelet's SIGKILL; the prod file against a real 3-node
//! JetStream cluster, where the Job must create the stream with three
//! replicas.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::{NatsCluster, NatsServer};
use tribune_tests::{Hub, WsClient, eventually};

/// Node name the Deployment would pass (its pod name).
const POD_NAME: &str = "tribune-hub-7d9f8b6c5-x2k4p";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs `tribune-hub --check-config --config FILE` in a clean environment
/// (no `TRIBUNE_*` variables but the node name).
fn check_config(file: &Path) -> Output {
    let mut cmd = Command::new(tribune_tests::hub::binary());
    cmd.arg("--check-config").arg("--config").arg(file);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRIBUNE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TRIBUNE_NODE_NAME", POD_NAME);
    cmd.output().expect("running tribune-hub --check-config")
}

/// `table.key` → value, for the subset of TOML that configuration files and
/// the hub's printout use: `[table]` headers, `key = value` lines, arrays that
/// may span lines. Values are normalized (quotes and digit separators
/// removed) so that the file's spelling and the printout's compare equal.
fn parse_toml(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut table = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            assert!(
                !name.starts_with('['),
                "arrays of tables are not used in hub configs: {line}"
            );
            table = name.trim().to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not `key = value`: {line}"));
        let mut value = value.trim().to_string();
        if value.starts_with('[') && !value.ends_with(']') {
            for more in lines.by_ref() {
                value.push_str(more.trim());
                if more.trim() == "]" {
                    break;
                }
            }
        }
        let key = if table.is_empty() {
            key.trim().to_string()
        } else {
            format!("{table}.{}", key.trim())
        };
        out.insert(key, normalize(&value));
    }
    out
}

fn normalize(value: &str) -> String {
    let v = value.trim();
    let quoted =
        (v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\''));
    if quoted && v.len() >= 2 {
        v[1..v.len() - 1].to_string()
    } else if v
        .chars()
        .all(|c| c.is_ascii_digit() || c == '_' || c == '-')
    {
        v.replace('_', "")
    } else {
        v.to_string()
    }
}

/// Checks one shipped file, which names the NATS Service at `bus_url`;
/// returns the printed effective configuration.
fn assert_accepted_as_written(relative: &str, bus_url: &str) -> BTreeMap<String, String> {
    let file = repo_root().join(relative);
    let written = parse_toml(&std::fs::read_to_string(&file).expect("reading the shipped config"));
    let out = check_config(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{relative} refused ({:?}): {stderr}",
        out.status.code()
    );
    let effective = parse_toml(&stdout);
    for (key, value) in &written {
        assert_eq!(
            effective.get(key),
            Some(value),
            "{relative}: `{key}` is {value} in the file but the hub's effective config says {:?}",
            effective.get(key)
        );
    }
    // What every Kubernetes deployment relies on, spelled out.
    assert_eq!(
        effective["listen"], "0.0.0.0:8080",
        "{relative}: pods must listen on all interfaces"
    );
    assert_eq!(
        effective["bus.url"], bus_url,
        "{relative}: the NATS Service"
    );
    // Least privilege on the bus: the hub user, its password from a
    // Secret (never the file), the stream declared by the Job.
    assert_eq!(effective["bus.user"], "hub", "{relative}: the hub user");
    assert_eq!(
        effective["bus.manage_stream"], "false",
        "{relative}: the stream Job declares the stream"
    );
    assert!(
        !written.contains_key("bus.password") && !written.contains_key("stats.key"),
        "{relative}: secrets belong in Secrets"
    );
    assert_eq!(
        effective["node_name"], POD_NAME,
        "{relative}: TRIBUNE_NODE_NAME from the pod name"
    );
    // Defaults fill what the file leaves out: the printout is the whole config.
    assert_eq!(
        effective["limits.max_frame_bytes"], "4096",
        "{relative}: defaults not filled in"
    );
    assert_eq!(
        effective["namespaces.results.retained"], "10",
        "{relative}: default namespaces missing"
    );
    // The printout is itself a configuration the hub accepts, with the same meaning.
    let again = ConfigFile::new(&stdout);
    let out2 = check_config(Path::new(again.path()));
    assert!(
        out2.status.success(),
        "the printout of {relative} is refused: {}",
        String::from_utf8_lossy(&out2.stderr)
    );
    assert_eq!(
        parse_toml(&String::from_utf8_lossy(&out2.stdout)),
        effective,
        "{relative}: printout not stable"
    );
    effective
}

#[test]
fn base_config_is_accepted_as_written() {
    let effective = assert_accepted_as_written("k8s/base/tribune.toml", "nats://nats:4222");
    assert_eq!(effective["bus.replicas"], "1");
    assert_eq!(effective["limits.max_connections"], "50000");
    // The Deployment's terminationGracePeriodSeconds (45 s) and preStop sleep
    // (5 s) are sized for this drain deadline.
    assert_eq!(effective["drain.grace_ms"], "25000");
}

#[test]
fn prod_config_is_accepted_as_written() {
    let effective = assert_accepted_as_written("k8s/overlays/prod/tribune.toml", "tls://nats:4222");
    assert_eq!(effective["bus.tls_required"], "true", "TLS to NATS in prod");
    assert_eq!(
        effective["bus.replicas"], "3",
        "prod stream on all three NATS servers"
    );
    assert_eq!(effective["limits.max_connections"], "200000");
    assert_eq!(effective["bus.storage"], "file");
}

/// Writes the base file with one line replaced, runs the check, and returns
/// the output; the replaced line must exist.
fn check_modified(from: &str, to: &str) -> Output {
    let base =
        std::fs::read_to_string(repo_root().join("k8s/base/tribune.toml")).expect("base config");
    assert!(
        base.lines().any(|l| l == from),
        "base config has no line `{from}`"
    );
    let broken: String = base
        .lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let file = ConfigFile::new(&broken);
    check_config(Path::new(file.path()))
}

fn assert_refused(out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr: {stderr}",
        out.status.code()
    );
    assert!(
        out.stdout.is_empty(),
        "a refused config prints no config: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "the reason must be one line: {stderr:?}");
    assert!(
        lines[0].contains(mentions),
        "the reason should name `{mentions}`: {}",
        lines[0]
    );
}

#[test]
fn misspelled_key_is_refused_with_one_line() {
    // A typo in a ConfigMap must stop the pod, not be ignored.
    let out = check_modified("replicas = 1", "replica = 1");
    assert_refused(&out, "replica");
}

#[test]
fn impossible_drain_timing_is_refused_with_one_line() {
    // A drain window as long as the grace period could never finish.
    let out = check_modified("window_ms = 10000", "window_ms = 30000");
    assert_refused(&out, "window_ms");
}

/// The first `key: N` in a manifest (keys used here appear once).
fn manifest_number(manifest: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(repo_root().join(manifest)).expect("reading the manifest");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{manifest} has no `{key} N`"))
}

fn path_str(relative: &str) -> String {
    repo_root()
        .join(relative)
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// What the Job tribune-stream runs: `--provision-stream` with the shipped
/// `file`, against `nats` (the file's URL replaced), with `env` beside.
fn provision_stream(file: &str, nats: &str, env: &[(&str, &str)]) {
    let out = Command::new(tribune_tests::hub::binary())
        .args([
            "--provision-stream",
            "--config",
            &path_str(file),
            "--nats",
            nats,
        ])
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running tribune-hub --provision-stream");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("stream TRIBUNE ready, epoch "),
        "{file}: --provision-stream failed ({:?}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the readiness probe's endpoint answers 200.
async fn until_ready(hub: &Hub) {
    eventually("/readyz answers 200", Duration::from_secs(30), || async {
        (hub.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn base_config_serves_the_probes_and_drains_before_the_kubelet_kills_it() {
    let nats = NatsServer::start().await;
    // The Job declares the stream first: the file's hubs may not.
    provision_stream("k8s/base/tribune.toml", &nats.url(), &[]);
    let mut hub = Hub::start(&[
        "--config",
        &path_str("k8s/base/tribune.toml"),
        "--nats",
        &nats.url(),
    ])
    .await;
    // startupProbe and livenessProbe: GET /healthz; readinessProbe: GET /readyz.
    assert_eq!(hub.get("/healthz").await.0, 200);
    until_ready(&hub).await;
    // What the prometheus.io annotations point at.
    assert_eq!(hub.metric("tribune_bus_connected").await, 1.0);

    let (mut fan, _) = WsClient::connect(&hub.ws_url()).await;
    fan.subscribe("results.k8s-check", json!({})).await;

    // The kubelet runs preStop (sleep) and then sends SIGTERM; it sends
    // SIGKILL terminationGracePeriodSeconds after the start of preStop.
    let grace = manifest_number("k8s/base/deployment.yaml", "terminationGracePeriodSeconds:");
    let pre_stop = manifest_number("k8s/base/deployment.yaml", "seconds:");
    assert!(
        grace > pre_stop,
        "terminationGracePeriodSeconds must outlast preStop"
    );
    hub.terminate();
    let drain = fan.recv().await;
    assert_eq!(drain["type"], "drain", "{drain}");
    assert_eq!(
        drain["retry_ms"], 5000,
        "drain.retry_ms of the file: {drain}"
    );
    assert_eq!(
        fan.close_code().await,
        Some(1001),
        "drained fans are closed with 1001"
    );
    let status = hub
        .wait(Duration::from_secs(grace - pre_stop))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the hub outlived SIGTERM + {} s: the kubelet would kill it",
                grace - pre_stop
            )
        });
    assert!(status.success(), "exit after a clean drain: {status:?}");
}

#[tokio::test]
async fn prod_config_creates_a_three_replica_stream_on_a_three_node_cluster() {
    let cluster = NatsCluster::start(3).await;
    // The test cluster speaks plain NATS: only the file's TLS requirement is
    // lifted (TLS itself: nats_secure.rs).
    let plain = [("TRIBUNE_BUS__TLS_REQUIRED", "false")];
    provision_stream("k8s/overlays/prod/tribune.toml", &cluster.urls(), &plain);
    let hub = Hub::start_with_env(
        &[
            "--config",
            &path_str("k8s/overlays/prod/tribune.toml"),
            "--nats",
            &cluster.urls(),
        ],
        &plain,
    )
    .await;
    until_ready(&hub).await;

    let client = async_nats::connect(cluster.url(0))
        .await
        .expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream("TRIBUNE")
        .await
        .expect("the hub created stream TRIBUNE");
    let info = stream.info().await.expect("stream info").clone();
    assert_eq!(
        info.config.num_replicas, 3,
        "bus.replicas = 3 in the prod file"
    );
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    let group = info
        .cluster
        .expect("a replicated stream reports its RAFT group");
    assert!(group.leader.is_some(), "the stream has a leader: {group:?}");
    assert_eq!(
        group.replicas.len(),
        2,
        "two followers beside the leader: {group:?}"
    );

    // And it serves: a message published through the hub is stored once.
    let seq = hub.publish("results.k8s-check", json!({"ok": true})).await;
    assert!(seq >= 1);
}
