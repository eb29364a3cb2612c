//! Every limit of PROTOCOL.md section 8 as a small object the connection or
//! handshake consults; the figures come from `config::Limits`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

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

/// Handshakes per second per client address; past it, 429.
pub type HandshakeLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

pub fn handshake_rate(limits: &Limits) -> HandshakeLimiter {
    RateLimiter::keyed(quota(
        limits.handshakes_per_second,
        limits.handshakes_per_second,
    ))
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
            ..Limits::default()
        };
        let r = handshake_rate(&l);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(r.check_key(&a).is_ok() && r.check_key(&a).is_ok());
        assert!(r.check_key(&a).is_err());
        assert!(r.check_key(&b).is_ok());
    }
}
