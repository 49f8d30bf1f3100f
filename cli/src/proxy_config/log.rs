//! `proxy-config log [--level L]`: the agent's log level, read with
//! `GET /logging` and changed with `POST /logging?level=L` (Envoy's admin
//! verb, what `istioctl proxy-config log --level` sends). The agent
//! validates the level and answers 400 naming a bad one.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
};

use serde::Deserialize;

use crate::http::{Endpoint, HttpError, parse_response};

/// The largest answer read (the agent's is a line of JSON).
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// What `/logging` answers.
#[derive(Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct LogState {
    /// The filter in force, in `WEFT_LOG`'s syntax (`info`,
    /// `info,weft_agent::l7=debug`).
    pub level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("cannot reach {what} at {addr}: {cause} — {hint}")]
    Connect {
        what: &'static str,
        addr: String,
        hint: &'static str,
        cause: std::io::Error,
    },
    #[error("POST {path} to {what} at {addr}: {cause}")]
    Io {
        what: &'static str,
        addr: String,
        path: String,
        cause: std::io::Error,
    },
    #[error("{what} at {addr} refused POST {path} (HTTP {status}): {body}")]
    Refused {
        what: &'static str,
        addr: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{what} at {addr} answered {path} with something else than the log level: {reason}")]
    Malformed {
        what: &'static str,
        addr: String,
        path: String,
        reason: String,
    },
}

/// The level in force.
pub fn get(endpoint: &Endpoint) -> Result<LogState, LogError> {
    let body = endpoint.get("/logging")?;
    parse(endpoint, "/logging", &body)
}

/// Changes the level; the level now in force.
pub fn set(endpoint: &Endpoint, level: &str) -> Result<LogState, LogError> {
    let path = format!("/logging?level={}", encode(level));
    let body = post(endpoint, &path)?;
    parse(endpoint, &path, &body)
}

/// For people: `log level: debug`.
pub fn render(state: &LogState) -> String {
    format!("log level: {}\n", state.level)
}

fn parse(endpoint: &Endpoint, path: &str, body: &[u8]) -> Result<LogState, LogError> {
    serde_json::from_slice(body).map_err(|err| LogError::Malformed {
        what: endpoint.what,
        addr: endpoint.addr.clone(),
        path: path.to_string(),
        reason: err.to_string(),
    })
}

/// Query-string escaping: everything but unreserved characters as `%XX`.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `POST path` without a body; the body of a 200 answer.
fn post(endpoint: &Endpoint, path: &str) -> Result<Vec<u8>, LogError> {
    let io = |cause| LogError::Io {
        what: endpoint.what,
        addr: endpoint.addr.clone(),
        path: path.to_string(),
        cause,
    };
    let addrs: Vec<_> = endpoint
        .addr
        .to_socket_addrs()
        .map_err(|cause| LogError::Connect {
            what: endpoint.what,
            addr: endpoint.addr.clone(),
            hint: endpoint.hint,
            cause,
        })?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, endpoint.timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(err) => last = Some(err),
        }
    }
    let Some(mut stream) = stream else {
        return Err(LogError::Connect {
            what: endpoint.what,
            addr: endpoint.addr.clone(),
            hint: endpoint.hint,
            cause: last.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into()),
        });
    };
    stream
        .set_read_timeout(Some(endpoint.timeout))
        .and_then(|()| stream.set_write_timeout(Some(endpoint.timeout)))
        .map_err(io)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: weftctl/{version}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        host = endpoint.addr,
        version = env!("CARGO_PKG_VERSION"),
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .map_err(io)?;
    let response = parse_response(&raw).map_err(|reason| LogError::Malformed {
        what: endpoint.what,
        addr: endpoint.addr.clone(),
        path: path.to_string(),
        reason,
    })?;
    if response.status != 200 {
        return Err(LogError::Refused {
            what: endpoint.what,
            addr: endpoint.addr.clone(),
            path: path.to_string(),
            status: response.status,
            body: String::from_utf8_lossy(&response.body).trim().to_string(),
        });
    }
    Ok(response.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_escaped_for_the_query() {
        assert_eq!(encode("debug"), "debug");
        assert_eq!(
            encode("info,weft_agent::l7=debug"),
            "info%2Cweft_agent%3A%3Al7%3Ddebug"
        );
    }

    #[test]
    fn a_refused_level_carries_the_agents_words() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap();
            let body = "`loud` is not a log level: use one of trace, debug\n";
            write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let endpoint = Endpoint {
            addr: addr.to_string(),
            what: "the agent's admin endpoint",
            hint: "is it running?",
            timeout: std::time::Duration::from_secs(5),
        };
        let err = set(&endpoint, "loud").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the agent's admin endpoint at {addr} refused POST /logging?level=loud (HTTP 400): `loud` is not a log level: use one of trace, debug"
            )
        );
        let request = server.join().unwrap();
        assert!(
            request.starts_with("POST /logging?level=loud HTTP/1.1\r\n"),
            "{request}"
        );
    }
}
