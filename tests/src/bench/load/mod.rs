//! `weft-bench-load`: the load generators and servers the benchmarks run
//! inside pods. Plain threads and blocking sockets: one thread per
//! connection keeps the path from a socket to a timestamp short, which
//! matters more here than scale.
//!
//! ```text
//! weft-bench-load serve [--echo P] [--http P[:BODY]]... [--rr P] [--hold P]   # in the server pods
//! weft-bench-load pingpong --addr A [--size 100]                              # in the client pod
//! weft-bench-load http --addr A [--rate 2000] [--connections 4] [--body 1024] [--header "N: v"]...
//! weft-bench-load grpc --addr A [--connections 2] [--concurrency 32] [--size 100]
//! weft-bench-load connrate --addr A [--concurrency 4] [--size 100]
//! weft-bench-load hold --addr A --count 10000 [--parallel 16] [--http-body 100]
//! ```
//!
//! `grpc` calls `weft.test.Echo/Unary`, which `weft-sim-http serve` serves.
//!
//! Each client prints one JSON line ([`LoadReport`]) when done; `hold`
//! prints `ready <n>` once its connections are open and then holds them
//! until killed.
//!
//! [`LoadReport`]: crate::bench::stats::LoadReport

mod connrate;
mod grpc;
mod hold;
mod http;
mod pingpong;
mod server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

pub use http::{HttpConn, request_bytes, response_bytes};

#[derive(Debug, Parser)]
#[command(
    name = "weft-bench-load",
    about = "weft's benchmark load generators and servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Servers for every client below, each on its own port.
    Serve(server::ServeArgs),
    /// Ping-pong of `--size` bytes on one connection.
    Pingpong(pingpong::PingpongArgs),
    /// HTTP/1.1 keep-alive requests at a fixed rate, latency from each
    /// request's due time (coordinated omission corrected), or without
    /// `--rate` as fast as each connection goes.
    Http(http::HttpArgs),
    /// gRPC unary calls over h2c, many in flight on a few connections, as
    /// fast as they go.
    Grpc(grpc::GrpcArgs),
    /// A new connection per request: connect, send, read the answer, close.
    Connrate(connrate::ConnrateArgs),
    /// Opens `--count` connections, reports `ready`, holds them until killed.
    Hold(hold::HoldArgs),
}

/// When a client measures: after `--warmup`, for `--seconds`.
#[derive(Debug, Clone, Copy, Args)]
pub struct Window {
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

/// The measured window, as instants.
#[derive(Debug, Clone, Copy)]
struct Clock {
    from: Instant,
    until: Instant,
    seconds: f64,
}

impl Window {
    fn start(&self) -> Clock {
        let from = Instant::now() + Duration::from_secs_f64(self.warmup);
        Clock {
            from,
            until: from + Duration::from_secs_f64(self.seconds),
            seconds: self.seconds,
        }
    }
}

/// The address of the server to load.
#[derive(Debug, Clone, Copy, Args)]
struct Target {
    /// Server address, `ip:port`.
    #[arg(long)]
    addr: SocketAddr,
}

/// Entry point of the `weft-bench-load` binary.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_nofile_limit();
    precise_sleeps();
    match cli.command {
        Command::Serve(args) => server::serve(args),
        Command::Pingpong(args) => pingpong::run(args),
        Command::Http(args) => http::run(args),
        Command::Grpc(args) => grpc::run(args),
        Command::Connrate(args) => connrate::run(args),
        Command::Hold(args) => hold::run(args),
    }
}

/// Measures this process's CPU time (all its threads) over the measured
/// window, on a thread that sleeps until the window opens and until it
/// closes; `None` if `getrusage` fails.
fn cpu_meter(clock: Clock) -> std::thread::JoinHandle<Option<f64>> {
    thread("cpu-meter", move || {
        let sleep_until = |t: Instant| {
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
        };
        sleep_until(clock.from);
        let from = process_cpu_seconds()?;
        sleep_until(clock.until);
        let until = process_cpu_seconds()?;
        Some((until - from) / clock.seconds)
    })
}

/// User and system CPU seconds of this process so far.
fn process_cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage fills a zeroed local struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// Soft `RLIMIT_NOFILE` up to the hard limit: `hold` keeps 10,000 sockets
/// (and `weft-sim-app`'s `tcp-hold` and `tcp-echo` as many).
pub fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Timer slack of 1 ns for this thread (and the threads it creates), so a
/// scheduled request is not sent up to 50 µs late.
pub(crate) fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// How long before a due time a sleeping sender wakes up to spin. Timers
/// fire 30-80 µs late on these VMs even with 1 ns slack; the spin yields
/// the CPU to anything else runnable.
const SPIN_AHEAD: Duration = Duration::from_micros(150);

/// Waits until `due` (returns at once if it has passed): sleeps until
/// shortly before, then spins, yielding the CPU.
fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now + SPIN_AHEAD {
        std::thread::sleep(due - now - SPIN_AHEAD);
    }
    while Instant::now() < due {
        std::thread::yield_now();
    }
}

/// Spawns a named thread; panics only if the OS cannot create threads.
fn thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawning a load generator thread")
}
