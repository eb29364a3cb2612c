//! Connecting, in order: the settings checked, the client connected (short
//! ping interval, quick reconnects, every event forwarded to the watcher;
//! credentials and TLS from `settings.rs`), the server checked (2.11 or
//! newer, with JetStream), the stream set up (`stream.rs`), the watcher
//! started. Every refusal is one line for the operator, with the URL's
//! password hidden.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::region::mirror_config;
use super::settings;
use super::state::{Eviction, Inner, NatsBus, Subjects};
use super::stream::stream_config;
use super::watcher::watch_connection;
use crate::bus::{BusError, BusErrorKind, BusResult, BusStatus, Epoch};
use crate::config::{BusConfig, redact_url_credentials};
use crate::metrics::Labels;

/// The oldest nats-server with the batched direct get (ADR-31).
const MIN_SERVER_VERSION: (u64, u64) = (2, 11);
/// Messages async-nats buffers per subscription before it drops the newest:
/// generous, because a drop costs a gap repair.
const SUBSCRIPTION_CAPACITY: usize = 64 * 1024;
/// Reconnect delays grow by this step per attempt...
const RECONNECT_STEP_MS: u64 = 50;
/// ...up to this, plus up to one step of jitter.
const RECONNECT_MAX_MS: u64 = 200;

impl NatsBus {
    /// Connects, checks the server, provisions or checks the stream.
    ///
    /// `max_retained` is the deepest namespace retention: the stream's
    /// `max_msgs_per_subject`. A failure is [`BusError::Unusable`], one line
    /// fit for the operator.
    pub async fn connect(cfg: &BusConfig, max_retained: u32) -> BusResult<NatsBus> {
        Self::connect_counted(cfg, max_retained, Family::default()).await
    }

    /// [`NatsBus::connect`], counting the messages its live feeds refuse in
    /// `refused` (the node's `tribune_bus_messages_refused_total`).
    pub(crate) async fn connect_counted(
        cfg: &BusConfig,
        max_retained: u32,
        refused: Family<Labels, Counter>,
    ) -> BusResult<NatsBus> {
        let url = cfg
            .url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| BusError::unusable("bus.url (--nats) is not set"))?;
        if cfg.prefix.is_empty()
            || cfg.prefix.contains(['*', '>', ' '])
            || cfg.stream.contains(['.', '*', '>', ' '])
        {
            return Err(BusError::unusable(
                "bus.prefix and bus.stream must be plain NATS names (no wildcards, spaces, or dots in the stream)",
            ));
        }
        let timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let client = connect_client(cfg, url, timeout, events_tx).await?;
        let shown = redact_url_credentials(url);
        let version = check_server(&client, &shown)?;

        let (status, _) = watch::channel(BusStatus {
            connected: false,
            epoch: Epoch::new(&cfg.stream, 0),
            generation: 0,
            writable: false,
        });
        let inner = Arc::new(Inner {
            client,
            subjects: Subjects::new(&cfg.prefix, &cfg.stream),
            stream: cfg.stream.clone(),
            managed_config: cfg.manage_stream.then(|| {
                if cfg.mirror_of.is_empty() {
                    stream_config(cfg, max_retained)
                } else {
                    mirror_config(cfg, max_retained)
                }
            }),
            timeout,
            status,
            eviction: watch::channel(Eviction::Any).0,
            heartbeat: Duration::from_millis(cfg.check_interval_ms.clamp(100, 30_000)),
            refused,
        });
        let info = inner.set_up_stream(cfg).await?;
        // A region's mirror whose origin cannot be asked yet (the leaf node
        // link still coming up) and that holds no recorded epoch: the node
        // starts not ready, and the watcher names the epoch once it can.
        let (epoch, ready, writable) = match inner.epoch_of(&info, None).await {
            Ok((epoch, writable)) => (epoch, true, writable),
            Err(e) if e.kind() == BusErrorKind::Unavailable => {
                warn!(error = %e, "the origin's epoch is not known yet: not ready until it is");
                (Epoch::new(&cfg.stream, 0), false, false)
            }
            Err(e) => return Err(BusError::unusable(format!("{e:#}"))),
        };
        let connects = inner.client.statistics().connects.load(Ordering::Relaxed);
        inner.status.send_replace(BusStatus {
            connected: ready,
            epoch: epoch.clone(),
            generation: u64::from(ready),
            writable,
        });
        info!(url = %shown, stream = %cfg.stream, %epoch, %version, "NATS bus ready");

        let check_every = Duration::from_millis(cfg.check_interval_ms.max(100));
        tokio::spawn(watch_connection(
            Arc::downgrade(&inner),
            events_rx,
            check_every,
            connects,
            shown,
        ));
        Ok(NatsBus { inner })
    }
}

