//! `tribune-loadtest markdown`: turns the JSON reports of a benchmark
//! session (scripts/bench) into `BENCHMARKS.md`: one table of figures with
//! the hub and nats-server side by side and their ratio, the targets and
//! whether they were met, the machine, the versions and the exact commands.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::report::{Report, RunReport, fmt_counts, fmt_ratio, fmt_us, fmt_versions};
use crate::wire::Target;

/// The arguments of `tribune-loadtest markdown`.
#[derive(Debug, Clone, Args)]
pub struct MarkdownArgs {
    /// The Markdown file to write (BENCHMARKS.md).
    #[arg(long)]
    pub out: PathBuf,
    /// Markdown appended at the end (loadtest/BENCH_NOTES.md); a missing file adds nothing.
    #[arg(long)]
    pub notes: Option<PathBuf>,
    /// The page's title.
    #[arg(long, default_value = "Benchmarks")]
    pub title: String,
    /// The report.json files of the runs, in the order of the tables.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

/// Entry point: reads the reports and writes the page.
pub fn main(args: &MarkdownArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for p in &args.reports {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let r: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        reports.push(r);
    }
    let notes = match &args.notes {
        Some(p) if p.exists() => std::fs::read_to_string(p)?,
        _ => String::new(),
    };
    std::fs::write(&args.out, render(&args.title, &reports, &notes))
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

fn hub_and_peer(r: &Report) -> (Option<&RunReport>, Option<&RunReport>) {
    (r.run(Target::Tribune), r.run(Target::NatsWs))
}

fn cell<T>(run: Option<&RunReport>, f: impl Fn(&RunReport) -> T) -> String
where
    T: std::fmt::Display,
{
    run.map_or("–".into(), |r| f(r).to_string())
}

fn ratio(h: Option<f64>, p: Option<f64>) -> String {
    match (h, p) {
        (Some(h), Some(p)) if h > 0.0 && p > 0.0 => fmt_ratio(Some(h / p)),
        _ => "–".into(),
    }
}

/// Short label of a report: scenario, clients and hub nodes.
fn label(r: &Report) -> String {
    let clients = r.params["clients"].as_u64().unwrap_or(0);
    let hubs = r.params["hubs"].as_u64().unwrap_or(1);
    let mut s = format!("{} · {} clients", r.scenario, group(clients));
    if hubs > 1 {
        s.push_str(&format!(" · {hubs} hub nodes"));
    }
    match r.scenario.as_str() {
        "fanout" | "topics" | "churn" | "storm" | "resume" => {
            let topics = r.runs.first().map_or(0, |x| x.topics);
            let per = r.runs.first().map_or(0, |x| x.per_client);
            s.push_str(&format!(
                " · {} msgs/s of {} B",
                r.params["rate"].as_f64().unwrap_or(0.0),
                r.params["payload_size"].as_u64().unwrap_or(0)
            ));
            if topics > 1 {
                s.push_str(&format!(" · {per} of {topics} topics"));
            }
        }
        _ => {}
    }
    s
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn render(title: &str, reports: &[Report], notes: &str) -> String {
    let mut md = format!("# {title}\n\n");
    md.push_str(
        "Written by `scripts/bench` from the JSON reports of `tribune-loadtest` (do not edit by hand; \
         the notes at the end come from `loadtest/BENCH_NOTES.md`). Each comparison runs the same \
         scenario with the same client, first against the hub (`--nats`, on the nats-server below), \
         then against nats-server's own websocket listener, one after the other in one invocation: \
         **read the ratios, not the absolute figures**.\n\n",
    );
    if let Some(first) = reports.first() {
        let m = &first.machine;
        let _ = writeln!(
            md,
            "Machine: {} CPUs ({}), {} MiB, kernel {}. Versions: {}.\n",
            m.nproc,
            m.cpu_model,
            m.mem_total_kib / 1024,
            m.kernel,
            fmt_versions(&first.versions)
        );
        let loads: Vec<String> = reports
            .iter()
            .map(|r| format!("{} {}", r.scenario, r.machine.loadavg_at_start))
            .collect();
        let _ = writeln!(
            md,
            "Load averages (1/5/15 min) when each run started: {}. The machine has 2 cores shared \
             with other work: server, publisher and clients compete for them, so absolute figures \
             are pessimistic and noisy; side-by-side ratios are what to compare.\n",
            loads.join("; ")
        );
    }

    md.push_str("## Targets\n\n| check | run | measured | target | met |\n|---|---|---|---|---|\n");
    for r in reports {
        for c in &r.checks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                c.name,
                label(r),
                c.measured,
                c.target,
                match c.verdict() {
                    "ok" => "yes".to_string(),
                    "n/a" => format!("n/a: {}", c.not_applicable.as_deref().unwrap_or("")),
                    _ => "**no**".to_string(),
                }
            );
        }
    }

    md.push_str("\n## Figures\n\n| run | figure | hub | nats-server ws | hub ÷ nats |\n|---|---|---|---|---|\n");
    for r in reports {
        let (h, p) = hub_and_peer(r);
        let name = label(r);
        let mut row = |figure: &str, hv: String, pv: String, rt: String| {
            let _ = writeln!(md, "| {name} | {figure} | {hv} | {pv} | {rt} |");
        };
        row(
            "clients connected / requested",
            cell(h, |x| {
                format!("{} / {}", x.connect.peak_open, x.connect.requested)
            }),
            cell(p, |x| {
                format!("{} / {}", x.connect.peak_open, x.connect.requested)
            }),
            "".into(),
        );
        row(
            "connect rate (failed attempts)",
            cell(h, |x| {
                format!("{:.0}/s ({})", x.connect.rate_per_s, x.connect.failed)
            }),
            cell(p, |x| {
                format!("{:.0}/s ({})", x.connect.rate_per_s, x.connect.failed)
            }),
            "".into(),
        );
        row(
            "handshake p99",
            cell(h, |x| fmt_us(x.connect.handshake_us.p99)),
            cell(p, |x| fmt_us(x.connect.handshake_us.p99)),
            ratio(
                h.map(|x| x.connect.handshake_us.p99 as f64),
                p.map(|x| x.connect.handshake_us.p99 as f64),
            ),
        );
        row(
            "server RSS per connection",
            cell(h, |x| {
                x.resources
                    .rss_per_conn_bytes
                    .map_or("–".into(), |b| format!("{b:.0} B"))
            }),
            cell(p, |x| {
                x.resources
                    .rss_per_conn_bytes
                    .map_or("–".into(), |b| format!("{b:.0} B"))
            }),
            ratio(
                h.and_then(|x| x.resources.rss_per_conn_bytes),
                p.and_then(|x| x.resources.rss_per_conn_bytes),
            ),
        );
        if r.scenario == "idle" {
            continue;
        }
        row(
            "deliveries/s",
            cell(h, |x| format!("{:.0}", x.delivery.per_s)),
            cell(p, |x| format!("{:.0}", x.delivery.per_s)),
            ratio(h.map(|x| x.delivery.per_s), p.map(|x| x.delivery.per_s)),
        );
        row(
            "latency p50 / p90 / p99 / p99.9 / max",
            cell(h, lat),
            cell(p, lat),
            ratio(
                h.map(|x| x.delivery.latency_us.p99 as f64),
                p.map(|x| x.delivery.latency_us.p99 as f64),
            ) + " (p99)",
        );
        row(
            "lost / duplicated",
            cell(h, |x| {
                format!("{} / {}", x.delivery.loss.lost, x.delivery.loss.duplicated)
            }),
            cell(p, |x| {
                format!("{} / {}", x.delivery.loss.lost, x.delivery.loss.duplicated)
            }),
            "".into(),
        );
        row(
            "server CPU per delivery",
            cell(h, |x| {
                x.resources
                    .cpu_us_per_delivery
                    .map_or("–".into(), |c| format!("{c:.2} µs"))
            }),
            cell(p, |x| {
                x.resources
                    .cpu_us_per_delivery
                    .map_or("–".into(), |c| format!("{c:.2} µs"))
            }),
            ratio(
                h.and_then(|x| x.resources.cpu_us_per_delivery),
                p.and_then(|x| x.resources.cpu_us_per_delivery),
            ),
        );
        row(
            "closes by the server",
            cell(h, |x| fmt_counts(&x.closes)),
            cell(p, |x| fmt_counts(&x.closes)),
            "".into(),
        );
        if let Some(rs) = h.and_then(|x| x.resume.as_ref()) {
            row(
                "resume",
                format!(
                    "{} node {}: {}/{} back, all within {}, recovered {} (not {}), per-client p99 {}",
                    rs.action,
                    rs.node,
                    rs.resumed,
                    rs.affected,
                    rs.all_back_ms
                        .map_or("n/a".into(), |m| format!("{m:.0} ms")),
                    rs.recovered,
                    rs.not_recovered,
                    fmt_us(rs.latency_us.p99)
                ),
                "–".into(),
                "".into(),
            );
        }
        if let Some(s) = h.and_then(|x| x.subscribe.all_confirmed_s) {
            row(
                "all subscribed after the order",
                format!("{s:.2} s"),
                cell(p, |x| {
                    x.subscribe
                        .all_confirmed_s
                        .map_or("–".into(), |s| format!("{s:.2} s"))
                }),
                "".into(),
            );
        }
        for x in r.runs.iter() {
            for problem in &x.problems {
                let _ = writeln!(
                    md,
                    "| {name} | problem ({}) | {problem} | | |",
                    x.target_name()
                );
            }
        }
    }

    md.push_str("\n## Commands\n\n```sh\n");
    for r in reports {
        let _ = writeln!(md, "{}", shell_line(&r.command));
    }
    md.push_str("```\n");
    if !notes.trim().is_empty() {
        md.push('\n');
        md.push_str(notes.trim_end());
        md.push('\n');
    }
    md
}

fn lat(x: &RunReport) -> String {
    let l = &x.delivery.latency_us;
    format!(
        "{} / {} / {} / {} / {}",
        fmt_us(l.p50),
        fmt_us(l.p90),
        fmt_us(l.p99),
        fmt_us(l.p999),
        fmt_us(l.max)
    )
}

/// The command line as one could paste it (program name shortened).
fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 {
                "tribune-loadtest".to_string()
            } else if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_targets_figures_and_commands() {
        let mut h = RunReport {
            target: Some(Target::Tribune),
            ..RunReport::default()
        };
        h.delivery.per_s = 300.0;
        let mut p = RunReport {
            target: Some(Target::NatsWs),
            ..RunReport::default()
        };
        p.delivery.per_s = 100.0;
        let mut rep = Report {
            scenario: "fanout".into(),
            command: vec![
                "/x/tribune-loadtest".into(),
                "fanout".into(),
                "-n".into(),
                "19000".into(),
            ],
            params: serde_json::json!({"clients": 19000, "hubs": 1, "rate": 20.0, "payload_size": 200}),
            runs: vec![h, p],
            ..Report::default()
        };
        rep.compare();
        let md = render("Benchmarks", &[rep], "## Notes\nhello");
        assert!(md.contains("| fanout · 19,000 clients"), "{md}");
        assert!(md.contains("3.00×"));
        assert!(md.contains("tribune-loadtest fanout -n 19000"));
        assert!(md.ends_with("## Notes\nhello\n"));
        assert_eq!(group(76000), "76,000");
    }

