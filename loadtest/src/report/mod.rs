//! The report of a run: what was measured, per target, and how the targets
//! compare; written as JSON (`report.json`), summarized on stderr, and
//! rendered as HTML by the `html` module. Scenarios fill it in; it knows
//! none of them. Files: this one, the report's types and the checks that
//! compare targets; `format`, figures as text; `summary`, the stderr summary.

mod format;
mod summary;

pub use format::{bare_version, fmt_counts, fmt_ratio, fmt_us, fmt_versions};
pub use summary::summary;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::account::Loss;
use crate::machine::Machine;
use crate::wire::Target;

/// Percentiles of a latency histogram, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pcts {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Pcts {
    pub fn of(h: &Histogram<u64>) -> Pcts {
        if h.is_empty() {
            return Pcts::default();
        }
        Pcts {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Latency at percentiles from 0 to 99.999, for the percentile chart.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for &p in &[
        0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
    ] {
        out.push((p, h.value_at_percentile(p)));
    }
    out
}

/// One server process's memory and CPU across the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcUsage {
    /// `hub`, `nats-server` or `workers`.
    pub role: String,
    pub name: String,
    pub pid: u32,
    /// Before any client connected.
    pub rss_kib_before: u64,
    /// Once every client was connected (and subscribed) and settled.
    pub rss_kib_connected: u64,
    pub rss_kib_end: u64,
    /// Peak RSS over the process's life (`VmHWM`).
    pub hwm_kib: u64,
    /// CPU seconds over the whole run.
    pub cpu_s_run: f64,
    /// CPU seconds while messages flowed (publication start to last delivery).
    pub cpu_s_traffic: f64,
}

/// One point per second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the workers started.
    pub t_s: f64,
    pub open: u64,
    pub deliveries: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// RSS of the measured server processes together.
    pub server_rss_kib: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub requested: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Successful connections, reconnections included.
    pub established: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// From the first attempt until every client was connected (or the timeout).
    pub connect_s: f64,
    pub rate_per_s: f64,
    /// TCP connect and websocket upgrade.
    pub handshake_us: Pcts,
    /// Upgrade done until the server's hello (`welcome`, NATS `PONG`).
    pub ready_us: Pcts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscribeReport {
    /// Subscriptions the clients asked for.
    pub expected: u64,
    /// Subscriptions confirmed at the end.
    pub confirmed: u64,
    pub latency_us: Pcts,
    /// storm: from the order until every subscription was confirmed.
    pub all_confirmed_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// Live messages received once.
    pub deliveries: u64,
    pub loss: Loss,
    /// Messages replayed by the hub (history, resume).
    pub replayed: u64,
    /// Live messages whose `prev` did not match the `seq` received before.
    pub prev_mismatch: u64,
    /// Deliveries per second from the first publication to the last delivery.
    pub per_s: f64,
    pub window_s: f64,
    pub latency_us: Pcts,
    pub percentiles: Vec<(f64, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeReport {
    pub action: String,
    pub node: usize,
    pub restarted: bool,
    /// Clients whose connection was on that node.
    pub affected: u64,
    pub resumed: u64,
    pub still_away: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    /// From the kill or SIGTERM until the last client was back.
    pub all_back_ms: Option<f64>,
    /// Per client: disconnect until all its subscriptions were confirmed.
    pub latency_us: Pcts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResourceReport {
    pub servers: Vec<ProcUsage>,
    /// The load generator's workers together.
    pub workers: ProcUsage,
    /// Server RSS growth per connected client, bytes (measured processes:
    /// the hubs for tribune, nats-server for nats-ws).
    pub rss_per_conn_bytes: Option<f64>,
    /// CPU of the measured processes per delivery while traffic flowed, µs.
    pub cpu_us_per_delivery: Option<f64>,
}

/// One hub node's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReactionsNode {
    pub node: usize,
    pub url: String,
    /// Reactors connected to this node.
    pub clients: u64,
    /// Reactions acked on this node, per kind.
    pub accepted_here: BTreeMap<String, u64>,
    /// Sum of the `reactions` of every `stats` frame its watcher received.
    pub stats_sum: BTreeMap<String, u64>,
    /// `stats_sum` equals the reactions accepted on all nodes, per kind.
    pub equal: bool,
    pub stats_frames: u64,
    /// The `audience` of the last and the largest `stats` frame.
    pub audience_last: u64,
    pub audience_max: u64,
    /// The `window_ms` the frames carried (0: no frame).
    pub window_ms: u64,
    /// Hub CPU from the first react until the sums settled.
    pub cpu_s: Option<f64>,
    pub cpu_ms_per_window: Option<f64>,
}

/// The `reactions` scenario's part of a run's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReactionsReport {
    pub topic: String,
    /// Reactions per second asked of each client.
    pub per_client_rate: f64,
    pub sent: u64,
    /// Acked reactions on all nodes, per kind.
    pub accepted: BTreeMap<String, u64>,
    pub accepted_total: u64,
    pub rate_limited: u64,
    /// Other `error` answers, by code.
    pub errors: BTreeMap<String, u64>,
    /// Reacts that got no answer before the client stopped waiting.
    pub unanswered: u64,
    pub nodes: Vec<ReactionsNode>,
    /// Every node's summed windows equal the accepted reactions.
    pub all_equal: bool,
    /// From the last react until the sums stopped changing, seconds.
    pub settle_s: f64,
}

/// One target's run of the scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    pub target: Option<Target>,
    /// `nats` or `embedded` (tribune target).
    pub bus: Option<String>,
    pub urls: Vec<String>,
    pub topics: u32,
    pub per_client: u32,
    pub connect: ConnectReport,
    pub subscribe: SubscribeReport,
    pub publish: Option<crate::publisher::Published>,
    pub delivery: DeliveryReport,
    pub closes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub churned: u64,
    pub resume: Option<ResumeReport>,
    #[serde(default)]
    pub reactions: Option<ReactionsReport>,
    pub resources: ResourceReport,
    pub timeline: Vec<TimelinePoint>,
    pub duration_s: f64,
    /// What went wrong, in words.
    pub problems: Vec<String>,
}

