//! The end of a target's run: the workers' final statistics, the
//! monitor's timeline and the servers' readings merged into its
//! `RunReport` (connections, subscriptions, delivery and loss, resources).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use tribune_harness::procstat::ProcSample;

use crate::monitor::Monitor;
use crate::publisher::Published;
use crate::report::{
    ConnectReport, Pcts, ProcUsage, ResourceReport, RunReport, TimelinePoint, percentile_curve,
};
use crate::wire::{Final, HistBlob, new_hist};

/// Readings of the watched servers at the run's milestones.
pub struct Samples {
    /// Before any client connected.
    pub before: Vec<Option<ProcSample>>,
    /// Every client connected (and subscribed) and settled.
    pub connected: Vec<Option<ProcSample>>,
    /// When traffic began (none for `idle`).
    pub traffic_start: Option<Vec<Option<ProcSample>>>,
    /// After the final reports.
    pub end: Vec<Option<ProcSample>>,
}

fn merge(finals: &[&Final], pick: impl Fn(&Final) -> &HistBlob) -> Histogram<u64> {
    let mut h = new_hist();
    for f in finals {
        if let Ok(x) = pick(f).decode() {
            let _ = h.add(&x);
        }
    }
    h
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

/// Fills `rep` from the workers' final reports, the monitor's timeline and
/// peaks, what was published, and the servers' and workers' readings.
pub fn fill_report(
    rep: &mut RunReport,
    clients: u64,
    mon: &Monitor,
    published: &Published,
    s: Samples,
    worker_pids: &[u32],
    (workers_connected, workers_end): (Vec<Option<ProcSample>>, Vec<Option<ProcSample>>),
) {
    let finals: Vec<&Final> = mon.finals.iter().flatten().collect();
    let latency = merge(&finals, |f| &f.latency);
    let mut c = ConnectReport {
        requested: clients,
        peak_open: mon.peak_open,
        handshake_us: Pcts::of(&merge(&finals, |f| &f.handshake)),
        ready_us: Pcts::of(&merge(&finals, |f| &f.ready)),
        connect_s: rep.connect.connect_s,
        ..ConnectReport::default()
    };
    for f in &finals {
        c.established += f.established;
        c.failed += f.failed;
        add_map(&mut c.failures, &f.failures);
        add_map(&mut rep.closes, &f.closes);
        add_map(&mut rep.errors, &f.errors);
        rep.churned += f.churned;
        rep.delivery.loss.add(&f.loss);
        rep.delivery.deliveries += f.deliveries;
        rep.delivery.replayed += f.replayed;
        rep.delivery.prev_mismatch += f.prev_mismatch;
        if let Some(r) = rep.resume.as_mut() {
            r.recovered += f.recovered;
            r.not_recovered += f.not_recovered;
        }
    }
    c.rate_per_s = if c.connect_s > 0.0 {
        mon.peak_open.min(c.requested) as f64 / c.connect_s
    } else {
        0.0
    };
    rep.connect = c;
    rep.subscribe.confirmed = mon.peak_subscribed;
    rep.subscribe.latency_us = Pcts::of(&merge(&finals, |f| &f.subscribe));
    if let Some(r) = rep.resume.as_mut() {
        r.latency_us = Pcts::of(&merge(&finals, |f| &f.resume));
    }
    let last_delivery = finals.iter().map(|f| f.last_delivery_us).max().unwrap_or(0);
    if published.started_us > 0 && last_delivery > published.started_us {
        rep.delivery.window_s = (last_delivery - published.started_us) as f64 / 1e6;
        rep.delivery.per_s = rep.delivery.deliveries as f64 / rep.delivery.window_s;
    }
    rep.delivery.latency_us = Pcts::of(&latency);
    rep.delivery.percentiles = percentile_curve(&latency);
    rep.publish = Some(published.clone());

    // Resources.
    let mut servers = Vec::new();
    let mut rss_growth_kib = 0i64;
    let mut measured_cpu = 0.0;
    let mut any_measured = false;
    for (i, w) in mon.watched.iter().enumerate() {
        let get = |v: &Vec<Option<ProcSample>>| v.get(i).copied().flatten().unwrap_or_default();
        let b = get(&s.before);
        let cn = get(&s.connected);
        let e = get(&s.end);
        let ts = s.traffic_start.as_ref().map(get);
        // A restarted node has a new pid: its CPU restarts from zero.
        let cpu_run = if e.cpu_s >= b.cpu_s {
            e.cpu_s - b.cpu_s
        } else {
            e.cpu_s
        };
        let cpu_traffic = ts.map_or(0.0, |t| {
            if e.cpu_s >= t.cpu_s {
                e.cpu_s - t.cpu_s
            } else {
                e.cpu_s
            }
        });
        if w.measured {
            any_measured = true;
            rss_growth_kib += cn.rss_kib as i64 - b.rss_kib as i64;
            measured_cpu += cpu_traffic;
        }
        servers.push(ProcUsage {
            role: w.role.clone(),
            name: w.name.clone(),
            pid: w.pid,
            rss_kib_before: b.rss_kib,
            rss_kib_connected: cn.rss_kib,
            rss_kib_end: e.rss_kib,
            hwm_kib: e.hwm_kib.max(cn.hwm_kib),
            cpu_s_run: cpu_run,
            cpu_s_traffic: cpu_traffic,
        });
    }
    let workers = ProcUsage {
        role: "workers".into(),
        name: format!("{} worker process(es)", worker_pids.len()),
        pid: 0,
        rss_kib_connected: workers_connected.iter().flatten().map(|p| p.rss_kib).sum(),
        rss_kib_end: workers_end.iter().flatten().map(|p| p.rss_kib).sum(),
        hwm_kib: workers_end.iter().flatten().map(|p| p.hwm_kib).sum(),
        cpu_s_run: workers_end.iter().flatten().map(|p| p.cpu_s).sum(),
        cpu_s_traffic: workers_end.iter().flatten().map(|p| p.cpu_s).sum::<f64>()
            - workers_connected
                .iter()
                .flatten()
                .map(|p| p.cpu_s)
                .sum::<f64>(),
        ..ProcUsage::default()
    };
    let open = mon.peak_open;
    rep.resources = ResourceReport {
        servers,
        workers,
        rss_per_conn_bytes: (any_measured && open > 0)
            .then(|| rss_growth_kib as f64 * 1024.0 / open as f64),
        cpu_us_per_delivery: (any_measured && rep.delivery.deliveries > 0)
            .then(|| measured_cpu * 1e6 / rep.delivery.deliveries as f64),
    };

    // Timeline.
    rep.timeline = mon
        .buckets
        .iter()
        .map(|(sec, (h, open))| TimelinePoint {
            t_s: *sec as f64,
            open: *open,
            deliveries: h.len(),
            p50_us: if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.5)
            },
            p99_us: if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.99)
            },
            max_us: if h.is_empty() { 0 } else { h.max() },
            server_rss_kib: mon.server_rss.get(sec).copied().unwrap_or(0),
        })
        .collect();

    if rep.delivery.loss.unaccounted > 0 {
        rep.problems.push(format!(
            "{} subscriptions received nothing and had no known starting point: their losses cannot be counted",
            rep.delivery.loss.unaccounted
        ));
    }
}
