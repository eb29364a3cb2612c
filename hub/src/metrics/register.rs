//! Building the node's metrics: every family at zero, its known label
//! values created (`labels.rs`), then registered with its name and help
//! text; and the text exposition of the registry at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::families::Metrics;

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
        m.register(&mut registry);
        Self { registry, ..m }
    }

    /// Registers every family with its name (under `tribune_`) and help
    /// text, and the process collector (without the prefix).
    fn register(&self, registry: &mut Registry) {
        // `process_*` without the prefix: the names every client library uses.
        registry.register_collector(Box::new(crate::process::ProcessCollector));
        let r = registry.sub_registry_with_prefix("tribune");
        r.register(
            "connections",
            "Open websocket connections",
            self.connections.clone(),
        );
        r.register(
            "heap_trims",
            "Times freed heap was given back to the system after a storm",
            self.heap_trims.clone(),
        );
        r.register(
            "heap_free_bytes",
            "Bytes the allocator held free for reuse at the last check",
            self.heap_free_bytes.clone(),
        );
        r.register(
            "sse_streams",
            "Open HTTP fallback streams (GET /v1/sse), also counted in tribune_connections",
            self.sse_streams.clone(),
        );
        r.register(
            "connections_max",
            "The node's connection cap (lowered to fit the open-files limit)",
            self.connections_max.clone(),
        );
        r.register(
            "connections_accepted",
            "Websocket connections accepted",
            self.connections_accepted.clone(),
        );
        r.register(
            "handshakes_refused",
            "Handshakes refused before the upgrade, by reason",
            self.handshakes_refused.clone(),
        );
        r.register(
            "refusals",
            "Refusals recorded by the audit log, by reason",
            self.refusals.clone(),
        );
        r.register(
            "pending_sockets",
            "Accepted sockets not (yet) upgraded to websockets",
            self.pending_sockets.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accepts on a listener",
            self.accept_errors.clone(),
        );
        r.register(
            "limiter_keys",
            "Addresses a per-address limiter remembers, by limiter",
            self.limiter_keys.clone(),
        );
        r.register(
            "limiter_keys_expired",
            "Addresses a per-address limiter forgot, by limiter",
            self.limiter_keys_expired.clone(),
        );
        r.register(
            "tls_reloads",
            "TLS certificates reloaded after their files changed",
            self.tls_reloads.clone(),
        );
        r.register(
            "closes",
            "Connections closed by the hub, by close code",
            self.closes.clone(),
        );
        r.register(
            "client_frames",
            "Frames received from clients",
            self.client_frames.clone(),
        );
        r.register(
            "bad_frames",
            "Client frames answered with bad_request",
            self.bad_frames.clone(),
        );
        r.register(
            "relays",
            "Topics with a relay on this node",
            self.relays.clone(),
        );
        r.register(
            "bus_messages",
            "Messages received from the bus",
            self.bus_messages.clone(),
        );
        r.register(
            "payloads_dropped",
            "Payloads not forwarded, by reason",
            self.payloads_dropped.clone(),
        );
        r.register(
            "retractions",
            "Retraction markers from the bus, by outcome (applied, or why ignored)",
            self.retractions.clone(),
        );
        r.register(
            "delay_lines",
            "Spoiler-shield delay lines: one per topic and delay value with subscribers",
            self.delay_lines.clone(),
        );
        r.register(
            "delay_held",
            "Frames held by delay lines until their ts plus the delay",
            self.delay_held.clone(),
        );
        r.register(
            "delay_dropped",
            "Held frames dropped at a delay line's cap (subscribers get a gap)",
            self.delay_dropped.clone(),
        );
        r.register(
            "messages_delivered",
            "Message frames queued to clients, one per subscriber per message",
            self.messages_delivered.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Time from the bus storing a message (ts) to its fan-out to subscribers",
            self.delivery_latency_seconds.clone(),
        );
        r.register(
            "bytes_sent",
            "Bytes of websocket frames written to clients",
            self.bytes_sent.clone(),
        );
        r.register(
            "frames_conflated",
            "Superseded state frames dropped for slow clients",
            self.frames_conflated.clone(),
        );
        r.register(
            "deltas",
            "Fossil deltas made, one per message per topic",
            self.deltas.clone(),
        );
        r.register(
            "delta_deliveries",
            "Delta frames queued to clients instead of the full message",
            self.delta_deliveries.clone(),
        );
        r.register(
            "compressions",
            "Frames compressed for permessage-deflate, once per frame",
            self.compressions.clone(),
        );
        r.register(
            "deflate_connections",
            "Connections that negotiated permessage-deflate",
            self.deflate_connections.clone(),
        );
        r.register(
            "history_requests",
            "History reads issued to the bus",
            self.history_requests.clone(),
        );
        r.register(
            "history_pages",
            "GET /v1/history pages served",
            self.history_pages.clone(),
        );
        r.register(
            "gaps_repaired",
            "Gaps repaired from the stream",
            self.gaps_repaired.clone(),
        );
        r.register(
            "gap_repair_seconds",
            "Gap repair latency",
            self.gap_repair_seconds.clone(),
        );
        r.register(
            "gaps_unrepairable",
            "Holes no longer repairable from the bus (feed subscribers get a gap frame)",
            self.gaps_unrepairable.clone(),
        );
        r.register(
            "bus_reconnects",
            "Bus reconnections",
            self.bus_reconnects.clone(),
        );
        r.register(
            "bus_messages_refused",
            "Messages on a live feed's subject that the stream did not deliver, by reason",
            self.bus_refused.clone(),
        );
        r.register(
            "bus_connected",
            "1 while the bus is connected",
            self.bus_connected.clone(),
        );
        r.register(
            "bus_writable",
            "1 while publications can be stored: 0 while a region's origin stream is unreachable",
            self.bus_writable.clone(),
        );
        r.register("draining", "1 while the node drains", self.draining.clone());
        r.register(
            "http_publishes",
            "Messages stored through POST /v1/publish",
            self.http_publishes.clone(),
        );
        r.register(
            "client_publishes",
            "Fans' publish frames forwarded",
            self.client_publishes.clone(),
        );
        r.register(
            "reactions",
            "Reactions received, by result",
            self.reactions.clone(),
        );
        r.register(
            "stats_sent",
            "stats frames queued to clients",
            self.stats_sent.clone(),
        );
        r.register(
            "stats_partials_failed",
            "Statistics partials the bus refused",
            self.stats_partials_failed.clone(),
        );
        r.register(
            "stats_partials_rejected",
            "Other nodes' statistics partials refused, by reason",
            self.stats_partials_rejected.clone(),
        );
        r.register(
            "stats_figures_dropped",
            "Figures dropped from accepted statistics partials, by reason",
            self.stats_figures_dropped.clone(),
        );
        r.register(
            "build_info",
            "1, labelled with the hub's version",
            self.build_info.clone(),
        );
        self.tokens.register(r);
    }

    /// OpenMetrics text exposition (with its `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
