//! A shared HTTP/2 upstream connection and its open streams: what the
//! pool (the parent module) needs to tell an idle connection, as Envoy
//! does, from one with a stream still open.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::{body::Incoming, client::conn::http2};

use crate::l7::body::Body;

/// A shared HTTP/2 connection.
pub(super) struct H2Conn {
    pub(super) send: http2::SendRequest<Body>,
    pub(super) local: Option<SocketAddr>,
    pub(super) opened: Instant,
    pub(super) requests: AtomicU32,
    /// No new requests: it served its maximum.
    pub(super) retired: AtomicBool,
    /// Requests on it whose response has not ended.
    pub(super) active: AtomicU32,
    /// When it last had a request start or end, in nanoseconds after
    /// `opened`.
    pub(super) used: AtomicU64,
}

impl H2Conn {
    /// Whether it has had no request for `timeout` (the pool's idle
    /// timeout), as Envoy counts idleness: no stream open, for that long.
    /// It then leaves the pool and closes.
    pub(super) fn idle_for(&self, timeout: Duration) -> bool {
        let used = Duration::from_nanos(self.used.load(Ordering::Relaxed));
        self.active.load(Ordering::Acquire) == 0
            && self.opened.elapsed().saturating_sub(used) >= timeout
    }

    fn touch(&self) {
        let since_opened = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.used.store(since_opened, Ordering::Relaxed);
    }
}

/// One request on an [`H2Conn`], until its response's body has ended or
/// been dropped (or the request failed).
pub(super) struct H2Stream(Arc<H2Conn>);

impl H2Stream {
    pub(super) fn start(conn: &Arc<H2Conn>) -> H2Stream {
        conn.active.fetch_add(1, Ordering::AcqRel);
        conn.touch();
        H2Stream(conn.clone())
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its [`H2Stream`].
pub(super) struct StreamBody {
    pub(super) inner: Incoming,
    pub(super) _stream: H2Stream,
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
