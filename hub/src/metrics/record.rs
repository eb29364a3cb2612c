//! Counting one event on a labelled family or a histogram: the helpers the
//! rest of the hub calls instead of naming label keys itself.

use super::families::Metrics;

impl Metrics {
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
