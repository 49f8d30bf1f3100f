//! Giving the allocator's free memory back to the kernel.
//!
//! glibc's malloc hands freed memory back to the kernel only from the top
//! of a heap, when more than its trim threshold (128 KiB) is free there.
//! Memory freed anywhere else stays in the process's RSS until it is
//! reused. Start-up frees about 2 MiB that way (the kernel's BTF read to
//! load the eBPF programs, the programs' objects, the first workload
//! snapshot decoded), and a burst of connections frees what it held when
//! it ends; an idle agent would keep both for its whole life.
//!
//! `malloc_trim(0)` releases every whole free page of every arena
//! (`MADV_DONTNEED`: the pages stay mapped, and cost a page fault each
//! when malloc reuses them). [`run_releaser`] calls it once the agent is
//! ready, then whenever at least [`RELEASE_AT`] is free at a check.
//!
//! Other C libraries (musl) return memory on their own; there the
//! functions here do nothing.

use std::time::Duration;

/// Free heap bytes beyond which a check releases them.
pub const RELEASE_AT: usize = 4 << 20;

/// How often the releaser checks.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The allocator's heap, as it counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in allocated chunks.
    pub in_use: usize,
    /// Bytes in free chunks (the releasable ones, and pieces too small to
    /// release).
    pub free: usize,
}

/// The heap's usage across all arenas (`mallinfo2`; it walks each arena's
/// free lists under the arena's lock), or `None` where the allocator does
/// not say.
pub fn usage() -> Option<Usage> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a struct by
        // value; it only reads the allocator's state under its locks.
        let info = unsafe { libc::mallinfo2() };
        Some(Usage {
            in_use: info.uordblks + info.hblkhd,
            free: info.fordblks,
        })
    }
    #[cfg(not(target_env = "gnu"))]
    None
}

/// Releases every whole free page of the heap to the kernel. Returns
/// whether any was released.
pub fn release() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only rearranges the allocator's own free
        // memory, under its locks; a pad of 0 keeps nothing spare at the
        // top.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    false
}

/// Releases the heap's free memory now (the agent has just got ready),
/// then every [`CHECK_EVERY`] when at least [`RELEASE_AT`] of it is free.
/// Runs until dropped.
///
/// The check and the release run on tokio's blocking pool, not on the
/// task's worker thread: both walk the arenas (the release touches every
/// free page, 0.4 ms at start-up and more after a burst), and the proxy's
/// one worker thread would stop relaying for that long.
pub async fn run_releaser() {
    off_the_worker(|| release_logged("ready", usage().unwrap_or_default())).await;
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await;
    loop {
        checks.tick().await;
        off_the_worker(|| {
            if let Some(heap) = usage().filter(|heap| heap.free >= RELEASE_AT) {
                release_logged("free memory", heap);
            }
        })
        .await;
    }
}

/// Runs `walk` on tokio's blocking pool and waits for it.
async fn off_the_worker(walk: impl FnOnce() + Send + 'static) {
    if let Err(e) = tokio::task::spawn_blocking(walk).await {
        tracing::warn!(error = %e, "the heap releaser's check failed");
    }
}

/// Releases, and logs it with `before`, the usage that led to it.
fn release_logged(why: &str, before: Usage) {
    let started = std::time::Instant::now();
    let released = release();
    tracing::debug!(
        why,
        released,
        free_before = before.free,
        in_use = before.in_use,
        took = ?started.elapsed(),
        "released the heap's free memory"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `RssAnon` of this process, in bytes.
    fn anonymous_rss() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("RssAnon:"))
            .expect("RssAnon in /proc/self/status");
        let kib: usize = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("RssAnon's value");
        kib * 1024
    }

    #[tokio::test]
    async fn the_walks_run_off_the_tasks_thread() {
        let worker = std::thread::current().id();
        let (ran_on, on) = std::sync::mpsc::channel();
        off_the_worker(move || ran_on.send(std::thread::current().id()).unwrap()).await;
        assert_ne!(on.recv().unwrap(), worker);
    }

    #[test]
    fn freed_memory_in_the_middle_of_the_heap_goes_back_to_the_kernel() {
        const CHUNKS: usize = 32 * 1024;
        // 32 MiB in 1 KiB chunks (far below the mmap threshold, so they
        // come from the heap), touched; then all freed but the last, which
        // keeps the top of the heap from shrinking on its own.
        let mut chunks: Vec<Box<[u8; 1024]>> = (0..CHUNKS).map(|_| Box::new([1u8; 1024])).collect();
        let last = chunks.pop();
        drop(chunks);
        let before = usage().expect("glibc reports the heap's usage");
        assert!(
            before.free >= 24 << 20,
            "the freed chunks should be free heap: {before:?}"
        );
        let rss_before = anonymous_rss();
        assert!(release(), "malloc_trim released nothing: {before:?}");
        let rss_after = anonymous_rss();
        assert!(
            rss_before.saturating_sub(rss_after) >= 16 << 20,
            "RssAnon went from {rss_before} to {rss_after} bytes only"
        );
        drop(last);
    }
}
