//! HBONE: a TCP connection carried as an HTTP/2 `CONNECT` stream inside
//! mutual TLS, to port 15008 of the destination pod.
//!
//! Wire settings follow Istio's ztunnel so that the two interoperate: push
//! disabled, 4 MiB stream window, 16 MiB connection window, 1 MiB frames,
//! at most 100 streams per connection.

use std::{
    future::poll_fn,
    io,
    net::{IpAddr, SocketAddr},
};

use bytes::{Bytes, BytesMut};
use h2::{
    RecvStream, SendStream,
    client::{ResponseFuture, SendRequest},
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::limits::Progress;

pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;
pub const MAX_STREAMS: u32 = 100;

/// Bytes read from a TCP socket at a time, once a connection carries bulk
/// (see [`BULK_AFTER`]).
pub const READ_CHUNK: usize = 64 * 1024;

/// Bytes read at a time before that: most connections are short or mostly
/// idle, and an idle one should hold little memory (its buffer waits
/// allocated for the next read).
const FIRST_CHUNK: usize = 1024;

/// Bytes a connection moves before it reads [`READ_CHUNK`] at a time.
const BULK_AFTER: u64 = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("HTTP/2 handshake with the peer failed: {0}")]
    Handshake(h2::Error),
    #[error("CONNECT to {target} failed: {source}")]
    Connect {
        target: SocketAddr,
        source: h2::Error,
    },
    #[error("the peer answered CONNECT to {target} with {status}")]
    Refused {
        target: SocketAddr,
        status: StatusCode,
    },
}

/// Why the inbound side refuses an HBONE request before dialling anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadConnect {
    #[error("method {0} is not CONNECT")]
    NotConnect(Method),
    #[error("CONNECT target {0:?} is not ip:port")]
    NotIpPort(String),
    #[error("CONNECT to {0}, an address this listener does not serve")]
    NotServed(SocketAddr),
}

impl BadConnect {
    /// The status the client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            BadConnect::NotConnect(_) => StatusCode::METHOD_NOT_ALLOWED,
            BadConnect::NotIpPort(_) | BadConnect::NotServed(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// The target of an inbound HBONE request: a `CONNECT` whose authority is
/// `ip:port` with the ip one of `served` (the destination pod's IPs).
/// Pure: the inbound proxy's whole reading of a request's method and
/// authority before it authorizes and dials.
pub fn connect_target(
    method: &Method,
    uri: &Uri,
    served: &[IpAddr],
) -> Result<SocketAddr, BadConnect> {
    if method != Method::CONNECT {
        return Err(BadConnect::NotConnect(method.clone()));
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    let target: SocketAddr = authority
        .parse()
        .map_err(|_| BadConnect::NotIpPort(authority.to_string()))?;
    if !served.contains(&target.ip()) {
        return Err(BadConnect::NotServed(target));
    }
    Ok(target)
}

/// One CONNECT stream.
pub struct H2Stream {
    pub send: SendStream<Bytes>,
    pub recv: RecvStream,
    /// Held until the stream ends: for a pooled connection, the claim on
    /// it (see `proxy::pool`).
    pub lease: Option<super::pool::Lease>,
}

impl H2Stream {
    /// The local address of the connection it runs on, when pooled.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.lease.as_ref().and_then(super::pool::Lease::local_addr)
    }
}

/// HTTP/2 client handshake over an established (TLS) connection; the
/// connection is driven by a spawned task until both sides are done.
pub async fn client_handshake<IO>(io: IO) -> Result<SendRequest<Bytes>, HboneError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Ok(client_handshake_watched(io).await?.0)
}

/// [`client_handshake`], also returning a flag that turns true when the
/// connection has ended (for the pool).
pub async fn client_handshake_watched<IO>(
    io: IO,
) -> Result<
    (
        SendRequest<Bytes>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ),
    HboneError,
>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = closed.clone();
    let (send_request, connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .handshake(io)
        .await
        .map_err(HboneError::Handshake)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "HBONE client connection ended");
        }
        flag.store(true, std::sync::atomic::Ordering::Release);
    });
    Ok((send_request, closed))
}

/// Opens a CONNECT stream to `target` and waits for the peer's 200.
pub async fn connect(
    send_request: SendRequest<Bytes>,
    target: SocketAddr,
    headers: HeaderMap,
) -> Result<H2Stream, HboneError> {
    open(send_request, target, headers)
        .await?
        .established()
        .await
}

/// A CONNECT sent whose answer is not in yet. Bytes may already go the
/// peer's way ([`Opening::send_early`]): the peer holds them (within the
/// stream's window) until it has connected to the app, and drops them if it
/// refuses.
pub struct Opening {
    pub target: SocketAddr,
    send: SendStream<Bytes>,
    /// The peer's answer (polled in place, then by [`Opening::established`]).
    pub response: ResponseFuture,
}

/// Sends a CONNECT to `target` without waiting for the answer.
pub async fn open(
    send_request: SendRequest<Bytes>,
    target: SocketAddr,
    headers: HeaderMap,
) -> Result<Opening, HboneError> {
    let err = |source| HboneError::Connect { target, source };
    let mut send_request = send_request.ready().await.map_err(err)?;
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(target.to_string())
        .body(())
        .expect("an ip:port authority is a valid URI");
    *request.headers_mut() = headers;
    let (response, send) = send_request.send_request(request, false).map_err(err)?;
    Ok(Opening {
        target,
        send,
        response,
    })
}

impl Opening {
    /// Sends the app's first bytes ahead of the peer's answer.
    pub fn send_early(&mut self, data: Bytes) -> Result<(), HboneError> {
        let target = self.target;
        self.send
            .send_data(data, false)
            .map_err(|source| HboneError::Connect { target, source })
    }

