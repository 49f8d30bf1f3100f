//! `connrate`: a new connection per request. Each of `--concurrency`
//! workers loops: connect, send `--size` bytes, read the answer until the
//! server closes, close. The latency is connect + request + answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use super::{Target, Window, thread};
use crate::bench::stats::{LoadReport, Samples};

#[derive(Debug, Args)]
pub struct ConnrateArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    window: Window,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Request and answer size.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

/// One exchange on a fresh connection.
fn exchange(addr: SocketAddr, request: &[u8], answer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.write_all(request)?;
    answer.clear();
    stream.read_to_end(answer)?;
    if answer.len() != request.len() {
        return Err(std::io::Error::other(format!(
            "answer of {} bytes, expected {}",
            answer.len(),
            request.len()
        )));
    }
    Ok(())
}

pub fn run(args: ConnrateArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be positive");
    }
    let clock = args.window.start();
    let addr = args.target.addr;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let request = vec![b'c'; args.size];
            thread(&format!("conn-{w}"), move || {
                let mut samples = Samples::with_capacity(1 << 18);
                let mut errors = 0u64;
                let mut first_error = None;
                let mut answer = Vec::with_capacity(request.len());
                loop {
                    let start = Instant::now();
                    if start >= clock.until {
                        break;
                    }
                    let measured = start >= clock.from;
                    match exchange(addr, &request, &mut answer) {
                        Ok(()) if measured => samples.record(start.elapsed()),
                        Ok(()) => {}
                        Err(e) => {
                            if measured {
                                errors += 1;
                            }
                            first_error.get_or_insert_with(|| e.to_string());
                            // Do not spin on a refusing server.
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                (samples, errors, first_error)
            })
        })
        .collect();
    let mut samples = Samples::default();
    let mut report = LoadReport {
        seconds: clock.seconds,
        ..LoadReport::default()
    };
    for w in workers {
        let (s, errors, first_error) = w
            .join()
            .map_err(|_| anyhow::anyhow!("a connection worker panicked"))?;
        samples.merge(s);
        report.errors += errors;
        if report.first_error.is_none() {
            report.first_error = first_error;
        }
    }
    report.count = samples.len() as u64;
    report.latency = samples.summary();
    println!("{}", report.to_json_line());
    Ok(())
}
