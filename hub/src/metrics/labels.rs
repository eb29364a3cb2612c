//! The known label values of every labelled family, and their creation at
//! zero when the node starts (see the module doc of `metrics`); a label
//! value outside a list still counts.

use prometheus_client::metrics::family::Family;

use super::families::{Labels, Metrics};

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
    /// Creates every known label value at zero (see the module doc).
    pub(super) fn precreate(&self) {
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
}
