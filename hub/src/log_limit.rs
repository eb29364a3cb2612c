//! Rate-limited logging: a warning that a hostile client or bus could
//! trigger at will is written at most once per interval, with the count of
//! the ones held back since, so logs stay readable and cheap under attack.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Lets one log line through per `every`; counts the others.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimit {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(State {
                last: None,
                held_back: 0,
            }),
        }
    }

    /// `Some(n)` when this line may be logged now, `n` being how many were
    /// held back since the last one; `None` when it must be held back.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock();
        if st
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            st.held_back += 1;
            return None;
        }
        st.last = Some(now);
        Some(std::mem::take(&mut st.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limit.allow_at(t0), Some(0));
        assert_eq!(limit.allow_at(t0 + Duration::from_millis(10)), None);
        assert_eq!(limit.allow_at(t0 + Duration::from_millis(900)), None);
        assert_eq!(limit.allow_at(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(limit.allow_at(t0 + Duration::from_millis(1500)), None);
    }
}
