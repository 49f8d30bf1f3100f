//! The client side shared by `get`, `load` and `ws`: the URL, the request
//! to send, and one HTTP/1.1 or HTTP/2 (prior knowledge) connection.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::headers::{HeaderArg, parse_header, parse_secs};

/// Options of every HTTP client subcommand.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// A request header, `'Name: value'`; repeatable. `Host` sets the
    /// `:authority` with `--h2 true`.
    #[arg(long = "header", value_name = "'K: V'", value_parser = parse_header)]
    pub headers: Vec<HeaderArg>,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
    pub h2: bool,
    /// Seconds allowed to connect, and to each request and its response.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
}

/// Where to connect and what the request names: `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to.
    pub addr: String,
    /// The request's authority (`Host`, `:authority`).
    pub authority: Authority,
    /// The request's path and query.
    pub path: PathAndQuery,
}

// === impl Target ===

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let uri: Uri = url
            .parse()
            .map_err(|e| anyhow!("{url:?} is not a URL: {e}"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            bail!("{url:?}: only http:// URLs are supported");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{url:?} has no host"))?
            .clone();
        if authority.as_str().contains('@') {
            bail!("{url:?}: user information is not supported");
        }
        let host = authority.host();
        // The authority is the host and, maybe, `:port` (no user information).
        let port = match &authority.as_str()[host.len()..] {
            "" => 80,
            rest => rest
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .with_context(|| format!("{url:?}: {rest:?} is not a port"))?,
        };
        let addr = format!("{host}:{port}");
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Target {
            addr,
            authority,
            path,
        })
    }
}

/// A request to send, any number of times.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    /// HTTP/1.1: origin form; HTTP/2: absolute, from which hyper takes
    /// `:scheme` and `:authority`.
    pub uri: Uri,
    /// HTTP/1.1's `Host`: the URL's authority, or a `--header 'Host: …'`.
    pub host: Option<HeaderValue>,
    /// The other headers given on the command line.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub h2: bool,
}

// === impl RequestSpec ===

impl RequestSpec {
    pub fn new(
        method: Method,
        target: &Target,
        headers: &[HeaderArg],
        body: Bytes,
        h2: bool,
    ) -> Result<RequestSpec> {
        let mut authority = target.authority.to_string();
        let mut map = HeaderMap::new();
        for h in headers {
            if h.name == HOST {
                authority = h
                    .value
                    .to_str()
                    .map_err(|_| anyhow!("the Host header {:?} is not text", h.value))?
                    .to_string();
            } else {
                map.append(h.name.clone(), h.value.clone());
            }
        }
        if !map.contains_key(USER_AGENT) {
            map.insert(USER_AGENT, HeaderValue::from_static("weft-sim-http"));
        }
        let (uri, host) = if h2 {
            let uri = format!("http://{authority}{}", target.path)
                .parse::<Uri>()
                .ok()
                .filter(|u| u.authority().is_some_and(|a| a.as_str() == authority))
                .with_context(|| format!("{authority:?} is not a valid :authority"))?;
            (uri, None)
        } else {
            let host = HeaderValue::from_str(&authority)
                .map_err(|_| anyhow!("{authority:?} is not a valid Host header"))?;
            (Uri::from(target.path.clone()), Some(host))
        };
        Ok(RequestSpec {
            method,
            uri,
            host,
            headers: map,
            body,
            h2,
        })
    }

    pub fn build(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if self.h2 {
            *req.version_mut() = http::Version::HTTP_2;
        }
        if let Some(host) = &self.host {
            req.headers_mut().insert(HOST, host.clone());
        }
        req
    }
}

/// One client connection.
pub enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Opens a connection to `addr` (`host:port`), within `timeout`.
pub async fn connect(addr: &str, h2: bool, timeout: Duration) -> Result<Conn> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to {addr}: no answer within {timeout:?}"))?
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let io = TokioIo::new(stream);
    let handshake = async {
        if h2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok::<_, hyper::Error>(Conn::H2(send))
        } else {
            let (send, conn) = http1::handshake(io).await?;
            tokio::spawn(conn.with_upgrades());
            Ok(Conn::H1(send))
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| anyhow!("HTTP handshake with {addr}: no answer within {timeout:?}"))?
        .with_context(|| format!("HTTP handshake with {addr}"))
}

