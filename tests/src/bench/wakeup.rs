//! How long a thread blocked on another CPU takes to run once woken, the
//! machine property that separates "fast" from "slow" runs of the same
//! benchmark: every hop of a proxied request (app, agent, app) wakes a
//! thread. On bare metal and most VMs that is a few microseconds; on VMs
//! whose idle vCPUs halt to the hypervisor it is tens. Measured under the
//! run's own conditions (`/dev/cpu_dma_latency` held or not) before the
//! cluster starts, and recorded in the report as `conditions.idle_wakeup`.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use serde::Serialize;

/// Above this median, the machine counts as one with slow wake-ups.
const SLOW_ABOVE_US: f64 = 10.0;

/// Wake-ups sampled; with the pause between them, about half a second.
const SAMPLES: usize = 200;

/// The pause before each wake-up, long enough for the woken thread's
/// CPU to go idle.
const PAUSE: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Serialize)]
pub struct Wakeup {
    /// Time from a send on a channel (CPU 0) to the receiver blocked on
    /// it (CPU 1) running, in µs: 10th, 50th and 90th percentiles.
    pub p10_us: f64,
    pub median_us: f64,
    pub p90_us: f64,
    /// `fast` (median up to 10 µs), `slow`, or `unknown` (one CPU, or the
    /// threads could not be placed).
    pub kind: &'static str,
}

/// Times [`SAMPLES`] wake-ups of a thread on CPU 1 blocked on a channel,
/// sent to from CPU 0.
pub fn measure() -> Wakeup {
    let unknown = Wakeup {
        p10_us: f64::NAN,
        median_us: f64::NAN,
        p90_us: f64::NAN,
        kind: "unknown",
    };
    let mut samples = match sample() {
        Some(samples) if !samples.is_empty() => samples,
        _ => return unknown,
    };
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let median_us = at(0.5);
    Wakeup {
        p10_us: at(0.1),
        median_us,
        p90_us: at(0.9),
        kind: if median_us > SLOW_ABOVE_US {
            "slow"
        } else {
            "fast"
        },
    }
}

/// The wake-up delays in µs, or `None` if the two threads could not be
/// put on two different CPUs.
fn sample() -> Option<Vec<f64>> {
    let (to_sleeper, sleeper) = mpsc::channel::<Instant>();
    let (to_main, delays) = mpsc::channel::<f64>();
    let woken = thread::spawn(move || {
        if pin(1).is_err() {
            return false;
        }
        for sent in sleeper {
            let _ = to_main.send(sent.elapsed().as_secs_f64() * 1e6);
        }
        true
    });
    // This thread goes back to every CPU afterwards.
    let all = nix::sched::sched_getaffinity(Pid::from_raw(0)).ok()?;
    let mut samples = Vec::with_capacity(SAMPLES);
    if pin(0).is_ok() {
        for _ in 0..SAMPLES {
            thread::sleep(PAUSE);
            if to_sleeper.send(Instant::now()).is_err() {
                break;
            }
            match delays.recv() {
                Ok(us) => samples.push(us),
                Err(_) => break,
            }
        }
    }
    let _ = sched_setaffinity(Pid::from_raw(0), &all);
    drop(to_sleeper);
    let pinned = woken.join().unwrap_or(false);
    pinned.then_some(samples)
}

/// Keeps the calling thread on `cpu`.
fn pin(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}
