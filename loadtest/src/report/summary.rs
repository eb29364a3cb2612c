//! The short text summary of a run printed on stderr at its end.

use super::{ReactionsReport, Report};
use crate::report::format::{fmt_ratio, fmt_us};

/// The short text summary printed at the end of a run.
pub fn summary(report: &Report) -> String {
    let mut s = format!("scenario {}\n", report.scenario);
    for r in &report.runs {
        s.push_str(&format!(
            "  {:<8} conns {}/{} (failed {}) at {:.0}/s, handshake p99 {} | deliveries {} ({:.0}/s) latency p50 {} p99 {} p99.9 {} max {} | lost {} dup {}",
            r.target_name(),
            r.connect.peak_open,
            r.connect.requested,
            r.connect.failed,
            r.connect.rate_per_s,
            fmt_us(r.connect.handshake_us.p99),
            r.delivery.deliveries,
            r.delivery.per_s,
            fmt_us(r.delivery.latency_us.p50),
            fmt_us(r.delivery.latency_us.p99),
            fmt_us(r.delivery.latency_us.p999),
            fmt_us(r.delivery.latency_us.max),
            r.delivery.loss.lost,
            r.delivery.loss.duplicated,
        ));
        if let Some(b) = r.resources.rss_per_conn_bytes {
            s.push_str(&format!(" | server RSS/conn {b:.0} B"));
        }
        if let Some(c) = r.resources.cpu_us_per_delivery {
            s.push_str(&format!(" | server CPU/delivery {c:.2} µs"));
        }
        if let Some(rs) = &r.resume {
            s.push_str(&format!(
                " | resume: {}/{} back in {}, recovered {} not {}",
                rs.resumed,
                rs.affected,
                rs.all_back_ms
                    .map_or("n/a".into(), |ms| format!("{ms:.0} ms")),
                rs.recovered,
                rs.not_recovered
            ));
        }
        if let Some(x) = &r.reactions {
            s.push_str(&reactions_summary(x));
        }
        s.push('\n');
        for p in &r.problems {
            s.push_str(&format!("    problem: {p}\n"));
        }
    }
    if let Some(c) = &report.comparison {
        s.push_str(&format!(
            "  tribune ÷ nats-ws: deliveries/s {}, p50 {}, p99 {}, RSS/conn {}, CPU/delivery {}\n",
            fmt_ratio(c.deliveries_per_s_ratio),
            fmt_ratio(c.p50_ratio),
            fmt_ratio(c.p99_ratio),
            fmt_ratio(c.rss_per_conn_ratio),
            fmt_ratio(c.cpu_per_delivery_ratio)
        ));
    }
    for c in &report.checks {
        s.push_str(&format!(
            "  [{}] {}: {} (target {})",
            c.verdict(),
            c.name,
            c.measured,
            c.target
        ));
        if let Some(why) = &c.not_applicable {
            s.push_str(&format!(": {why}"));
        }
        s.push('\n');
    }
    s
}

/// One line of the stderr summary for a reactions run.
fn reactions_summary(r: &ReactionsReport) -> String {
    let mut s = format!(
        " | reactions: sent {} accepted {} rate_limited {} unanswered {}, settled in {:.1} s",
        r.sent, r.accepted_total, r.rate_limited, r.unanswered, r.settle_s
    );
    for n in &r.nodes {
        s.push_str(&format!(
            "; node {} stats sum {} in {} frames ({}), audience {}, CPU {}",
            n.node,
            n.stats_sum.values().sum::<u64>(),
            n.stats_frames,
            if n.equal { "equal" } else { "DIFFERENT" },
            n.audience_max,
            n.cpu_s.map_or("n/a".into(), |c| format!("{c:.2} s")),
        ));
    }
    s
}
