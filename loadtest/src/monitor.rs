//! The coordinator's live view of one target's run: reads the workers'
//! reports (progress and final), keeps the per-second timeline of latency,
//! clients and server memory, samples the watched servers every second, and
//! draws the progress bars. Every wait takes a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tribune_harness::procstat::{self, ProcSample};

use crate::payload::now_us;
use crate::report::fmt_us;
use crate::wire::{Final, Progress, Target, WorkerReport, new_hist};

/// Sums over the workers' latest progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub open: u64,
    pub subscribed: u64,
    pub deliveries: u64,
    pub resumed: u64,
    pub away: u64,
    pub last_back_us: u64,
}

/// A measured server process.
pub struct Watched {
    /// `hub` or `nats-server`.
    pub role: String,
    pub name: String,
    pub pid: u32,
    /// Whether it counts for RSS per connection and CPU per delivery.
    pub measured: bool,
}

/// One reading of every process in `watched`.
pub fn read(watched: &[Watched]) -> Vec<Option<ProcSample>> {
    watched.iter().map(|w| procstat::sample(w.pid)).collect()
}

/// Reads worker reports, keeps the timeline, samples servers, draws progress.
pub struct Monitor {
    rx: mpsc::UnboundedReceiver<WorkerReport>,
    /// Each worker's latest progress report.
    pub latest: Vec<Progress>,
    /// Each worker's final report, once it came.
    pub finals: Vec<Option<Final>>,
    t0_us: u64,
    /// Per second since `t0_us`: merged latency and the most clients open.
    pub buckets: BTreeMap<u64, (Histogram<u64>, u64)>,
    /// Per second since `t0_us`: RSS of the measured servers together.
    pub server_rss: BTreeMap<u64, u64>,
    /// Every sample of each watched process's RSS (KiB), by name, with the
    /// instant it was read: a node's own curve (a takeover's peak).
    pub node_rss: BTreeMap<String, Vec<(Instant, u64)>>,
    /// The server processes sampled (a restarted node gets its new pid).
    pub watched: Vec<Watched>,
    pub peak_open: u64,
    pub peak_subscribed: u64,
    last_sample: Instant,
    pub bars: Bars,
}

/// The progress bars on stderr (hidden unless it is a terminal).
pub struct Bars {
    visible: bool,
    multi: MultiProgress,
    /// Clients connected, and a word on subscriptions.
    pub conns: ProgressBar,
    /// Deliveries, latency, server RSS, clients away.
    pub traffic: ProgressBar,
}

