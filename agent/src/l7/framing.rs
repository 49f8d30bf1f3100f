//! Request framing that Envoy refuses and hyper tolerates: an HTTP/1.1
//! request with both `Content-Length` and `Transfer-Encoding`. RFC 9112
//! lets a server read it as chunked and close the connection after it
//! (hyper does); Envoy answers 400, and so does weft: a reader between the
//! app's socket and the HTTP codec follows the message framing of the
//! request stream and, when a head carries both headers, breaks its
//! terminating blank line, so that the codec rejects the request (400)
//! before anything is forwarded.
//!
//! It stops watching (and passes bytes through) once the stream is not
//! plain HTTP/1.1 requests any more: HTTP/2, an upgrade, CONNECT, or a head
//! larger than the codec accepts (which the codec refuses itself).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Wraps an app's connection; see the module docs.
pub struct FramingGuard<IO> {
    inner: IO,
    state: State,
    /// The current head (or chunk-size line, or trailers), as far as read.
    pending: Vec<u8>,
    max_head: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first bytes: HTTP/1.1 or the HTTP/2 preface.
    Start,
    Head,
    /// A body of this many more bytes.
    Fixed(u64),
    /// A chunked body: the next chunk-size line.
    ChunkSize,
    /// Chunk data, then its CRLF (the count includes the CRLF).
    ChunkData(u64),
    /// Trailers after the last chunk, up to an empty line.
    Trailers,
    /// Not watching any more.
    Passthrough,
}

impl<IO> FramingGuard<IO> {
    /// `max_head`: the codec's limit for a request head.
    pub fn new(inner: IO, max_head: usize) -> Self {
        FramingGuard {
            inner,
            state: State::Start,
            pending: Vec::new(),
            max_head,
        }
    }

    /// Follows `bytes` (just read, in order); may rewrite one of them to
    /// make a forbidden head unparsable.
    fn observe(&mut self, bytes: &mut [u8]) {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Passthrough => {
                    // Whatever way it got here, the head buffer is not
                    // needed again.
                    self.pending = Vec::new();
                    return;
                }
                State::Start => {
                    let n = (H2_PREFACE.len() - self.pending.len()).min(bytes.len() - at);
                    self.pending.extend_from_slice(&bytes[at..at + n]);
                    if !H2_PREFACE.starts_with(&self.pending) {
                        // HTTP/1: what was gathered is the start of a head.
                        self.state = State::Head;
                        let gathered = std::mem::take(&mut self.pending);
                        at += n;
                        self.pending = gathered;
                        // Reprocess the gathered bytes as head bytes.
                        if let Some(end) = find_head_end(&self.pending, 0) {
                            let excess = self.pending.len() - end;
                            self.pending.truncate(end);
                            self.head_complete(bytes, at - excess);
                            at -= excess;
                        }
                        continue;
                    }
                    at += n;
                    if self.pending.len() == H2_PREFACE.len() {
                        self.state = State::Passthrough;
                    }
                }
                State::Head | State::Trailers => {
                    let before = self.pending.len();
                    let search_from = before.saturating_sub(3);
                    self.pending.extend_from_slice(&bytes[at..]);
                    let end = if self.state == State::Trailers && self.pending.starts_with(b"\r\n")
                    {
                        Some(2)
                    } else {
                        find_head_end(&self.pending, search_from)
                    };
                    match end {
                        Some(end) => {
                            let consumed = end - before;
                            self.pending.truncate(end);
                            at += consumed;
                            if self.state == State::Head {
                                self.head_complete(bytes, at);
                            } else {
                                self.pending.clear();
                                self.state = State::Head;
                            }
                        }
                        None => {
                            if self.pending.len() > self.max_head {
                                self.state = State::Passthrough;
                            }
                            return;
                        }
                    }
                }
                State::Fixed(left) => {
                    let n = left.min((bytes.len() - at) as u64);
                    at += n as usize;
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Fixed(left - n)
                    };
                }
                State::ChunkSize => match bytes[at..].iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.pending.extend_from_slice(&bytes[at..at + i]);
                        at += i + 1;
                        let size = chunk_size(&self.pending);
                        self.pending.clear();
                        self.state = match size {
                            Some(0) => State::Trailers,
                            Some(size) => State::ChunkData(size + 2),
                            // Malformed: the codec refuses it.
                            None => State::Passthrough,
                        };
                    }
                    None => {
                        self.pending.extend_from_slice(&bytes[at..]);
                        if self.pending.len() > 1024 {
                            self.state = State::Passthrough;
                        }
                        return;
                    }
                },
                State::ChunkData(left) => {
                    let n = left.min((bytes.len() - at) as u64);
                    at += n as usize;
                    self.state = if n == left {
                        State::ChunkSize
                    } else {
                        State::ChunkData(left - n)
                    };
                }
            }
        }
    }

    /// A whole head is in `pending`; its last byte is `bytes[end - 1]`.
    fn head_complete(&mut self, bytes: &mut [u8], end: usize) {
        // Left uninitialized for the parser (zeroing 128 headers was a
        // fifth of this function's cost), and parsed in place.
        let mut headers = [std::mem::MaybeUninit::uninit(); 128];
        let mut request = httparse::Request::new(&mut []);
        let Ok(httparse::Status::Complete(_)) =
            request.parse_with_uninit_headers(&self.pending, &mut headers)
        else {
            // The codec sees the same bytes and refuses them itself.
            self.state = State::Passthrough;
            return;
        };
        let mut content_length = None;
        let mut has_length = false;
        let mut chunked = false;
        let mut transfer_encoding = false;
        let mut upgrade = request.method == Some("CONNECT");
        for h in request.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                has_length = true;
                content_length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = true;
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        // Kept for the next head, unless a read brought more than a
        // usual head (the body behind it): that memory is given back.
        if self.pending.capacity() > KEPT {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        if transfer_encoding && has_length {
            // Break the blank line that ends the head: the codec then
            // answers 400 and closes the connection.
            if end > 0 {
                bytes[end - 1] = b'X';
            }
            self.state = State::Passthrough;
            return;
        }
        self.state = if upgrade {
            State::Passthrough
        } else if chunked {
            State::ChunkSize
        } else {
            match content_length {
                Some(0) | None => State::Head,
                Some(n) => State::Fixed(n),
            }
        };
    }
}

