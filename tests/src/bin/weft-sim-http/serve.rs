//! `serve`: HTTP/1.1, h2c and gRPC on one port, or the same over TLS;
//! the upgrade echo.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::call;
use crate::conn::{Target, has_token};
use crate::faults::Faults;
use crate::grpc_server;
use crate::headers;
use crate::tls::{self, TlsInfo};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The upgrade protocol `serve` echoes on.
pub const ECHO_PROTOCOL: &str = "weft-echo";

/// What every response body is.
pub type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Port to listen on, on 0.0.0.0.
    #[arg(long)]
    pub port: u16,
    /// Name in `x-served-by` and replies.
    #[arg(long, env = "POD_NAME")]
    pub name: Option<String>,
    /// Probability (0 to 1) of failing a plain HTTP request.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Status of a failed request.
    #[arg(long, default_value = "503", value_parser = parse_status)]
    pub fail_status: StatusCode,
    /// Fail every request while this file exists: plain HTTP with
    /// `--fail-status`, gRPC with UNAVAILABLE.
    #[arg(long, value_name = "PATH")]
    pub fail_while_exists: Option<PathBuf>,
    /// Delay before answering a plain HTTP request or a gRPC call.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Delay plain HTTP requests while this file exists.
    #[arg(long, value_name = "PATH")]
    pub delay_while_exists: Option<PathBuf>,
    /// Log each request (and each failed TLS handshake) on stderr.
    #[arg(long)]
    pub verbose: bool,
    /// Serve TLS (not cleartext) with this PEM certificate chain, leaf first.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate chaining to one of these PEM CA
    /// certificates (with `--tls-cert`).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Answer `GET URL_PATH` with the file's content (read at each
    /// request, so a test can change it), as `application/json`.
    #[arg(long, value_name = "URL_PATH=FILE", value_parser = parse_file_route)]
    pub file: Vec<(String, PathBuf)>,
    /// Answer `/call` with a GET to this `http://` URL, carrying on the
    /// request's trace context headers.
    #[arg(long, value_name = "URL", value_parser = call::parse_call)]
    pub call: Option<Target>,
}

fn parse_file_route(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((path, file)) if path.starts_with('/') && !file.is_empty() => {
            Ok((path.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("{arg:?} is not `/url/path=FILE`")),
    }
}

fn parse_rate(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{arg:?} is not a probability from 0 to 1")),
    }
}

/// A final status (not 1xx).
pub fn parse_status(arg: &str) -> Result<StatusCode, String> {
    arg.parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("{arg:?} is not an HTTP status from 200 to 599"))
}

/// What the connections share.
pub struct App {
    pub name: Arc<str>,
    /// `name` as a header value.
    served_by: HeaderValue,
    faults: Faults,
    verbose: bool,
    /// `--file` routes.
    files: Vec<(String, PathBuf)>,
    /// `--call`'s upstream.
    call: Option<Target>,
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    let name = match args.name {
        Some(n) if !n.is_empty() => n,
        _ => hostname(),
    };
    let app = App::new(
        name,
        Faults::new(
            Duration::from_millis(args.delay_ms),
            args.delay_while_exists,
            args.fail_rate,
            args.fail_while_exists,
            args.fail_status,
        ),
        args.verbose,
    )?
    .with_files(args.file)
    .with_call(args.call);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key, args.client_ca.as_deref())?),
        _ => None,
    };
    let listener = TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("listening on 0.0.0.0:{}", args.port))?;
    crate::emit(&format!("serving {} on 0.0.0.0:{}", app.name, args.port))?;
    accept(listener, Arc::new(app), tls).await;
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Serves every connection `listener` accepts, forever: over TLS if
/// `tls` is given, else in cleartext.
pub async fn accept(listener: TcpListener, app: Arc<App>, tls: Option<TlsAcceptor>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                eprintln!("serve: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                return serve_connection(&builder, stream, peer, app, None).await;
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(stream)) => {
                    let info = Arc::new(TlsInfo::of(stream.get_ref().1));
                    serve_connection(&builder, stream, peer, app, Some(info)).await;
                }
                Ok(Err(e)) if app.verbose => {
                    eprintln!("serve: TLS handshake with {peer} failed: {e}");
                }
                Err(_) if app.verbose => {
                    eprintln!(
                        "serve: TLS handshake with {peer}: no answer within {HANDSHAKE_TIMEOUT:?}"
                    );
                }
                _ => {}
            }
        });
    }
}

