//! Every metric name of a hub node, in one place (OpenMetrics text at
//! `/metrics`, on the internal listener).
//!
//! A dashboard and its alerts must see a series before its first event:
//! `rate()` over a series that does not exist is no data, not zero, so an
//! alert on refusals or 4008 closes would stay silent on a fresh node. Every
//! labelled family is therefore created with all its known label values at
//! zero (the lists below); a label value outside a list still counts.
//! Names carry the thing counted (`tribune_messages_delivered_total`, not
//! `tribune_deliveries_total`), and one event has one counter: slow
//! consumers are `tribune_closes_total{code="4008"}`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set of static strings (`reason`, `code`, ...).
pub type Labels = Vec<(&'static str, &'static str)>;

/// The node's metrics; counters are cheap atomics, shared by every task.
pub struct Metrics {
    registry: Registry,
    /// Open websocket connections.
    pub connections: Gauge,
    /// Open HTTP fallback streams (`GET /v1/sse`): how many fans a blocking
    /// proxy keeps off the websocket. Each also counts in `connections`.
    pub sse_streams: Gauge,
    /// The node's connection cap (`limits.max_connections`, lowered to fit
    /// the open-files limit): what `connections` is compared with.
    pub connections_max: Gauge,
    /// Times freed heap was given back to the system (`heap.rs`).
    pub heap_trims: Counter,
    /// Bytes the allocator's arenas held free at the last check.
    pub heap_free_bytes: Gauge,
    /// Websocket connections accepted since start.
    pub connections_accepted: Counter,
    /// Handshakes refused before the upgrade, by reason.
    pub handshakes_refused: Family<Labels, Counter>,
    /// Every refusal the audit log records, by reason: sockets, handshakes,
    /// HTTP publications, frames (`audit.rs` lists the reasons).
    pub refusals: Family<Labels, Counter>,
    /// Accepted sockets that are not websockets (yet): requests being read,
    /// TLS and PROXY headers, plain HTTP keep-alive.
    pub pending_sockets: Gauge,
    /// `accept` failures (EMFILE and the like), each followed by a pause.
    pub accept_errors: Counter,
    /// Keys a per-address limiter remembers now, by limiter.
    pub limiter_keys: Family<Labels, Gauge>,
    /// Keys a per-address limiter forgot (back to a full budget), by limiter.
    pub limiter_keys_expired: Family<Labels, Counter>,
    /// TLS certificates loaded again after their files changed.
    pub tls_reloads: Counter,
    /// Connections closed by the hub, by close code.
    pub closes: Family<Labels, Counter>,
    /// Frames received from clients.
    pub client_frames: Counter,
    /// Client frames answered with `bad_request`.
    pub bad_frames: Counter,
    /// Topics with a relay on this node.
    pub relays: Gauge,
    /// Messages received from the bus (live or repaired), before validation.
    pub bus_messages: Counter,
    /// Payloads the relay refused to forward, by reason.
    pub payloads_dropped: Family<Labels, Counter>,
    /// Retraction markers from the bus, by outcome: `applied` or why ignored.
    pub retractions: Family<Labels, Counter>,
    /// Delay lines of the spoiler shield: one per topic and delay value
    /// with subscribers on this node.
    pub delay_lines: Gauge,
    /// Frames held by delay lines, waiting for their time.
    pub delay_held: Gauge,
    /// Held frames dropped at a delay line's cap (a `gap` follows).
    pub delay_dropped: Counter,
    /// Message frames queued to clients (one per subscriber per message).
    pub messages_delivered: Counter,
    /// Time from the bus storing a message (its `ts`) to the relay queuing
    /// it to its subscribers, once per message with subscribers.
    pub delivery_latency_seconds: Histogram,
    /// Bytes of websocket frames written to clients (headers included,
    /// compressed where the connection negotiated deflate).
    pub bytes_sent: Counter,
    /// Superseded state frames dropped for slow clients.
    pub frames_conflated: Counter,
    /// Fossil deltas made (one per message per topic, whatever the audience).
    pub deltas: Counter,
    /// Delta frames queued to clients instead of the full message.
    pub delta_deliveries: Counter,
    /// Frames compressed for permessage-deflate (once per frame, whatever
    /// the number of connections it goes to).
    pub compressions: Counter,
    /// Connections that negotiated permessage-deflate.
    pub deflate_connections: Counter,
    /// History reads issued to the bus (relay loads and resumes).
    pub history_requests: Counter,
    /// `GET /v1/history` pages served (refusals are in `refusals`).
    pub history_pages: Counter,
    /// Gaps found in the live feed and repaired from the stream.
    pub gaps_repaired: Counter,
    /// Time from detecting a gap to having forwarded its messages.
    pub gap_repair_seconds: Histogram,
    /// Holes the relay could not repair (aged out, unreadable), by topic mode;
    /// `feed` subscribers were sent a `gap` frame for each.
    pub gaps_unrepairable: Family<Labels, Counter>,
    /// Bus reconnections seen (the bus generation grew).
    pub bus_reconnects: Counter,
    /// Messages on a live feed's private subject that the stream did not
    /// deliver (forged, replayed), by reason; never forwarded.
    pub bus_refused: Family<Labels, Counter>,
    /// 1 while the bus is connected.
    pub bus_connected: Gauge,
    /// 1 while publications can be stored (a region's origin answers).
    pub bus_writable: Gauge,
    /// 1 while the node drains.
    pub draining: Gauge,
    /// Messages stored through `POST /v1/publish`.
    pub http_publishes: Counter,
    /// Fans' `publish` frames forwarded to the bus.
    pub client_publishes: Counter,
    /// Reactions, by result (`accepted`, `rate_limited`, `refused`).
    pub reactions: Family<Labels, Counter>,
    /// `stats` frames queued to clients.
    pub stats_sent: Counter,
    /// Statistics partials the bus refused (other nodes miss these figures).
    pub stats_partials_failed: Counter,
    /// Other nodes' statistics partials refused as a whole (forged, altered,
    /// replayed, stale, beyond caps), by reason.
    pub stats_partials_rejected: Family<Labels, Counter>,
    /// Figures dropped from accepted partials (a topic that shows none, a
    /// reaction its namespace does not allow), by reason.
    pub stats_figures_dropped: Family<Labels, Counter>,
    /// 1, labelled with the hub's version.
    pub build_info: Family<Labels, Gauge>,
    /// Tokens on live connections and the server API (`auth/metrics.rs`).
    pub tokens: crate::auth::TokenMetrics,
}

