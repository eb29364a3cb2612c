//! Memory and CPU time of a process, read from `/proc/<pid>/status` and
//! `/proc/<pid>/stat`: the one reader behind the load generator's resource
//! figures and the tests' CPU and memory bounds.
//!
//! CPU times in `stat` are in clock ticks; the tick is the kernel's
//! `USER_HZ` as `sysconf(_SC_CLK_TCK)` reports it, never assumed.

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
    let mut s = parse_status(&status);
    s.cpu_s = cpu_seconds(pid)?;
    Some(s)
}

/// User plus system CPU time of a process so far, seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat, clock_ticks())
}

/// Resident set size of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_status(&status).rss_kib)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `stat`'s
/// CPU times. 100 only if the system will not say, which Linux always does.
pub fn clock_ticks() -> f64 {
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
        assert_eq!(rss_kib(u32::MAX), None);
        assert!(sample(u32::MAX).is_none());
        assert!(cpu_seconds(std::process::id()).is_some_and(|c| c >= 0.0));
        assert!(clock_ticks() >= 1.0);
    }
}
