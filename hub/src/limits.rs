//! Every limit of PROTOCOL.md section 8 as a small object the connection or
//! handshake consults; the figures come from `config::Limits`.
//!
//! Keyed limiters (per client address) keep one entry per key they saw;
//! [`KeyedLimiter::sweep`], run every few seconds, drops the entries that
//! are back to a full burst, so that addresses that come and go (a botnet
//! rotating through millions) cost memory only while they are active.

use std::collections::VecDeque;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultDirectRateLimiter, NotUntil, Quota, RateLimiter};

use crate::config::Limits;

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).expect("at least 1");
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    Quota::per_second(rate).allow_burst(burst)
}

/// Frames per second per connection (burst allowed); past it, 4029.
pub fn frame_rate(limits: &Limits) -> DefaultDirectRateLimiter {
    RateLimiter::direct(quota(limits.frames_per_second, limits.frames_burst))
}

/// Reactions per second per connection (burst allowed); past it, `rate_limited`.
pub fn reaction_rate(limits: &Limits) -> DefaultDirectRateLimiter {
    RateLimiter::direct(quota(limits.reactions_per_second, limits.reactions_burst))
}

/// A rate per key: a client address (its limit key) by default, or
/// another identity (an HTTP stream's reaction key).
pub struct KeyedLimiter<K: Hash + Eq + Clone = IpAddr> {
    inner: RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    fn new(quota: Quota) -> Self {
        Self {
            inner: RateLimiter::keyed(quota),
        }
    }

    /// Takes one cell for `key`; when none is left, how long until one is.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.inner
            .check_key(key)
            .map_err(|not_until| wait(&not_until))
    }

    /// Forgets the keys whose state equals a fresh one's (a full burst);
    /// how many it forgot.
    pub fn sweep(&self) -> usize {
        let before = self.inner.len();
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
        before.saturating_sub(self.inner.len())
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.inner.len()
    }
}

