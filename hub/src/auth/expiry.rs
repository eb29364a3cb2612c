//! When one connection's token runs out: the session moves it (an `auth`
//! frame that sets or refreshes the token), the connection's writer waits
//! for it and closes with 1008 once it has passed by the grace period.
//!
//! A refresh may come at any moment, so the writer cannot sleep to a
//! deadline fixed at the handshake: it sleeps to the current one and looks
//! again when it wakes or when the session says the deadline moved.
//!
//! The node also reaches the session through it: topics an operator ended
//! for the connection's user (`POST /v1/unsubscribe`) wait here until the
//! connection's reader hands them to its session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// A connection's token expiry, shared by its session and its writer.
#[derive(Debug, Default)]
pub struct Expiry {
    /// The token's `exp` in Unix seconds; 0 while the token has none (or
    /// there is no token).
    exp: AtomicU64,
    /// Woken when `exp` changes. One waiter (the writer): `notify_one`
    /// keeps a permit, so a change made while the writer is busy is not lost.
    changed: Notify,
    /// Topics an operator ended, for the session.
    ended: parking_lot::Mutex<Vec<String>>,
    /// Woken when `ended` grows; one waiter (the reader).
    ending: Notify,
}

impl Expiry {
    pub fn new(exp: Option<u64>) -> Self {
        Self {
            exp: AtomicU64::new(exp.unwrap_or(0)),
            changed: Notify::new(),
            ended: parking_lot::Mutex::new(Vec::new()),
            ending: Notify::new(),
        }
    }

    /// The current `exp`, if any.
    pub fn get(&self) -> Option<u64> {
        Some(self.exp.load(Ordering::Acquire)).filter(|e| *e != 0)
    }

    /// A new token's `exp` (None: the new token never expires).
    pub fn set(&self, exp: Option<u64>) {
        self.exp.store(exp.unwrap_or(0), Ordering::Release);
        self.changed.notify_one();
    }

    /// Asks the session to end its subscription to `topic`.
    pub fn end_topic(&self, topic: &str) {
        self.ended.lock().push(topic.to_string());
        self.ending.notify_one();
    }

    /// Returns when an operator ended topics (see [`Expiry::take_ended`]).
    pub async fn topics_ended(&self) {
        self.ending.notified().await;
    }

    /// The topics an operator ended since the last call.
    pub fn take_ended(&self) -> Vec<String> {
        std::mem::take(&mut *self.ended.lock())
    }

    /// Returns once the token has been expired for `grace`: never while the
    /// connection has no expiring token.
    pub async fn passed(&self, grace: Duration) {
        loop {
            let Some(exp) = self.get() else {
                self.changed.notified().await;
                continue;
            };
            let left = Duration::from_secs(exp.saturating_sub(unix_now())) + grace;
            tokio::select! {
                () = tokio::time::sleep(left) => {
                    // A refresh that raced the timer moved `exp`: look again.
                    if self.get() == Some(exp) {
                        return;
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_refresh_moves_the_deadline_and_a_token_without_exp_never_passes() {
        let expiry = std::sync::Arc::new(Expiry::new(None));
        let waiter = tokio::spawn({
            let expiry = expiry.clone();
            async move { expiry.passed(Duration::from_millis(500)).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiter.is_finished(), "no exp: never passes");
        let now = unix_now();
        expiry.set(Some(now + 2));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Refreshed before the deadline: the old one no longer counts.
        expiry.set(Some(now + 10));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !waiter.is_finished(),
            "refreshed: the old deadline passed silently"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(waiter.is_finished(), "the new deadline plus grace passed");
    }
}
