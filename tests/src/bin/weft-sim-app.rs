//! `weft-sim-app`: the workload run inside simulated pods. It knows nothing
//! of the mesh; it shows what it saw (the peer address) so tests can check
//! what the mesh did.
//!
//! ```text
//! weft-sim-app http-server --port P [--name NAME] [--quiet true]
//! weft-sim-app http-get URL [--count N] [--body-marker S] [--header 'K: V']... [--timeout SECS]
//! weft-sim-app tcp-echo --port P [--delay-ms MS]
//! weft-sim-app tcp-send ADDR MSG [--timeout SECS] [--hex true]
//! weft-sim-app tcp-ping ADDR --count N [--interval-ms MS] [--timeout SECS]
//! weft-sim-app tcp-hold ADDR --connections N --until-file PATH [--interval-ms MS] [--lifetime-s S] [--timeout SECS]
//! weft-sim-app tcp-churn ADDR --until-file PATH [--interval-ms MS] [--timeout SECS]
//! weft-sim-app tcp-stall --port P
//! weft-sim-app tcp-flood ADDR --seconds S
//! weft-sim-app http-keepalive URL --until-file PATH [--interval-ms MS] [--timeout SECS]
//! ```
//!
//! `tcp-hold` opens N connections to a `tcp-echo` server and exchanges a
//! line on each of them every interval until PATH exists; `tcp-churn`
//! opens a new connection for every line until PATH exists. Both print
//! what failed, and a summary, and exit 0 only if nothing failed.
//! `http-keepalive` sends GETs on one keep-alive connection (a new one
//! when the server closes it) until PATH exists; it exits 0 only if every
//! response was 2xx.
//!
//! `tcp-echo --delay-ms MS` waits MS after accepting a connection before
//! it echoes anything (a server slow to answer).
//!
//! `tcp-stall` accepts connections and never reads them (a receiver whose
//! window closes); `tcp-flood` writes to ADDR for S seconds or until a
//! write has been blocked for a second, then prints the bytes written and
//! exits 0.
//!
//! `tcp-ping` keeps ONE connection to a `tcp-echo` server and exchanges a
//! line every interval; it exits 0 only if every line came back on it (a
//! long-lived connection survived whatever happened meanwhile).
//!
//! `tcp-send --hex true` takes MSG as hex digits (bytes no argument can
//! hold, such as HTTP/2 frames) and prints the reply as hex.
//!
//! `http-get` exits 0 if every response was 2xx, 2 if one was not, 1 on a
//! connection or protocol error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage:
  weft-sim-app http-server --port P [--name NAME] [--quiet true]
  weft-sim-app http-get URL [--count N] [--body-marker S] [--header 'K: V']... [--timeout SECS]
  weft-sim-app tcp-echo --port P [--delay-ms MS]
  weft-sim-app tcp-send ADDR MSG [--timeout SECS] [--hex true]
  weft-sim-app tcp-ping ADDR --count N [--interval-ms MS] [--timeout SECS]
  weft-sim-app tcp-hold ADDR --connections N --until-file PATH [--interval-ms MS] [--lifetime-s S] [--timeout SECS]
  weft-sim-app tcp-churn ADDR --until-file PATH [--interval-ms MS] [--timeout SECS]
  weft-sim-app tcp-stall --port P
  weft-sim-app tcp-flood ADDR --seconds S
  weft-sim-app http-keepalive URL --until-file PATH [--interval-ms MS] [--timeout SECS]";

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("http-server") => http_server(&args[1..]),
        Some("http-get") => http_get(&args[1..]),
        Some("tcp-echo") => tcp_echo(&args[1..]),
        Some("tcp-send") => tcp_send(&args[1..]),
        Some("tcp-ping") => tcp_ping(&args[1..]),
        Some("tcp-hold") => tcp_hold(&args[1..]),
        Some("tcp-churn") => tcp_churn(&args[1..]),
        Some("tcp-stall") => tcp_stall(&args[1..]),
        Some("tcp-flood") => tcp_flood(&args[1..]),
        Some("http-keepalive") => http_keepalive(&args[1..]),
        _ => Err(anyhow::anyhow!("{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft-sim-app: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `--flag value` options and positional arguments.
struct Args {
    positional: Vec<String>,
    options: Vec<(String, String)>,
}

impl Args {
    fn parse(args: &[String], known: &[&str]) -> Result<Args> {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if let Some(name) = arg.strip_prefix("--") {
                if !known.contains(&name) {
                    bail!("unknown option --{name}\n{USAGE}");
                }
                let value = it
                    .next()
                    .with_context(|| format!("--{name} needs a value"))?;
                options.push((name.to_string(), value.clone()));
            } else {
                positional.push(arg.clone());
            }
        }
        Ok(Args {
            positional,
            options,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.options
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T> {
        match self.get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{name}: {v:?} is not a number")),
            None => default.with_context(|| format!("--{name} is required\n{USAGE}")),
        }
    }
}

// === http-server ===

fn http_server(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["port", "name", "quiet"])?;
    let quiet = args.get("quiet") == Some("true");
    let port: u16 = args.number("port", None)?;
    let name = match args.get("name") {
        Some(n) => n.to_string(),
        None => std::env::var("POD_NAME").unwrap_or_else(|_| hostname()),
    };
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding port {port}"))?;
    println!("http-server {name} listening on 0.0.0.0:{port}");
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let name = name.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve_http(stream, &name, quiet) {
                eprintln!("http-server: connection error: {e:#}");
            }
        });
    }
    Ok(ExitCode::SUCCESS)
}

