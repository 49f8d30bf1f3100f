//! `http`: HTTP/1.1 keep-alive requests with a fixed-size body, at a fixed
//! rate, with coordinated omission corrected as wrk2 does: request `i` of a
//! connection is due at `start + i * interval`, and its latency is counted
//! from that due time, not from when it could finally be sent. A stall
//! therefore shows up in the latency of every request it delayed.
//!
//! Without `--rate`, each connection sends its next request as soon as the
//! previous answer is in (closed loop): the requests per second the path
//! carries, with each request's latency from its send.

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
    /// Requests per second, over all connections; without it, as fast as
    /// each connection goes (closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Keep-alive connections, each sending `rate / connections` per second.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Request body size (`POST`); the server answers with its own size.
    #[arg(long, default_value_t = 1024)]
    body: usize,
    /// A header sent with every request, `Name: value` (repeatable), e.g.
    /// `--header "Authorization: Bearer <token>"`.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<String>,
}

/// `Name: value`, checked: a token for a name, no line breaks anywhere.
fn parse_header(s: &str) -> Result<String, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not `Name: value`"))?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !name_ok || value.contains(['\r', '\n']) {
        return Err(format!("{s:?} is not a valid header"));
    }
    Ok(format!("{name}: {}", value.trim()))
}

/// Largest message head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A `POST` carrying `body` bytes.
pub fn request_bytes(body: usize) -> Vec<u8> {
    request_with_headers(body, &[])
}

/// A `POST` carrying `body` bytes and `headers` (each `Name: value`).
pub fn request_with_headers(body: usize, headers: &[String]) -> Vec<u8> {
    let mut head = String::from("POST /bench HTTP/1.1\r\nHost: bench\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    let mut req = format!("{head}Content-Length: {body}\r\n\r\n").into_bytes();
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
    /// The status code of the last response read (0 for a request).
    status: u16,
}

impl HttpConn {
    pub fn new(stream: TcpStream) -> HttpConn {
        HttpConn {
            stream,
            buf: vec![0; 8 * 1024],
            filled: 0,
            status: 0,
        }
    }

    /// The status code of the last message read, if it was a response.
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The socket, without the read buffer (empty between messages).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Reads one message; its total size, or `None` on EOF between messages.
    pub fn read_message(&mut self) -> io::Result<Option<usize>> {
        loop {
            if let Some(head_end) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                let head = &self.buf[..head_end];
                self.status = status_code(head);
                let total = head_end + 4 + content_length(head)?;
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

/// The status of a response head (`HTTP/1.1 200 OK`); 0 for a request.
fn status_code(head: &[u8]) -> u16 {
    match head {
        [b'H', b'T', b'T', b'P', b'/', _, _, _, b' ', a, b, c, ..] => [a, b, c]
            .iter()
            .try_fold(0u16, |n, d| {
                d.is_ascii_digit().then(|| n * 10 + u16::from(**d - b'0'))
            })
            .unwrap_or(0),
        _ => 0,
    }
}

/// The body's length from `Content-Length` (0 without one). A chunked
/// body (which neither of our ends sends, but a proxy might) is an error.
fn content_length(head: &[u8]) -> io::Result<usize> {
    let head = std::str::from_utf8(head)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "HTTP head is not UTF-8"))?;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            return value
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"));
        }
        if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("Transfer-Encoding {} is not supported", value.trim()),
            ));
        }
    }
    Ok(0)
}

pub fn run(args: HttpArgs) -> Result<()> {
    if args.connections == 0 {
        bail!("--connections must be positive");
    }
    if let Some(rate) = args.rate
        && (rate.is_nan() || rate <= 0.0)
    {
        bail!("--rate must be positive");
    }
    let conns = args.connections;
    // At a fixed rate each connection sends `rate / conns` per second; in a
    // closed loop, room for 50,000 per second and connection before growing.
    let expected = match args.rate {
        Some(rate) => (rate * args.window.seconds) as usize / conns + 16,
        None => (50_000.0 * args.window.seconds) as usize / conns + 16,
    };
    let streams = (0..conns)
        .map(|_| {
            let s = TcpStream::connect(args.target.addr)
                .with_context(|| format!("connecting to {}", args.target.addr))?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .collect::<Result<Vec<_>>>()?;
    let request = std::sync::Arc::new(request_with_headers(args.body, &args.headers));
    let clock = args.window.start();
    let cpu = super::cpu_meter(clock);
    let start = Instant::now();
    let workers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, stream)| {
            let request = request.clone();
            let schedule = args.rate.map(|rate| {
                let interval = Duration::from_secs_f64(conns as f64 / rate);
                // Connections are staggered evenly over one interval.
                (start + interval.mul_f64(c as f64 / conns as f64), interval)
            });
            thread(&format!("http-{c}"), move || {
                let conn = HttpConn::new(stream);
                match schedule {
                    Some((first, interval)) => {
                        fixed_rate(conn, &request, clock, first, interval, expected)
                    }
                    None => closed_loop(conn, &request, clock, expected),
                }
            })
        })
        .collect();
    let mut latency = Samples::default();
    let mut lag = Samples::default();
    let (mut errors, mut first_error) = (0, None);
    for w in workers {
        let done = w
            .join()
            .map_err(|_| anyhow::anyhow!("an HTTP client thread panicked"))?
            .context("HTTP request")?;
        latency.merge(done.latency);
        if let Some(g) = done.lag {
            lag.merge(g);
        }
        errors += done.errors;
        first_error = first_error.or(done.first_error);
    }
    let report = LoadReport {
        count: latency.len() as u64,
        seconds: clock.seconds,
        errors,
        first_error,
        latency: latency.summary(),
        send_lag: args.rate.is_some().then(|| lag.summary()),
        client_cpu: cpu.join().ok().flatten(),
    };
    println!("{}", report.to_json_line());
    Ok(())
}

