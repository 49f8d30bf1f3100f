//! `serve`: the server side of every client, one port each. Runs in the
//! server pods; with the mesh, connections arrive from the agent's delivery
//! socket carrying the client's own IP.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::Args;
use socket2::{Domain, Socket, Type};

use super::http::{HttpConn, response_bytes};
use super::thread;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Echo server (ping-pong): sends back whatever arrives.
    #[arg(long)]
    echo: Option<u16>,
    /// HTTP/1.1 keep-alive server answering every request with a `200` of
    /// `BODY` bytes (default `--http-body`); repeatable, one port each.
    #[arg(long, value_name = "PORT[:BODY]", value_parser = parse_http_port)]
    http: Vec<HttpPort>,
    /// Response body size of the HTTP servers whose `--http` gives none.
    #[arg(long, default_value_t = 1024)]
    http_body: usize,
    /// Request/response server for `connrate`: reads `--rr-size` bytes,
    /// answers as many, closes (the server closes first, so TIME_WAIT stays
    /// on the server and the client's ephemeral ports are not used up).
    #[arg(long)]
    rr: Option<u16>,
    /// Message size of the `--rr` server.
    #[arg(long, default_value_t = 100)]
    rr_size: usize,
    /// Threads accepting on the `--rr` port.
    #[arg(long, default_value_t = 16)]
    rr_threads: usize,
    /// Holding server for `hold`: sends one byte on each new connection,
    /// then keeps it open and idle.
    #[arg(long)]
    hold: Option<u16>,
}

/// An HTTP server's port and, if given, its response body size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpPort {
    port: u16,
    body: Option<usize>,
}

fn parse_http_port(arg: &str) -> Result<HttpPort, String> {
    let bad = |_| format!("{arg:?} is not PORT or PORT:BODY");
    Ok(match arg.split_once(':') {
        Some((port, body)) => HttpPort {
            port: port.parse().map_err(bad)?,
            body: Some(body.parse().map_err(bad)?),
        },
        None => HttpPort {
            port: arg.parse().map_err(bad)?,
            body: None,
        },
    })
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let mut threads = Vec::new();
    if let Some(port) = args.echo {
        let listener = listen(port)?;
        threads.push(thread("echo-accept", move || {
            accept_each(listener, "echo", echo)
        }));
    }
    for HttpPort { port, body } in args.http {
        let listener = listen(port)?;
        let response = response_bytes(body.unwrap_or(args.http_body));
        threads.push(thread("http-accept", move || {
            accept_each(listener, "http", move |s| http(s, &response))
        }));
    }
    if let Some(port) = args.rr {
        let listener = listen(port)?;
        for i in 0..args.rr_threads.max(1) {
            let listener = listener.try_clone()?;
            let size = args.rr_size;
            threads.push(thread(&format!("rr-{i}"), move || rr_loop(listener, size)));
        }
    }
    if let Some(port) = args.hold {
        let listener = listen(port)?;
        threads.push(thread("hold", move || hold(listener)));
    }
    if threads.is_empty() {
        bail!("serve: give at least one of --echo, --http, --rr, --hold");
    }
    println!("serving");
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a server thread panicked"))??;
    }
    Ok(())
}

/// `0.0.0.0:<port>` with a backlog of 4096 (`hold` opens thousands at once).
fn listen(port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// A thread per accepted connection running `handle`.
fn accept_each(
    listener: TcpListener,
    what: &'static str,
    handle: impl Fn(TcpStream) -> std::io::Result<()> + Send + Clone + 'static,
) -> Result<()> {
    loop {
        let (stream, _) = listener
            .accept()
            .with_context(|| format!("{what}: accept"))?;
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        thread(what, move || {
            if let Err(e) = handle(stream) {
                eprintln!("{what}: connection ended with {e}");
            }
        });
    }
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn http(stream: TcpStream, response: &[u8]) -> std::io::Result<()> {
    let mut conn = HttpConn::new(stream);
    while conn.read_message()?.is_some() {
        conn.stream().write_all(response)?;
    }
    Ok(())
}

fn rr_loop(listener: TcpListener, size: usize) -> Result<()> {
    let mut buf = vec![0u8; size];
    loop {
        let (mut stream, _) = listener.accept().context("rr: accept")?;
        let _ = stream.set_nodelay(true);
        let answered = stream
            .read_exact(&mut buf)
            .and_then(|()| stream.write_all(&buf));
        if let Err(e) = answered {
            eprintln!("rr: connection ended with {e}");
        }
        // Dropping closes: the server closes first.
    }
}

/// Accepts, greets with one byte, and keeps each connection until the
/// client closes it (an epoll thread watches for the close, so idle
/// connections cost no CPU here).
fn hold(listener: TcpListener) -> Result<()> {
    // SAFETY: epoll_create1 has no pointer arguments.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(std::io::Error::last_os_error()).context("hold: epoll_create1");
    }
    let held: Arc<Mutex<HashMap<RawFd, TcpStream>>> = Arc::default();
    let reaped = held.clone();
    thread("hold-reaper", move || reap(epoll, &reaped));
    loop {
        let (mut stream, _) = listener.accept().context("hold: accept")?;
        if let Err(e) = stream.write_all(b"!") {
            eprintln!("hold: connection ended with {e}");
            continue;
        }
        let fd = stream.as_raw_fd();
        let mut event = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32,
            u64: fd as u64,
        };
        held.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fd, stream);
        // SAFETY: a valid epoll fd, a socket fd we own, a valid event.
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
            eprintln!("hold: epoll_ctl: {}", std::io::Error::last_os_error());
        }
    }
}

/// Drops held connections whose peer has closed.
fn reap(epoll: RawFd, held: &Mutex<HashMap<RawFd, TcpStream>>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        // SAFETY: the buffer holds `events.len()` events.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
        for event in &events[..n as usize] {
            // Closing the socket also removes it from the epoll set.
            held.remove(&(event.u64 as RawFd));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_ports_with_and_without_a_body_size() {
        assert_eq!(
            parse_http_port("8080"),
            Ok(HttpPort {
                port: 8080,
                body: None
            })
        );
        assert_eq!(
            parse_http_port("8081:100"),
            Ok(HttpPort {
                port: 8081,
                body: Some(100)
            })
        );
        assert!(parse_http_port("8081:").is_err());
        assert!(parse_http_port("x").is_err());
    }
}
