//! Memory and CPU of a process, read from `/proc/<pid>/status` and
//! `/proc/<pid>/stat`, and a description of the machine for the report.

use serde::{Deserialize, Serialize};

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub hwm_kib: u64,
    /// User plus system CPU time, seconds, over the process's life.
    pub cpu_s: f64,
    /// Threads of the process.
    pub threads: u64,
}

/// Reads `/proc/<pid>`; `None` once the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut s = parse_status(&status);
    s.cpu_s = parse_stat_cpu(&stat, clock_ticks())?;
    Some(s)
}

fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Reads `VmRSS`, `VmHWM` and `Threads` from a status file.
pub fn parse_status(text: &str) -> ProcSample {
    let mut s = ProcSample::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let val: u64 = val.parse().unwrap_or(0);
        match key {
            "VmRSS:" => s.rss_kib = val,
            "VmHWM:" => s.hwm_kib = val,
            "Threads:" => s.threads = val,
            _ => {}
        }
    }
    s
}

/// Reads utime + stime (fields 14 and 15) from a stat line, in seconds. The
/// command name (field 2) may hold spaces and parentheses: fields are
/// counted after its last `)`.
pub fn parse_stat_cpu(text: &str, ticks_per_s: f64) -> Option<f64> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_s)
}

/// The machine a run happened on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_kib: u64,
    pub kernel: String,
    /// Load averages (1, 5, 15 min) when the run started: the machine is
    /// shared, and this says how much.
    pub loadavg_at_start: String,
    /// Soft limit of open files of this process.
    pub nofile_limit: u64,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let nofile_limit =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(0);
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            mem_total_kib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            nofile_limit,
        }
    }
}

/// Raises this process's soft limit of open files to its hard limit.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\ttribune-hub\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        let s = parse_status(status);
        assert_eq!((s.rss_kib, s.hwm_kib, s.threads), (10240, 20480, 3));
        let stat =
            "4242 (odd) name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat_cpu(stat, 100.0), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage", 100.0), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib && s.threads >= 1);
        assert!(sample(u32::MAX).is_none());
        let m = Machine::read();
        assert!(m.nproc >= 1 && m.mem_total_kib > 0 && !m.kernel.is_empty());
    }
}
