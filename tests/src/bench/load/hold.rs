//! `hold`: opens `--count` connections (each confirmed end to end by the
//! server's one-byte greeting), prints `ready <n> <seconds>`, then keeps
//! them open and idle until killed.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Target, thread};

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    target: Target,
    /// Connections to open and hold.
    #[arg(long)]
    count: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
}

pub fn run(args: HoldArgs) -> Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be positive");
    }
    let addr = args.target.addr;
    let start = Instant::now();
    let workers: Vec<_> = (0..args.parallel)
        .map(|w| {
            let share = args.count / args.parallel + usize::from(w < args.count % args.parallel);
            thread(&format!("hold-{w}"), move || -> Result<Vec<TcpStream>> {
                let mut held = Vec::with_capacity(share);
                for _ in 0..share {
                    let mut stream = TcpStream::connect(addr)
                        .with_context(|| format!("connection {} to {addr}", held.len() + 1))?;
                    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                    let mut greeting = [0u8; 1];
                    stream
                        .read_exact(&mut greeting)
                        .with_context(|| format!("greeting on connection {}", held.len() + 1))?;
                    held.push(stream);
                }
                Ok(held)
            })
        })
        .collect();
    let mut held = Vec::with_capacity(args.count);
    for w in workers {
        held.extend(
            w.join()
                .map_err(|_| anyhow::anyhow!("a hold worker panicked"))??,
        );
    }
    println!("ready {} {:.3}", held.len(), start.elapsed().as_secs_f64());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