fn serve_http(stream: TcpStream, name: &str, quiet: bool) -> Result<()> {
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split_whitespace();
        let (method, path, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(p), Some(v)) => (m.to_string(), p.to_string(), v.to_string()),
            _ => bail!("bad request line {request_line:?}"),
        };
        let headers = parse_headers(lines);
        if header(&headers, "transfer-encoding").is_some() {
            writer.write_all(
                b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        let length: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let connection = header(&headers, "connection")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let close = connection == "close" || (version == "HTTP/1.0" && connection != "keep-alive");
        let text = format!("hello from {name} to {peer} path={path}\n");
        if !quiet {
            println!("{peer} {method} {path} 200");
        }
        // One write: one segment on the wire for a small response.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{text}",
            text.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        writer.write_all(response.as_bytes())?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// Reads up to the blank line ending an HTTP head; `None` on a clean EOF.
fn read_head(reader: &mut impl BufRead) -> Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside an HTTP head");
        }
        if line == "\r\n" || line == "\n" {
            if head.is_empty() {
                continue; // tolerate stray CRLF between messages
            }
            return Ok(Some(head));
        }
        head.push_str(&line);
        if head.len() > MAX_HEAD {
            bail!("HTTP head larger than {MAX_HEAD} bytes");
        }
    }
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

// === http-get ===

