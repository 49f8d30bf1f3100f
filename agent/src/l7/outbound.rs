//! Where HTTP enters the proxy: an app's connection to a Service port
//! declared HTTP, captured like any outbound connection (15001), is served
//! here as HTTP/1.1 (keep-alive, pipelined requests answered in order) or
//! HTTP/2 cleartext (prior knowledge), each request handed to
//! [`super::forward`]. Malformed requests are answered by the HTTP codec
//! (400, 431, or an HTTP/2 error), logged, counted, and never forwarded.

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::os::fd::{AsFd, OwnedFd};

use tokio::net::TcpStream;

use super::forward::{self, Downstream};
use crate::{
    proxy::{PodContext, ProxyContext},
    state::{AppProtocol, Service},
};

/// Largest request head (HTTP/1.1) or header list (HTTP/2) accepted from
/// an app, as Envoy's default `max_request_headers_kb` (60 KiB), plus the
/// request line.
const MAX_REQUEST_HEADERS: usize = 64 * 1024;

/// How long an HTTP/1.1 connection may take to send a request's head
/// (Envoy's `request_headers_timeout` is off by default; a bound keeps a
/// silent client from holding a connection's state forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

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
    });
    let handler = {
        let (down, ctx) = (down.clone(), ctx.clone());
        service_fn(move |request| forward::handle(request, down.clone(), ctx.clone()))
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(MAX_REQUEST_HEADERS)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .max_header_list_size(MAX_REQUEST_HEADERS as u32)
        .initial_stream_window_size(crate::proxy::hbone::STREAM_WINDOW)
        .initial_connection_window_size(crate::proxy::hbone::CONNECTION_WINDOW);
    // A second handle on the socket, for after the codec is done with it.
    let socket = stream.as_fd().try_clone_to_owned().ok();
    let served = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), handler)
        .await;
    if let Err(err) = served {
        // The codec rejected what the app sent (and answered it), or the
        // connection broke.
        let malformed = err
            .downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_parse() || e.is_parse_too_large() || e.is_parse_status());
        if malformed {
            ctx.l7.bad_requests.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(src = %down.pod.name(), src.addr = %peer, dst = %original, error = %err, "malformed HTTP request from the app; answered and not forwarded");
            if let Some(socket) = socket {
                linger(socket).await;
            }
        } else {
            tracing::debug!(src = %down.pod.name(), src.addr = %peer, error = %err, "HTTP connection from the app ended with an error");
        }
    }
}

/// How long the rest of a rejected request is read and dropped.
const LINGER: Duration = Duration::from_secs(1);

/// After an error answer: closing a socket with unread bytes makes the
/// kernel send a reset, which can destroy the answer before the app reads
/// it. So end our side, then read and drop what the app still sends, for
/// a bounded time.
async fn linger(socket: OwnedFd) {
    let Ok(stream) = TcpStream::from_std(std::net::TcpStream::from(socket)) else {
        return;
    };
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