/// Serves HTTP on one connection until it closes.
async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    app: Arc<App>,
    tls: Option<Arc<TlsInfo>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|req| {
        let (app, tls) = (app.clone(), tls.clone());
        async move { Ok::<_, Infallible>(app.handle(req, peer, tls.as_deref()).await) }
    });
    let served = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await;
    if let Err(e) = served
        && app.verbose
    {
        eprintln!("serve: connection from {peer}: {e}");
    }
}

/// What the JSON body says about the request.
#[derive(Debug, Serialize)]
struct Seen<'a> {
    server: &'a str,
    method: &'a str,
    path: &'a str,
    authority: &'a str,
    version: &'static str,
    peer: String,
    tls: bool,
    sni: Option<&'a str>,
    alpn: Option<&'a str>,
    client_cert: Option<&'a str>,
    headers: BTreeMap<String, String>,
    body_bytes: u64,
}

/// What a path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Json(StatusCode),
    Echo,
    Bytes(u64),
    /// `/drip/<ms>`: the head at once, then ten bytes spread over `ms`.
    Drip(u64),
    /// `/call`, with `--call`.
    Call,
}

impl Route {
    fn of(path: &str) -> Route {
        if let Some(code) = path.strip_prefix("/status/") {
            Route::Json(parse_status(code).unwrap_or(StatusCode::BAD_REQUEST))
        } else if path == "/echo" {
            Route::Echo
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            n.parse()
                .map_or(Route::Json(StatusCode::BAD_REQUEST), Route::Bytes)
        } else if let Some(ms) = path.strip_prefix("/drip/") {
            ms.parse()
                .map_or(Route::Json(StatusCode::BAD_REQUEST), Route::Drip)
        } else {
            Route::Json(StatusCode::OK)
        }
    }
}

// === impl App ===

impl App {
    pub fn new(name: String, faults: Faults, verbose: bool) -> Result<App> {
        let served_by = HeaderValue::from_str(&name)
            .map_err(|_| anyhow!("the server name {name:?} is not a valid header value"))?;
        Ok(App {
            name: name.into(),
            served_by,
            faults,
            verbose,
            files: Vec::new(),
            call: None,
        })
    }

    /// Serves these files at these paths.
    pub fn with_files(mut self, files: Vec<(String, PathBuf)>) -> App {
        self.files = files;
        self
    }

    /// Answers `/call` by calling `upstream`.
    pub fn with_call(mut self, upstream: Option<Target>) -> App {
        self.call = upstream;
        self
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: Option<&TlsInfo>,
    ) -> Response<Body> {
        let method = req.method().clone();
        let path = path_of(&req).to_string();
        let version = req.version();
        let response = if is_grpc(&req) {
            // `--delay-ms` slows calls as it slows requests.
            self.faults.delay().await;
            let response = match self.faults.failure() {
                // A failing server ends every call UNAVAILABLE, in a
                // trailers-only response.
                Some(_) => tonic::Status::unavailable("failing as the test asked").into_http(),
                None => grpc_server::call(self.name.clone(), req).await,
            };
            let mut response = response.map(|b| b.map_err(Into::into).boxed_unsync());
            response
                .headers_mut()
                .insert("x-served-by", self.served_by.clone());
            response
        } else if wants_echo_upgrade(&req) {
            self.upgrade(req)
        } else {
            self.plain(req, peer, tls).await
        };
        if self.verbose {
            eprintln!(
                "{peer} {method} {path} {version:?} {}",
                response.status().as_u16()
            );
        }
        response
    }