fn http_get(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["count", "body-marker", "header", "timeout"])?;
    let [url] = args.positional.as_slice() else {
        bail!("http-get takes one URL\n{USAGE}");
    };
    let count: u32 = args.number("count", Some(1))?;
    let timeout = Duration::from_secs_f64(args.number("timeout", Some(10.0))?);
    let (authority, path) = parse_url(url)?;
    let addr = resolve(&authority)?;
    let marker = args.get("body-marker");
    let mut extra = String::new();
    for h in args.all("header") {
        if !h.contains(':') {
            bail!("--header {h:?} is not 'Name: value'");
        }
        extra.push_str(h);
        extra.push_str("\r\n");
    }
    let request = match marker {
        Some(m) => format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: weft-sim-app\r\n{extra}\
             X-Weft-Marker: {m}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{m}",
            m.len()
        ),
        None => format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: weft-sim-app\r\n{extra}\r\n"
        ),
    };
    let mut all_ok = true;
    let mut conn: Option<BufReader<TcpStream>> = None;
    for _ in 0..count {
        let reader = match conn.as_mut() {
            Some(r) => r,
            None => conn.insert(BufReader::new(connect(addr, timeout)?)),
        };
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .context("sending the request")?;
        let (status_line, body, close) = read_response(reader).context("reading the response")?;
        println!("{status_line}");
        print!("{}", String::from_utf8_lossy(&body));
        if !body.ends_with(b"\n") {
            println!();
        }
        let code: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        all_ok &= (200..300).contains(&code);
        if close {
            conn = None;
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `http://host[:port][/path]` → (`host:port`, `/path`).
fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url:?} has no host");
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

fn resolve(authority: &str) -> Result<SocketAddr> {
    authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolved to no address"))
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Status line, body, and whether the server will close the connection.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(String, Vec<u8>, bool)> {
    let head = read_head(reader)?.context("the server closed the connection without a response")?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().trim_end().to_string();
    if !status_line.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let headers = parse_headers(lines);
    let close = header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
        || status_line.starts_with("HTTP/1.0");
    let chunked =
        header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else if let Some(len) = header(&headers, "content-length") {
        let mut body = vec![
            0u8;
            len.parse()
                .with_context(|| format!("bad content-length {len:?}"))?
        ];
        reader.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        return Ok((status_line, body, true));
    };
    Ok((status_line, body, close))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

// === tcp-echo, tcp-send ===

fn tcp_echo(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["port", "delay-ms"])?;
    let port: u16 = args.number("port", None)?;
    let delay = Duration::from_millis(args.number("delay-ms", Some(0))?);
    weft_sim::bench::load::raise_nofile_limit();
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding port {port}"))?;
    println!("tcp-echo listening on 0.0.0.0:{port}");
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map(|p| p.to_string())
                .unwrap_or_default();
            std::thread::sleep(delay);
            // One descriptor per connection: a second one (try_clone)
            // would halve the connections a soak can hold.
            let copied = std::io::copy(&mut &stream, &mut &stream);
            let _ = stream.shutdown(Shutdown::Write);
            println!("{peer} echoed {} bytes", copied.unwrap_or(0));
        });
    }
    Ok(ExitCode::SUCCESS)
}

fn tcp_stall(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["port"])?;
    let port: u16 = args.number("port", None)?;
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding port {port}"))?;
    println!("tcp-stall listening on 0.0.0.0:{port}");
    let mut held = Vec::new();
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        println!("{} held, never read", stream.peer_addr()?);
        held.push(stream);
    }
    Ok(ExitCode::SUCCESS)
}

fn tcp_flood(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["seconds"])?;
    let [addr] = args.positional.as_slice() else {
        bail!("tcp-flood takes ADDR\n{USAGE}");
    };
    let seconds: f64 = args.number("seconds", None)?;
    // A write blocked this long means the peer's window is closed.
    let stream = connect(resolve(addr)?, Duration::from_secs(1))?;
    let until = std::time::Instant::now() + Duration::from_secs_f64(seconds);
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0u64;
    while std::time::Instant::now() < until {
        match (&stream).write(&chunk) {
            Ok(n) => written += n as u64,
            Err(err)
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.kind() == std::io::ErrorKind::TimedOut =>
            {
                break;
            }
            Err(err) => return Err(err).context("writing"),
        }
    }
    println!("wrote {written} bytes");
    Ok(ExitCode::SUCCESS)
}

