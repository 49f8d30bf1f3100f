//! What bounds the operator endpoints' cost when a client misbehaves. The
//! metrics port is open to the pod network (Prometheus scrapes it from
//! another node), so a scraper that stops reading, or a client that
//! opens connections and sends nothing, must cost the node a bounded
//! amount of memory and CPU, and never the proxy's traffic:
//!
//! - an answer whose client reads nothing of it for [`WRITE_STALL`] has
//!   its connection closed, and the answer (a scrape can be megabytes)
//!   is freed ([`StallLimit`]);
//! - a connection that has not sent a request's headers within
//!   [`HEADER_READ`] of the server waiting for them is closed (hyper's
//!   header timeout);
//! - each listener holds at most [`CONNECTIONS`] connections; more are
//!   closed when accepted;
//! - at most [`BUILDS`] large answers (scrapes, config dumps) are built at
//!   once on the blocking pool; the next request waits for one to finish
//!   ([`BUILDING`]).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Semaphore,
    time::Sleep,
};

/// How long an answer may wait for its client to take more of it.
/// Prometheus's own scrape timeout is 10 s by default.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// How long the server waits for a request's whole headers: a new
/// connection that sends none, or a kept-alive one idle for as long, is
/// closed (clients such as Prometheus open a new one for the next
/// request).
pub const HEADER_READ: Duration = Duration::from_secs(30);

/// Connections one listener holds at once.
pub const CONNECTIONS: usize = 64;

/// Large answers built at once.
pub const BUILDS: usize = 2;

/// Permits to build a large answer.
pub static BUILDING: Semaphore = Semaphore::const_new(BUILDS);

/// A stream whose writes fail with `TimedOut` once one has waited
/// `limit` for the peer to take more. Reads are untouched (a kept-alive
/// connection may sit idle between requests).
pub struct StallLimit<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallLimit<S> {
    pub fn new(inner: S, limit: Duration) -> StallLimit<S> {
        StallLimit {
            inner,
            limit,
            stalled: None,
        }
    }

    /// What a write that returned `result` means: progress disarms the
    /// limit; a wait arms it (the timer wakes this task as the socket
    /// would), and a wait past it is an error.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took none of the answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpSocket, TcpStream},
    };

    use super::*;

    /// A loopback connection whose client side has a small receive
    /// buffer, so that an unread answer soon fills both sides' buffers.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn a_client_that_takes_nothing_is_cut_off() {
        let (server, _client) = pair().await;
        let mut server = StallLimit::new(server, Duration::from_millis(200));
        let answer = vec![b'x'; 16 << 20];
        // Bounded so that a limit that never fires fails here, loudly.
        let written = tokio::time::timeout(Duration::from_secs(30), server.write_all(&answer))
            .await
            .expect("the write stalled past its limit without failing");
        let err = written.expect_err("16 MiB went to a client that reads nothing");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("took none of the answer"), "{err}");
    }

    #[tokio::test]
    async fn a_client_that_keeps_reading_gets_the_whole_answer() {
        let (server, mut client) = pair().await;
        // Far above the time between two of the client's reads.
        let mut server = StallLimit::new(server, Duration::from_secs(5));
        let answer = vec![b'x'; 4 << 20];
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0; 4096];
            loop {
                match client.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got += n,
                }
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        });
        server.write_all(&answer).await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), answer.len());
    }
}