    async fn plain(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: Option<&TlsInfo>,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
        if let Some((_, file)) = self.files.iter().find(|(p, _)| p == parts.uri.path()) {
            return match tokio::fs::read(file).await {
                Ok(content) => self.respond(StatusCode::OK, "application/json", full(content)),
                Err(e) => self.respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    full(format!("reading {}: {e}\n", file.display())),
                ),
            };
        }
        let route = if self.call.is_some() && parts.uri.path() == call::CALL_PATH {
            Route::Call
        } else {
            Route::of(parts.uri.path())
        };
        let (body, body_bytes) = match read_body(body, route == Route::Echo).await {
            Ok(read) => read,
            // The client is gone, or broke the framing: nobody reads this.
            Err(e) => {
                return self.respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    full(format!("reading the request body: {e}\n")),
                );
            }
        };
        self.faults.delay().await;
        let route = match self.faults.failure() {
            Some(status) => Route::Json(status),
            None => route,
        };
        match route {
            Route::Call => {
                let upstream = self.call.as_ref().expect("Route::Call only with --call");
                let (status, json) = call::call(&self.name, upstream, &parts.headers).await;
                if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                    return self.respond(status, "", empty());
                }
                self.respond(status, "application/json", full(json))
            }
            Route::Echo => {
                let content_type = parts
                    .headers
                    .get(CONTENT_TYPE)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("application/octet-stream"));
                let mut response = self.respond(StatusCode::OK, "", full(body));
                response.headers_mut().insert(CONTENT_TYPE, content_type);
                response
            }
            Route::Bytes(n) => {
                let mut response =
                    self.respond(StatusCode::OK, "application/octet-stream", bytes_body(n));
                response.headers_mut().insert(CONTENT_LENGTH, n.into());
                response
            }
            Route::Drip(ms) => {
                let mut response = self.respond(StatusCode::OK, "text/plain", drip_body(ms));
                response.headers_mut().insert(CONTENT_LENGTH, 10.into());
                response
            }
            Route::Json(status)
                if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED =>
            {
                self.respond(status, "", empty())
            }
            Route::Json(status) => {
                let authority = parts
                    .uri
                    .authority()
                    .map(|a| a.as_str())
                    .or_else(|| parts.headers.get(HOST).and_then(|h| h.to_str().ok()))
                    .unwrap_or("");
                let seen = Seen {
                    server: &self.name,
                    method: parts.method.as_str(),
                    path,
                    authority,
                    version: version_name(parts.version),
                    peer: peer.to_string(),
                    tls: tls.is_some(),
                    sni: tls.and_then(|t| t.sni.as_deref()),
                    alpn: tls.and_then(|t| t.alpn.as_deref()),
                    client_cert: tls.and_then(|t| t.client_cert.as_deref()),
                    headers: headers::to_json(&parts.headers),
                    body_bytes,
                };
                let mut json = serde_json::to_vec(&seen).expect("plain data serialises");
                json.push(b'\n');
                self.respond(status, "application/json", full(json))
            }
        }
    }

    /// `101 Switching Protocols`, then an echo of the upgraded connection.
    fn upgrade(&self, mut req: Request<Incoming>) -> Response<Body> {
        let upgrade = hyper::upgrade::on(&mut req);
        let verbose = self.verbose;
        tokio::spawn(async move {
            let echoed = async {
                let upgraded = upgrade.await?;
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                let n = tokio::io::copy(&mut reader, &mut writer).await?;
                writer.shutdown().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(n)
            };
            match echoed.await {
                Ok(n) if verbose => eprintln!("serve: upgraded connection echoed {n} bytes"),
                Err(e) if verbose => eprintln!("serve: upgraded connection: {e}"),
                _ => {}
            }
        });
        let mut response = self.respond(StatusCode::SWITCHING_PROTOCOLS, "", empty());
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static(ECHO_PROTOCOL));
        response
    }

    /// A response with `x-served-by` and, unless empty, `content-type`.
    fn respond(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: Body,
    ) -> Response<Body> {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert("x-served-by", self.served_by.clone());
        if !content_type.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        response
    }
}

fn path_of<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("", |p| p.as_str())
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn wants_echo_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
        && req
            .headers()
            .get(UPGRADE)
            .is_some_and(|v| has_token(v, ECHO_PROTOCOL))
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "?",
    }
}