/// One request and its answer; its status.
fn send(conn: &mut HttpConn, request: &[u8]) -> io::Result<u16> {
    conn.stream().write_all(request)?;
    if conn.read_message()?.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(conn.status())
}

/// One request and its answer, which must be a `200`.
pub(super) fn exchange(conn: &mut HttpConn, request: &[u8]) -> io::Result<()> {
    match send(conn, request)? {
        200 => Ok(()),
        status => Err(io::Error::other(format!("answered with status {status}"))),
    }
}

/// What one connection measured. A response other than `200` is an
/// error (counted, the connection goes on); a broken connection ends the
/// run.
struct Measured {
    latency: Samples,
    lag: Option<Samples>,
    errors: u64,
    first_error: Option<String>,
}

impl Measured {
    fn new(expected: usize, lag: bool) -> Measured {
        Measured {
            latency: Samples::with_capacity(expected),
            lag: lag.then(|| Samples::with_capacity(expected)),
            errors: 0,
            first_error: None,
        }
    }

    /// Counts a measured response: its latency if it was a `200`.
    fn answered(&mut self, status: u16, latency: Duration) {
        if status == 200 {
            self.latency.record(latency);
        } else {
            self.errors += 1;
            self.first_error
                .get_or_insert_with(|| format!("answered with status {status}"));
        }
    }
}

/// Request `i` due at `first + i * interval`; latency from the due time,
/// and how late each request left.
fn fixed_rate(
    mut conn: HttpConn,
    request: &[u8],
    clock: super::Clock,
    first: Instant,
    interval: Duration,
    expected: usize,
) -> io::Result<Measured> {
    precise_sleeps();
    let mut measured = Measured::new(expected, true);
    for i in 0u32.. {
        let due = first + interval * i;
        if due >= clock.until {
            break;
        }
        sleep_until(due);
        let sent = Instant::now();
        let status = send(&mut conn, request)?;
        if due >= clock.from {
            measured.answered(status, Instant::now() - due);
            if let Some(lag) = &mut measured.lag {
                lag.record(sent.saturating_duration_since(due));
            }
        }
    }
    Ok(measured)
}

/// The next request as soon as the answer to the last is in.
fn closed_loop(
    mut conn: HttpConn,
    request: &[u8],
    clock: super::Clock,
    expected: usize,
) -> io::Result<Measured> {
    let mut measured = Measured::new(expected, false);
    loop {
        let sent = Instant::now();
        if sent >= clock.until {
            break;
        }
        let status = send(&mut conn, request)?;
        if sent >= clock.from {
            measured.answered(status, sent.elapsed());
        }
    }
    Ok(measured)
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
    fn status_codes_of_responses_only() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nContent-Length: 1"), 200);
        assert_eq!(status_code(b"HTTP/1.1 503 Service Unavailable"), 503);
        assert_eq!(status_code(b"POST /bench HTTP/1.1\r\nHost: x"), 0);
        assert_eq!(status_code(b"HTTP/1.1 2x0 OK"), 0);
        assert!(content_length(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_err());
    }

    #[test]
    fn headers_go_into_every_request() {
        let h = parse_header("Authorization:  Bearer abc.def ").unwrap();
        assert_eq!(h, "Authorization: Bearer abc.def");
        let req = request_with_headers(2, &[h]);
        assert_eq!(
            req,
            b"POST /bench HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer abc.def\r\n\
              Content-Length: 2\r\n\r\nqq"
        );
        assert_eq!(request_with_headers(3, &[]), request_bytes(3));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("Bad Name: x").is_err());
        assert!(parse_header("X: a\r\nInjected: b").is_err());
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
