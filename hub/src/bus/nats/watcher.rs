//! The connection watcher: keeps [`BusStatus`](crate::bus::BusStatus)
//! current from the client's events and a periodic stream check, so that a
//! reconnect shows a new generation and a recreated stream a new epoch.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::Event;
use async_nats::connection::State;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::state::Inner;
use crate::bus::BusError;
use crate::log_limit::LogLimit;

/// How soon a failed status refresh (stream info after a reconnect) is retried.
const REFRESH_RETRY: Duration = Duration::from_millis(250);
/// How often dropped-message warnings are logged at most.
const SLOW_LOG_EVERY: Duration = Duration::from_secs(5);
/// How often a failing stream check is logged at most.
static CHECK_FAILED_LOG: LogLimit = LogLimit::new(Duration::from_secs(10));
/// How often "still unreachable" is logged while the bus is down: the client
/// retries several times a second, and one line per attempt buries the rest.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(10);

/// Keeps the status current: `Disconnected` clears `connected`; after a
/// `Connected` event (and every `check_every`) the stream info is read again,
/// so that a recreated stream shows a new epoch and a reconnect a new
/// generation. Ends when the bus is dropped. `url` (credentials redacted)
/// names the servers in the warnings.
pub(super) async fn watch_connection(
    inner: Weak<Inner>,
    mut events: mpsc::UnboundedReceiver<Event>,
    check_every: Duration,
    mut connects_seen: u64,
    url: String,
) {
    let mut wait = check_every;
    let (mut slow_drops, mut last_slow_log) = (0u64, None);
    // While disconnected: since when, failed attempts, last warning.
    let mut down: Option<(std::time::Instant, u64, std::time::Instant)> = None;
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => return,
            },
            () = tokio::time::sleep(wait) => None,
        };
        let Some(inner) = inner.upgrade() else { return };
        match event {
            Some(Event::Disconnected) => {
                warn!(url = %url, "NATS connection lost: reconnecting");
                let now = std::time::Instant::now();
                down = Some((now, 0, now));
                inner
                    .status
                    .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
                continue;
            }
            Some(Event::SlowConsumer(_)) => {
                // One event per dropped message: logged at most every 5 s.
                slow_drops += 1;
                if last_slow_log.is_none_or(|t: std::time::Instant| t.elapsed() >= SLOW_LOG_EVERY) {
                    warn!(
                        dropped = slow_drops,
                        "NATS subscription buffer full: messages dropped (gaps are repaired)"
                    );
                    slow_drops = 0;
                    last_slow_log = Some(std::time::Instant::now());
                }
                continue;
            }
            Some(Event::ClientError(e)) if down.is_some() => {
                let (since, attempts, last_log) = down.as_mut().expect("guarded");
                *attempts += 1;
                if last_log.elapsed() >= DOWN_LOG_EVERY {
                    warn!(
                        url = %url,
                        down_s = since.elapsed().as_secs(),
                        attempts = *attempts,
                        error = %e,
                        "NATS still unreachable"
                    );
                    *last_log = std::time::Instant::now();
                }
                continue;
            }
            Some(Event::Connected) => {
                if let Some((since, attempts, _)) = down.take() {
                    info!(
                        url = %url,
                        down_ms = since.elapsed().as_millis() as u64,
                        attempts,
                        "NATS connection back"
                    );
                }
            }
            None => {}
            Some(other) => {
                debug!(event = %other, "NATS event");
                continue;
            }
        }
        wait = if inner.refresh(&mut connects_seen).await {
            check_every
        } else {
            REFRESH_RETRY.min(check_every)
        };
    }
}

impl Inner {
    /// Re-reads the stream after a (re)connection or on the periodic check;
    /// returns whether the status is settled (false: retry soon).
    async fn refresh(&self, connects_seen: &mut u64) -> bool {
        if self.client.connection_state() != State::Connected {
            self.status
                .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
            return false;
        }
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        // Err(_, true): the bus cannot serve (its stream is gone for good).
        // Err(_, false): no answer now (a leader election, say), which is no
        // reason to turn a serving node away; a node that is not serving yet
        // stays so and retries soon.
        let info = match self.bounded(self.stream_info()).await {
            Ok(Some(info)) => Ok(info),
            Ok(None) => match &self.managed_config {
                // Ours and gone (deleted, or a memory stream on a restarted
                // server): recreate it; the new epoch tells clients.
                Some(config) => {
                    warn!(stream = %self.stream, "stream missing: creating it again");
                    self.bounded(self.create_or_update_stream(config))
                        .await
                        .map_err(|e| (e, true))
                }
                None => Err((
                    BusError::unavailable(format!("stream {} does not exist", self.stream)),
                    true,
                )),
            },
            Err(e) => Err((e, false)),
        };
        // A mirror's epoch is its origin's, asked across the domains: while
        // the origin is unreachable the one held stays (reads go on). None
        // is held before the first success (generation 0).
        let known = {
            let s = self.status.borrow();
            (s.generation > 0).then(|| s.epoch.clone())
        };
        let epoch = match info {
            Ok(info) => self
                .epoch_of(&info, known.as_ref())
                .await
                .map_err(|e| (e, false)),
            Err(e) => Err(e),
        };
        match epoch {
            Ok((epoch, writable)) => {
                let reconnected = connects != *connects_seen;
                *connects_seen = connects;
                self.status.send_if_modified(|s| {
                    if s.connected && s.epoch == epoch && !reconnected {
                        // Only the origin's reachability may have changed:
                        // nothing was missed, no new generation.
                        return std::mem::replace(&mut s.writable, writable) != writable;
                    }
                    s.writable = writable;
                    if s.epoch != epoch {
                        warn!(old = %s.epoch, new = %epoch, "stream epoch changed");
                    }
                    // Live messages may have been missed (reconnect, missing
                    // stream) or the sequence restarted: relays check again.
                    s.connected = true;
                    s.epoch = epoch.clone();
                    s.generation += 1;
                    info!(generation = s.generation, epoch = %s.epoch, "NATS bus connected");
                    true
                });
                true
            }
            Err((e, cannot_serve)) => {
                // Retried every quarter second while it fails (a region's
                // hub waiting for its origin, say): one line in ten seconds.
                if let Some(held_back) = CHECK_FAILED_LOG.allow() {
                    warn!(error = %e, held_back, "NATS stream check failed");
                }
                if cannot_serve {
                    self.status
                        .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
                }
                false
            }
        }
    }
}