/// The client, connected to one of the comma-separated servers of `url`.
async fn connect_client(
    cfg: &BusConfig,
    url: &str,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) -> BusResult<Client> {
    let servers: Vec<String> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let options = ConnectOptions::new()
        .name("tribune-hub")
        .ping_interval(Duration::from_millis(cfg.ping_interval_ms.max(100)))
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        // Forwarded at once: async-nats runs the callback in line and drops
        // events while it is busy; the watcher task does the slow work.
        .event_callback(move |event| {
            let tx = events.clone();
            async move {
                let _ = tx.send(event);
            }
        });
    let options = settings::apply(cfg, options)?;
    let shown = redact_url_credentials(url);
    tokio::time::timeout(timeout * 2, options.connect(servers))
        .await
        .map_err(|_| BusError::unusable(format!("cannot connect to NATS at {shown}: timed out")))?
        .map_err(|e| BusError::unusable(connect_failure(cfg, &shown, &e)))
}

/// The operator's line for a failed first connection: what was refused and
/// which setting to look at. Never a secret: the URL is shown without its
/// password, and credentials are named by their key.
fn connect_failure(cfg: &BusConfig, url: &str, e: &async_nats::ConnectError) -> String {
    use async_nats::ConnectErrorKind as Kind;
    let detail = e.to_string();
    // async-nats reports a refused certificate as an I/O error: the text
    // tells which it is.
    if detail.contains("UnknownIssuer") {
        return format!(
            "TLS with NATS at {url} refused: the server's certificate is not signed by a CA \
             the hub trusts (bus.tls_ca_file{}): {detail}",
            if cfg.tls_ca_file.is_some() {
                ""
            } else {
                " is not set: the system's roots were used"
            }
        );
    }
    match e.kind() {
        Kind::AuthorizationViolation | Kind::Authentication => format!(
            "NATS at {url} refused the hub's credentials (bus.credentials, nkey_seed_file, \
             user and password, token, or the TLS client certificate): {detail}"
        ),
        Kind::Tls => format!("TLS with NATS at {url} failed: {detail}"),
        _ if settings::tls_required(cfg) => {
            format!("cannot connect to NATS at {url} over TLS: {detail}")
        }
        _ => format!("cannot connect to NATS at {url}: {detail}"),
    }
}

/// Refuses a server without what the hub needs: the batched direct get
/// (2.11 or newer) and JetStream. Answers the server's version.
fn check_server(client: &Client, url: &str) -> BusResult<String> {
    let server = client.server_info();
    let version = parse_version(&server.version).ok_or_else(|| {
        BusError::unusable(format!(
            "nats-server at {url} reports an unreadable version '{}'",
            server.version
        ))
    })?;
    if version < MIN_SERVER_VERSION {
        return Err(BusError::unusable(format!(
            "nats-server {} at {url} is too old: Tribune needs 2.11 or newer (batched direct get)",
            server.version
        )));
    }
    if !server.jetstream {
        return Err(BusError::unusable(format!(
            "nats-server at {url} runs without JetStream: start it with -js (or jetstream {{}} in its config)"
        )));
    }
    Ok(server.version)
}

/// Wait before reconnect attempt `attempts`: a restarted server or a cluster
/// peer is found within a quarter of a second. Every moment a hub stays away
/// after the server is back, editors store messages its live feed misses
/// (repaired from the stream, but only while the stream still holds them);
/// async-nats' default backs off to 4 s, and a linear 100 ms step left a hub
/// up to a second late after a 2-second restart. The jitter keeps a fleet of
/// hubs from reconnecting in lockstep.
fn reconnect_delay(attempts: usize) -> Duration {
    let step = (RECONNECT_STEP_MS * attempts as u64).min(RECONNECT_MAX_MS);
    Duration::from_millis(step + rand::random_range(0..=RECONNECT_STEP_MS))
}

/// `major.minor` of a server version such as `2.11.0-RC.1`.
fn parse_version(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split('.');
    let number = |s: Option<&str>| -> Option<u64> {
        let digits: String = s?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((number(parts.next())?, number(parts.next())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_are_attempted_within_a_quarter_second() {
        for attempts in 0..100 {
            let d = reconnect_delay(attempts);
            assert!(d <= Duration::from_millis(250), "attempt {attempts}: {d:?}");
        }
        assert!(reconnect_delay(1) <= Duration::from_millis(100));
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("2.11.0-RC.1"), Some((2, 11)));
        assert_eq!(parse_version("v2.9.25"), Some((2, 9)));
        assert!(parse_version("2.9.25").unwrap() < MIN_SERVER_VERSION);
        assert!(parse_version("2.11.0").unwrap() >= MIN_SERVER_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }
}
