//! A minimal HTTP/1.1 client (GET, and POST without a body) over a
//! blocking `TcpStream`, for the control plane's debug server and the
//! agent's admin API (both plain HTTP/1.1 on a known port). One request per connection, a timeout on
//! every step, and errors that name the endpoint and say what to check.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::Duration,
};

/// Responses larger than this are refused (a config dump of a very large
/// mesh is tens of MiB).
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// A server `weftctl` talks to: what it is and what to check when it does
/// not answer.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// e.g. "the control plane's debug endpoint".
    pub what: &'static str,
    /// e.g. "is weft-control running?".
    pub hint: &'static str,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{addr}` is not a host:port address{reason}")]
    BadAddress { addr: String, reason: String },
    #[error("cannot resolve the host of {what} `{addr}`: {reason}")]
    Resolve {
        what: &'static str,
        addr: String,
        reason: String,
    },
    // `cause`, not `source`: the message already carries it in plain words.
    #[error("cannot reach {what} at {addr}: {} — {hint}", describe(cause))]
    Connect {
        what: &'static str,
        addr: String,
        hint: &'static str,
        cause: io::Error,
    },
    #[error("{what} at {addr} did not answer {method} {path} within {timeout:?} — {hint}")]
    Timeout {
        what: &'static str,
        addr: String,
        path: String,
        method: &'static str,
        hint: &'static str,
        timeout: Duration,
    },
    #[error("reading {method} {path} from {what} at {addr}: {}", describe(cause))]
    Io {
        what: &'static str,
        addr: String,
        path: String,
        method: &'static str,
        cause: io::Error,
    },
    #[error("{what} at {addr} answered {method} {path} with HTTP {status}: {body}")]
    Status {
        what: &'static str,
        addr: String,
        path: String,
        method: &'static str,
        status: u16,
        body: String,
    },
    #[error("{what} at {addr} sent a malformed HTTP response to {method} {path}: {reason}")]
    Malformed {
        what: &'static str,
        addr: String,
        path: String,
        method: &'static str,
        reason: String,
    },
}

/// The kernel's words, without Rust's " (os error N)" suffix.
fn describe(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by the server".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        _ => {
            let text = err.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}

impl Endpoint {
    /// `GET path`; the body of a 200 response.
    pub fn get(&self, path: &str) -> Result<Vec<u8>, HttpError> {
        self.request("GET", path)
    }

    /// `POST path` without a body; the body of a 200 response.
    pub fn post(&self, path: &str) -> Result<Vec<u8>, HttpError> {
        self.request("POST", path)
    }

    fn request(&self, method: &'static str, path: &str) -> Result<Vec<u8>, HttpError> {
        let addrs = self.resolve()?;
        let mut stream = self.connect(&addrs)?;
        let io_err = |source: io::Error| {
            if matches!(
                source.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) {
                HttpError::Timeout {
                    what: self.what,
                    addr: self.addr.clone(),
                    path: path.to_string(),
                    method,
                    hint: self.hint,
                    timeout: self.timeout,
                }
            } else {
                HttpError::Io {
                    what: self.what,
                    addr: self.addr.clone(),
                    path: path.to_string(),
                    method,
                    cause: source,
                }
            }
        };
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(io_err)?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: weftctl/{version}\r\nAccept: application/json, text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            host = self.addr,
            version = env!("CARGO_PKG_VERSION"),
        );
        stream.write_all(request.as_bytes()).map_err(io_err)?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(io_err)?;
        let malformed = |reason: String| HttpError::Malformed {
            what: self.what,
            addr: self.addr.clone(),
            path: path.to_string(),
            method,
            reason,
        };
        if raw.len() > MAX_RESPONSE_BYTES {
            return Err(malformed(format!(
                "the response is larger than {} MiB",
                MAX_RESPONSE_BYTES >> 20
            )));
        }
        let response = parse_response(&raw).map_err(malformed)?;
        if response.status != 200 {
            let body = String::from_utf8_lossy(&response.body);
            return Err(HttpError::Status {
                what: self.what,
                addr: self.addr.clone(),
                path: path.to_string(),
                method,
                status: response.status,
                body: body.trim().lines().next().unwrap_or("").to_string(),
            });
        }
        Ok(response.body)
    }

    fn resolve(&self) -> Result<Vec<SocketAddr>, HttpError> {
        let bad = |reason: String| HttpError::BadAddress {
            addr: self.addr.clone(),
            reason,
        };
        let Some((host, port)) = self.addr.rsplit_once(':') else {
            return Err(bad(": the port is missing".into()));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad(format!(": `{port}` is not a port number")));
        }
        let resolve = |reason: String| HttpError::Resolve {
            what: self.what,
            addr: self.addr.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = self
            .addr
            .to_socket_addrs()
            .map_err(|err| resolve(describe(&err)))?
            .collect();
        if addrs.is_empty() {
            return Err(resolve("the name has no address".into()));
        }
        Ok(addrs)
    }

    /// The first address that accepts; the last error otherwise.
    fn connect(&self, addrs: &[SocketAddr]) -> Result<TcpStream, HttpError> {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(stream) => return Ok(stream),
                Err(err) => last = Some(err),
            }
        }
        Err(HttpError::Connect {
            what: self.what,
            addr: self.addr.clone(),
            hint: self.hint,
            cause: last.expect("at least one address was tried"),
        })
    }
}

/// A parsed response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Parses a complete HTTP/1.1 response (the server closed the connection):
/// `Content-Length`, chunked, or read-to-end bodies.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let head_end = find(raw, b"\r\n\r\n")
        .ok_or_else(|| "the connection closed before the end of the headers".to_string())?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| "the headers are not UTF-8".to_string())?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    if !version.starts_with("HTTP/1.") {
        return Err(format!("`{status_line}` is not an HTTP/1.x status line"));
    }
    let status: u16 = code
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("`{status_line}` has no status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("`{line}` is not a header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("Content-Length `{value}` is not a number"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = content_length {
        if rest.len() < len {
            return Err(format!(
                "the body ended after {} of {len} bytes",
                rest.len()
            ));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end =
            find(data, b"\r\n").ok_or_else(|| "a chunk size line is cut off".to_string())?;
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap_or_default();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("`{size_text}` is not a chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("a chunk is cut off".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn chunked_body() {
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n6;x=y\r\nready\n\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"not ready\n");
    }

    #[test]
    fn body_to_end_and_truncation() {
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\n{}").unwrap();
        assert_eq!(r.body, b"{}");
        let err = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap_err();
        assert!(err.contains("3 of 10"), "{err}");
        let err = parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert!(err.contains("not an HTTP/1.x status line"), "{err}");
    }

    #[test]
    fn connection_refused_names_the_endpoint() {
        // Bind then drop: nothing listens on that port any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let endpoint = Endpoint {
            addr: addr.to_string(),
            what: "the thing",
            hint: "is it running?",
            timeout: Duration::from_secs(2),
        };
        let err = endpoint.get("/x").unwrap_err().to_string();
        assert_eq!(
            err,
            format!("cannot reach the thing at {addr}: connection refused — is it running?")
        );
    }
}