/// The head buffer's capacity kept from one request to the next.
const KEPT: usize = 4096;

/// The index just past the `\r\n\r\n` that ends a head, searching from
/// `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(buf.get(from..)?, b"\r\n\r\n").map(|i| from + i + 4)
}

/// The size of a chunk-size line (`1a;ext=1\r`), hex before any `;`.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|&b| b == b';').next()?.trim_ascii();
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if self.state != State::Passthrough {
            let this = &mut *self;
            this.observe(&mut buf.filled_mut()[start..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; returns what the codec
    /// would see.
    fn feed(stream: &[u8], step: usize) -> Vec<u8> {
        let mut guard = FramingGuard::new((), 64 * 1024);
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            let mut piece = piece.to_vec();
            guard.observe(&mut piece);
            out.extend_from_slice(&piece);
        }
        out
    }

    const SMUGGLE: &[u8] =
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn both_lengths_break_the_head_however_it_is_split() {
        for step in 1..SMUGGLE.len() {
            let seen = feed(SMUGGLE, step);
            assert_ne!(seen, SMUGGLE, "split every {step} bytes");
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let parsed = httparse::Request::new(&mut headers).parse(&seen);
            assert!(parsed.is_err(), "split every {step}: {parsed:?}");
        }
    }

    #[test]
    fn well_framed_requests_pass_unchanged_and_are_followed() {
        let mut stream = Vec::new();
        stream.extend_from_slice(
            b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
        );
        stream.extend_from_slice(
            b"POST /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n\r\n\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        );
        stream.extend_from_slice(b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
        // The smuggling request comes after well-framed ones (whose bodies
        // hold things that look like heads): still caught.
        stream.extend_from_slice(SMUGGLE);
        for step in [1, 2, 3, 7, 64, 4096] {
            let seen = feed(&stream, step);
            let ok_part = stream.len() - SMUGGLE.len();
            assert_eq!(seen[..ok_part], stream[..ok_part], "step {step}");
            assert_ne!(seen[ok_part..], *SMUGGLE, "step {step}");
        }
    }

    #[test]
    fn a_body_read_with_its_head_is_not_kept_with_the_connection() {
        let mut guard = FramingGuard::new((), 64 * 1024);
        let mut read = b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n".to_vec();
        read.resize(read.len() + 60_000, b'b');
        guard.observe(&mut read);
        assert!(guard.state == State::Head, "{:?}", guard.state);
        assert!(
            guard.pending.capacity() <= KEPT,
            "{}",
            guard.pending.capacity()
        );
        // A usual head keeps the buffer for the next one.
        let mut small = b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        guard.observe(&mut small);
        assert!(guard.pending.is_empty() && guard.pending.capacity() > 0);
    }

    #[test]
    fn http2_and_upgrades_are_not_watched() {
        let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2.extend_from_slice(SMUGGLE);
        assert_eq!(feed(&h2, 5), h2);
        let mut upgrade =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_vec();
        upgrade.extend_from_slice(SMUGGLE);
        assert_eq!(feed(&upgrade, 3), upgrade);
    }
}
