//! Giving freed heap back to the system after a storm.
//!
//! glibc's malloc keeps what a process frees in its arenas for reuse. A node
//! that takes back thousands of resuming fans at once (handshake buffers,
//! replays, outbox batches) frees most of that within seconds, yet its RSS
//! stays at the storm's peak for the rest of its life: a pod sized for its
//! steady state sits near its memory limit, and the next storm can cross it
//! (BENCHMARKS.md, "memory after a takeover"). Every `heap_trim_ms` this task
//! asks glibc how much its arenas hold free (`mallinfo2`) and, when that grew
//! by [`TRIM_STEP`] since the last trim, returns the free pages to the system
//! (`malloc_trim`). Both calls lock the arenas while they walk them, so they
//! run on the blocking pool, never on a worker that serves fans.
//!
//! Another allocator or C library: nothing to do, the task is not started.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// Free bytes the arenas must gain over what the last trim left before the
/// next trim: a steady node (whose free memory moves by a few MiB as batches
/// come and go) never trims, a storm's aftermath does, once.
pub const TRIM_STEP: u64 = 16 << 20;

/// When to trim, from the arenas' free bytes at each check.
#[derive(Debug, Default)]
pub struct Policy {
    /// Free bytes right after the last trim (or the lowest seen since, as
    /// reuse lowers them): the baseline growth is measured from.
    baseline: u64,
}

impl Policy {
    /// Whether the arenas' `free` bytes call for a trim now.
    pub fn should_trim(&mut self, free: u64) -> bool {
        if free < self.baseline {
            self.baseline = free;
        }
        if free >= self.baseline.saturating_add(TRIM_STEP) {
            // Trimmed pages stay free to malloc (only their memory goes
            // back), so the next trim waits for as much again.
            self.baseline = free;
            return true;
        }
        false
    }
}

/// Runs the checks every `interval` for the node's life.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub async fn run(interval: Duration, metrics: Arc<Metrics>) {
    let mut policy = Policy::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(free) = tokio::task::spawn_blocking(arena_free_bytes).await else {
            continue;
        };
        metrics.heap_free_bytes.set(free as i64);
        if policy.should_trim(free) && tokio::task::spawn_blocking(trim).await.is_ok() {
            metrics.heap_trims.inc();
        }
    }
}

/// Anywhere else there is no glibc arena to trim.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub async fn run(_interval: Duration, _metrics: Arc<Metrics>) {}

/// Bytes free in every arena (glibc's `fordblks`: chunks malloc holds for
/// reuse), whether or not their pages were already given back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "glibc FFI without a safe wrapper")]
fn arena_free_bytes() -> u64 {
    // SAFETY: mallinfo2 takes no arguments and only reads malloc's state
    // under its own locks.
    let info = unsafe { libc::mallinfo2() };
    info.fordblks as u64
}

/// Returns every free page of every arena to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "glibc FFI without a safe wrapper")]
fn trim() {
    // SAFETY: malloc_trim is thread-safe; 0 keeps no padding at the top of
    // the main heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_trimmed_once_and_a_steady_node_never() {
        let mut p = Policy::default();
        // Steady: free memory moves by a few MiB.
        for free in [1 << 20, 5 << 20, 3 << 20, 9 << 20, 2 << 20] {
            assert!(!p.should_trim(free), "{free}");
        }
        // A storm's aftermath: 200 MiB freed, trimmed once.
        assert!(p.should_trim(200 << 20));
        assert!(!p.should_trim(200 << 20));
        assert!(!p.should_trim(210 << 20));
        // Reused, then freed again by the next storm: trimmed again.
        assert!(!p.should_trim(20 << 20));
        assert!(p.should_trim(20 * (1 << 20) + TRIM_STEP));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_shows_in_the_arenas_and_a_trim_keeps_the_heap_usable() {
        let before = arena_free_bytes();
        // Small blocks (below the mmap threshold), every other one freed:
        // the freed ones sit between live ones, where only a trim reaches
        // them (a free at the top of the heap is given back by free itself).
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 8192]).collect();
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(2).collect();
        let after = arena_free_bytes();
        assert!(
            after >= before + (12 << 20),
            "freed 16 MiB between live blocks, arenas free {before} -> {after}"
        );
        trim();
        let v = vec![7u8; 1 << 16];
        assert_eq!(v.iter().map(|&b| b as u64).sum::<u64>(), 7 << 16);
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == (2 * i) as u8));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[tokio::test]
    async fn the_task_reports_free_memory_and_trims_after_a_storm() {
        let metrics = Arc::new(Metrics::new());
        // A storm's aftermath: 32 MiB freed between live blocks.
        let blocks: Vec<Vec<u8>> = (0..8192).map(|i| vec![i as u8; 8192]).collect();
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(2).collect();
        let task = tokio::spawn(run(Duration::from_millis(20), metrics.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.heap_trims.get() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no trim within 10 s (free {})",
                metrics.heap_free_bytes.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            metrics.heap_free_bytes.get() > 0,
            "the free bytes are reported"
        );
        task.abort();
        assert_eq!(kept.len(), 4096);
    }
}
