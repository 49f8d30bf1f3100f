//! Zero-copy proxying between two TCP sockets with `splice(2)`: bytes go
//! socket → pipe → socket inside the kernel, never through user space.
//! Used wherever the proxy relays plaintext to plaintext (same-node
//! delivery, passthrough, inbound plaintext); HBONE needs the bytes in user
//! space for TLS.

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
};

use nix::fcntl::{SpliceFFlags, splice};
use tokio::{io::Interest, net::TcpStream};

/// Bytes moved per `splice` call, and the pipe's capacity.
const CHUNK: usize = 1 << 20;

/// Relays both ways until both directions have ended; the end of one
/// direction (EOF) is passed on as a half-close. Returns the bytes moved
/// `a → b` and `b → a`. Every chunk moved is reported to `progress` (the
/// idle timeout's watch); `b` is the upstream, so `b → a` is "back".
pub async fn relay(
    a: &TcpStream,
    b: &TcpStream,
    progress: &crate::proxy::limits::Progress,
) -> io::Result<(u64, u64)> {
    tokio::try_join!(
        one_way(a, b, progress, false),
        one_way(b, a, progress, true)
    )
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
    // A larger pipe means fewer calls; the default (64 KiB) works too.
    let _ = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    Ok((read, write))
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Moves `src`'s bytes to `dst` until `src` ends; `back`: from the
/// upstream to the client (for [`Progress::moved_back`]).
///
/// [`Progress::moved_back`]: crate::proxy::limits::Progress::moved_back
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    progress: &crate::proxy::limits::Progress,
    back: bool,
) -> io::Result<u64> {
    let (pipe_read, pipe_write) = pipe()?;
    let mut total = 0u64;
    loop {
        // Fill the (empty) pipe from the source: EAGAIN can only mean the
        // socket has nothing to read.
        let filled = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src.as_fd(), None, pipe_write.as_fd(), None, CHUNK, flags())
                    .map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        };
        if filled == 0 {
            let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
            return Ok(total);
        }
        // Drain it into the destination: EAGAIN can only mean the socket's
        // send buffer is full.
        let mut pending = filled;
        while pending > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe_read.as_fd(), None, dst.as_fd(), None, pending, flags())
                    .map_err(io::Error::from)
            }) {
                Ok(n) => {
                    pending -= n;
                    total += n as u64;
                    if back {
                        progress.moved_back(n);
                    } else {
                        progress.moved(n);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    /// Two connected sockets on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        // app ⇄ proxy_a ⇄(relay)⇄ proxy_b ⇄ upstream
        let (mut app, proxy_a) = pair().await;
        let (proxy_b, mut upstream) = pair().await;
        let relay =
            tokio::spawn(
                async move { super::relay(&proxy_a, &proxy_b, &Default::default()).await },
            );

        let request: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected = request.clone();
        let sender = tokio::spawn(async move {
            app.write_all(&request).await.unwrap();
            app.shutdown().await.unwrap();
            let mut reply = Vec::new();
            app.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let mut received = Vec::new();
        upstream.read_to_end(&mut received).await.unwrap();
        assert!(
            received == expected,
            "the request arrived changed ({} bytes)",
            received.len()
        );
        upstream.write_all(b"done").await.unwrap();
        upstream.shutdown().await.unwrap();
        assert_eq!(sender.await.unwrap(), b"done");
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up, down), (5_000_000, 4));
    }
}
