//! An HBONE CONNECT stream as a byte stream (`AsyncRead` + `AsyncWrite`),
//! so that a protocol client (the L7 proxy's upstream HTTP/1.1 or HTTP/2
//! connection) can run inside the tunnel. HTTP/2 flow control is kept:
//! received bytes release window as they are read, writes wait for the
//! peer's window.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hbone::{H2Stream, h2_io};

/// One CONNECT stream, read and written as bytes. Holds the stream's
/// claim on its pooled connection until dropped.
pub struct TunnelIo {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not yet read.
    pending: Bytes,
    read_done: bool,
    write_done: bool,
    lease: Option<super::pool::Lease>,
}

impl From<H2Stream> for TunnelIo {
    fn from(stream: H2Stream) -> Self {
        TunnelIo {
            send: stream.send,
            recv: stream.recv,
            pending: Bytes::new(),
            read_done: false,
            write_done: false,
            lease: stream.lease,
        }
    }
}

impl TunnelIo {
    /// The local address of the HBONE connection it runs on.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.lease.as_ref().and_then(super::pool::Lease::local_addr)
    }
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.read_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                // A peer that ends the stream with NO_ERROR closes it.
                Some(Err(err)) if err.reason() == Some(h2::Reason::NO_ERROR) => {
                    self.read_done = true;
                }
                Some(Err(err)) => return Poll::Ready(Err(h2_io(err))),
                None => self.read_done = true,
            }
        }
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.write_done {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Capacity already assigned is used first: `poll_capacity` only
        // wakes on an increase.
        if self.send.capacity() == 0 {
            self.send.reserve_capacity(buf.len());
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(err)) => return Poll::Ready(Err(h2_io(err))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "HBONE stream closed by the peer",
                    )));
                }
            }
        }
        let n = self.send.capacity().min(buf.len());
        if n == 0 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(h2_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The HTTP/2 connection task flushes frames as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_done {
            self.write_done = true;
            // A peer that has already reset the stream (a server done with
            // its response, RFC 9113 8.1) needs no END_STREAM: our side is
            // closed either way, and whatever it sent is still readable.
            if let Err(err) = self.send.send_data(Bytes::new(), true) {
                tracing::trace!(error = %err, "END_STREAM on a stream the peer closed");
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for TunnelIo {
    fn drop(&mut self) {
        // Dropped before our END_STREAM: an abort, reset at once (queued
        // data is dropped with it). After it, h2 resets a stream the peer
        // still sends on by itself once what we queued has gone out (with
        // NO_ERROR from a server done with its response, RFC 9113 8.1): an
        // explicit reset here would throw away the end of our response.
        if !self.write_done {
            self.send.send_reset(h2::Reason::CANCEL);
        }
    }
}
