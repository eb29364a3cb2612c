//! The HTML report: one self-contained page (inline CSS and SVG, no
//! script, nothing fetched) with the figures of every target side by side,
//! latency over time, the latency percentile distribution, deliveries per
//! second and server memory over time.

mod chart;
mod escape;

pub use escape::esc;

use chart::{COLORS, Chart, Scale, Series, count_label, mib_label, nines, svg_chart, us_label};

use crate::report::{Report, RunReport, fmt_counts, fmt_ratio, fmt_us, fmt_versions};

fn kib(v: u64) -> String {
    if v == 0 {
        "-".into()
    } else {
        format!("{v} KiB")
    }
}

fn row(cells: &[String]) -> String {
    format!(
        "<tr>{}</tr>",
        cells
            .iter()
            .map(|c| format!("<td>{c}</td>"))
            .collect::<String>()
    )
}

/// How one row of the figures table reads a run.
type Cell = Box<dyn Fn(&RunReport) -> String>;

fn run_rows(runs: &[RunReport]) -> String {
    let mut rows: Vec<(&str, Cell)> = vec![
        (
            "clients connected (peak) / requested",
            Box::new(|r| format!("{} / {}", r.connect.peak_open, r.connect.requested)),
        ),
        (
            "connect rate",
            Box::new(|r| {
                format!(
                    "{:.0}/s in {:.1} s",
                    r.connect.rate_per_s, r.connect.connect_s
                )
            }),
        ),
        (
            "failed attempts",
            Box::new(|r| {
                if r.connect.failures.is_empty() {
                    r.connect.failed.to_string()
                } else {
                    format!("{} ({})", r.connect.failed, fmt_counts(&r.connect.failures))
                }
            }),
        ),
        (
            "handshake p50 / p99 / max",
            Box::new(|r| {
                let h = &r.connect.handshake_us;
                format!("{} / {} / {}", fmt_us(h.p50), fmt_us(h.p99), fmt_us(h.max))
            }),
        ),
        (
            "subscriptions confirmed / expected",
            Box::new(|r| format!("{} / {}", r.subscribe.confirmed, r.subscribe.expected)),
        ),
        (
            "subscribe p50 / p99",
            Box::new(|r| {
                format!(
                    "{} / {}",
                    fmt_us(r.subscribe.latency_us.p50),
                    fmt_us(r.subscribe.latency_us.p99)
                )
            }),
        ),
        (
            "published (acked, errors)",
            Box::new(|r| {
                r.publish.as_ref().map_or("-".into(), |p| {
                    format!("{} ({}, {}) at {:.0}/s", p.sent, p.acked, p.errors, p.rate)
                })
            }),
        ),
        (
            "deliveries",
            Box::new(|r| r.delivery.deliveries.to_string()),
        ),
        (
            "deliveries/s",
            Box::new(|r| format!("{:.0}", r.delivery.per_s)),
        ),
        (
            "latency p50 / p90 / p99 / p99.9 / max",
            Box::new(|r| {
                let l = &r.delivery.latency_us;
                format!(
                    "{} / {} / {} / {} / {}",
                    fmt_us(l.p50),
                    fmt_us(l.p90),
                    fmt_us(l.p99),
                    fmt_us(l.p999),
                    fmt_us(l.max)
                )
            }),
        ),
        (
            "lost / duplicated / gaps",
            Box::new(|r| {
                let l = &r.delivery.loss;
                format!("{} / {} / {}", l.lost, l.duplicated, l.gaps)
            }),
        ),
        (
            "replayed / prev mismatches",
            Box::new(|r| format!("{} / {}", r.delivery.replayed, r.delivery.prev_mismatch)),
        ),
        (
            "server RSS per connection",
            Box::new(|r| {
                r.resources
                    .rss_per_conn_bytes
                    .map_or("-".into(), |b| format!("{b:.0} B"))
            }),
        ),
        (
            "server CPU per delivery",
            Box::new(|r| {
                r.resources
                    .cpu_us_per_delivery
                    .map_or("-".into(), |c| format!("{c:.2} µs"))
            }),
        ),
        ("closes", Box::new(|r| fmt_counts(&r.closes))),
        ("errors", Box::new(|r| fmt_counts(&r.errors))),
    ];
    rows.push((
        "resume",
        Box::new(|r| {
            r.resume.as_ref().map_or("-".into(), |x| {
                format!(
                    "{} node {}: {}/{} back, all in {}, recovered {}, not {}, p99 {}",
                    x.action,
                    x.node,
                    x.resumed,
                    x.affected,
                    x.all_back_ms.map_or("n/a".into(), |m| format!("{m:.0} ms")),
                    x.recovered,
                    x.not_recovered,
                    fmt_us(x.latency_us.p99)
                )
            })
        }),
    ));
    rows.iter()
        .map(|(name, f)| {
            let mut cells = vec![esc(name)];
            cells.extend(runs.iter().map(|r| esc(&f(r))));
            row(&cells)
        })
        .collect()
}

