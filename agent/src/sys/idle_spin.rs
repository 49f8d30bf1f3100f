//! Keeping the proxy's CPU for a moment before its thread sleeps.
//!
//! On a virtual machine whose idle CPUs halt (no `cpuidle-haltpoll` in
//! the guest), a thread that sleeps is woken only when the hypervisor runs
//! its halted vCPU again: 50-80 µs on the 2-vCPU VMs of
//! docs/PERFORMANCE.md, and a request through two agents waits for four
//! such wake-ups on its way there and back. Before the proxy's thread
//! sleeps in `epoll_wait`, [`IdleSpin::before_park`] keeps its CPU for a
//! short window instead: it asks the runtime's epoll instance whether an
//! event is ready (`poll(2)` with no timeout, which leaves the event for
//! tokio) and yields the CPU (`sched_yield(2)`) to any other runnable
//! thread, the apps included, on every turn. An event inside the window
//! costs no wake-up. When a yield gives the CPU away (it took more than
//! [`YIELDED_AWAY`]), the CPU is not idle and the thread sleeps at once:
//! spinning on would leave it runnable behind the app that took the CPU,
//! where a sleeping thread that an event wakes is run ahead of it.
//!
//! The window adapts as the kernel's guest halt-polling does: after the
//! thread slept, it doubles (from [`START`], up to the limit) when the
//! sleep was shorter than the limit (a longer window would have caught
//! the event), and halves when it was longer (under [`START`] it is 0).
//! An idle agent's thread stops spinning after a few of its timers; one
//! under steady load spins in the gaps between its events.
//!
//! Only the thread that sleeps in the runtime's `epoll_wait` can tell its
//! events from the epoll instance, so the spin applies to a runtime of one
//! worker thread (the agent's default on nodes of up to three CPUs).