/// Share of the offered deliveries/s at which a target counts as having kept
/// up: its deliveries/s then measure the publisher's rate, not the server.
/// A server that keeps up still falls a little short, by its latency after
/// the last publication over the length of the run.
pub const AT_OFFERED_RATE: f64 = 0.9;

impl RunReport {
    pub fn target_name(&self) -> &'static str {
        self.target.map_or("?", Target::as_str)
    }

    /// Deliveries per second the publisher offered this target: every
    /// delivery owed to a subscriber (received or lost) over the time the
    /// publications took.
    pub fn offered_per_s(&self) -> Option<f64> {
        let p = self.publish.as_ref()?;
        let window_s = p.ended_us.checked_sub(p.started_us)? as f64 / 1e6;
        let owed = self.delivery.deliveries + self.delivery.loss.lost;
        (window_s > 0.0 && owed > 0).then(|| owed as f64 / window_s)
    }

    /// Whether the target delivered as fast as it was offered: then its
    /// deliveries/s are the offered rate, and how much more it could carry
    /// was not measured.
    pub fn at_offered_rate(&self) -> bool {
        self.offered_per_s()
            .is_some_and(|o| self.delivery.per_s >= AT_OFFERED_RATE * o)
    }
}

/// One benchmark target of the issue, checked on this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub measured: String,
    pub target: String,
    /// Met. Meaningless when `not_applicable` is set.
    pub ok: bool,
    /// Why this run cannot judge the target (e.g. the offered rate capped
    /// the throughput compared); absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<String>,
}

impl Check {
    /// `ok`, `MISS` or `n/a`, as every rendering shows it.
    pub fn verdict(&self) -> &'static str {
        match (&self.not_applicable, self.ok) {
            (Some(_), _) => "n/a",
            (None, true) => "ok",
            (None, false) => "MISS",
        }
    }
}

/// Tribune against nats-server, side by side in one invocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Comparison {
    /// tribune / nats-ws deliveries per second.
    pub deliveries_per_s_ratio: Option<f64>,
    /// tribune / nats-ws latency percentiles.
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    /// tribune / nats-ws server RSS per connection.
    pub rss_per_conn_ratio: Option<f64>,
    /// tribune / nats-ws server CPU per delivery.
    pub cpu_per_delivery_ratio: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub started_at_unix_s: u64,
    pub command: Vec<String>,
    pub scenario: String,
    pub params: serde_json::Value,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub runs: Vec<RunReport>,
    pub comparison: Option<Comparison>,
    pub checks: Vec<Check>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

impl Report {
    pub fn run(&self, target: Target) -> Option<&RunReport> {
        self.runs.iter().find(|r| r.target == Some(target))
    }