    #[test]
    fn cells_versions_and_not_applicable_targets_read_as_text() {
        let mut h = RunReport {
            target: Some(Target::Tribune),
            ..RunReport::default()
        };
        h.closes.insert("1006".into(), 2);
        let p = RunReport {
            target: Some(Target::NatsWs),
            ..RunReport::default()
        };
        let rep = Report {
            scenario: "fanout".into(),
            params: serde_json::json!({"clients": 200, "hubs": 1, "rate": 50.0, "payload_size": 200}),
            versions: std::collections::BTreeMap::from([(
                "nats-server".to_string(),
                "nats-server: v2.15.1".to_string(),
            )]),
            checks: vec![crate::report::Check {
                name: "fan-out deliveries/s, hub ÷ nats-server ws".into(),
                measured: "1.00×".into(),
                target: "≥ 1.5×".into(),
                ok: false,
                not_applicable: Some("the offered rate capped it".into()),
            }],
            runs: vec![h, p],
            ..Report::default()
        };
        let md = render("Benchmarks", &[rep], "");
        assert!(!md.contains("{}"), "{md}");
        assert!(
            md.contains("| closes by the server | 1006: 2 | none |"),
            "{md}"
        );
        assert!(md.contains("Versions: nats-server v2.15.1."), "{md}");
        assert!(
            md.contains("| 1.00× | ≥ 1.5× | n/a: the offered rate capped it |"),
            "{md}"
        );
        assert!(!md.contains("**no**"), "{md}");
    }
}
