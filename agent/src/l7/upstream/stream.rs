//! The byte stream an upstream HTTP connection runs on, whichever way
//! it reaches the endpoint (see the parent module's docs).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use crate::proxy::{delivery::Delivered, open::Tracked, tunnel_io::TunnelIo};

/// The byte stream an upstream HTTP connection runs on.
pub enum UpstreamIo {
    Tunnel(TunnelIo),
    /// To a non-HTTP port of a pod on this node, straight to its app, with
    /// its registration as an open connection until taken
    /// ([`UpstreamIo::take_tracked`]).
    Local(Delivered, Option<Tracked>),
    /// To an HTTP port of a pod on this node, through its HTTP side.
    LocalHttp(tokio::io::DuplexStream),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamIo {
    /// The connection's registration with the open connections, if it
    /// has one: whoever drives the connection closes it when
    /// `Tracked::revoked` resolves.
    pub(super) fn take_tracked(&mut self) -> Option<Tracked> {
        match self {
            UpstreamIo::Local(_, tracked) => tracked.take(),
            _ => None,
        }
    }

    /// The local address of the connection (see [`super::Upstreams::send`]).
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            UpstreamIo::Tunnel(tunnel) => tunnel.local_addr(),
            UpstreamIo::Local(delivered, _) => delivered.stream.local_addr().ok(),
            UpstreamIo::LocalHttp(_) => None,
            UpstreamIo::Tcp(tcp) => tcp.local_addr().ok(),
            UpstreamIo::Tls(tls) => tls.get_ref().0.local_addr().ok(),
        }
    }
}

/// Resolves when a policy change denies the connection `tracked` stands
/// for; never without one.
pub(super) async fn revoked(tracked: Option<Tracked>) {
    match tracked {
        Some(tracked) => {
            tracked.revoked().await;
        }
        None => std::future::pending().await,
    }
}

macro_rules! delegate {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            UpstreamIo::Tunnel($io) => {
                let $io = Pin::new($io);
                $call
            }
            UpstreamIo::Local(delivered, _) => {
                let $io = Pin::new(&mut delivered.stream);
                $call
            }
            UpstreamIo::LocalHttp($io) => {
                let $io = Pin::new($io);
                $call
            }
            UpstreamIo::Tcp($io) => {
                let $io = Pin::new($io);
                $call
            }
            UpstreamIo::Tls($io) => {
                let $io = Pin::new(&mut **$io);
                $call
            }
        }
    };
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Tunnel(_) => false,
            UpstreamIo::Local(delivered, _) => delivered.stream.is_write_vectored(),
            UpstreamIo::LocalHttp(duplex) => duplex.is_write_vectored(),
            UpstreamIo::Tcp(tcp) => tcp.is_write_vectored(),
            UpstreamIo::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }
}
