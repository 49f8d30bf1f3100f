//! How long a thread blocked on another CPU takes to run once woken, the
//! machine property that separates "fast" from "slow" runs of the same
//! benchmark: every hop of a proxied request (app, agent, app) wakes a
//! thread. On bare metal and most VMs that is a few microseconds; on VMs
//! whose idle vCPUs halt to the hypervisor it is tens. Measured under the
//! run's own conditions (`/dev/cpu_dma_latency` held or not) and recorded
//! in the report, as `conditions.idle_wakeup`.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::stats::median;

/// Above this median, the machine counts as one with slow wake-ups.
const SLOW_ABOVE_US: f64 = 10.0;

/// Wake-ups sampled; with the pause between them, about half a second.
const SAMPLES: usize = 200;

/// The pause before each wake-up, long enough for the woken thread's
/// CPU to go idle.
const PAUSE: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Serialize)]
pub struct Wakeup {
    /// Median time from a send on a channel to the blocked receiver
    /// running, in µs.
    pub median_us: f64,
    /// `fast` or `slow` (median above 10 µs).
    pub kind: &'static str,
}

/// Times [`SAMPLES`] wake-ups of a thread blocked on a channel.
pub fn measure() -> Wakeup {
    let (to_sleeper, sleeper) = mpsc::channel::<Instant>();
    let (to_main, delays) = mpsc::channel::<f64>();
    let woken = thread::spawn(move || {
        for sent in sleeper {
            let _ = to_main.send(sent.elapsed().as_secs_f64() * 1e6);
        }
    });
    let mut samples = Vec::with_capacity(SAMPLES);
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
    drop(to_sleeper);
    let _ = woken.join();
    let median_us = median(&samples).unwrap_or(f64::NAN);
    Wakeup {
        median_us,
        kind: if median_us > SLOW_ABOVE_US {
            "slow"
        } else {
            "fast"
        },
    }
}