fn wait(not_until: &NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

/// Reactions per second per HTTP stream (its reaction key), as
/// [`reaction_rate`] is per websocket connection.
pub fn stream_reaction_rate(limits: &Limits) -> KeyedLimiter<u64> {
    KeyedLimiter::new(quota(limits.reactions_per_second, limits.reactions_burst))
}

/// Handshakes per client address (burst allowed); past it, 429.
pub fn handshake_rate(limits: &Limits) -> KeyedLimiter {
    KeyedLimiter::new(quota(limits.handshakes_per_second, limits.handshakes_burst))
}

/// `GET /v1/history` requests per client address (burst allowed); past it, 429.
pub fn history_rate(limits: &Limits) -> KeyedLimiter {
    KeyedLimiter::new(quota(limits.history_per_second, limits.history_burst))
}

/// `GET /v1/history` requests per token `sub` (burst allowed); past it, 429.
pub fn history_token_rate(limits: &Limits) -> KeyedLimiter<String> {
    KeyedLimiter::new(quota(
        limits.history_token_per_second,
        limits.history_token_burst,
    ))
}

/// Handshakes per node, whatever the address; past it, 503.
pub fn node_handshake_rate(limits: &Limits) -> DefaultDirectRateLimiter {
    RateLimiter::direct(quota(
        limits.node_handshakes_per_second,
        limits.node_handshakes_burst,
    ))
}

/// How long until a direct limiter has a cell again.
pub fn direct_check(limiter: &DefaultDirectRateLimiter) -> Result<(), Duration> {
    limiter.check().map_err(|not_until| wait(&not_until))
}

/// Subscriptions to topics new to a connection (burst allowed); past it,
/// `rate_limited`.
pub fn new_topic_rate(limits: &Limits) -> DefaultDirectRateLimiter {
    RateLimiter::direct(quota(limits.new_topics_per_second, limits.new_topics_burst))
}

/// Failed attempts per caller address (`POST /v1/publish`): past the budget
/// the address is refused until a cell comes back, without its key being
/// looked at, so that guessing costs a minute per few tries.
pub struct FailureLimiter {
    rate: KeyedLimiter,
    /// Addresses refused until the instant.
    blocked: DashMap<IpAddr, Instant>,
}

impl FailureLimiter {
    pub fn per_minute(n: u32) -> Self {
        let n = NonZeroU32::new(n.max(1)).expect("at least 1");
        Self {
            rate: KeyedLimiter::new(Quota::per_minute(n).allow_burst(n)),
            blocked: DashMap::new(),
        }
    }

    /// How long `key` stays refused, if it is.
    pub fn blocked(&self, key: &IpAddr) -> Option<Duration> {
        let until = *self.blocked.get(key)?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Records a failure of `key`; true when it used the last of its budget
    /// (this answer and the next ones until a cell comes back are 429).
    pub fn failed(&self, key: &IpAddr) -> bool {
        match self.rate.check(key) {
            Ok(()) => false,
            Err(wait) => {
                self.blocked.insert(*key, Instant::now() + wait);
                true
            }
        }
    }

    /// Forgets budgets back to full and blocks that ended; how many
    /// budgets it forgot.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.shrink_to_fit();
        self.rate.sweep()
    }

    /// Addresses remembered now.
    pub fn keys(&self) -> usize {
        self.rate.keys().max(self.blocked.len())
    }
}

/// Bad frames in a sliding window; past `max` in `window`, 4029.
///
/// Allocates nothing until the first bad frame: most connections never send one.
#[derive(Debug, Default)]
pub struct BadFrames {
    seen: VecDeque<Instant>,
}

impl BadFrames {
    /// Records one bad frame; true when the connection must be closed.
    pub fn record(&mut self, now: Instant, max: u32, window: Duration) -> bool {
        while let Some(first) = self.seen.front() {
            if now.duration_since(*first) >= window {
                self.seen.pop_front();
            } else {
                break;
            }
        }
        self.seen.push_back(now);
        self.seen.len() > max as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames_window() {
        let mut b = BadFrames::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        for i in 0..10 {
            assert!(!b.record(t0 + Duration::from_secs(i), 10, w));
        }
        assert!(b.record(t0 + Duration::from_secs(10), 10, w));
        // Once the oldest ones leave the window, the count starts over.
        let mut b = BadFrames::default();
        for i in 0..10 {
            assert!(!b.record(t0 + Duration::from_secs(i * 10), 10, w));
        }
        assert!(!b.record(t0 + Duration::from_secs(100), 10, w));
    }

    #[test]
    fn frame_rate_burst_then_refuse() {
        let l = Limits {
            frames_per_second: 1,
            frames_burst: 3,
            ..Limits::default()
        };
        let r = frame_rate(&l);
        assert!((0..3).all(|_| r.check().is_ok()));
        assert!(r.check().is_err());
    }

    #[test]
    fn handshake_rate_is_per_address() {
        let l = Limits {
            handshakes_per_second: 2,
            handshakes_burst: 2,
            ..Limits::default()
        };
        let r = handshake_rate(&l);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(r.check(&a).is_ok() && r.check(&a).is_ok());
        let wait = r.check(&a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(r.check(&b).is_ok());
        assert_eq!(r.keys(), 2);
    }

    #[test]
    fn swept_keys_are_the_ones_back_to_a_full_burst() {
        let l = Limits {
            handshakes_per_second: 1000,
            handshakes_burst: 1,
            ..Limits::default()
        };
        let r = handshake_rate(&l);
        for i in 0..100u8 {
            r.check(&IpAddr::from([192, 0, 2, i])).unwrap();
        }
        assert_eq!(r.keys(), 100);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(r.sweep(), 100);
        assert_eq!(r.keys(), 0);
    }

    #[test]
    fn failures_past_the_budget_block_the_address() {
        let f = FailureLimiter::per_minute(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!f.failed(&a) && !f.failed(&a) && !f.failed(&a));
        assert!(f.blocked(&a).is_none());
        assert!(f.failed(&a));
        let left = f.blocked(&a).expect("blocked");
        assert!(left > Duration::from_secs(10), "{left:?}");
        assert!(f.blocked(&"192.0.2.2".parse().unwrap()).is_none());
    }
}
