//! What bounds an operator HTTP port's cost when a client misbehaves: the
//! agent's (15000, 15020, 15021) and weft-control's (15014). Metrics ports
//! are open to the network (Prometheus scrapes them from another node),
//! so a scraper that stops reading, or a client that opens connections
//! and sends nothing, must cost a bounded amount of memory and CPU, and
//! never the traffic or the pushes the process is for:
//!
//! - an answer that makes no progress for [`WRITE_STALL`] (its client
//!   reads nothing, or next to nothing) has its connection closed, and
//!   the answer (a scrape or a dump can be megabytes) is freed
//!   ([`StallLimit`]); the kernel queues at most [`UNSENT`] bytes of it
//!   unsent ([`limit_unsent`]), so a client that reads slowly but reads
//!   lets it progress;
//! - a connection that has not sent a request's headers within
//!   [`HEADER_READ`] of the server waiting for them is closed (hyper's
//!   header timeout, which the servers set);
//! - each listener holds at most [`PER_PEER`] connections from one
//!   address and [`CONNECTIONS`] in all ([`Admission`]); the servers close
//!   more when they accept them. Per address, so that a pod cannot take
//!   the kubelet's probes' or Prometheus's place.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
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

/// The unsent bytes the kernel queues for an operator connection
/// (`TCP_NOTSENT_LOWAT`); a write waits until half of them have gone.
pub const UNSENT: u32 = 16 * 1024;

/// Connections one listener holds at once, from every address.
pub const CONNECTIONS: usize = 1024;

/// Connections one listener holds at once from one address.
pub const PER_PEER: usize = 32;

/// Which connections a listener holds: at most [`PER_PEER`] from one
/// address, [`CONNECTIONS`] in all.
#[derive(Default)]
pub struct Admission {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// One connection held; dropping it makes room.
pub struct Admitted {
    admission: Arc<Admission>,
    peer: IpAddr,
}

impl Admission {
    /// Room for a connection from `peer`, or `None` (the server closes it).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Admitted> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let from_peer = held.by_peer.get(&peer).copied().unwrap_or(0);
        if held.total >= CONNECTIONS || from_peer >= PER_PEER {
            return None;
        }
        held.total += 1;
        held.by_peer.insert(peer, from_peer + 1);
        Some(Admitted {
            admission: self.clone(),
            peer,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut held = self
            .admission
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        held.total -= 1;
        if let Some(count) = held.by_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                held.by_peer.remove(&self.peer);
            }
        }
    }
}

/// Bounds what the kernel queues unsent on an accepted connection to
/// [`UNSENT`]. Without it, a write waits until a third of the send
/// buffer (megabytes, autotuned) has drained, which at a slow client's
/// pace takes longer than [`WRITE_STALL`]: a client reading a few KB/s
/// would be cut off as if it read nothing. With it, a write goes on
/// after every 8 KiB the client's window takes.
pub fn limit_unsent(stream: &tokio::net::TcpStream) -> io::Result<()> {
    socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT)
}

/// A stream whose writes fail with `TimedOut` once one has waited
/// `limit` for the peer to take more (with [`limit_unsent`], the kernel
/// takes more after every 8 KiB the peer's window takes). Reads are
/// untouched (a kept-alive connection may sit idle between requests).
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
                format!(
                    "the answer made no progress for {limit:?}: its client reads too little, or nothing"
                ),
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
    #[test]
    fn admission_counts_per_peer_and_in_all_and_makes_room_on_drop() {
        let admission = Arc::new(Admission::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let from_a: Vec<_> = (0..PER_PEER).map(|_| admission.admit(a).unwrap()).collect();
        assert!(
            admission.admit(a).is_none(),
            "one more than PER_PEER from one address"
        );
        let from_b = admission.admit(b).expect("another address still gets in");
        drop(from_a);
        assert!(admission.admit(a).is_some(), "room again once closed");
        drop(from_b);
        let mut many = Vec::new();
        for i in 0..CONNECTIONS {
            let peer = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            many.push(admission.admit(peer).unwrap());
        }
        assert!(
            admission.admit("10.2.0.1".parse().unwrap()).is_none(),
            "over CONNECTIONS in all"
        );
        many.clear();
        assert!(admission.held.lock().unwrap().by_peer.is_empty());
    }

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpSocket, TcpStream},
    };

    use super::*;

    /// A loopback connection whose client side has a small receive
    /// buffer, so that an unread answer soon fills both sides' buffers.
    async fn pair() -> (TcpStream, TcpStream) {
        pair_sending(None).await
    }

    /// [`pair`], the server's send buffer set to `send_buffer` (the
    /// kernel doubles it) instead of autotuned.
    async fn pair_sending(send_buffer: Option<u32>) -> (TcpStream, TcpStream) {
        let listening = TcpSocket::new_v4().unwrap();
        if let Some(size) = send_buffer {
            // Accepted connections inherit it.
            listening.set_send_buffer_size(size).unwrap();
        }
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// Reads `client` to its end, `chunk` bytes at a time with `pause`
    /// after each; the bytes read.
    fn read_slowly(
        mut client: TcpStream,
        chunk: usize,
        pause: Duration,
    ) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0; chunk];
            loop {
                match client.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got += n,
                }
                tokio::time::sleep(pause).await;
            }
        })
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
        assert!(err.to_string().contains("made no progress"), "{err}");
    }

    #[tokio::test]
    async fn a_client_reading_slowly_is_not_cut_off() {
        // The server's send buffer as the kernel might autotune it (128
        // KiB here; megabytes over a fast path), a client taking 50 KB/s
        // through a 4 KiB receive buffer, and a limit of half a second:
        // without the bound on what is queued unsent, the kernel would
        // wake the writer only once a third of the buffer had drained
        // (about 0.9 s at this pace), and cut it off.
        let (server, client) = pair_sending(Some(64 << 10)).await;
        limit_unsent(&server).unwrap();
        let mut server = StallLimit::new(server, Duration::from_millis(500));
        let answer = vec![b'x'; 160 << 10];
        let reader = read_slowly(client, 1024, Duration::from_millis(20));
        server
            .write_all(&answer)
            .await
            .expect("a client that reads, slowly, was cut off");
        server.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), answer.len());
    }

    #[tokio::test]
    async fn a_client_that_keeps_reading_gets_the_whole_answer() {
        let (server, client) = pair().await;
        // Far above the time between two of the client's reads.
        let mut server = StallLimit::new(server, Duration::from_secs(5));
        let answer = vec![b'x'; 4 << 20];
        let reader = read_slowly(client, 4096, Duration::from_micros(100));
        server.write_all(&answer).await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), answer.len());
    }
}