    /// Fills `comparison` and `checks` from the runs.
    pub fn compare(&mut self) {
        let hub = self.run(Target::Tribune).cloned();
        let peer = self.run(Target::NatsWs).cloned();
        let mut checks = Vec::new();
        if let (Some(h), Some(p)) = (&hub, &peer) {
            let c = Comparison {
                deliveries_per_s_ratio: ratio(h.delivery.per_s, p.delivery.per_s),
                p50_ratio: ratio(
                    h.delivery.latency_us.p50 as f64,
                    p.delivery.latency_us.p50 as f64,
                ),
                p99_ratio: ratio(
                    h.delivery.latency_us.p99 as f64,
                    p.delivery.latency_us.p99 as f64,
                ),
                rss_per_conn_ratio: ratio(
                    h.resources.rss_per_conn_bytes.unwrap_or(0.0),
                    p.resources.rss_per_conn_bytes.unwrap_or(0.0),
                ),
                cpu_per_delivery_ratio: ratio(
                    h.resources.cpu_us_per_delivery.unwrap_or(0.0),
                    p.resources.cpu_us_per_delivery.unwrap_or(0.0),
                ),
            };
            match self.scenario.as_str() {
                "fanout" => {
                    checks.push(throughput_check(h, c.deliveries_per_s_ratio));
                    checks.push(p99_check(h, p));
                }
                "topics" => checks.push(p99_check(h, p)),
                _ => {}
            }
            self.comparison = Some(c);
        }
        if let Some(h) = &hub {
            if self.scenario == "idle"
                && let Some(b) = h.resources.rss_per_conn_bytes
            {
                checks.push(Check {
                    name: format!(
                        "hub RSS per idle connection at {} connections",
                        h.connect.peak_open
                    ),
                    measured: format!("{:.0} B", b),
                    target: "≤ 4096 B".into(),
                    ok: b <= 4096.0,
                    not_applicable: None,
                });
            }
            if let Some(r) = &h.reactions {
                let off = r.nodes.iter().filter(|n| !n.equal).count();
                checks.push(Check {
                    name: "reactions: every node's summed stats equal the accepted".into(),
                    measured: format!(
                        "{} accepted, {} of {} node(s) differ",
                        r.accepted_total,
                        off,
                        r.nodes.len()
                    ),
                    target: "0 differ".into(),
                    ok: r.all_equal,
                    not_applicable: None,
                });
            }
            if self.scenario != "idle" && self.scenario != "reactions" {
                let l = &h.delivery.loss;
                checks.push(Check {
                    name: "hub: lost / duplicated messages".into(),
                    measured: format!("{} / {}", l.lost, l.duplicated),
                    target: "0 / 0".into(),
                    ok: l.lost == 0 && l.duplicated == 0,
                    not_applicable: None,
                });
            }
            if let Some(r) = &h.resume {
                checks.push(Check {
                    name: "resume: every client back".into(),
                    measured: format!(
                        "{} of {} back, {} recovered",
                        r.resumed, r.affected, r.recovered
                    ),
                    target: "all, recovered".into(),
                    ok: r.still_away == 0 && r.resumed >= r.affected && r.not_recovered == 0,
                    not_applicable: None,
                });
            }
        }
        self.checks = checks;
    }
}

/// The fan-out throughput target: the hub delivers at least 1.5 times what
/// nats-server's websocket listener does. When the hub delivered everything
/// it was offered and the ratio falls short, the publisher's rate capped the
/// hub: the ratio is a lower bound, and this run cannot say whether the
/// target is missed.
fn throughput_check(h: &RunReport, ratio: Option<f64>) -> Check {
    const TARGET: f64 = 1.5;
    let ok = ratio.is_some_and(|r| r >= TARGET);
    let not_applicable = match h.offered_per_s() {
        Some(offered) if !ok && h.at_offered_rate() => Some(format!(
            "the hub delivered all it was offered ({offered:.0}/s): the publication rate, not the server, set the pace; raise --rate"
        )),
        _ => None,
    };
    Check {
        name: "fan-out deliveries/s, hub ÷ nats-server ws".into(),
        measured: fmt_ratio(ratio),
        target: format!("≥ {TARGET}×"),
        ok,
        not_applicable,
    }
}