    /// Waits for the peer's answer: the stream, once it is a 200.
    pub async fn established(mut self) -> Result<H2Stream, HboneError> {
        let answer = (&mut self.response).await;
        self.answered(answer)
    }

    /// The stream, given the answer already polled out of `response`.
    pub fn answered(
        self,
        answer: Result<Response<RecvStream>, h2::Error>,
    ) -> Result<H2Stream, HboneError> {
        let target = self.target;
        let response = answer.map_err(|source| HboneError::Connect { target, source })?;
        if response.status() != StatusCode::OK {
            return Err(HboneError::Refused {
                target,
                status: response.status(),
            });
        }
        Ok(H2Stream {
            send: self.send,
            recv: response.into_body(),
            lease: None,
        })
    }
}

impl HboneError {
    /// Whether the peer certainly did not act on the stream (it refused it
    /// unprocessed, or went away before it), so that it may be sent again
    /// on another connection even after bytes went with it.
    pub fn unprocessed(&self) -> bool {
        match self {
            HboneError::Connect { source, .. } => {
                source.reason() == Some(h2::Reason::REFUSED_STREAM)
                    || (source.is_go_away() && source.is_remote())
            }
            _ => false,
        }
    }
}

/// HTTP/2 server settings of the HBONE listener.
pub fn server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(MAX_STREAMS);
    builder
}

pub(crate) fn h2_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        err.into_io().expect("is_io")
    } else {
        io::Error::other(err)
    }
}

/// Moves bytes both ways between a plain TCP connection and a CONNECT
/// stream until both directions are finished. Half-close is carried: the
/// app's FIN becomes END_STREAM and the peer's END_STREAM becomes a FIN.
/// Returns (bytes sent into the tunnel, bytes received from it). Every
/// chunk moved is reported to `progress` (the idle timeout's watch).
pub async fn splice(
    tcp: TcpStream,
    stream: H2Stream,
    progress: &Progress,
) -> io::Result<(u64, u64)> {
    let (read, write) = tcp.into_split();
    let H2Stream { send, recv, lease } = stream;
    let result = tokio::try_join!(
        tcp_to_h2(read, send, progress),
        h2_to_tcp(recv, write, progress)
    );
    drop(lease);
    result
}

async fn tcp_to_h2(
    mut read: impl AsyncRead + Unpin,
    mut send: SendStream<Bytes>,
    progress: &Progress,
) -> io::Result<u64> {
    let mut total = 0u64;
    let mut chunk_size = FIRST_CHUNK;
    let mut buf = BytesMut::with_capacity(chunk_size);
    loop {
        if total >= BULK_AFTER {
            chunk_size = READ_CHUNK;
        }
        buf.reserve(chunk_size);
        let n = read.read_buf(&mut buf).await?;
        if n == 0 {
            send.send_data(Bytes::new(), true).map_err(h2_io)?;
            return Ok(total);
        }
        total += n as u64;
        progress.moved(n);
        let mut chunk = buf.split().freeze();
        while !chunk.is_empty() {
            send.reserve_capacity(chunk.len());
            let granted = poll_fn(|cx| send.poll_capacity(cx))
                .await
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::BrokenPipe, "HBONE stream closed by the peer")
                })?
                .map_err(h2_io)?;
            let part = chunk.split_to(granted.min(chunk.len()));
            send.send_data(part, false).map_err(h2_io)?;
        }
    }
}

async fn h2_to_tcp(
    mut recv: RecvStream,
    mut write: impl AsyncWrite + Unpin,
    progress: &Progress,
) -> io::Result<u64> {
    let mut total = 0u64;
    while let Some(data) = recv.data().await {
        let data = data.map_err(h2_io)?;
        total += data.len() as u64;
        progress.moved_back(data.len());
        write.write_all(&data).await?;
        let _ = recv.flow_control().release_capacity(data.len());
    }
    write.shutdown().await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<IpAddr> {
        vec!["10.0.1.2".parse().unwrap(), "fd00::2".parse().unwrap()]
    }

    #[test]
    fn connect_target_takes_a_connect_to_an_address_served() {
        let uri: Uri = "10.0.1.2:8080".parse().unwrap();
        assert_eq!(
            connect_target(&Method::CONNECT, &uri, &served()),
            Ok("10.0.1.2:8080".parse().unwrap())
        );
        let uri: Uri = "[fd00::2]:443".parse().unwrap();
        assert_eq!(
            connect_target(&Method::CONNECT, &uri, &served()),
            Ok("[fd00::2]:443".parse().unwrap())
        );
    }

    #[test]
    fn connect_target_refuses_other_methods_names_and_addresses() {
        let uri: Uri = "10.0.1.2:8080".parse().unwrap();
        let bad = connect_target(&Method::GET, &uri, &served()).unwrap_err();
        assert_eq!(bad.status(), StatusCode::METHOD_NOT_ALLOWED);
        let uri: Uri = "web.default:8080".parse().unwrap();
        let bad = connect_target(&Method::CONNECT, &uri, &served()).unwrap_err();
        assert_eq!(bad, BadConnect::NotIpPort("web.default:8080".into()));
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let uri: Uri = "10.0.1.3:8080".parse().unwrap();
        let bad = connect_target(&Method::CONNECT, &uri, &served()).unwrap_err();
        assert_eq!(bad, BadConnect::NotServed("10.0.1.3:8080".parse().unwrap()));
        let uri: Uri = "/just/a/path".parse().unwrap();
        let bad = connect_target(&Method::CONNECT, &uri, &served()).unwrap_err();
        assert_eq!(bad, BadConnect::NotIpPort(String::new()));
    }
}