/// Reasons of `tribune_handshakes_refused_total`: at accept, then at the handshake.
pub const HANDSHAKE_REFUSALS: &[&str] = &[
    "capacity",
    "pending",
    "pending_address",
    "draining",
    "rate",
    "rate_node",
    "origin",
    "token",
    "address_share",
    "user_share",
    "token_in_url",
    "sse_request",
];

/// Reasons of `tribune_refusals_total` (the audit log's, `audit.rs`).
pub const REFUSALS: &[&str] = &[
    "capacity",
    "pending",
    "pending_address",
    "header_timeout",
    "proxy_untrusted",
    "proxy_header",
    "tls_handshake",
    "draining",
    "rate",
    "rate_node",
    "origin",
    "token",
    "address_share",
    "user_share",
    "publish_origin",
    "publish_key",
    "publish_disabled",
    "publish_rate",
    "publish_content_type",
    "admin_key",
    "admin_rate",
    "react_grant",
    "react_unsubscribed",
    "topic_rate",
    "relay_cap",
    "flood",
    "history_rate",
    "history_origin",
    "history_params",
    "history_namespace",
    "history_token",
    "history_grant",
    "history_unavailable",
    "retract_state_topic",
    "delay_range",
    "token_in_url",
    "sse_request",
    "react_content_type",
    "react_body",
];

/// Close codes of `tribune_closes_total` (PROTOCOL.md section 6); `other`
/// for anything else.
pub const CLOSE_CODES: &[&str] = &[
    "1000", "1001", "1002", "1003", "1007", "1008", "1009", "1011", "4008", "4029", "other",
];

/// Reasons of `tribune_payloads_dropped_total`.
pub const DROP_REASONS: &[&str] = &["too_large", "invalid_json"];

/// Outcomes of `tribune_retractions_total`: `applied`, or why a marker was
/// ignored (`relay/retract.rs`).
pub const RETRACT_OUTCOMES: &[&str] = &[
    "applied",
    "state_topic",
    "not_older",
    "unknown_seq",
    "duplicate",
];

