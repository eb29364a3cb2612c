//! What `--check-config` and the node refuse: settings that cannot work, or
//! that name something (an origin, a NATS URL, a file) that cannot be used.

use super::*;
use crate::error::ConfigError;

impl Config {
    /// Refuses settings that cannot work, with a one-line reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError::invalid(m));
        // The name is a token of bus subjects (`<prefix>.stats.<node>`).
        let name_ok = (1..=64).contains(&self.node_name.len())
            && self
                .node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok && !self.node_name.is_empty() {
            return fail(format!(
                "node_name '{}' must be 1 to 64 characters of [A-Za-z0-9_-]",
                self.node_name
            ));
        }
        for (name, ns) in &self.namespaces {
            if tribune_protocol::validate_topic(&format!("{name}.x")).is_err() || name.contains('.')
            {
                return fail(format!("namespace '{name}' is not a valid topic token"));
            }
            if ns.retained == 0 || ns.retained > 10_000 {
                return fail(format!("namespace '{name}': retained must be 1..=10000"));
            }
            if ns.retained_secs > 86_400 || ns.expected_rate > 10_000 {
                return fail(format!(
                    "namespace '{name}': retained_secs must be 0..=86400 and expected_rate 0..=10000"
                ));
            }
            // The stream keeps this many per subject and a relay loads as
            // many at its start: bounded like `retained`, ten times over.
            if ns.depth() > 100_000 {
                return fail(format!(
                    "namespace '{name}': retained_secs × expected_rate ({}) must be at most 100000",
                    u64::from(ns.retained_secs) * u64::from(ns.expected_rate)
                ));
            }
            if !(64 * 1024..=1024 * 1024 * 1024).contains(&ns.retained_bytes) {
                return fail(format!(
                    "namespace '{name}': retained_bytes must be 65536..=1073741824"
                ));
            }
            for r in &ns.reactions {
                if r.is_empty() || r.len() > 32 {
                    return fail(format!(
                        "namespace '{name}': reaction '{r}' must be 1..=32 bytes"
                    ));
                }
            }
        }
        let l = &self.limits;
        if l.max_frame_bytes < 256 {
            return fail("limits.max_frame_bytes must be at least 256".into());
        }
        let rates = [
            l.frames_per_second,
            l.frames_burst,
            l.handshakes_per_second,
            l.handshakes_burst,
            l.node_handshakes_per_second,
            l.node_handshakes_burst,
            l.new_topics_per_second,
            l.new_topics_burst,
            l.history_per_second,
            l.history_burst,
            l.history_token_per_second,
            l.history_token_burst,
            l.publish_failures_per_minute,
        ];
        if rates.contains(&0) {
            return fail("limits: rates and bursts must be at least 1".into());
        }
        if !(1..=100).contains(&l.address_share_percent) {
            return fail("limits.address_share_percent must be 1..=100".into());
        }
        if !(1..=128).contains(&l.ipv6_prefix_len) {
            return fail("limits.ipv6_prefix_len must be 1..=128".into());
        }
        if !(100..=60_000).contains(&l.header_read_timeout_ms) {
            return fail("limits.header_read_timeout_ms must be 100..=60000".into());
        }
        if l.max_pending_handshakes == 0 || l.max_relays == 0 || l.max_connections_per_user == 0 {
            return fail(
                "limits: max_pending_handshakes, max_relays and max_connections_per_user must be positive"
                    .into(),
            );
        }
        if let Some(key) = &self.publish_key
            && key.len() < MIN_PUBLISH_KEY_BYTES
        {
            return fail(format!(
                "publish_key must be at least {MIN_PUBLISH_KEY_BYTES} bytes (or unset)"
            ));
        }
        if let Some(key) = &self.admin_key
            && key.len() < MIN_PUBLISH_KEY_BYTES
        {
            return fail(format!(
                "admin_key must be at least {MIN_PUBLISH_KEY_BYTES} bytes (or unset)"
            ));
        }
        if let Some(key) = &self.operator_key
            && key.len() < MIN_PUBLISH_KEY_BYTES
        {
            return fail(format!(
                "operator_key must be at least {MIN_PUBLISH_KEY_BYTES} bytes (or unset)"
            ));
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return fail(
                "proxy_protocol needs trusted_proxies: the load balancers' addresses".into(),
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return fail("tls: set both cert_file and key_file, or neither".into());
        }
        if self.internal_listen.port() != 0 && self.internal_listen == self.listen {
            return fail("internal_listen must differ from listen".into());
        }
        if l.reactions_per_second == 0 || l.reactions_burst == 0 {
            return fail("limits: reaction rate and burst must be at least 1".into());
        }
        if l.queue_messages == 0 || l.queue_bytes < 1024 || l.max_subscriptions == 0 {
            return fail("limits: queue and subscription limits must be positive".into());
        }
        if self.heartbeat_ms < 100 {
            return fail("heartbeat_ms must be at least 100".into());
        }
        if self.bus.max_consumers == 0 || self.bus.max_consumers > i64::MAX as u64 {
            return fail("bus.max_consumers must be at least 1".into());
        }
        if self.bus.duplicate_window_secs > self.bus.max_age_secs {
            return fail("bus.duplicate_window_secs must not exceed bus.max_age_secs".into());
        }
        let plain = |name: &str| !name.contains(['.', '*', '>', ' ']);
        if !plain(&self.bus.mirror_of) || self.bus.mirror_of == self.bus.stream {
            return fail(
                "bus.mirror_of must name the origin stream (a plain NATS name), not bus.stream itself"
                    .into(),
            );
        }
        if self.bus.mirror_api.contains(['*', '>', ' '])
            || (!self.bus.mirror_api.is_empty() && self.bus.mirror_of.is_empty())
        {
            return fail(
                "bus.mirror_api is a JetStream API prefix ($JS.<domain>.API) and needs bus.mirror_of"
                    .into(),
            );
        }
        if !matches!(self.bus.storage.as_str(), "file" | "memory") {
            return fail(format!(
                "bus.storage must be 'file' or 'memory', not '{}'",
                self.bus.storage
            ));
        }
        if self.drain.window_ms >= self.drain.grace_ms {
            return fail("drain.window_ms must be shorter than drain.grace_ms".into());
        }
        if self.stats.window_ms < 100 {
            return fail("stats.window_ms must be at least 100".into());
        }
        self.check_references()
    }

