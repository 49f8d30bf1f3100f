//! `hold`: opens `--count` connections (each confirmed end to end by the
//! server's one-byte greeting, or with `--http-body` by one HTTP/1.1
//! request and its answer), prints `ready <n> <seconds>`, then keeps them
//! open and idle until killed.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{HttpConn, Target, request_bytes, thread};

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
    /// Instead of reading a greeting, send one keep-alive HTTP/1.1 `POST`
    /// with a body of this many bytes on each connection and read the
    /// answer (for an HTTP server, e.g. through an L7 proxy).
    #[arg(long, value_name = "BYTES")]
    http_body: Option<usize>,
}

pub fn run(args: HoldArgs) -> Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be positive");
    }
    let addr = args.target.addr;
    let request = args.http_body.map(request_bytes);
    let start = Instant::now();
    let workers: Vec<_> = (0..args.parallel)
        .map(|w| {
            let share = args.count / args.parallel + usize::from(w < args.count % args.parallel);
            let request = request.clone();
            thread(&format!("hold-{w}"), move || -> Result<Vec<TcpStream>> {
                let mut held = Vec::with_capacity(share);
                for _ in 0..share {
                    let n = held.len() + 1;
                    let mut stream = TcpStream::connect(addr)
                        .with_context(|| format!("connection {n} to {addr}"))?;
                    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                    let stream = match &request {
                        Some(request) => http_exchange(stream, request)
                            .with_context(|| format!("HTTP request on connection {n}"))?,
                        None => {
                            let mut greeting = [0u8; 1];
                            stream
                                .read_exact(&mut greeting)
                                .with_context(|| format!("greeting on connection {n}"))?;
                            stream
                        }
                    };
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

/// One request and its answer; the connection stays open.
fn http_exchange(stream: TcpStream, request: &[u8]) -> Result<TcpStream> {
    stream.set_nodelay(true)?;
    let mut conn = HttpConn::new(stream);
    super::http::exchange(&mut conn, request)?;
    Ok(conn.into_stream())
}