/// Renders the whole report.
pub fn render(report: &Report) -> String {
    let mut body = String::new();
    body.push_str(&format!(
        "<h1>tribune-loadtest: {}</h1><p class=\"m\">{} · {} · {} CPUs ({}) · {} MiB · kernel {} · load at start {}</p>",
        esc(&report.scenario),
        esc(&report.tool),
        esc(&fmt_versions(&report.versions)),
        report.machine.nproc,
        esc(&report.machine.cpu_model),
        report.machine.mem_total_kib / 1024,
        esc(&report.machine.kernel),
        esc(&report.machine.loadavg_at_start),
    ));
    body.push_str(&format!(
        "<p class=\"m\"><code>{}</code></p>",
        esc(&report.command.join(" "))
    ));

    if !report.checks.is_empty() {
        body.push_str("<h2>Targets</h2><table><tr><th>check</th><th>measured</th><th>target</th><th></th></tr>");
        for c in &report.checks {
            let class = match c.verdict() {
                "ok" => "ok",
                "n/a" => "na",
                _ => "miss",
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\"{}>{}</td></tr>",
                esc(&c.name),
                esc(&c.measured),
                esc(&c.target),
                c.not_applicable
                    .as_ref()
                    .map_or(String::new(), |why| format!(" title=\"{}\"", esc(why))),
                esc(c.verdict())
            ));
        }
        for c in &report.checks {
            if let Some(why) = &c.not_applicable {
                body.push_str(&format!(
                    "<p class=\"m\">{} n/a: {}</p>",
                    esc(&c.name),
                    esc(why)
                ));
            }
        }
        body.push_str("</table>");
    }
    if let Some(c) = &report.comparison {
        body.push_str("<h2>tribune ÷ nats-server (same run, same client)</h2><table>");
        for (name, v) in [
            ("deliveries/s", c.deliveries_per_s_ratio),
            ("latency p50", c.p50_ratio),
            ("latency p99", c.p99_ratio),
            ("server RSS per connection", c.rss_per_conn_ratio),
            ("server CPU per delivery", c.cpu_per_delivery_ratio),
        ] {
            body.push_str(&row(&[esc(name), esc(&fmt_ratio(v))]));
        }
        body.push_str("</table>");
    }

    body.push_str("<h2>Figures</h2><table><tr><th></th>");
    for r in &report.runs {
        body.push_str(&format!("<th>{}</th>", esc(r.target_name())));
    }
    body.push_str("</tr>");
    body.push_str(&run_rows(&report.runs));
    body.push_str("</table>");
    for r in &report.runs {
        for p in &r.problems {
            body.push_str(&format!(
                "<p class=\"miss\">{}: {}</p>",
                esc(r.target_name()),
                esc(p)
            ));
        }
    }

    // Charts.
    let mut lat = Vec::new();
    let mut rate = Vec::new();
    let mut rss = Vec::new();
    let mut pct = Vec::new();
    for (i, r) in report.runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let name = r.target_name();
        let live: Vec<_> = r.timeline.iter().filter(|p| p.deliveries > 0).collect();
        lat.push(Series {
            name: format!("{name} p50"),
            color,
            dashed: true,
            points: live.iter().map(|p| (p.t_s, p.p50_us as f64)).collect(),
        });
        lat.push(Series {
            name: format!("{name} p99"),
            color,
            dashed: false,
            points: live.iter().map(|p| (p.t_s, p.p99_us as f64)).collect(),
        });
        rate.push(Series {
            name: format!("{name} deliveries/s"),
            color,
            dashed: false,
            points: r
                .timeline
                .iter()
                .map(|p| (p.t_s, p.deliveries as f64))
                .collect(),
        });
        rss.push(Series {
            name: format!("{name} server RSS"),
            color,
            dashed: false,
            points: r
                .timeline
                .iter()
                .filter(|p| p.server_rss_kib > 0)
                .map(|p| (p.t_s, p.server_rss_kib as f64))
                .collect(),
        });
        pct.push(Series {
            name: name.to_string(),
            color,
            dashed: false,
            points: r
                .delivery
                .percentiles
                .iter()
                .map(|&(p, v)| (nines(p), v as f64))
                .collect(),
        });
    }
    let nine_ticks = vec![
        (nines(0.0), "0".to_string()),
        (nines(90.0), "90".into()),
        (nines(99.0), "99".into()),
        (nines(99.9), "99.9".into()),
        (nines(99.99), "99.99".into()),
        (nines(99.999), "99.999".into()),
    ];
    body.push_str("<h2>Charts</h2><div class=\"charts\">");
    body.push_str(&svg_chart(
        &Chart {
            title: "Delivery latency over time (per second)",
            x_label: "seconds since the clients started",
            y_label: "latency",
            y_scale: Scale::Log,
            x_ticks: None,
            y_fmt: us_label,
        },
        &lat,
    ));
    body.push_str(&svg_chart(
        &Chart {
            title: "Delivery latency by percentile",
            x_label: "percentile",
            y_label: "latency",
            y_scale: Scale::Log,
            x_ticks: Some(nine_ticks),
            y_fmt: us_label,
        },
        &pct,
    ));
    body.push_str(&svg_chart(
        &Chart {
            title: "Deliveries per second",
            x_label: "seconds since the clients started",
            y_label: "deliveries/s",
            y_scale: Scale::Linear,
            x_ticks: None,
            y_fmt: count_label,
        },
        &rate,
    ));
    body.push_str(&svg_chart(
        &Chart {
            title: "Measured server RSS",
            x_label: "seconds since the clients started",
            y_label: "RSS",
            y_scale: Scale::Linear,
            x_ticks: None,
            y_fmt: mib_label,
        },
        &rss,
    ));
    body.push_str("</div>");

    body.push_str("<h2>Processes</h2><table><tr><th>target</th><th>process</th><th>pid</th><th>RSS before</th><th>RSS connected</th><th>RSS end</th><th>peak</th><th>CPU run</th><th>CPU traffic</th></tr>");
    for r in &report.runs {
        for p in r
            .resources
            .servers
            .iter()
            .chain(std::iter::once(&r.resources.workers))
        {
            body.push_str(&row(&[
                esc(r.target_name()),
                esc(&p.name),
                p.pid.to_string(),
                kib(p.rss_kib_before),
                kib(p.rss_kib_connected),
                kib(p.rss_kib_end),
                kib(p.hwm_kib),
                format!("{:.2} s", p.cpu_s_run),
                format!("{:.2} s", p.cpu_s_traffic),
            ]));
        }
    }
    body.push_str("</table>");

    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tribune-loadtest {}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}}th{{background:#f4f4f4}}\
         .m{{color:#555;font-size:13px}}.ok{{color:#2a7d2a;font-weight:bold}}.miss{{color:#b00;font-weight:bold}}.na{{color:#555;font-weight:bold}}\
         .charts svg{{border:1px solid #ddd;margin:0 1em 1em 0;background:#fff}}svg .t{{font-size:14px;font-weight:bold}}svg .a{{font-size:11px;fill:#444}}\
         </style></head><body>{}</body></html>\n",
        esc(&report.scenario),
        body
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::{Check, Pcts, TimelinePoint};
    use crate::wire::Target;

    #[test]
    fn renders_a_self_contained_page() {
        let mut r = RunReport {
            target: Some(Target::Tribune),
            ..RunReport::default()
        };
        r.delivery.latency_us = Pcts {
            count: 3,
            p50: 800,
            p99: 2500,
            ..Pcts::default()
        };
        r.delivery.percentiles = vec![(0.0, 100), (50.0, 800), (99.0, 2500), (100.0, 4000)];
        r.timeline = (0..5)
            .map(|i| TimelinePoint {
                t_s: f64::from(i),
                deliveries: 100,
                p50_us: 800,
                p99_us: 2500,
                server_rss_kib: 10_240,
                ..TimelinePoint::default()
            })
            .collect();
        r.problems.push("a <problem>".into());
        let rep = Report {
            scenario: "fanout".into(),
            runs: vec![r],
            ..Report::default()
        };
        let page = render(&rep);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script"), "no scripts");
        assert!(!page.contains("src="), "nothing fetched");
        assert!(page.contains("&lt;problem&gt;"));
        assert_eq!(page.matches("<svg").count(), 4);
        assert!(page.contains("<polyline"));
    }

    /// The SVG of the chart titled `title`.
    fn chart<'a>(page: &'a str, title: &str) -> &'a str {
        let start = page
            .find(&format!("<title>{title}</title>"))
            .unwrap_or_else(|| panic!("chart {title}"));
        let svg = page[..start].rfind("<svg").unwrap();
        let end = start + page[start..].find("</svg>").unwrap();
        &page[svg..end]
    }

    /// (stroke-width, points) of every polyline of an SVG, in drawing order.
    fn polylines(svg: &str) -> Vec<(f64, String)> {
        svg.split("<polyline")
            .skip(1)
            .map(|p| {
                let attr = |name: &str| {
                    let at = p.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    p[at..at + p[at..].find('"').unwrap()].to_string()
                };
                (attr("stroke-width").parse().unwrap(), attr("points"))
            })
            .collect()
    }

    #[test]
    fn two_targets_at_the_same_rate_both_show_on_the_deliveries_chart() {
        // Both servers carried the offered rate: their lines coincide.
        let timeline: Vec<TimelinePoint> = (0..5)
            .map(|i| TimelinePoint {
                t_s: f64::from(i),
                deliveries: 10_000,
                ..TimelinePoint::default()
            })
            .collect();
        let runs = [Target::Tribune, Target::NatsWs].map(|t| RunReport {
            target: Some(t),
            timeline: timeline.clone(),
            ..RunReport::default()
        });
        let page = render(&Report {
            scenario: "fanout".into(),
            runs: runs.to_vec(),
            ..Report::default()
        });
        let lines = polylines(chart(&page, "Deliveries per second"));
        assert_eq!(lines.len(), 2);
        let ((under, a), (over, b)) = (&lines[0], &lines[1]);
        assert_eq!(a, b, "the same points");
        // The one drawn first (tribune) is wider: it shows along both edges
        // of the one drawn over it.
        assert!(under - over >= 2.0, "{under} vs {over}");
        assert!(page.contains("tribune deliveries/s") && page.contains("nats-ws deliveries/s"));
    }

    #[test]
    fn cells_versions_and_verdicts_read_as_text() {
        let mut r = RunReport {
            target: Some(Target::Tribune),
            ..RunReport::default()
        };
        r.connect.failed = 0;
        let mut with_counts = r.clone();
        with_counts.target = Some(Target::NatsWs);
        with_counts.connect.failed = 2;
        with_counts.connect.failures = BTreeMap::from([("refused".to_string(), 2)]);
        with_counts.closes = BTreeMap::from([("1006".to_string(), 3)]);
        let rep = Report {
            scenario: "fanout".into(),
            versions: BTreeMap::from([
                (
                    "nats-server".to_string(),
                    "nats-server: v2.15.1".to_string(),
                ),
                ("tribune-hub".to_string(), "tribune-hub 0.1.0".to_string()),
            ]),
            checks: vec![Check {
                name: "fan-out deliveries/s, hub ÷ nats-server ws".into(),
                measured: "1.00×".into(),
                target: "≥ 1.5×".into(),
                ok: false,
                not_applicable: Some("the offered rate capped it".into()),
            }],
            runs: vec![r, with_counts],
            ..Report::default()
        };
        let page = render(&rep);
        assert!(!page.contains("{}"), "no Debug maps in cells");
        assert!(page.contains("<tr><td>closes</td><td>none</td><td>1006: 3</td></tr>"));
        assert!(page.contains("<tr><td>errors</td><td>none</td><td>none</td></tr>"));
        assert!(
            page.contains("<tr><td>failed attempts</td><td>0</td><td>2 (refused: 2)</td></tr>")
        );
        assert!(page.contains("nats-server v2.15.1, tribune-hub 0.1.0"));
        assert!(!page.contains("nats-server: nats-server"));
        assert!(page.contains("<td class=\"na\" title=\"the offered rate capped it\">n/a</td>"));
        assert!(!page.contains("MISS"));
    }

    #[test]
    fn nines_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(esc("a&b\"<"), "a&amp;b&quot;&lt;");
    }
}
