//! The audit log: every refusal and authentication failure, as one
//! structured line with its reason, the client's address, and the token's
//! `sub` and `kid` when there was one; and a count per reason in
//! `tribune_refusals_total{reason}`.
//!
//! Lines go to the `tribune::audit` target at INFO (a refusal is the node
//! doing its job, not a fault: WARN is kept for what an operator must fix),
//! at most one per reason
//! per second, each saying how many of that reason were held back since the
//! last one: a flood of one kind can neither fill the disk nor hide another
//! kind. The count is exact whatever the log lets through.
//!
//! Reasons, by where they happen:
//! - accept: `capacity`, `pending`, `pending_address` (too many sockets not
//!   yet websockets), `header_timeout` (slow or silent request),
//!   `proxy_untrusted`, `proxy_header`, `tls_handshake`;
//! - handshake: `draining`, `rate` (per address), `rate_node`, `origin`,
//!   `token`, `address_share`, `user_share` (and `capacity`);
//! - `POST /v1/publish`: `publish_origin`, `publish_key`, `publish_disabled`,
//!   `publish_rate`, `publish_content_type`;
//! - `/admin`: `admin_key` (missing or wrong), `admin_rate`;
//! - the server API (`/v1/disconnect`, `/v1/unsubscribe`, `/v1/revoke`): `api_origin`,
//!   `api_key`, `api_disabled`, `api_rate`, `api_content_type`;
//! - `GET /v1/history`: `history_rate` (per address or per token `sub`),
//!   `history_origin`, `history_params`, `history_namespace`,
//!   `history_token` (missing where needed, or not valid),
//!   `history_grant`, `history_unavailable` (no relay could serve it);
//! - on a connection: `react_grant`, `react_unsubscribed`, `topic_rate`,
//!   `relay_cap`, `flood` (4029), `auth_frame` (an `auth` frame refused; the
//!   detail starts with `rule=<rule>`), `user_share` (a first-frame login
//!   past the user's share).
//!
//! `sub` and `kid` come from clients: they are cut to 64 characters and
//! anything but printable ASCII is replaced, so that no value can forge a
//! log line.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::log_limit::LogLimit;
use crate::metrics::Metrics;

/// One line per reason per this interval, at most.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// Longest `sub` or `kid` written to the log.
const MAX_FIELD: usize = 64;

/// Who was refused, as far as the node knows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    /// The client's address (behind trusted proxies, the client's own).
    pub client: Option<IpAddr>,
    /// The verified token's `sub`.
    pub sub: Option<&'a str>,
    /// The `kid` of the token's header (verified or not: which key a forger
    /// aimed at is worth knowing).
    pub kid: Option<&'a str>,
}

impl<'a> Who<'a> {
    pub fn client(ip: IpAddr) -> Self {
        Self {
            client: Some(ip),
            ..Self::default()
        }
    }
}

/// The node's audit log.
pub struct Audit {
    metrics: Arc<Metrics>,
    /// One limit per reason, created at its first refusal.
    lines: DashMap<&'static str, LogLimit>,
}

impl Audit {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            lines: DashMap::new(),
        }
    }

    /// Records a refusal: counted always, logged unless this reason was
    /// logged less than a second ago.
    pub fn refused(&self, reason: &'static str, who: Who<'_>, detail: &str) {
        self.metrics.refusal(reason);
        let held_back = {
            let limit = self
                .lines
                .entry(reason)
                .or_insert_with(|| LogLimit::new(LINE_EVERY));
            limit.allow()
        };
        let Some(held_back) = held_back else {
            return;
        };
        tracing::info!(
            target: "tribune::audit",
            reason,
            client = %Field(who.client.map(|ip| ip.to_string()).as_deref()),
            sub = %Field(who.sub),
            kid = %Field(who.kid),
            held_back,
            "refused: {}",
            Clean(detail, 200),
        );
    }
}

/// A client-supplied value, cleaned; `-` when absent.
struct Field<'a>(Option<&'a str>);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None | Some("") => f.write_str("-"),
            Some(v) => Clean(v, MAX_FIELD).fmt(f),
        }
    }
}

/// Printable ASCII without quotes or backslashes, at most `.1` characters.
struct Clean<'a>(&'a str, usize);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars().take(self.1) {
            let safe = (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ';
            f.write_char(if safe { c } else { '?' })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_values_cannot_forge_lines() {
        let forged = "fan\nreason=none client=1.2.3.4 \"x\"";
        assert_eq!(
            Field(Some(forged)).to_string(),
            "fan?reason=none client=1.2.3.4 ?x?"
        );
        assert_eq!(Field(Some(&"k".repeat(100))).to_string().len(), MAX_FIELD);
        assert_eq!(Field(None).to_string(), "-");
        assert_eq!(Field(Some("é")).to_string(), "?");
    }

    #[test]
    fn every_refusal_is_counted_even_when_not_logged() {
        let metrics = Arc::new(Metrics::new());
        let audit = Audit::new(metrics.clone());
        for _ in 0..50 {
            audit.refused("publish_key", Who::default(), "wrong key");
        }
        audit.refused("token", Who::default(), "token expired");
        let text = metrics.render();
        assert!(
            text.contains("tribune_refusals_total{reason=\"publish_key\"} 50"),
            "{text}"
        );
        assert!(
            text.contains("tribune_refusals_total{reason=\"token\"} 1"),
            "{text}"
        );
    }
}