// === impl Conn ===

impl Conn {
    /// Whether the connection is gone (closed by the peer, or broken).
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    /// Another handle on an HTTP/2 connection.
    pub fn share(&self) -> Option<Conn> {
        match self {
            Conn::H1(_) => None,
            Conn::H2(s) => Some(Conn::H2(s.clone())),
        }
    }

    /// Sends `req`; the response head.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        match self {
            Conn::H1(s) => {
                s.ready().await.context("the connection closed")?;
                Ok(s.send_request(req).await?)
            }
            Conn::H2(s) => {
                s.ready().await.context("the connection closed")?;
                Ok(s.send_request(req).await?)
            }
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body's first bytes (as many as asked for).
    pub body: Bytes,
    /// Whether the server said it closes the connection.
    pub close: bool,
}

/// Sends `req` on `conn` and reads the whole response, keeping the first
/// `keep` bytes of its body.
pub async fn exchange(conn: &mut Conn, req: Request<Full<Bytes>>, keep: usize) -> Result<Answer> {
    let response = conn.send(req).await?;
    let (parts, mut body) = response.into_parts();
    let mut kept = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the response body")?;
        if let Some(data) = frame.data_ref() {
            let room = keep.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    let close = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| has_token(v, "close"));
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: kept.freeze(),
        close,
    })
}

/// Whether a comma-separated header value holds `token` (any case).
pub fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://10.96.0.1:8080/a/b?c=d").unwrap();
        assert_eq!(t.addr, "10.96.0.1:8080");
        assert_eq!(t.authority, "10.96.0.1:8080");
        assert_eq!(t.path, "/a/b?c=d");
        let t = Target::parse("http://web.demo").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("web.demo:80", "/"));
        assert_eq!(t.authority, "web.demo");
        for bad in [
            "",
            "10.0.0.1:80",
            "https://h/",
            "ftp://h/",
            "http:///x",
            "http://h:99999/",
            "http://h:/",
            "http://u@h/",
            "not a url",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn http1_requests_carry_host_and_origin_form() {
        let t = Target::parse("http://10.96.0.1/x?y=1").unwrap();
        let headers = [parse_header("x-a: 1").unwrap()];
        let spec = RequestSpec::new(Method::GET, &t, &headers, Bytes::new(), false).unwrap();
        let req = spec.build();
        assert_eq!(req.uri(), "/x?y=1");
        assert_eq!(req.headers()[HOST], "10.96.0.1");
        assert_eq!(req.headers()["x-a"], "1");
        assert_eq!(req.headers()[USER_AGENT], "weft-sim-http");
    }

    #[test]
    fn a_host_header_is_the_authority() {
        let t = Target::parse("http://10.96.0.1:8080/x").unwrap();
        let headers = [
            parse_header("Host: web.demo.svc.cluster.local").unwrap(),
            parse_header("User-Agent: me").unwrap(),
        ];
        let h1 = RequestSpec::new(Method::GET, &t, &headers, Bytes::new(), false).unwrap();
        let req = h1.build();
        assert_eq!(req.headers()[HOST], "web.demo.svc.cluster.local");
        assert_eq!(req.headers().get_all(HOST).iter().count(), 1);
        assert_eq!(req.headers()[USER_AGENT], "me");

        let h2 = RequestSpec::new(Method::POST, &t, &headers, "b".into(), true).unwrap();
        let req = h2.build();
        assert_eq!(req.uri(), "http://web.demo.svc.cluster.local/x");
        assert_eq!(req.version(), http::Version::HTTP_2);
        assert!(req.headers().get(HOST).is_none());

        for bad in ["Host: a b", "Host: a/b", "Host: "] {
            let bad = [parse_header(bad).unwrap()];
            assert!(
                RequestSpec::new(Method::GET, &t, &bad, Bytes::new(), true).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn connection_tokens() {
        assert!(has_token(
            &HeaderValue::from_static("keep-alive, Close"),
            "close"
        ));
        assert!(!has_token(&HeaderValue::from_static("closed"), "close"));
    }
}
