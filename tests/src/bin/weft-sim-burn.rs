//! `weft-sim-burn`: a workload that only burns CPU, for the profiling
//! tests (`tests/tests/profiling.rs`), which look for its functions by
//! name in a profile taken by the node's agent.
//!
//! ```text
//! weft-sim-burn cpu        # spin_hot_loop: arithmetic in user space, forever
//! weft-sim-burn syscalls   # getppid_loop: getppid(2) back to back, forever
//! ```

use std::hint::black_box;

/// User-space work only: never enters the kernel on its own.
#[inline(never)]
fn spin_hot_loop() -> ! {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        for _ in 0..1_000_000 {
            x = black_box(x.rotate_left(7) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
    }
}

/// A cheap system call in a loop: most of the time is the kernel's entry
/// and exit.
#[inline(never)]
fn getppid_loop() -> ! {
    loop {
        // SAFETY: getppid(2) takes nothing and cannot fail.
        black_box(unsafe { libc::getppid() });
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("cpu") => spin_hot_loop(),
        Some("syscalls") => getppid_loop(),
        _ => {
            eprintln!("usage: weft-sim-burn cpu|syscalls");
            std::process::exit(2);
        }
    }
}
