//! Every family rendered under its name; labelled families present at
//! zero before their first event.

use super::Metrics;
use super::labels::{
    CLOSE_CODES, DROP_REASONS, HANDSHAKE_REFUSALS, REACTION_RESULTS, REFUSALS, TOPIC_MODES,
};

#[test]
fn renders_every_family_with_prefix() {
    let m = Metrics::new();
    m.refused("rate");
    m.closed(4008);
    m.history_requests.inc();
    m.closed(1002);
    m.delivered(3, 0);
    let text = m.render();
    for name in [
        "tribune_connections ",
        "tribune_connections_max ",
        "tribune_history_requests_total 1",
        "tribune_handshakes_refused_total{reason=\"rate\"} 1",
        "tribune_closes_total{code=\"4008\"} 1",
        "tribune_closes_total{code=\"1002\"} 1",
        "tribune_gap_repair_seconds_bucket",
        "tribune_stats_partials_failed_total 0",
        "tribune_messages_delivered_total 3",
        "tribune_delivery_latency_seconds_count 1",
        "tribune_bytes_sent_total 0",
        "tribune_build_info{version=\"",
        "process_open_fds ",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "# EOF",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    assert!(!text.contains("tribune_process_"), "{text}");
}

#[test]
fn labelled_families_exist_before_their_first_event() {
    let text = Metrics::new().render();
    for (family, label, values) in [
        (
            "tribune_handshakes_refused_total",
            "reason",
            HANDSHAKE_REFUSALS,
        ),
        ("tribune_refusals_total", "reason", REFUSALS),
        ("tribune_closes_total", "code", CLOSE_CODES),
        ("tribune_payloads_dropped_total", "reason", DROP_REASONS),
        ("tribune_reactions_total", "result", REACTION_RESULTS),
        ("tribune_gaps_unrepairable_total", "mode", TOPIC_MODES),
    ] {
        for v in values {
            let series = format!("{family}{{{label}=\"{v}\"}} 0");
            assert!(text.contains(&series), "{series} missing in\n{text}");
        }
    }
}

#[test]
fn every_family_is_described_once() {
    // A family registered twice is exposed twice, which a strict
    // OpenMetrics reader refuses (the whole scrape, not one series).
    let text = Metrics::new().render();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).expect("# TYPE name kind");
        assert!(seen.insert(name.to_string()), "{name} is described twice");
    }
    assert!(seen.len() > 40, "{} families", seen.len());
}
