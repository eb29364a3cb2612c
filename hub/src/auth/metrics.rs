//! Counters of tokens on live connections and of the server API: logins and
//! refreshes by `auth` frame, refusals by the rule that failed, closes at
//! expiry, revocations, subscriptions ended by a narrowed grant, operator
//! calls. Kept apart from `metrics/` so the token code owns its names;
//! [`TokenMetrics::register`] adds them to the node's registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug, Default, Clone)]
pub struct TokenMetrics {
    /// `auth` frames accepted, by `kind` (`login`: the connection had no
    /// token; `refresh`: it replaced one).
    pub auth_frames: Family<Labels, Counter>,
    /// `auth` frames refused, by the `rule` that failed.
    pub auth_failures: Family<Labels, Counter>,
    /// Connections closed with 1008 because their token expired (plus grace).
    pub expired: Counter,
    /// Subscriptions ended with `unsubscribed`, by `reason`.
    pub unsubscribed: Family<Labels, Counter>,
    /// Revocations recorded on this node, by `kind` (`jti`, `user`).
    pub revocations: Family<Labels, Counter>,
    /// Server-API calls, by `endpoint` and `result` (`ok`, `refused`).
    pub api_calls: Family<Labels, Counter>,
    /// Connections closed by an operator (disconnect or revocation).
    pub disconnected: Counter,
    /// Control messages dropped, by `reason` (those of the statistics seal:
    /// `bad_signature`, `no_key`, `unsigned`, `malformed`; and `stale`,
    /// `replayed`).
    pub control_dropped: Family<Labels, Counter>,
}

impl TokenMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "token_auth_frames",
            "auth frames accepted, by kind (login, refresh)",
            self.auth_frames.clone(),
        );
        r.register(
            "token_auth_failures",
            "auth frames refused, by the rule that failed",
            self.auth_failures.clone(),
        );
        r.register(
            "token_expired_closes",
            "Connections closed with 1008 at token expiry plus grace",
            self.expired.clone(),
        );
        r.register(
            "token_unsubscribed",
            "Subscriptions ended with an unsubscribed frame, by reason",
            self.unsubscribed.clone(),
        );
        r.register(
            "token_revocations",
            "Token revocations recorded, by kind (jti, user)",
            self.revocations.clone(),
        );
        r.register(
            "server_api_calls",
            "Server-API calls on the internal listener, by endpoint and result",
            self.api_calls.clone(),
        );
        r.register(
            "operator_disconnects",
            "Connections closed by an operator's disconnect or revocation",
            self.disconnected.clone(),
        );
        r.register(
            "control_dropped",
            "Control messages dropped, by reason (bad_signature, no_key, unsigned, malformed, stale, replayed)",
            self.control_dropped.clone(),
        );
    }

    pub fn control_dropped(&self, reason: &'static str) {
        self.control_dropped
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    pub fn auth_frame(&self, kind: &'static str) {
        self.auth_frames.get_or_create(&vec![("kind", kind)]).inc();
    }

    pub fn auth_failure(&self, rule: &'static str) {
        self.auth_failures
            .get_or_create(&vec![("rule", rule)])
            .inc();
    }

    pub fn unsubscribe(&self, reason: &'static str) {
        self.unsubscribed
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    pub fn revocation(&self, kind: &'static str) {
        self.revocations.get_or_create(&vec![("kind", kind)]).inc();
    }

    pub fn api_call(&self, endpoint: &'static str, result: &'static str) {
        self.api_calls
            .get_or_create(&vec![("endpoint", endpoint), ("result", result)])
            .inc();
    }
}
