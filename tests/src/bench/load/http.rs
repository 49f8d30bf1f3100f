//! `http`: HTTP/1.1 keep-alive requests with a fixed-size body, at a fixed
//! rate, with coordinated omission corrected as wrk2 does: request `i` of a
//! connection is due at `start + i * interval`, and its latency is counted
//! from that due time, not from when it could finally be sent. A stall
//! therefore shows up in the latency of every request it delayed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Target, Window, precise_sleeps, sleep_until, thread};
use crate::bench::stats::{LoadReport, Samples};

#[derive(Debug, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    window: Window,
    /// Requests per second, over all connections.
    #[arg(long)]
    rate: f64,
    /// Keep-alive connections, each sending `rate / connections` per second.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Request body size (`POST`); the server answers with its own size.
    #[arg(long, default_value_t = 1024)]
    body: usize,
}

/// Largest message head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A `POST` carrying `body` bytes.
pub fn request_bytes(body: usize) -> Vec<u8> {
    let mut req = format!("POST /bench HTTP/1.1\r\nHost: bench\r\nContent-Length: {body}\r\n\r\n")
        .into_bytes();
    req.resize(req.len() + body, b'q');
    req
}

/// A `200 OK` carrying `body` bytes.
pub fn response_bytes(body: usize) -> Vec<u8> {
    let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {body}\r\n\r\n").into_bytes();
    resp.resize(resp.len() + body, b'r');
    resp
}

/// One side of a keep-alive connection, reading whole messages (a head and
/// a `Content-Length` body). No chunked encoding: both ends are ours.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
}

impl HttpConn {
    pub fn new(stream: TcpStream) -> HttpConn {
        HttpConn {
            stream,
            buf: vec![0; 8 * 1024],
            filled: 0,
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads one message; its total size, or `None` on EOF between messages.
    pub fn read_message(&mut self) -> io::Result<Option<usize>> {
        loop {
            if let Some(head_end) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                let total = head_end + 4 + content_length(&self.buf[..head_end])?;
                if self.buf.len() < total {
                    self.buf.resize(total, 0);
                }
                while self.filled < total {
                    let n = self.stream.read(&mut self.buf[self.filled..])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed inside an HTTP body",
                        ));
                    }
                    self.filled += n;
                }
                self.buf.copy_within(total..self.filled, 0);
                self.filled -= total;
                return Ok(Some(total));
            }
            if self.filled >= MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "HTTP head too large",
                ));
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.filled..])?;
            if n == 0 {
                if self.filled == 0 {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside an HTTP head",
                ));
            }
            self.filled += n;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> io::Result<usize> {
    let head = std::str::from_utf8(head)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "HTTP head is not UTF-8"))?;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            return value
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"));
        }
    }
    Ok(0)
}

pub fn run(args: HttpArgs) -> Result<()> {
    if args.rate.is_nan() || args.rate <= 0.0 || args.connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    let conns = args.connections;
    let interval = Duration::from_secs_f64(conns as f64 / args.rate);
    let expected = (args.rate * args.window.seconds) as usize / conns + 16;
    let streams = (0..conns)
        .map(|_| {
            let s = TcpStream::connect(args.target.addr)
                .with_context(|| format!("connecting to {}", args.target.addr))?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .collect::<Result<Vec<_>>>()?;
    let request = std::sync::Arc::new(request_bytes(args.body));
    let clock = args.window.start();
    let start = Instant::now();
    let workers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, stream)| {
            let request = request.clone();
            // Connections are staggered evenly over one interval.
            let first = start + interval.mul_f64(c as f64 / conns as f64);
            thread(
                &format!("http-{c}"),
                move || -> io::Result<(Samples, Samples)> {
                    precise_sleeps();
                    let mut conn = HttpConn::new(stream);
                    let mut latency = Samples::with_capacity(expected);
                    let mut lag = Samples::with_capacity(expected);
                    for i in 0u32.. {
                        let due = first + interval * i;
                        if due >= clock.until {
                            break;
                        }
                        sleep_until(due);
                        let sent = Instant::now();
                        conn.stream().write_all(&request)?;
                        if conn.read_message()?.is_none() {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed the connection",
                            ));
                        }
                        if due >= clock.from {
                            latency.record(Instant::now() - due);
                            lag.record(sent.saturating_duration_since(due));
                        }
                    }
                    Ok((latency, lag))
                },
            )
        })
        .collect();
    let mut latency = Samples::default();
    let mut lag = Samples::default();
    for w in workers {
        let (l, g) = w
            .join()
            .map_err(|_| anyhow::anyhow!("an HTTP client thread panicked"))?
            .context("HTTP request")?;
        latency.merge(l);
        lag.merge(g);
    }
    let report = LoadReport {
        count: latency.len() as u64,
        seconds: clock.seconds,
        errors: 0,
        first_error: None,
        latency: latency.summary(),
        send_lag: Some(lag.summary()),
    };
    println!("{}", report.to_json_line());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn messages_round_trip_over_a_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut conn = HttpConn::new(s);
            let mut sizes = Vec::new();
            while let Some(n) = conn.read_message().unwrap() {
                sizes.push(n);
                conn.stream().write_all(&response_bytes(3000)).unwrap();
            }
            sizes
        });
        let mut client = HttpConn::new(TcpStream::connect(addr).unwrap());
        for _ in 0..3 {
            client.stream().write_all(&request_bytes(1024)).unwrap();
            assert_eq!(
                client.read_message().unwrap(),
                Some(response_bytes(3000).len())
            );
        }
        drop(client);
        assert_eq!(server.join().unwrap(), vec![request_bytes(1024).len(); 3]);
    }

    #[test]
    fn content_length_is_found_case_insensitively() {
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 12").unwrap(),
            12
        );
        assert_eq!(content_length(b"GET / HTTP/1.1\r\nHost: x").unwrap(), 0);
        assert!(content_length(b"GET / HTTP/1.1\r\nContent-Length: x").is_err());
    }
}
