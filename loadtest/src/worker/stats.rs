//! A worker's statistics: histograms and counters that every client task
//! of the worker's thread updates, and the progress and final reports made
//! of them. They live in one `RefCell` shared by all tasks of the thread:
//! no locks, no atomics.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::account::Loss;
use crate::payload::now_us;
use crate::wire::{Final, HIST_MAX_US, HistBlob, Progress, WorkerSpec, new_hist};

/// The worker's running totals.
pub struct Stats {
    pub handshake: Histogram<u64>,
    pub ready: Histogram<u64>,
    pub subscribe: Histogram<u64>,
    pub latency: Histogram<u64>,
    pub interval: Histogram<u64>,
    pub resume: Histogram<u64>,
    pub loss: Loss,
    pub deliveries: u64,
    pub replayed: u64,
    pub prev_mismatch: u64,
    pub established: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub churned: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    pub resumed: u64,
    pub away: u64,
    pub open: u64,
    pub subscribed: u64,
    pub first_delivery_us: u64,
    pub last_delivery_us: u64,
    pub last_back_us: u64,
    pub first_attempt_us: u64,
    pub all_connected_us: u64,
    /// Clients that have connected at least once.
    pub connected_once: u64,
    /// This worker's number of clients.
    pub clients: u64,
    /// Test hooks still armed.
    pub drop_armed: bool,
    pub dup_armed: bool,
}

impl Stats {
    pub fn new(spec: &WorkerSpec) -> Stats {
        Stats {
            handshake: new_hist(),
            ready: new_hist(),
            subscribe: new_hist(),
            latency: new_hist(),
            interval: new_hist(),
            resume: new_hist(),
            loss: Loss::default(),
            deliveries: 0,
            replayed: 0,
            prev_mismatch: 0,
            established: 0,
            failed: 0,
            failures: BTreeMap::new(),
            closes: BTreeMap::new(),
            errors: BTreeMap::new(),
            churned: 0,
            recovered: 0,
            not_recovered: 0,
            resumed: 0,
            away: 0,
            open: 0,
            subscribed: 0,
            first_delivery_us: 0,
            last_delivery_us: 0,
            last_back_us: 0,
            first_attempt_us: 0,
            all_connected_us: 0,
            connected_once: 0,
            clients: 0,
            drop_armed: spec.drop_one && spec.worker == 0,
            dup_armed: spec.dup_one && spec.worker == 0,
        }
    }

    /// A progress report; the interval's latency moves into the total.
    pub fn progress(&mut self, worker: u32) -> Progress {
        let interval = HistBlob::encode(&self.interval);
        self.latency
            .add(&self.interval)
            .expect("histograms share bounds");
        self.interval.reset();
        Progress {
            worker,
            at_us: now_us(),
            open: self.open,
            established: self.established,
            failed: self.failed,
            subscribed: self.subscribed,
            deliveries: self.deliveries,
            interval_latency: interval,
            resumed: self.resumed,
            away: self.away,
            last_back_us: self.last_back_us,
            first_attempt_us: self.first_attempt_us,
            all_connected_us: self.all_connected_us,
        }
    }

    /// The final report.
    pub fn final_report(&mut self, worker: u32) -> Final {
        self.latency
            .add(&self.interval)
            .expect("histograms share bounds");
        self.interval.reset();
        Final {
            worker,
            handshake: HistBlob::encode(&self.handshake),
            ready: HistBlob::encode(&self.ready),
            subscribe: HistBlob::encode(&self.subscribe),
            latency: HistBlob::encode(&self.latency),
            resume: HistBlob::encode(&self.resume),
            loss: self.loss,
            deliveries: self.deliveries,
            replayed: self.replayed,
            prev_mismatch: self.prev_mismatch,
            established: self.established,
            failed: self.failed,
            failures: self.failures.clone(),
            closes: self.closes.clone(),
            errors: self.errors.clone(),
            churned: self.churned,
            recovered: self.recovered,
            not_recovered: self.not_recovered,
            resumed: self.resumed,
            away: self.away,
            first_delivery_us: self.first_delivery_us,
            last_delivery_us: self.last_delivery_us,
            last_back_us: self.last_back_us,
            subscribed: self.subscribed,
        }
    }
}

/// Records microseconds, clamped to the histograms' range.
pub fn record_us(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, HIST_MAX_US));
}

/// Counts one more `key`.
pub fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_string()).or_insert(0) += 1;
}
