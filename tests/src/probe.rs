//! Readiness probes: a one-shot HTTP/1.1 GET from inside a namespace, as
//! kubelet would probe from the node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// How long one probe may take (connect, write, read).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET http://<addr><path>` made from inside `netns`; returns the status code.
pub fn http_status(netns: &Netns, addr: SocketAddr, path: &str) -> Result<u16> {
    netns
        .run(|| get_status(addr, path))?
        .with_context(|| format!("GET http://{addr}{path} from netns {}", netns.name()))
}

fn get_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    // One write: `write!` on a socket sends each formatted piece on its
    // own, and a server that answers after the request line and closes
    // would reset the connection under the rest (EPIPE here).
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: weft-sim-probe\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head)
}

/// `GET http://<addr><path>` made from inside `netns`: the status code
/// and the whole body (read until the server closes; no chunked coding,
/// as the agent's admin API sends `content-length`).
pub fn http_get(netns: &Netns, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_request(netns, addr, "GET", path, PROBE_TIMEOUT)
}

/// [`http_get`] with another method (an empty body) and a read timeout of
/// its own, for requests the server takes its time over.
pub fn http_request(
    netns: &Netns,
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    netns
        .run(|| -> Result<(u16, String)> {
            let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
            stream.set_read_timeout(Some(timeout))?;
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: weft-sim-probe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes())?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response)?;
            let split = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .context("no end of the response head")?;
            let status = parse_status(&response[..split])?;
            Ok((status, String::from_utf8_lossy(&response[split + 4..]).into_owned()))
        })?
        .with_context(|| format!("{method} http://{addr}{path} from netns {}", netns.name()))
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Result<u16> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/1.") => Ok(code),
        _ => bail!("not an HTTP/1.x response: {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n").unwrap(), 200);
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n").unwrap(),
            503
        );
        assert!(parse_status(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_status(b"").is_err());
    }
}
