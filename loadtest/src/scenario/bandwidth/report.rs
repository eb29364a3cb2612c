//! A variant's numbers: [`VariantReport`], summed up from its fans and the
//! server's samples, and the side-by-side table of every variant.

use serde::Serialize;
use tribune_harness::procstat::ProcSample;

use crate::boards;

use super::plan::{Fan, Variant};

/// What one variant measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VariantReport {
    pub variant: String,
    pub fans: u64,
    /// Fans that negotiated deflate (the variants that offer it).
    pub deflate_negotiated: u64,
    pub publications: u64,
    /// Per fan, over the hour: every byte received after the upgrade.
    pub bytes_per_fan: f64,
    pub board_bytes_per_fan: f64,
    pub clip_bytes_per_fan: f64,
    /// Messages received per fan (board and clips).
    pub messages_per_fan: f64,
    /// Server CPU while the hour was replayed, per message received.
    pub cpu_us_per_delivery: f64,
    pub server_cpu_s: f64,
    /// Server RSS per connection: with every fan subscribed and nothing
    /// sent yet, and after the hour (the server's RSS before any fan
    /// connected taken off both).
    pub rss_idle_per_conn_b: f64,
    pub rss_after_per_conn_b: f64,
    /// Payloads that differ from the published ones, and payloads owed but
    /// never received (feed items; the board's last state).
    pub mismatched: u64,
    pub missing: u64,
}

/// The side-by-side table (markdown).
pub(super) fn table(reports: &[VariantReport]) -> String {
    let full = reports.first().map(|r| r.bytes_per_fan).unwrap_or(0.0);
    let full_board = reports
        .first()
        .map(|r| r.board_bytes_per_fan)
        .unwrap_or(0.0);
    let full_cpu = reports
        .first()
        .map(|r| r.cpu_us_per_delivery)
        .unwrap_or(0.0);
    let mut out = String::from(
        "| variant | bytes per fan-hour | of the first | board | of the first's board | clips | CPU per delivery | of the first | RSS per idle conn | RSS per conn after |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let pct = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.1} %", 100.0 * a / b)
        } else {
            "–".into()
        }
    };
    for r in reports {
        out += &format!(
            "| {} | {:.0} | {} | {:.0} | {} | {:.0} | {:.2} µs | {} | {:.0} B | {:.0} B |\n",
            r.variant,
            r.bytes_per_fan,
            pct(r.bytes_per_fan, full),
            r.board_bytes_per_fan,
            pct(r.board_bytes_per_fan, full_board),
            r.clip_bytes_per_fan,
            r.cpu_us_per_delivery,
            if full_cpu > 0.0 {
                format!("{:.2}×", r.cpu_us_per_delivery / full_cpu)
            } else {
                "–".into()
            },
            r.rss_idle_per_conn_b,
            r.rss_after_per_conn_b,
        );
    }
    out
}

/// A variant's numbers from its fans and the server's samples (before any
/// fan, with every fan idle, after the hour); the caller counts mismatches.
pub(super) fn summarize(
    v: Variant,
    fans: &[Fan],
    hour: &boards::Hour,
    before: &ProcSample,
    idle: &ProcSample,
    after: &ProcSample,
) -> VariantReport {
    let n = fans.len().max(1) as f64;
    let sum = |f: &dyn Fn(&Fan) -> u64| fans.iter().map(f).sum::<u64>() as f64;
    let deliveries = sum(&|f| (f.boards.len() + f.clips.len()) as u64);
    for f in fans.iter().filter_map(|f| f.error.as_ref()).take(3) {
        eprintln!("bandwidth: {}: a fan failed: {f}", v.name());
    }
    let cpu = after.cpu_s - idle.cpu_s;
    VariantReport {
        variant: v.name().into(),
        fans: fans.len() as u64,
        deflate_negotiated: fans.iter().filter(|f| f.deflate).count() as u64,
        publications: hour.items.len() as u64,
        bytes_per_fan: sum(&|f| f.bytes) / n,
        board_bytes_per_fan: sum(&|f| f.board_bytes) / n,
        clip_bytes_per_fan: sum(&|f| f.clip_bytes) / n,
        messages_per_fan: deliveries / n,
        cpu_us_per_delivery: if deliveries > 0.0 {
            cpu * 1e6 / deliveries
        } else {
            0.0
        },
        server_cpu_s: cpu,
        rss_idle_per_conn_b: (idle.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n,
        rss_after_per_conn_b: (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n,
        mismatched: 0,
        missing: fans.iter().filter(|f| f.error.is_some()).count() as u64,
    }
}
