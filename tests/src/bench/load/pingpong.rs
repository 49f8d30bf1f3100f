//! `pingpong`: one persistent connection, `--size` bytes out and the same
//! back, as fast as the round trips allow; the latency of each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::{Target, Window};
use crate::bench::stats::{LoadReport, Samples};

#[derive(Debug, Args)]
pub struct PingpongArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    window: Window,
    /// Message size, each way.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

pub fn run(args: PingpongArgs) -> Result<()> {
    let addr = args.target.addr;
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let out = vec![b'p'; args.size];
    let mut back = vec![0u8; args.size];
    let clock = args.window.start();
    let mut samples = Samples::with_capacity(1 << 20);
    loop {
        let start = Instant::now();
        if start >= clock.until {
            break;
        }
        stream.write_all(&out).context("sending a ping")?;
        stream.read_exact(&mut back).context("reading the pong")?;
        if start >= clock.from {
            samples.record(start.elapsed());
        }
    }
    let report = LoadReport {
        count: samples.len() as u64,
        seconds: clock.seconds,
        latency: samples.summary(),
        ..LoadReport::default()
    };
    println!("{}", report.to_json_line());
    Ok(())
}