fn p99_check(h: &RunReport, p: &RunReport) -> Check {
    Check {
        name: "delivery p99, hub vs nats-server ws".into(),
        measured: format!(
            "{} vs {}",
            fmt_us(h.delivery.latency_us.p99),
            fmt_us(p.delivery.latency_us.p99)
        ),
        target: "hub ≤ nats-server".into(),
        ok: h.delivery.latency_us.count > 0
            && h.delivery.latency_us.p99 <= p.delivery.latency_us.p99,
        not_applicable: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: Target, per_s: f64, p99: u64) -> RunReport {
        let mut r = RunReport {
            target: Some(target),
            ..RunReport::default()
        };
        r.delivery.per_s = per_s;
        r.delivery.latency_us = Pcts {
            count: 10,
            p50: p99 / 2,
            p99,
            ..Pcts::default()
        };
        r
    }

    #[test]
    fn compares_side_by_side_and_checks_targets() {
        let mut rep = Report {
            scenario: "fanout".into(),
            runs: vec![
                run(Target::Tribune, 300.0, 900),
                run(Target::NatsWs, 100.0, 1000),
            ],
            ..Report::default()
        };
        rep.compare();
        let c = rep.comparison.as_ref().unwrap();
        assert_eq!(c.deliveries_per_s_ratio, Some(3.0));
        assert_eq!(c.p99_ratio, Some(0.9));
        assert!(rep.checks.iter().all(|c| c.ok), "{:?}", rep.checks);
        rep.runs[0].delivery.loss.lost = 1;
        rep.runs[0].delivery.per_s = 120.0;
        rep.compare();
        assert_eq!(
            rep.checks.iter().filter(|c| !c.ok).count(),
            2,
            "{:?}",
            rep.checks
        );
        assert!(summary(&rep).contains("MISS"));
    }

    /// A run that was offered `offered` deliveries/s for 10 s and delivered at `per_s`.
    fn offered(target: Target, offered: f64, per_s: f64) -> RunReport {
        let mut r = run(target, per_s, 1000);
        r.publish = Some(crate::publisher::Published {
            started_us: 1_000_000,
            ended_us: 11_000_000,
            ..Default::default()
        });
        r.delivery.deliveries = (offered * 10.0) as u64;
        r
    }

    fn throughput(rep: &Report) -> &Check {
        rep.checks
            .iter()
            .find(|c| c.name.starts_with("fan-out deliveries/s"))
            .expect("the throughput check")
    }

    #[test]
    fn a_throughput_target_capped_by_the_offered_rate_is_not_applicable() {
        // 50 msg/s to 200 clients: 10,000 deliveries/s offered; both servers
        // carried all of it (a little under, the tail after the last publication).
        let mut rep = Report {
            scenario: "fanout".into(),
            runs: vec![
                offered(Target::Tribune, 10_000.0, 9_950.0),
                offered(Target::NatsWs, 10_000.0, 9_940.0),
            ],
            ..Report::default()
        };
        rep.compare();
        let c = throughput(&rep);
        assert_eq!(c.measured, "1.00×");
        assert_eq!(c.verdict(), "n/a", "{c:?}");
        assert!(
            c.not_applicable.as_ref().unwrap().contains("10000/s"),
            "{c:?}"
        );
        let text = summary(&rep);
        assert!(
            text.contains(
                "[n/a] fan-out deliveries/s, hub ÷ nats-server ws: 1.00× (target ≥ 1.5×)"
            ),
            "{text}"
        );
        assert!(!text.contains("MISS] fan-out"), "{text}");

        // The hub fell behind what it was offered: the ratio is a measurement.
        rep.runs[0] = offered(Target::Tribune, 10_000.0, 7_000.0);
        rep.runs[1] = offered(Target::NatsWs, 10_000.0, 7_000.0);
        rep.compare();
        assert_eq!(throughput(&rep).verdict(), "MISS");

        // Capped, yet already past the target: met, whatever more it could do.
        rep.runs[0] = offered(Target::Tribune, 10_000.0, 9_950.0);
        rep.runs[1] = offered(Target::NatsWs, 10_000.0, 4_000.0);
        rep.compare();
        assert_eq!(throughput(&rep).verdict(), "ok");

        // Lost messages count as offered: a hub that dropped a third did not keep up.
        let mut lossy = offered(Target::Tribune, 10_000.0, 6_600.0);
        lossy.delivery.deliveries = 66_000;
        lossy.delivery.loss.lost = 34_000;
        assert!(!lossy.at_offered_rate());
    }

    #[test]
    fn counts_and_versions_read_as_text() {
        assert_eq!(fmt_counts(&BTreeMap::new()), "none");
        let closes = BTreeMap::from([("1006".to_string(), 3), ("4008".to_string(), 1)]);
        assert_eq!(fmt_counts(&closes), "1006: 3, 4008: 1");

        assert_eq!(
            bare_version("nats-server", "nats-server: v2.15.1\n"),
            "v2.15.1"
        );
        assert_eq!(bare_version("tribune-hub", "tribune-hub 0.1.0"), "0.1.0");
        assert_eq!(bare_version("nats-server", "v2.15.1"), "v2.15.1");
        assert_eq!(
            bare_version("nats-server", "nats-server-x 1"),
            "nats-server-x 1"
        );
        let versions = BTreeMap::from([
            (
                "nats-server".to_string(),
                "nats-server: v2.15.1".to_string(),
            ),
            ("tribune-loadtest".to_string(), "0.1.0".to_string()),
        ]);
        assert_eq!(
            fmt_versions(&versions),
            "nats-server v2.15.1, tribune-loadtest 0.1.0"
        );
    }

    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = crate::wire::new_hist();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let p = Pcts::of(&h);
        assert_eq!(p.count, 1000);
        assert!((495..=505).contains(&p.p50));
        assert!((985..=995).contains(&p.p99));
        assert_eq!(p.max, 1000);
        assert_eq!(percentile_curve(&h).last().unwrap().1, 1000);
        assert_eq!(Pcts::of(&crate::wire::new_hist()), Pcts::default());
        assert_eq!(fmt_us(999), "999 µs");
        assert_eq!(fmt_us(1500), "1.5 ms");
    }
}