use std::{
    cell::Cell,
    os::fd::RawFd,
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

/// The smallest window: below it, the thread does not spin.
pub const START: Duration = Duration::from_micros(10);

/// The longest window by default, where idle CPUs halt at once: what the
/// kernel's own guest halt-polling spins at most (`guest_halt_poll_ns`),
/// and longer than the gap between a request's and its response's events
/// in an agent on the benchmark's VM.
pub const DEFAULT_LIMIT: Duration = Duration::from_micros(200);

/// A yield that took this long ran another thread: the spin stops.
pub const YIELDED_AWAY: Duration = Duration::from_micros(10);

/// The longest window accepted from the configuration.
pub const MAX_LIMIT: Duration = Duration::from_millis(1);

const NO_EPOLL: RawFd = -1;

/// The runtime's hooks (`on_thread_park`, `on_thread_unpark`); cheap to
/// clone, one state per thread.
#[derive(Clone)]
pub struct IdleSpin {
    limit: Duration,
    /// The runtime's epoll instance, known once the runtime is built.
    epoll: Arc<AtomicI32>,
}

thread_local! {
    /// This thread's window.
    static WINDOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// When this thread went to sleep, if it did.
    static SLEPT_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

impl IdleSpin {
    /// Hooks with windows of up to `limit` (at most [`MAX_LIMIT`]); they
    /// do nothing until [`IdleSpin::watch`] names the epoll instance.
    pub fn new(limit: Duration) -> IdleSpin {
        IdleSpin {
            limit: limit.min(MAX_LIMIT),
            epoll: Arc::new(AtomicI32::new(NO_EPOLL)),
        }
    }

    /// Starts spinning on `epoll`, the runtime's epoll instance.
    pub fn watch(&self, epoll: RawFd) {
        self.epoll.store(epoll, Ordering::Relaxed);
    }

    /// Called by the runtime before its thread sleeps: spins for this
    /// thread's window, or until an event is ready.
    pub fn before_park(&self) {
        let epoll = self.epoll.load(Ordering::Relaxed);
        let window = WINDOW.get();
        if epoll != NO_EPOLL && !window.is_zero() {
            let start = Instant::now();
            loop {
                if ready(epoll) {
                    // Caught: the thread does not sleep, and the window
                    // stays as it is.
                    SLEPT_AT.set(None);
                    return;
                }
                let before = Instant::now();
                if before.duration_since(start) >= window {
                    break;
                }
                // SAFETY: sched_yield takes no arguments and cannot fail
                // on Linux.
                unsafe { libc::sched_yield() };
                if before.elapsed() >= YIELDED_AWAY {
                    // Another thread wanted this CPU and ran: it is not
                    // idle, and spinning on would leave this thread
                    // runnable behind it when an event comes, where a
                    // sleeping one is woken ahead of it.
                    break;
                }
            }
        }
        SLEPT_AT.set(Some(Instant::now()));
    }

    /// Called by the runtime when its thread is awake again: adapts the
    /// window to how long the thread slept.
    pub fn after_unpark(&self) {
        let Some(slept_at) = SLEPT_AT.take() else {
            return;
        };
        WINDOW.set(next_window(WINDOW.get(), slept_at.elapsed(), self.limit));
    }
}

/// Whether the kernel halts an idle CPU at once: no cpuidle driver
/// (`/sys/devices/system/cpu/cpuidle/current_driver` is `none`, or
/// absent). A VM without `cpuidle-haltpoll` is such a machine, and waking
/// one of its idle vCPUs waits for the hypervisor. With a driver (the
/// guest's halt-polling, or a bare-metal machine's idle states) waking is
/// quick enough, or already polled for.
pub fn idle_cpus_halt() -> bool {
    match std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver") {
        Ok(driver) => driver.trim() == "none",
        Err(_) => true,
    }
}

/// The window after a sleep of `slept` with `window`.
fn next_window(window: Duration, slept: Duration, limit: Duration) -> Duration {
    if limit < START {
        return Duration::ZERO;
    }
    if slept < limit {
        (window * 2).clamp(START, limit)
    } else {
        let half = window / 2;
        if half < START { Duration::ZERO } else { half }
    }
}

/// Whether `epoll` has an event ready, without taking it.
fn ready(epoll: RawFd) -> bool {
    let mut fd = libc::pollfd {
        fd: epoll,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & libc::POLLIN != 0
}

/// The epoll instances this process has open (`/proc/self/fd`), by
/// descriptor and inode (tokio's driver keeps a duplicate of its own
/// descriptor: two descriptors, one instance), to tell the runtime's
/// apart: the one that building it added.
pub fn epoll_fds() -> std::io::Result<Vec<(RawFd, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // An fd closed since the listing (the listing's own) reads as an
        // error: not an epoll instance.
        if std::fs::read_link(entry.path()).is_ok_and(|target| target == *"anon_inode:[eventpoll]")
            && let Ok(meta) = std::fs::metadata(entry.path())
        {
            fds.push((fd, meta.ino()));
        }
    }
    Ok(fds)
}

/// The one epoll instance in `after` that is not in `before`, or how many
/// there are.
pub fn added_epoll(before: &[(RawFd, u64)], after: &[(RawFd, u64)]) -> Result<RawFd, usize> {
    let mut added: Vec<(RawFd, u64)> = after
        .iter()
        .filter(|(_, ino)| !before.iter().any(|(_, old)| old == ino))
        .copied()
        .collect();
    added.sort_by_key(|&(fd, ino)| (ino, fd));
    added.dedup_by_key(|(_, ino)| *ino);
    match added.as_slice() {
        [(fd, _)] => Ok(*fd),
        other => Err(other.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_micros(80);

    #[test]
    fn the_window_grows_while_sleeps_are_short_and_goes_when_they_are_long() {
        let mut w = Duration::ZERO;
        let short = Duration::from_micros(30);
        let mut grown = Vec::new();
        for _ in 0..5 {
            w = next_window(w, short, LIMIT);
            grown.push(w.as_micros());
        }
        assert_eq!(grown, [10, 20, 40, 80, 80]);
        let long = Duration::from_millis(5);
        let mut shrunk = Vec::new();
        for _ in 0..4 {
            w = next_window(w, long, LIMIT);
            shrunk.push(w.as_micros());
        }
        assert_eq!(shrunk, [40, 20, 10, 0]);
        assert_eq!(next_window(Duration::ZERO, long, LIMIT), Duration::ZERO);
        // A limit under the smallest window turns the spin off.
        assert_eq!(
            next_window(Duration::ZERO, short, Duration::from_micros(5)),
            Duration::ZERO
        );
    }

    #[test]
    fn an_event_ready_in_epoll_ends_the_spin_and_stays_for_the_runtime() {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

        // SAFETY: epoll_create1 returns a new fd or -1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(
            raw >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the fd was just created and is owned here alone.
        let _epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut interest = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        // SAFETY: both fds are open; the event is valid for the call.
        let added =
            unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, a.as_raw_fd(), &mut interest) };
        assert_eq!(added, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
        assert!(!ready(raw), "nothing written yet");
        std::io::Write::write_all(&mut b, b"x").expect("write");
        assert!(ready(raw), "a readable socket in the set");
        // Asked twice, still there: poll(2) does not consume the event.
        assert!(ready(raw));
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: room for one event; a zero timeout never blocks.
        let n = unsafe { libc::epoll_wait(raw, &mut event, 1, 0) };
        let data = event.u64;
        assert_eq!((n, data), (1, 7), "the runtime still gets the event");

        // With a window open, an event already there ends the spin at
        // once: the thread is not counted as asleep.
        let spin = IdleSpin::new(Duration::from_millis(500));
        spin.watch(raw);
        WINDOW.set(Duration::from_millis(500));
        spin.before_park();
        assert_eq!(SLEPT_AT.get(), None, "spun past a ready event into sleep");

        // With nothing ready, it spins out its window, then sleeps.
        let mut drain = [0u8; 8];
        std::io::Read::read(&mut &a, &mut drain).expect("read");
        WINDOW.set(Duration::from_millis(2));
        let start = Instant::now();
        spin.before_park();
        assert!(start.elapsed() >= Duration::from_millis(2));
        assert!(SLEPT_AT.get().is_some());
        let open = epoll_fds().expect("/proc/self/fd");
        assert!(open.iter().any(|&(fd, _)| fd == raw));
        // A duplicate is the same instance.
        // SAFETY: dup of an open fd; the copy is owned here.
        let copy = unsafe { OwnedFd::from_raw_fd(libc::dup(raw)) };
        let before: Vec<_> = open.iter().copied().filter(|&(fd, _)| fd != raw).collect();
        let after = epoll_fds().expect("/proc/self/fd");
        assert_eq!(added_epoll(&before, &after), Ok(raw.min(copy.as_raw_fd())));
        assert_eq!(added_epoll(&after, &after), Err(0));
    }
}