    /// Settings that name something outside the file: origins a browser
    /// can send, NATS URLs, credential files. Checked here so that
    /// `--check-config` refuses what the node would fail on later, or
    /// (an origin that can never match) silently never use.
    fn check_references(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            let ok = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && !origin.trim_end_matches('/').contains(['?', '#'])
                    && u.username().is_empty()
                    && !origin.ends_with('/')
            });
            if !ok {
                return Err(ConfigError::invalid(format!(
                    "allowed_origins: '{origin}' is not an origin a browser sends \
                     (scheme://host[:port], e.g. https://example.com)"
                )));
            }
        }
        if let Some(urls) = &self.bus.url {
            for (i, server) in urls.split(',').map(str::trim).enumerate() {
                let ok = url::Url::parse(server).is_ok_and(|u| {
                    matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") && u.host_str().is_some()
                });
                // Not echoed: a URL may carry a password.
                if !ok {
                    return Err(ConfigError::invalid(format!(
                        "bus.url (--nats): server {} of the list is not a NATS URL \
                         (nats://host:port, tls://, ws:// or wss://)",
                        i + 1
                    )));
                }
            }
        }
        // The key file itself is read with the other key files
        // (`tribune_hub::check_stats_key`), which `--print-config` skips.
        self.stats.check_key_settings()?;
        Ok(())
    }
}
