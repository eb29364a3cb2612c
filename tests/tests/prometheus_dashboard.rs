//! The operators' dashboard and alerts against a real Prometheus (Debian's
//! `prometheus` package; `scripts/test` installs it):
//!
//! - `promtool check rules` passes on the rules of `k8s/monitoring/alerts.yaml`
//!   (the PrometheusRule's `spec`, which is a plain rules file);
//! - a fresh hub's `/metrics` has a sample of every family that the
//!   dashboard (`k8s/monitoring/grafana-dashboard.json`) and the alerts
//!   name, before any event: a `rate()` alert on a family that is not there
//!   yet stays silent;
//! - Prometheus scrapes two hubs on one nats-server while fans subscribe,
//!   react and receive; every PromQL expression of the dashboard (its
//!   variables set to "All") returns data through the HTTP API, every
//!   variable query finds its label, and every alert rule is loaded and
//!   evaluated without error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::NatsServer;
use tribune_tests::{Hub, WsClient, eventually};

const DASHBOARD: &str = include_str!("../../k8s/monitoring/grafana-dashboard.json");
const ALERTS: &str = include_str!("../../k8s/monitoring/alerts.yaml");

/// The rules file inside the PrometheusRule: everything under `spec:`,
/// de-indented (the manifest keeps it that way, see its header).
fn rules_file() -> String {
    let (head, spec) = ALERTS
        .split_once("\nspec:\n")
        .expect("alerts.yaml has a top-level spec");
    assert!(
        head.contains("kind: PrometheusRule")
            && head.contains("apiVersion: monitoring.coreos.com/v1"),
        "alerts.yaml is a PrometheusRule"
    );
    spec.lines()
        .map(|l| {
            assert!(
                l.is_empty() || l.starts_with("  "),
                "everything after spec: belongs to it: {l:?}"
            );
            l.get(2..).unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many alerts the manifest declares.
fn alert_count() -> usize {
    ALERTS
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count()
}

/// Every alert rule's expression, as written (one line each).
fn alert_exprs() -> Vec<String> {
    ALERTS
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr: "))
        .map(str::to_string)
        .collect()
}

/// `(panel title, expression)` of every target of every panel.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            out.push((
                panel["title"].as_str().unwrap_or("").to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

/// `(variable, metric selector, label)` of the dashboard's
/// `label_values(selector, label)` variables.
fn variable_queries() -> Vec<(String, String, String)> {
    let dash: Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut out = Vec::new();
    for var in dash["templating"]["list"].as_array().expect("variables") {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .expect("a query variable's query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: label_values(...) expected: {q}", var["name"]));
        let (selector, label) = inner
            .rsplit_once(", ")
            .expect("label_values(selector, label)");
        out.push((
            var["name"].as_str().unwrap().to_string(),
            selector.to_string(),
            label.to_string(),
        ));
    }
    out
}

/// The expression as Grafana sends it with every variable on "All".
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$namespace", ".*")
        .replace("$node", ".*")
}

/// The metric names an expression reads (`tribune_*`, `process_*`).
fn families(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("tribune_") || word.starts_with("process_") {
            out.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    out
}

fn every_expression() -> Vec<String> {
    dashboard_exprs()
        .into_iter()
        .map(|(_, e)| e)
        .chain(alert_exprs())
        .chain(variable_queries().into_iter().map(|(_, s, _)| s))
        .collect()
}

/// A Debian tool, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: `apt-get install prometheus` (scripts/test installs it)");
}

#[test]
fn the_files_hold_what_the_tests_read() {
    let dash = dashboard_exprs();
    assert!(dash.len() >= 30, "{} dashboard expressions", dash.len());
    assert_eq!(alert_exprs().len(), alert_count(), "one expr per alert");
    assert!(alert_count() >= 6, "alerts: {}", alert_count());
    let vars: Vec<String> = variable_queries().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(vars, ["namespace", "node"]);
    assert_eq!(
        families(
            r#"sum(rate(tribune_closes_total{code="4008", x="tribune_no"}[5m])) / process_open_fds"#
        ),
        ["tribune_closes_total", "process_open_fds"]
    );
    // Every alert has its runbook line in k8s/README.md.
    let readme = include_str!("../../k8s/README.md");
    for line in ALERTS.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert: ") {
            assert!(
                readme.contains(&format!("**{name}**")),
                "k8s/README.md has no runbook line for {name}"
            );
        }
    }
}

#[test]
fn promtool_accepts_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, rules_file()).unwrap();
    let out = std::process::Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules:\n{text}");
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", alert_count())),
        "{text}"
    );
}

