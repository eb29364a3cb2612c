//! How report figures read as text: ratios, counts, versions, durations.
//! Pure formatting, shared by the summary, the HTML and the markdown.

use std::collections::BTreeMap;

pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.2}×"))
}

/// Counts by key (close codes, error texts) for a table cell: `none` when
/// there are none, else `key: n` in key order.
pub fn fmt_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A program's version without its name: `nats-server --version` prints
/// `nats-server: v2.15.1`, `tribune-hub --version` prints `tribune-hub
/// 0.1.0`; reports key them by the name already. Idempotent, so reports
/// written with the whole line render right too.
pub fn bare_version(name: &str, line: &str) -> String {
    let line = line.trim();
    match line.strip_prefix(name) {
        Some(rest) if rest.starts_with([':', ' ']) => {
            rest.trim_start_matches([':', ' ']).to_string()
        }
        _ => line.to_string(),
    }
}

/// The versions of a report on one line: `nats-server v2.15.1, tribune-hub 0.1.0`.
pub fn fmt_versions(versions: &BTreeMap<String, String>) -> String {
    versions
        .iter()
        .map(|(k, v)| format!("{k} {}", bare_version(k, v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A latency for people: µs below 1 ms, ms below 10 s, else s.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 10_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.1} s", us as f64 / 1e6)
    }
}