impl Bars {
    pub fn new(clients: u64, target: Target, visible: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let conns = multi.add(ProgressBar::new(clients));
        conns.set_style(
            ProgressStyle::with_template("{prefix:>8} conns  [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        conns.set_prefix(target.as_str());
        let traffic = multi.add(ProgressBar::new_spinner());
        traffic.set_style(
            ProgressStyle::with_template("{prefix:>8} {spinner} {msg}").expect("valid template"),
        );
        traffic.set_prefix(target.as_str());
        Bars {
            visible,
            multi,
            conns,
            traffic,
        }
    }
}

impl Monitor {
    /// Hears `procs` workers through `rx`; the timeline starts at `t0_us`.
    pub fn new(
        rx: mpsc::UnboundedReceiver<WorkerReport>,
        procs: u32,
        t0_us: u64,
        watched: Vec<Watched>,
        bars: Bars,
    ) -> Monitor {
        Monitor {
            rx,
            latest: vec![Progress::default(); procs as usize],
            finals: vec![None; procs as usize],
            t0_us,
            buckets: BTreeMap::new(),
            server_rss: BTreeMap::new(),
            node_rss: BTreeMap::new(),
            watched,
            peak_open: 0,
            peak_subscribed: 0,
            last_sample: Instant::now(),
            bars,
        }
    }

    /// One reading of every watched server.
    pub fn read_servers(&self) -> Vec<Option<ProcSample>> {
        read(&self.watched)
    }

    /// A line about the run's progress, above the bars (or plain on stderr).
    pub fn note(&self, text: String) {
        if self.bars.visible {
            let _ = self.bars.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for p in &self.latest {
            t.open += p.open;
            t.subscribed += p.subscribed;
            t.deliveries += p.deliveries;
            t.resumed += p.resumed;
            t.away += p.away;
            t.last_back_us = t.last_back_us.max(p.last_back_us);
        }
        t
    }

    fn absorb(&mut self, r: WorkerReport) {
        match r {
            WorkerReport::Progress(p) => {
                let w = p.worker as usize;
                if let Ok(h) = p.interval_latency.decode() {
                    let sec = p.at_us.saturating_sub(self.t0_us) / 1_000_000;
                    let b = self.buckets.entry(sec).or_insert_with(|| (new_hist(), 0));
                    let _ = b.0.add(&h);
                }
                if w < self.latest.len() {
                    self.latest[w] = p;
                }
                let t = self.totals();
                self.peak_open = self.peak_open.max(t.open);
                self.peak_subscribed = self.peak_subscribed.max(t.subscribed);
                let sec = now_us().saturating_sub(self.t0_us) / 1_000_000;
                let b = self.buckets.entry(sec).or_insert_with(|| (new_hist(), 0));
                b.1 = b.1.max(t.open);
            }
            WorkerReport::Final(f) => {
                let w = f.worker as usize;
                if w < self.finals.len() {
                    self.finals[w] = Some(*f);
                }
            }
        }
    }

    fn sample_servers(&mut self) {
        let now = Instant::now();
        let mut rss = 0;
        for w in &self.watched {
            let Some(s) = procstat::sample(w.pid) else {
                continue;
            };
            self.node_rss
                .entry(w.name.clone())
                .or_default()
                .push((now, s.rss_kib));
            if w.measured {
                rss += s.rss_kib;
            }
        }
        let sec = now_us().saturating_sub(self.t0_us) / 1_000_000;
        self.server_rss.insert(sec, rss);
        let t = self.totals();
        self.bars.conns.set_position(t.open);
        self.bars
            .conns
            .set_message(format!("subscribed {}", t.subscribed));
        let last = self
            .buckets
            .values()
            .rev()
            .find(|b| !b.0.is_empty())
            .map(|b| b.0.value_at_quantile(0.99))
            .unwrap_or(0);
        self.bars.traffic.set_message(format!(
            "deliveries {}  p99(last s) {}  server RSS {} MiB  away {}",
            t.deliveries,
            fmt_us(last),
            rss / 1024,
            t.away
        ));
        self.bars.traffic.tick();
    }

    /// Processes reports until `until`, sampling servers every second.
    pub async fn pump_until(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let next_sample = self.last_sample + Duration::from_secs(1);
            let wake = until.min(next_sample);
            match tokio::time::timeout_at(wake.into(), self.rx.recv()).await {
                Ok(Some(r)) => self.absorb(r),
                // Every worker gone: nothing more will come.
                Ok(None) => tokio::time::sleep_until(wake.into()).await,
                Err(_) => {}
            }
            if Instant::now() >= next_sample {
                self.last_sample = Instant::now();
                self.sample_servers();
            }
        }
    }

    /// Processes reports for `d`.
    pub async fn pump_for(&mut self, d: Duration) {
        self.pump_until(Instant::now() + d).await;
    }

    /// Pumps until `cond` holds (true) or `deadline` passes (false).
    pub async fn wait_for(&mut self, deadline: Instant, cond: impl Fn(&Totals) -> bool) -> bool {
        loop {
            if cond(&self.totals()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.pump_until((Instant::now() + Duration::from_millis(100)).min(deadline))
                .await;
        }
    }

    /// Waits for every worker's final report (false at the deadline).
    pub async fn collect_finals(&mut self, deadline: Instant) -> bool {
        while self.finals.iter().any(Option::is_none) {
            if Instant::now() >= deadline {
                return false;
            }
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(r)) => self.absorb(r),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }
}