/// Results of `tribune_reactions_total`.
pub const REACTION_RESULTS: &[&str] = &["accepted", "rate_limited", "refused"];

/// Topic modes of `tribune_gaps_unrepairable_total`.
pub const TOPIC_MODES: &[&str] = &["feed", "state"];

/// Limiters of `tribune_limiter_keys` and `tribune_limiter_keys_expired_total`.
pub const LIMITERS: &[&str] = &[
    "handshakes",
    "publish_failures",
    "connections",
    "history",
    "stream_reactions",
];

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            connections: Gauge::default(),
            sse_streams: Gauge::default(),
            connections_max: Gauge::default(),
            connections_accepted: Counter::default(),
            heap_trims: Counter::default(),
            heap_free_bytes: Gauge::default(),
            handshakes_refused: Family::default(),
            refusals: Family::default(),
            pending_sockets: Gauge::default(),
            accept_errors: Counter::default(),
            limiter_keys: Family::default(),
            limiter_keys_expired: Family::default(),
            tls_reloads: Counter::default(),
            closes: Family::default(),
            client_frames: Counter::default(),
            bad_frames: Counter::default(),
            relays: Gauge::default(),
            bus_messages: Counter::default(),
            payloads_dropped: Family::default(),
            retractions: Family::default(),
            delay_lines: Gauge::default(),
            delay_held: Gauge::default(),
            delay_dropped: Counter::default(),
            messages_delivered: Counter::default(),
            delivery_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            bytes_sent: Counter::default(),
            frames_conflated: Counter::default(),
            deltas: Counter::default(),
            delta_deliveries: Counter::default(),
            compressions: Counter::default(),
            deflate_connections: Counter::default(),
            history_requests: Counter::default(),
            history_pages: Counter::default(),
            gaps_repaired: Counter::default(),
            gap_repair_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            gaps_unrepairable: Family::default(),
            bus_reconnects: Counter::default(),
            bus_refused: Family::default(),
            bus_connected: Gauge::default(),
            bus_writable: Gauge::default(),
            draining: Gauge::default(),
            http_publishes: Counter::default(),
            client_publishes: Counter::default(),
            reactions: Family::default(),
            stats_sent: Counter::default(),
            stats_partials_failed: Counter::default(),
            stats_partials_rejected: Family::default(),
            stats_figures_dropped: Family::default(),
            build_info: Family::default(),
            tokens: Default::default(),
            registry: Registry::default(),
        };
        m.precreate();
        // `process_*` without the prefix: the names every client library uses.
        registry.register_collector(Box::new(crate::process::ProcessCollector));
        let r = registry.sub_registry_with_prefix("tribune");
        r.register(
            "connections",
            "Open websocket connections",
            m.connections.clone(),
        );
        r.register(
            "heap_trims",
            "Times freed heap was given back to the system after a storm",
            m.heap_trims.clone(),
        );
        r.register(
            "heap_free_bytes",
            "Bytes the allocator held free for reuse at the last check",
            m.heap_free_bytes.clone(),
        );
        r.register(
            "sse_streams",
            "Open HTTP fallback streams (GET /v1/sse), also counted in tribune_connections",
            m.sse_streams.clone(),
        );
        r.register(
            "connections_max",
            "The node's connection cap (lowered to fit the open-files limit)",
            m.connections_max.clone(),
        );
        r.register(
            "connections_accepted",
            "Websocket connections accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "handshakes_refused",
            "Handshakes refused before the upgrade, by reason",
            m.handshakes_refused.clone(),
        );
        r.register(
            "refusals",
            "Refusals recorded by the audit log, by reason",
            m.refusals.clone(),
        );
        r.register(
            "pending_sockets",
            "Accepted sockets not (yet) upgraded to websockets",
            m.pending_sockets.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accepts on a listener",
            m.accept_errors.clone(),
        );
        r.register(
            "limiter_keys",
            "Addresses a per-address limiter remembers, by limiter",
            m.limiter_keys.clone(),
        );
        r.register(
            "limiter_keys_expired",
            "Addresses a per-address limiter forgot, by limiter",
            m.limiter_keys_expired.clone(),
        );
        r.register(
            "tls_reloads",
            "TLS certificates reloaded after their files changed",
            m.tls_reloads.clone(),
        );
        r.register(
            "closes",
            "Connections closed by the hub, by close code",
            m.closes.clone(),
        );
        r.register(
            "client_frames",
            "Frames received from clients",
            m.client_frames.clone(),
        );
        r.register(
            "bad_frames",
            "Client frames answered with bad_request",
            m.bad_frames.clone(),
        );
        r.register(
            "relays",
            "Topics with a relay on this node",
            m.relays.clone(),
        );
        r.register(
            "bus_messages",
            "Messages received from the bus",
            m.bus_messages.clone(),
        );
        r.register(
            "payloads_dropped",
            "Payloads not forwarded, by reason",
            m.payloads_dropped.clone(),
        );
        r.register(
            "retractions",
            "Retraction markers from the bus, by outcome (applied, or why ignored)",
            m.retractions.clone(),
        );
        r.register(
            "delay_lines",
            "Spoiler-shield delay lines: one per topic and delay value with subscribers",
            m.delay_lines.clone(),
        );
        r.register(
            "delay_held",
            "Frames held by delay lines until their ts plus the delay",
            m.delay_held.clone(),
        );
        r.register(
            "delay_dropped",
            "Held frames dropped at a delay line's cap (subscribers get a gap)",
            m.delay_dropped.clone(),
        );
        r.register(
            "messages_delivered",
            "Message frames queued to clients, one per subscriber per message",
            m.messages_delivered.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Time from the bus storing a message (ts) to its fan-out to subscribers",
            m.delivery_latency_seconds.clone(),
        );
        r.register(
            "bytes_sent",
            "Bytes of websocket frames written to clients",
            m.bytes_sent.clone(),
        );
        r.register(
            "frames_conflated",
            "Superseded state frames dropped for slow clients",
            m.frames_conflated.clone(),
        );
        r.register(
            "deltas",
            "Fossil deltas made, one per message per topic",
            m.deltas.clone(),
        );
        r.register(
            "delta_deliveries",
            "Delta frames queued to clients instead of the full message",
            m.delta_deliveries.clone(),
        );
        r.register(
            "compressions",
            "Frames compressed for permessage-deflate, once per frame",
            m.compressions.clone(),
        );
        r.register(
            "deflate_connections",
            "Connections that negotiated permessage-deflate",
            m.deflate_connections.clone(),
        );
        r.register(
            "history_requests",
            "History reads issued to the bus",
            m.history_requests.clone(),
        );
        r.register(
            "history_pages",
            "GET /v1/history pages served",
            m.history_pages.clone(),
        );
        r.register(
            "gaps_repaired",
            "Gaps repaired from the stream",
            m.gaps_repaired.clone(),
        );
        r.register(
            "gap_repair_seconds",
            "Gap repair latency",
            m.gap_repair_seconds.clone(),
        );
        r.register(
            "gaps_unrepairable",
            "Holes no longer repairable from the bus (feed subscribers get a gap frame)",
            m.gaps_unrepairable.clone(),
        );
        r.register(
            "bus_reconnects",
            "Bus reconnections",
            m.bus_reconnects.clone(),
        );
        r.register(
            "bus_messages_refused",
            "Messages on a live feed's subject that the stream did not deliver, by reason",
            m.bus_refused.clone(),
        );
        r.register(
            "bus_connected",
            "1 while the bus is connected",
            m.bus_connected.clone(),
        );
        r.register(
            "bus_writable",
            "1 while publications can be stored: 0 while a region's origin stream is unreachable",
            m.bus_writable.clone(),
        );
        r.register("draining", "1 while the node drains", m.draining.clone());
        r.register(
            "http_publishes",
            "Messages stored through POST /v1/publish",
            m.http_publishes.clone(),
        );
        r.register(
            "bus_messages_refused",
            "Messages on a live feed's subject that the stream did not deliver, by reason",
            m.bus_refused.clone(),
        );
        r.register(
            "client_publishes",
            "Fans' publish frames forwarded",
            m.client_publishes.clone(),
        );
        r.register(
            "reactions",
            "Reactions received, by result",
            m.reactions.clone(),
        );
        r.register(
            "stats_sent",
            "stats frames queued to clients",
            m.stats_sent.clone(),
        );
        r.register(
            "stats_partials_failed",
            "Statistics partials the bus refused",
            m.stats_partials_failed.clone(),
        );
        r.register(
            "stats_partials_rejected",
            "Other nodes' statistics partials refused, by reason",
            m.stats_partials_rejected.clone(),
        );
        r.register(
            "stats_figures_dropped",
            "Figures dropped from accepted statistics partials, by reason",
            m.stats_figures_dropped.clone(),
        );
        r.register(
            "build_info",
            "1, labelled with the hub's version",
            m.build_info.clone(),
        );
        m.tokens.register(r);
        Self { registry, ..m }
    }

    /// Creates every known label value at zero (see the module doc).
    fn precreate(&self) {
        fn zero<M: Default + Clone>(
            family: &Family<Labels, M>,
            name: &'static str,
            values: &[&'static str],
        ) {
            for v in values {
                drop(family.get_or_create(&vec![(name, *v)]));
            }
        }
        zero(&self.handshakes_refused, "reason", HANDSHAKE_REFUSALS);
        zero(&self.refusals, "reason", REFUSALS);
        zero(&self.closes, "code", CLOSE_CODES);
        zero(&self.payloads_dropped, "reason", DROP_REASONS);
        zero(&self.retractions, "outcome", RETRACT_OUTCOMES);
        zero(&self.reactions, "result", REACTION_RESULTS);
        zero(&self.gaps_unrepairable, "mode", TOPIC_MODES);
        zero(&self.limiter_keys, "limiter", LIMITERS);
        zero(&self.limiter_keys_expired, "limiter", LIMITERS);
        self.build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
    }

    /// Counts one retraction marker: taken, or ignored for a reason.
    pub fn retraction(&self, taken: Result<(), &'static str>) {
        let outcome = taken.err().unwrap_or("applied");
        self.retractions
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// Counts one message fanned out to `subscribers`, stored by the bus at
    /// `ts` (Unix milliseconds).
    pub fn delivered(&self, subscribers: usize, ts: u64) {
        self.messages_delivered.inc_by(subscribers as u64);
        if subscribers > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            // A bus clock ahead of ours reads as zero, not as a huge value.
            self.delivery_latency_seconds
                .observe(now.saturating_sub(ts) as f64 / 1000.0);
        }
    }

    /// OpenMetrics text exposition (with its `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn refused(&self, reason: &'static str) {
        self.handshakes_refused
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts one refusal (the audit log calls this).
    pub fn refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Sets how many keys the limiter `name` remembers.
    pub fn set_limiter_keys(&self, name: &'static str, keys: usize) {
        self.limiter_keys
            .get_or_create(&vec![("limiter", name)])
            .set(keys as i64);
    }

    /// Counts keys a limiter forgot.
    pub fn limiter_keys_expired(&self, name: &'static str, keys: usize) {
        self.limiter_keys_expired
            .get_or_create(&vec![("limiter", name)])
            .inc_by(keys as u64);
    }

    pub fn closed(&self, code: u16) {
        let code: &'static str = match code {
            1000 => "1000",
            1001 => "1001",
            1002 => "1002",
            1003 => "1003",
            1007 => "1007",
            1008 => "1008",
            1009 => "1009",
            1011 => "1011",
            4008 => "4008",
            4029 => "4029",
            _ => "other",
        };
        self.closes.get_or_create(&vec![("code", code)]).inc();
    }

    /// Counts a hole the relay could not repair, by topic mode.
    pub fn gap_unrepairable(&self, mode: &'static str) {
        self.gaps_unrepairable
            .get_or_create(&vec![("mode", mode)])
            .inc();
    }

    pub fn dropped(&self, reason: &'static str) {
        self.payloads_dropped
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts another node's statistics partial refused for `reason`.
    pub fn stats_rejected(&self, reason: &'static str) {
        self.stats_partials_rejected
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts `n` figures dropped from accepted partials for `reason`.
    pub fn stats_dropped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.stats_figures_dropped
                .get_or_create(&vec![("reason", reason)])
                .inc_by(n);
        }
    }

    pub fn reaction(&self, result: &'static str) {
        self.reactions
            .get_or_create(&vec![("result", result)])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