/// Reads the whole body: its bytes if `keep`, and its length.
async fn read_body(mut body: Incoming, keep: bool) -> Result<(Bytes, u64), hyper::Error> {
    let mut kept = BytesMut::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            len += data.len() as u64;
            if keep {
                kept.extend_from_slice(data);
            }
        }
    }
    Ok((kept.freeze(), len))
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// `n` bytes `x`, streamed in chunks.
fn bytes_body(n: u64) -> Body {
    const CHUNK: usize = 16 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let frames = futures::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            let len = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            (left > 0).then(|| (Ok(Frame::data(chunk.slice(..len))), left - len as u64))
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Ten bytes, one every `ms / 10` milliseconds.
fn drip_body(ms: u64) -> Body {
    let every = Duration::from_millis(ms / 10);
    let frames = futures::stream::unfold(0u8, move |sent| async move {
        if sent == 10 {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok(Frame::data(Bytes::from_static(b"."))), sent + 1))
    });
    StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::of("/"), Route::Json(StatusCode::OK));
        assert_eq!(
            Route::of("/status/418"),
            Route::Json(StatusCode::IM_A_TEAPOT)
        );
        assert_eq!(
            Route::of("/status/101"),
            Route::Json(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            Route::of("/status/abc"),
            Route::Json(StatusCode::BAD_REQUEST)
        );
        assert_eq!(Route::of("/echo"), Route::Echo);
        assert_eq!(Route::of("/drip/300"), Route::Drip(300));
        assert_eq!(Route::of("/echo/x"), Route::Json(StatusCode::OK));
        assert_eq!(Route::of("/bytes/10"), Route::Bytes(10));
        assert_eq!(Route::of("/bytes/-1"), Route::Json(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn json_body_shape() {
        let seen = Seen {
            server: "web-1",
            method: "GET",
            path: "/a?b=c",
            authority: "web:80",
            version: version_name(Version::HTTP_2),
            peer: "10.1.1.2:40000".into(),
            tls: false,
            sni: None,
            alpn: None,
            client_cert: None,
            headers: BTreeMap::from([("x-a".to_string(), "1, 2".to_string())]),
            body_bytes: 3,
        };
        assert_eq!(
            serde_json::to_string(&seen).unwrap(),
            r#"{"server":"web-1","method":"GET","path":"/a?b=c","authority":"web:80","version":"HTTP/2","peer":"10.1.1.2:40000","tls":false,"sni":null,"alpn":null,"client_cert":null,"headers":{"x-a":"1, 2"},"body_bytes":3}"#
        );
        let over_tls = Seen {
            tls: true,
            sni: Some("api.example.com"),
            alpn: Some("http/1.1"),
            client_cert: Some("CN=client; DNS:client.test"),
            headers: BTreeMap::new(),
            ..seen
        };
        assert_eq!(
            serde_json::to_string(&over_tls).unwrap(),
            r#"{"server":"web-1","method":"GET","path":"/a?b=c","authority":"web:80","version":"HTTP/2","peer":"10.1.1.2:40000","tls":true,"sni":"api.example.com","alpn":"http/1.1","client_cert":"CN=client; DNS:client.test","headers":{},"body_bytes":3}"#
        );
    }

    #[test]
    fn upgrade_and_grpc_detection() {
        let req = |version, headers: &[(&'static str, &'static str)]| {
            let mut r = Request::new(());
            *r.version_mut() = version;
            for (k, v) in headers {
                r.headers_mut().append(*k, HeaderValue::from_static(v));
            }
            r
        };
        let upgrade = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "weft-echo"),
        ];
        assert!(wants_echo_upgrade(&req(Version::HTTP_11, &upgrade)));
        assert!(!wants_echo_upgrade(&req(Version::HTTP_2, &upgrade)));
        assert!(!wants_echo_upgrade(&req(
            Version::HTTP_11,
            &[("connection", "upgrade"), ("upgrade", "websocket")]
        )));
        assert!(!wants_echo_upgrade(&req(
            Version::HTTP_11,
            &[("upgrade", "weft-echo")]
        )));
        assert!(is_grpc(&req(
            Version::HTTP_2,
            &[("content-type", "application/grpc+proto")]
        )));
        assert!(!is_grpc(&req(
            Version::HTTP_2,
            &[("content-type", "application/json")]
        )));
    }

    #[test]
    fn bad_names_are_refused() {
        let faults = || {
            Faults::new(
                Duration::ZERO,
                None,
                0.0,
                None,
                StatusCode::SERVICE_UNAVAILABLE,
            )
        };
        assert!(App::new("web-1".into(), faults(), false).is_ok());
        assert!(App::new("a\nb".into(), faults(), false).is_err());
    }
}