fn tcp_send(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["timeout", "hex"])?;
    let [addr, msg] = args.positional.as_slice() else {
        bail!("tcp-send takes ADDR and MSG\n{USAGE}");
    };
    let timeout = Duration::from_secs_f64(args.number("timeout", Some(10.0))?);
    let hex = args.get("hex") == Some("true");
    let bytes = if hex {
        from_hex(msg)?
    } else {
        msg.as_bytes().to_vec()
    };
    let mut stream = connect(resolve(addr)?, timeout)?;
    stream.write_all(&bytes).context("sending")?;
    stream.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .context("reading the reply")?;
    if hex {
        println!(
            "{}",
            reply.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", String::from_utf8_lossy(&reply));
    if !reply.ends_with(b"\n") {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

fn from_hex(text: &str) -> Result<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        bail!("{text:?}: an odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair)?;
            u8::from_str_radix(pair, 16).with_context(|| format!("{pair:?} is not a hex byte"))
        })
        .collect()
}

// === tcp-ping ===

fn tcp_ping(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["count", "interval-ms", "timeout"])?;
    let [addr] = args.positional.as_slice() else {
        bail!("tcp-ping takes ADDR\n{USAGE}");
    };
    let count: u32 = args.number("count", None)?;
    let interval = Duration::from_millis(args.number("interval-ms", Some(500))?);
    let timeout = Duration::from_secs_f64(args.number("timeout", Some(10.0))?);
    let stream = connect(resolve(addr)?, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for i in 0..count {
        let line = format!("ping {i}\n");
        writer
            .write_all(line.as_bytes())
            .with_context(|| format!("sending ping {i} of {count}"))?;
        let mut echoed = String::new();
        reader
            .read_line(&mut echoed)
            .with_context(|| format!("reading the echo of ping {i} of {count}"))?;
        if echoed != line {
            bail!("ping {i} of {count}: echoed {echoed:?}");
        }
        println!("ping {i} ok");
        std::thread::sleep(interval);
    }
    println!("all {count} pings echoed on one connection");
    Ok(ExitCode::SUCCESS)
}

// === tcp-hold and tcp-churn ===

/// One line sent and echoed on `stream`.
fn exchange(stream: &mut BufReader<TcpStream>, line: &str) -> Result<()> {
    stream
        .get_mut()
        .write_all(line.as_bytes())
        .context("sending")?;
    let mut echoed = String::new();
    stream.read_line(&mut echoed).context("reading the echo")?;
    if echoed != line {
        bail!("echoed {echoed:?} for {line:?}");
    }
    Ok(())
}

fn tcp_hold(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(
        args,
        &[
            "connections",
            "until-file",
            "interval-ms",
            "lifetime-s",
            "timeout",
        ],
    )?;
    let [addr] = args.positional.as_slice() else {
        bail!("tcp-hold takes ADDR\n{USAGE}");
    };
    let count: usize = args.number("connections", None)?;
    let until =
        std::path::PathBuf::from(args.get("until-file").context("--until-file is required")?);
    let interval = Duration::from_millis(args.number("interval-ms", Some(500))?);
    // A connection older than this is closed after an exchange and
    // replaced; their ages are staggered so that replacements spread out.
    let lifetime: Option<f64> = args
        .get("lifetime-s")
        .map(|_| args.number("lifetime-s", None))
        .transpose()?;
    let timeout = Duration::from_secs_f64(args.number("timeout", Some(10.0))?);
    weft_sim::bench::load::raise_nofile_limit();
    let addr = resolve(addr)?;
    let start = std::time::Instant::now();
    let mut conns = Vec::with_capacity(count);
    // Each connection confirmed end to end (one exchange) before the next
    // is opened, as a client that uses its connections would.
    let open = |i: usize| -> Result<BufReader<TcpStream>> {
        let mut conn = BufReader::new(connect(addr, timeout)?);
        exchange(&mut conn, &format!("conn {i} opened\n"))?;
        Ok(conn)
    };
    for i in 0..count {
        let stream = open(i).with_context(|| format!("connection {i}"))?;
        // Staggered: connection i is as old as if opened i/count of a
        // lifetime ago.
        let age = lifetime.map_or(Duration::ZERO, |l| {
            Duration::from_secs_f64(l * i as f64 / count as f64)
        });
        conns.push(Some((stream, start.checked_sub(age).unwrap_or(start))));
    }
    println!("holding {count} connections");
    let (mut failed, mut replaced) = (0u64, 0u64);
    let mut rounds = 0u64;
    loop {
        // One more round after the file appears: the connections still work.
        let last = until.exists();
        let round_start = std::time::Instant::now();
        for (i, slot) in conns.iter_mut().enumerate() {
            let Some((conn, opened)) = slot else { continue };
            if let Err(err) = exchange(conn, &format!("conn {i} round {rounds}\n")) {
                println!("connection {i} failed in round {rounds}: {err:#}");
                failed += 1;
                *slot = None;
                continue;
            }
            if lifetime.is_some_and(|l| opened.elapsed().as_secs_f64() >= l) && !last {
                replaced += 1;
                *slot = match open(i) {
                    Ok(stream) => Some((stream, std::time::Instant::now())),
                    Err(err) => {
                        println!("replacing connection {i} failed: {err:#}");
                        failed += 1;
                        None
                    }
                };
            }
        }
        rounds += 1;
        if last {
            break;
        }
        std::thread::sleep(interval.saturating_sub(round_start.elapsed()));
    }
    println!(
        "{count} connections, {rounds} rounds, {replaced} replaced, {failed} connections failed"
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn tcp_churn(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["until-file", "interval-ms", "timeout"])?;
    let [addr] = args.positional.as_slice() else {
        bail!("tcp-churn takes ADDR\n{USAGE}");
    };
    let until =
        std::path::PathBuf::from(args.get("until-file").context("--until-file is required")?);
    let interval = Duration::from_millis(args.number("interval-ms", Some(20))?);
    let timeout = Duration::from_secs_f64(args.number("timeout", Some(10.0))?);
    let addr = resolve(addr)?;
    let (mut sent, mut failed) = (0u64, 0u64);
    while !until.exists() {
        let line = format!("request {sent}\n");
        let outcome =
            connect(addr, timeout).and_then(|stream| exchange(&mut BufReader::new(stream), &line));
        if let Err(err) = outcome {
            println!("request {sent} failed: {err:#}");
            failed += 1;
        }
        sent += 1;
        std::thread::sleep(interval);
    }
    println!("{sent} requests, {failed} failed");
    Ok(if failed == 0 && sent > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn http_keepalive(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["until-file", "interval-ms", "timeout"])?;
    let [url] = args.positional.as_slice() else {
        bail!("http-keepalive takes one URL\n{USAGE}");
    };
    let until =
        std::path::PathBuf::from(args.get("until-file").context("--until-file is required")?);
    let interval = Duration::from_millis(args.number("interval-ms", Some(20))?);
    let timeout = Duration::from_secs_f64(args.number("timeout", Some(10.0))?);
    let (authority, path) = parse_url(url)?;
    let addr = resolve(&authority)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: weft-sim-app\r\n\r\n");
    let (mut sent, mut failed, mut connections) = (0u64, 0u64, 0u64);
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !until.exists() {
        // A server may close an idle keep-alive connection as the request
        // goes out; like any HTTP client, a GET that got no answer on a
        // reused connection is sent again on a new one (RFC 9112, 9.3.1).
        let reused = conn.is_some();
        let mut outcome = http_exchange(&mut conn, &mut connections, addr, timeout, &request);
        if outcome.is_err() && reused {
            conn = None;
            outcome = http_exchange(&mut conn, &mut connections, addr, timeout, &request);
        }
        match outcome {
            Ok(None) => {}
            Ok(Some(status_line)) => {
                println!("request {sent} failed: {status_line}");
                failed += 1;
            }
            Err(err) => {
                println!("request {sent} failed: {err:#}");
                failed += 1;
                conn = None;
            }
        }
        sent += 1;
        std::thread::sleep(interval);
    }
    println!("{sent} requests on {connections} connections, {failed} failed");
    Ok(if failed == 0 && sent > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One request on `conn` (opened when `None`, dropped when the server
/// closes it): `None` for a 2xx answer, the status line of another answer.
fn http_exchange(
    conn: &mut Option<BufReader<TcpStream>>,
    connections: &mut u64,
    addr: SocketAddr,
    timeout: Duration,
    request: &str,
) -> Result<Option<String>> {
    let reader = match conn.as_mut() {
        Some(r) => r,
        None => {
            *connections += 1;
            conn.insert(BufReader::new(connect(addr, timeout)?))
        }
    };
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .context("sending the request")?;
    let (status_line, _body, close) = read_response(reader).context("reading the response")?;
    if close {
        *conn = None;
    }
    let ok = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'));
    Ok((!ok).then_some(status_line))
}
