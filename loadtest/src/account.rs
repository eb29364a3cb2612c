//! Loss and duplicate accounting, by payload counter; pure logic.
//!
//! Each subscription of each client keeps a [`Track`]: the last counter it
//! accounted for on its topic. A counter above `last + 1` means the ones in
//! between were lost; a counter at or below `last` is a duplicate. When the
//! run ends, every subscription still open owes the counters between its
//! `last` and the final counter the publisher reached: those are lost too
//! (the harness first waits, bounded, for deliveries to settle).
//!
//! The baseline is what the subscriber knew when it subscribed: 0 when the
//! subscription was in place before the first publication, the counter of
//! the replayed latest message when it subscribed with `history: 1`, or
//! unknown (a core-NATS subscription made while messages flow): then the
//! first message received becomes the baseline and earlier losses cannot
//! be seen.

/// What one received message meant for its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next counter, as expected (or the first one, setting the baseline).
    Fresh,
    /// A new counter after a hole of this many lost messages.
    Gap(u64),
    /// A counter accounted for before.
    Duplicate,
}

/// The continuity of one subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Track {
    /// Last counter accounted for; `None` until a baseline is known.
    last: Option<u64>,
}

impl Track {
    /// A subscription that knows every counter after `baseline` is owed to it.
    pub fn from(baseline: u64) -> Track {
        Track {
            last: Some(baseline),
        }
    }

    /// A subscription whose first message will set the baseline.
    pub fn unknown() -> Track {
        Track { last: None }
    }

    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Sets the baseline if none is known yet (a replayed latest message).
    pub fn set_baseline(&mut self, counter: u64) {
        if self.last.is_none() {
            self.last = Some(counter);
        }
    }

    /// Accounts for one received counter.
    pub fn observe(&mut self, counter: u64) -> Seen {
        match self.last {
            None => {
                self.last = Some(counter);
                Seen::Fresh
            }
            Some(last) if counter <= last => Seen::Duplicate,
            Some(last) => {
                self.last = Some(counter);
                match counter - last - 1 {
                    0 => Seen::Fresh,
                    lost => Seen::Gap(lost),
                }
            }
        }
    }

    /// Messages still owed when the publisher's last counter was `final_counter`.
    pub fn owed(&self, final_counter: u64) -> u64 {
        match self.last {
            Some(last) => final_counter.saturating_sub(last),
            None => 0,
        }
    }
}

/// Totals over many subscriptions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Loss {
    /// Messages never received (holes and what was owed at the end).
    pub lost: u64,
    /// Messages received more than once.
    pub duplicated: u64,
    /// Holes seen while running (each may hide several lost messages).
    pub gaps: u64,
    /// Subscriptions that ended with an unknown baseline (nothing countable).
    pub unaccounted: u64,
}

impl Loss {
    pub fn record(&mut self, seen: Seen) {
        match seen {
            Seen::Fresh => {}
            Seen::Gap(n) => {
                self.lost += n;
                self.gaps += 1;
            }
            Seen::Duplicate => self.duplicated += 1,
        }
    }

    /// Closes a subscription still open at the end of the run.
    pub fn settle(&mut self, track: &Track, final_counter: u64) {
        if track.last().is_none() {
            self.unaccounted += 1;
        }
        self.lost += track.owed(final_counter);
    }

    pub fn add(&mut self, other: &Loss) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.gaps += other.gaps;
        self.unaccounted += other.unaccounted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_holes_duplicates_and_what_is_owed() {
        let mut t = Track::from(0);
        let mut loss = Loss::default();
        for c in [1, 2, 4, 4, 3, 5, 9] {
            loss.record(t.observe(c));
        }
        // 3 came late: it is counted lost at the hole and then as a duplicate,
        // which is what an in-order feed client would also have to do.
        assert_eq!(loss.lost, 1 + 3);
        assert_eq!(loss.gaps, 2);
        assert_eq!(loss.duplicated, 2);
        loss.settle(&t, 12);
        assert_eq!(loss.lost, 4 + 3);
        assert_eq!(loss.unaccounted, 0);
    }

    #[test]
    fn unknown_baseline_starts_at_the_first_message() {
        let mut t = Track::unknown();
        assert_eq!(t.owed(10), 0);
        assert_eq!(t.observe(7), Seen::Fresh);
        assert_eq!(t.observe(8), Seen::Fresh);
        assert_eq!(t.owed(10), 2);
        let mut silent = Loss::default();
        silent.settle(&Track::unknown(), 10);
        assert_eq!(
            silent,
            Loss {
                unaccounted: 1,
                ..Loss::default()
            }
        );
    }

    #[test]
    fn replayed_baseline_only_applies_once() {
        let mut t = Track::unknown();
        t.set_baseline(5);
        t.set_baseline(2);
        assert_eq!(t.observe(6), Seen::Fresh);
        assert_eq!(t.owed(6), 0);
    }
}
