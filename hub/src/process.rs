//! The process's own readings for `/metrics`, read from `/proc/self` at each
//! scrape under the names every Prometheus client library uses
//! (`process_open_fds`, `process_max_fds`, `process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_start_time_seconds`), so that the
//! usual dashboards and alerts work unchanged. Open files are the first limit
//! a node meets (one per connection); memory and CPU come right after.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/self/stat` times: 100 on every Linux
/// architecture Tribune builds for (`USER_HZ`, fixed by the kernel ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// Collects the process readings on each scrape; a reading `/proc` cannot
/// give (another OS, a hardened `/proc`) is left out rather than made up.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One scrape's readings.
#[derive(Debug, Default, PartialEq)]
pub struct Readings {
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl Readings {
    /// Reads `/proc/self` now.
    pub fn now() -> Self {
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| status_kib(&s, "VmRSS:"))
            .map(|kib| kib * 1024);
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let times = stat.as_deref().and_then(stat_times);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        Self {
            open_fds,
            max_fds,
            resident_bytes,
            cpu_seconds: times.map(|(cpu, _)| cpu as f64 / TICKS_PER_SECOND),
            start_time_seconds: times
                .zip(boot)
                .map(|((_, start), boot)| boot as f64 + start as f64 / TICKS_PER_SECOND),
        }
    }
}

/// A `Key:   1234 kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// `(utime + stime, starttime)` in ticks from `/proc/self/stat`. The command
/// name (field 2) may hold spaces and parentheses: fields are counted after
/// its last `)`.
fn stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, utime (14) is 11, stime
    // (15) is 12, starttime (22) is 19.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    Some((utime + stime, start))
}

/// The `btime` line of `/proc/stat`: boot time in Unix seconds.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let r = Readings::now();
        let gauges = [
            ("process_open_fds", "Open file descriptors", r.open_fds),
            (
                "process_max_fds",
                "Soft limit of open file descriptors",
                r.max_fds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory in bytes",
                r.resident_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v as i64);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(v) = r.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        if let Some(v) = r.start_time_seconds {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process in Unix seconds",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_lines() {
        let stat = "4242 (tri bune) hub) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 12345 0 0";
        assert_eq!(stat_times(stat), Some((300, 12345)));
        assert_eq!(
            status_kib("Name:\thub\nVmRSS:\t   2048 kB\n", "VmRSS:"),
            Some(2048)
        );
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn reads_this_process() {
        let r = Readings::now();
        assert!(r.open_fds.unwrap() >= 3, "{r:?}");
        assert!(r.resident_bytes.unwrap() > 1024 * 1024, "{r:?}");
        assert!(
            r.cpu_seconds.is_some() && r.start_time_seconds.unwrap() > 1.6e9,
            "{r:?}"
        );
    }
}
