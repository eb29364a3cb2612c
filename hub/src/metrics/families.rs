//! The node's metric families, one field each, grouped by area; their
//! names and help texts are in `register.rs`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set of static strings (`reason`, `code`, ...).
pub type Labels = Vec<(&'static str, &'static str)>;

/// The node's metrics; counters are cheap atomics, shared by every task.
pub struct Metrics {
    // The text exposition's registry (`register.rs`); private to `metrics`.
    pub(super) registry: Registry,

    // Connections and sockets: accepts, refusals, limiters, closes, frames.
    /// Open websocket connections.
    pub connections: Gauge,
    /// Open HTTP fallback streams (`GET /v1/sse`): how many fans a blocking
    /// proxy keeps off the websocket. Each also counts in `connections`.
    pub sse_streams: Gauge,
    /// The node's connection cap (`limits.max_connections`, lowered to fit
    /// the open-files limit): what `connections` is compared with.
    pub connections_max: Gauge,
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

    // Relays and fan-out: bus messages, retractions, the spoiler shield's
    // delay lines, deliveries, deltas, compression.
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

    // History and gaps.
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

    // The bus and the node: connection, writability, drain, heap.
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
    /// Times freed heap was given back to the system (`heap.rs`).
    pub heap_trims: Counter,
    /// Bytes the allocator's arenas held free at the last check.
    pub heap_free_bytes: Gauge,

    // Publications and reactions.
    /// Messages stored through `POST /v1/publish`.
    pub http_publishes: Counter,
    /// Fans' `publish` frames forwarded to the bus.
    pub client_publishes: Counter,
    /// Reactions, by result (`accepted`, `rate_limited`, `refused`).
    pub reactions: Family<Labels, Counter>,

    // Statistics.
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

    // The build and the tokens.
    /// 1, labelled with the hub's version.
    pub build_info: Family<Labels, Gauge>,
    /// Tokens on live connections and the server API (`auth/metrics.rs`).
    pub tokens: crate::auth::TokenMetrics,
}
