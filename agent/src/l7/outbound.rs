//! Where HTTP enters the proxy: an app's connection to a Service port
//! declared HTTP, captured like any outbound connection (15001), is served
//! here as HTTP/1.1 (keep-alive, pipelined requests answered in order) or
//! HTTP/2 cleartext (prior knowledge), each request handed to
//! [`super::forward`]. Malformed requests are answered by the HTTP codec
//! (400, 431, or an HTTP/2 error) and never forwarded; those that end the
//! connection (every HTTP/1.1 one, HTTP/2 connection errors) are logged and
//! counted.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::{
    drain,
    forward::{self, Downstream},
    idle,
};
use crate::{
    proxy::{PodContext, ProxyContext},
    state::{AppProtocol, Service},
};

/// Largest request head (HTTP/1.1) or header list (HTTP/2) accepted from
/// an app, as Envoy's default `max_request_headers_kb` (60 KiB), plus the
/// request line.
pub(super) const MAX_REQUEST_HEADERS: usize = 64 * 1024;

/// How long an HTTP/1.1 connection may take to send a request's head
/// (Envoy's `request_headers_timeout` is off by default; a bound keeps a
/// silent client from holding a connection's state forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP server both sides of L7 use: HTTP/1.1 keep-alive and h2c
/// (prior knowledge), headers up to [`MAX_REQUEST_HEADERS`], HBONE's
/// HTTP/2 windows.
pub(super) fn http_server() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        // A peer may send its requests and then end its side (`FIN`):
        // what it already sent is answered before the connection closes.
        .half_close(true)
        .max_buf_size(MAX_REQUEST_HEADERS)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .max_header_list_size(MAX_REQUEST_HEADERS as u32)
        .initial_stream_window_size(crate::proxy::hbone::STREAM_WINDOW)
        .initial_connection_window_size(crate::proxy::hbone::CONNECTION_WINDOW);
    builder
}

/// [`forward::handle`], closing the connection after the response when
/// the agent drains; the request is in flight until its response is sent.
async fn respond(
    request: Request<Incoming>,
    down: Arc<Downstream>,
    ctx: Arc<ProxyContext>,
    in_flight: idle::InFlight,
) -> Result<http::Response<super::body::Body>, super::body::BoxError> {
    let version = request.version();
    let response = forward::handle(request, down, ctx.clone()).await?;
    let response = drain::close_if_draining(version, &ctx.drain, response);
    Ok(idle::Activity::hold(in_flight, response))
}

/// Serves one app connection at L7 until it closes.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    original: SocketAddr,
    pod: Arc<PodContext>,
    service: Arc<Service>,
    protocol: AppProtocol,
    ctx: Arc<ProxyContext>,
) {
    let down = Arc::new(Downstream {
        pod,
        peer,
        original,
        service_key: service.key(),
        service,
        protocol,
        series: Arc::default(),
    });
    let activity = idle::Activity::new();
    let handler = {
        let (down, ctx, activity) = (down.clone(), ctx.clone(), activity.clone());
        service_fn(move |request| respond(request, down.clone(), ctx.clone(), activity.begin()))
    };
    let builder = http_server();
    // The socket comes back here when the codec is done with it.
    let returned = Arc::new(Mutex::new(None));
    let io = ReturnOnDrop {
        stream: Some(stream),
        slot: returned.clone(),
    };
    let served = {
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(super::framing::FramingGuard::new(io, MAX_REQUEST_HEADERS)),
            handler,
        );
        tokio::pin!(conn);
        tokio::select! {
            served = conn.as_mut() => served,
            () = idle::closing(&activity, &ctx) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
        // The codec (and with it the IO) drops here, which hands the
        // socket back.
    };
    let socket = returned.lock().expect("returned socket").take();
    if let Err(err) = served {
        // The codec rejected what the app sent (and answered it), or the
        // connection broke.
        let malformed = err
            .downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_parse() || e.is_parse_too_large() || e.is_parse_status())
            || h2_protocol_error(&*err);
        if malformed {
            ctx.metrics.bad_request();
            tracing::warn!(src = %down.pod.name(), src.addr = %peer, dst = %original, error = %err, "malformed HTTP request from the app; answered and not forwarded");
            if let Some(socket) = socket {
                linger(socket).await;
            }
        } else {
            tracing::debug!(src = %down.pod.name(), src.addr = %peer, error = %err, "HTTP connection from the app ended with an error");
        }
    }
}

/// Whether the app broke HTTP/2's rules badly enough that the codec ended
/// the connection with a GOAWAY of its own (a frame on the wrong stream,
/// an undecodable header block, a window overflow...). A malformed request
/// on one stream is answered with a `RST_STREAM` by the codec and never
/// reaches us.
fn h2_protocol_error(err: &(dyn std::error::Error + 'static)) -> bool {
    use h2::Reason;
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && !h2.is_remote()
                && h2.reason().is_some_and(|r| {
                    [
                        Reason::PROTOCOL_ERROR,
                        Reason::COMPRESSION_ERROR,
                        Reason::FRAME_SIZE_ERROR,
                        Reason::FLOW_CONTROL_ERROR,
                    ]
                    .contains(&r)
                });
        }
        cause = e.source();
    }
    false
}

/// The app's socket as the codec's IO; handed back to `slot` when the
/// codec drops it, so that a rejected connection can be lingered on
/// (without holding a second descriptor for every connection).
struct ReturnOnDrop {
    stream: Option<TcpStream>,
    slot: Arc<Mutex<Option<TcpStream>>>,
}

impl ReturnOnDrop {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("the socket until dropped"))
    }
}

impl AsyncRead for ReturnOnDrop {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for ReturnOnDrop {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for ReturnOnDrop {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = self.stream.take();
        }
    }
}

/// How long the rest of a rejected request is read and dropped.
const LINGER: Duration = Duration::from_secs(1);

/// After an error answer: closing a socket with unread bytes makes the
/// kernel send a reset, which can destroy the answer before the app reads
/// it. So end our side, then read and drop what the app still sends, for
/// a bounded time.
async fn linger(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.readable().await {
                Ok(()) => match stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                },
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