#[tokio::test]
async fn a_fresh_hub_lists_every_family_the_dashboard_and_alerts_use() {
    let hub = Hub::start(&[]).await;
    let (status, text) = hub.get_internal("/metrics").await;
    assert_eq!(status, 200);
    let mut wanted: Vec<String> = every_expression()
        .iter()
        .flat_map(|e| families(e))
        .collect();
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 25, "{wanted:?}");
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| {
            !text.lines().any(|l| {
                l.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "no sample of {missing:?} in a fresh hub's /metrics:\n{text}"
    );
}

/// A Prometheus process on a free loopback port, killed on drop.
struct Prometheus {
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &[std::net::SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), rules_file()).unwrap();
        let targets: Vec<String> = targets.iter().map(|a| format!("'{a}'")).collect();
        // The `namespace` target label stands for the one Kubernetes service
        // discovery adds; the job is named as the ServiceMonitor's would be.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [rules.yml]\n\
             scrape_configs:\n  - job_name: tribune-hub\n    static_configs:\n      \
             - targets: [{}]\n        labels:\n          namespace: tribune\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("prometheus.log");
        let child = tokio::process::Command::new(tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus runs");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let ready = format!("{}/-/ready", p.url);
        let log = p.log.clone();
        eventually("prometheus is ready", Duration::from_secs(30), || {
            let (http, ready, log) = (http.clone(), ready.clone(), log.clone());
            async move {
                match http.get(&ready).send().await {
                    Ok(r) if r.status().is_success() => Some(()),
                    _ => {
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        assert!(!text.contains("level=error"), "prometheus:\n{text}");
                        None
                    }
                }
            }
        })
        .await;
        p
    }

    /// `GET /api/v1/<path>` with `params`; the `data` of a success.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let resp: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
            .expect("prometheus answers")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            resp["status"],
            "success",
            "{path} {params:?}: {resp}\n{}",
            self.tail()
        );
        resp["data"].clone()
    }

    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", expr)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Fans on a hub, subscribed to both topics before anything is published;
/// each then reads everything and reacts now and then.
async fn fans(hub: &Hub, n: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (mut c, _) = WsClient::connect(&hub.ws_url()).await;
        c.subscribe("results.ops.race", json!({})).await;
        c.subscribe("clips.ops.race", json!({})).await;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let got = c.try_recv(Duration::from_millis(100)).await.is_some();
                if got && i % 2 == 0 && sent < 20 {
                    sent += 1;
                    let id = c.id();
                    let frame =
                        json!({"type": "react", "id": id, "topic": "results.ops.race", "reaction": "🔥"});
                    c.send(frame).await;
                }
            }
        }));
    }
    tasks
}

#[tokio::test]
async fn prometheus_evaluates_every_dashboard_and_alert_expression_over_two_hubs() {
    let nats = NatsServer::start().await;
    let cfg =
        ConfigFile::new("[stats]\nwindow_ms = 500\n[limits]\nhandshakes_per_second = 10000\n");
    let mut hubs = Vec::new();
    for name in ["ops-a", "ops-b"] {
        hubs.push(Arc::new(
            Hub::start(&[
                "--nats",
                &nats.url(),
                "--config",
                cfg.path(),
                "--node-name",
                name,
            ])
            .await,
        ));
    }
    let prom = Prometheus::start(&[hubs[0].internal_addr(), hubs[1].internal_addr()]).await;

    // A small load: fans on both nodes, a message a topic every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = fans(&hubs[0], 5, stop.clone()).await;
    tasks.extend(fans(&hubs[1], 5, stop.clone()).await);
    let publisher = {
        let stop = stop.clone();
        let hub = hubs[0].clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                hub.publish("results.ops.race", json!({"lap": i})).await;
                hub.publish("clips.ops.race", json!({"clip": i})).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Both targets up, and enough scrapes for rate() over 10 s.
    eventually(
        "both hubs scraped five times",
        Duration::from_secs(60),
        || async {
            let r = prom
                .query(r#"count_over_time(up{job="tribune-hub"}[1m]) >= 5"#)
                .await;
            let up = prom.query(r#"up{job="tribune-hub"} == 1"#).await;
            (r.len() == 2 && up.len() == 2).then_some(())
        },
    )
    .await;
    eventually("messages were delivered and counted", Duration::from_secs(30), || async {
        let r = prom
            .query(r#"sum(increase(tribune_messages_delivered_total[10s])) > 0 and sum(increase(tribune_delivery_latency_seconds_count[10s])) > 0"#)
            .await;
        (!r.is_empty()).then_some(())
    })
    .await;

    let mut empty = Vec::new();
    for (title, expr) in dashboard_exprs() {
        let q = concrete(&expr);
        if prom.query(&q).await.is_empty() {
            empty.push(format!("{title}: {q}"));
        }
    }
    for (name, selector, label) in variable_queries() {
        let data = prom
            .api("series", &[("match[]", &concrete(&selector))])
            .await;
        let with_label = data
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s[label.as_str()].is_string())
            .count();
        if with_label < 2 {
            empty.push(format!(
                "variable {name}: {with_label} series of {selector} with {label}"
            ));
        }
    }
    assert!(empty.is_empty(), "no data for:\n{}", empty.join("\n"));

    // Every rule parses (a query error fails `api`) and the rule manager
    // has evaluated each one without error.
    for expr in alert_exprs() {
        prom.query(&expr).await;
    }
    let rules = eventually("every rule evaluated", Duration::from_secs(30), || async {
        let data = prom.api("rules", &[]).await;
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["health"] == "ok"
                && !r["lastEvaluation"]
                    .as_str()
                    .unwrap_or("0001")
                    .starts_with("0001")
        });
        (rules.len() == alert_count() && evaluated).then_some(rules)
    })
    .await;
    for rule in &rules {
        assert_eq!(rule["type"], "alerting", "{rule}");
        assert!(
            rule["lastError"].as_str().unwrap_or("").is_empty(),
            "{rule}"
        );
    }
    // A healthy cluster under a small load pages nobody.
    let firing: Vec<&Value> = rules.iter().filter(|r| r["state"] != "inactive").collect();
    assert!(firing.is_empty(), "alerts pending or firing: {firing:?}");

    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}
