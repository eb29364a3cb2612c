//! Full-jitter exponential backoff: pure arithmetic, no clock, no socket.
//!
//! Attempt `n` (from 0) waits a uniformly random delay in
//! `[0, min(max, min_delay * 2^n)]` ("full jitter"): after a hub restart,
//! thousands of fans spread their reconnects over the whole window instead of
//! arriving in waves at the same instants.

use std::time::Duration;

use rand::Rng;

/// Reconnect delays of one client.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// Ceiling of the first attempt's window.
    min: Duration,
    /// Largest window, whatever the number of attempts.
    max: Duration,
    /// Failed attempts since the last reset.
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The upper bound of the next delay's window.
    pub(crate) fn window(&self) -> Duration {
        // 2^31 * 1 ms is already 24 days: cap the shift so it never overflows.
        let factor = 1u32 << self.attempt.min(31);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Draws the next delay and counts the attempt.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let window = self.window();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = window.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// Attempts counted since the last reset.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the first window (after a connection that worked).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniformly random delay in `[0, bound)`, as `drain` and `Retry-After` ask.
pub(crate) fn jitter_below(bound: Duration, rng: &mut impl Rng) -> Duration {
    let nanos = bound.as_nanos().min(u64::MAX as u128) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn windows_double_up_to_the_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(7);
        let mut windows = Vec::new();
        for _ in 0..6 {
            windows.push(b.window().as_millis());
            b.next_delay(&mut rng);
        }
        assert_eq!(windows, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.attempt(), 6);
        b.reset();
        assert_eq!(b.window(), Duration::from_millis(100));
    }

    #[test]
    fn delays_stay_in_the_window_and_spread_over_it() {
        let mut rng = StdRng::seed_from_u64(42);
        let max = Duration::from_millis(800);
        let mut b = Backoff::new(Duration::from_millis(100), max);
        for _ in 0..4 {
            b.next_delay(&mut rng);
        }
        // Every later draw has the full 800 ms window: full jitter means both
        // halves of it are used, not a fixed delay plus a little noise.
        let (mut low, mut high) = (0, 0);
        for _ in 0..1000 {
            let d = b.next_delay(&mut rng);
            assert!(d <= max, "{d:?}");
            if d < max / 2 { low += 1 } else { high += 1 }
        }
        assert!(low > 300 && high > 300, "low {low} high {high}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(30));
        }
        assert_eq!(b.window(), Duration::from_secs(30));
    }

    #[test]
    fn min_above_max_is_clamped() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.window(), Duration::from_secs(5));
    }

    #[test]
    fn jitter_is_below_the_bound() {
        let mut rng = StdRng::seed_from_u64(3);
        let bound = Duration::from_millis(300);
        let draws: Vec<_> = (0..500).map(|_| jitter_below(bound, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d < bound));
        assert!(draws.iter().any(|d| *d > bound / 2));
        assert!(draws.iter().any(|d| *d < bound / 2));
        assert_eq!(jitter_below(Duration::ZERO, &mut rng), Duration::ZERO);
    }
}
