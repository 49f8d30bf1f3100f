//! Bodies on the L7 path: one boxed type for everything the proxy sends,
//! and a request body that can be sent again (retries) or copied
//! (mirrors) without holding more than a bounded amount of it.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Errors inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the L7 proxy sends, up or down.
pub type Body = BoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Any body whose errors can be boxed.
pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// How much of a request body is kept so that it can be sent again:
/// Envoy's default per-request buffer limit for retries and shadows.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body shared by every attempt (and mirror) of one request.
///
/// The original body is read once. What has been read is kept (up to
/// [`REPLAY_LIMIT`]), so each [`ReplayBody`] hands out the kept frames
/// first, then reads on. A body that outgrew the limit cannot be replayed:
/// [`Replay::can_replay`] turns false and the request is not retried.
#[derive(Clone)]
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    source: Option<Body>,
    /// Data frames read so far, in order.
    kept: Vec<Bytes>,
    kept_bytes: usize,
    trailers: Option<HeaderMap>,
    /// The source has ended.
    done: bool,
    /// The source failed; later readers get an error too.
    failed: bool,
    /// More was read than can be kept.
    overflowed: bool,
    /// Followers waiting for the leader to read on.
    waiting: Vec<Waker>,
}

impl Replay {
    /// Wraps a request's body.
    pub fn new(body: Body) -> Replay {
        let done = body.is_end_stream();
        Replay {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(body),
                kept: Vec::new(),
                kept_bytes: 0,
                trailers: None,
                done,
                failed: false,
                overflowed: false,
                waiting: Vec::new(),
            })),
        }
    }

    /// Whether a new attempt could get the whole body.
    pub fn can_replay(&self) -> bool {
        let shared = self.shared.lock().expect("replay lock");
        !shared.overflowed && !shared.failed
    }

    /// A body for one attempt: it reads the original when it runs out of
    /// kept frames.
    pub fn body(&self) -> Body {
        ReplayBody {
            shared: self.shared.clone(),
            position: 0,
            leader: true,
            alone: false,
            trailers_sent: false,
        }
        .boxed()
    }

    /// A body for a mirror: it never reads the original itself (the
    /// primary request sets the pace) and fails if it falls behind what
    /// can be kept.
    pub fn follower(&self) -> Body {
        ReplayBody {
            shared: self.shared.clone(),
            position: 0,
            leader: false,
            alone: false,
            trailers_sent: false,
        }
        .boxed()
    }
}

struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    /// Index of the next kept frame to hand out.
    position: usize,
    /// Reads the original when it has handed out every kept frame.
    leader: bool,
    /// This reader outgrew the limit and reads the original unkept.
    alone: bool,
    trailers_sent: bool,
}

#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("the request body is larger than can be kept to send it again")]
    Overflowed,
    #[error("the request body failed earlier")]
    Failed,
}

impl HttpBody for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut shared = this.shared.lock().expect("replay lock");
        loop {
            if shared.failed {
                return Poll::Ready(Some(Err(ReplayError::Failed.into())));
            }
            if !this.alone {
                if shared.overflowed {
                    // What comes next was never kept for this reader.
                    return Poll::Ready(Some(Err(ReplayError::Overflowed.into())));
                }
                if this.position < shared.kept.len() {
                    let data = shared.kept[this.position].clone();
                    this.position += 1;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
            if shared.done {
                if !this.trailers_sent
                    && let Some(trailers) = shared.trailers.clone()
                {
                    this.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                return Poll::Ready(None);
            }
            if !this.leader {
                shared.waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
            // Not woken by its own read below.
            shared.waiting.retain(|w| !w.will_wake(cx.waker()));
            let Some(source) = shared.source.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(source).poll_frame(cx) {
                Poll::Pending => {
                    // The source wakes only its last reader: another
                    // leader (a retry's, while the attempt it replaces is
                    // still sending) is woken by whoever reads the next
                    // frame.
                    shared.waiting.push(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    shared.done = true;
                    shared.source = None;
                }
                Poll::Ready(Some(Err(err))) => {
                    shared.failed = true;
                    shared.source = None;
                    wake_all(&mut shared.waiting);
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if this.alone => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) if shared.kept_bytes + data.len() > REPLAY_LIMIT => {
                        // Too large to keep: this reader goes on alone,
                        // every other one fails.
                        shared.overflowed = true;
                        shared.kept = Vec::new();
                        this.alone = true;
                        wake_all(&mut shared.waiting);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(data) => {
                        shared.kept_bytes += data.len();
                        shared.kept.push(data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            shared.trailers = Some(trailers);
                        }
                    }
                },
            }
            wake_all(&mut shared.waiting);
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock().expect("replay lock");
        shared.done
            && self.position >= shared.kept.len()
            && (self.trailers_sent || shared.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared.lock().expect("replay lock");
        match &shared.source {
            Some(source) if !shared.overflowed => {
                let kept: usize = shared.kept[self.position.min(shared.kept.len())..]
                    .iter()
                    .map(Bytes::len)
                    .sum();
                // Built afresh: raising the source's lower bound first
                // would pass its exact upper one (an HTTP/1.1 client stops
                // reading a body at its `content-length`, so the source
                // can stay unended, with 0 bytes left, while a retry reads
                // the kept frames).
                let source = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(source.lower() + kept as u64);
                if let Some(upper) = source.upper() {
                    hint.set_upper(upper + kept as u64);
                }
                hint
            }
            Some(_) => SizeHint::default(),
            None => {
                let kept: usize = shared.kept[self.position.min(shared.kept.len())..]
                    .iter()
                    .map(Bytes::len)
                    .sum();
                SizeHint::with_exact(kept as u64)
            }
        }
    }
}

fn wake_all(waiting: &mut Vec<Waker>) {
    for waker in waiting.drain(..) {
        waker.wake();
    }
}

/// The error a body ends with when the route's timeout passes before its
/// end (Envoy resets the stream, `UT`).
#[derive(Debug, thiserror::Error)]
#[error("the route's timeout passed before the response's end")]
pub struct RouteTimeout;

/// `body`, cut off with [`RouteTimeout`] if it has not ended by
/// `deadline`: a route's `timeout` spans the whole response, as Envoy's
/// does, not only the wait for its head.
pub fn with_deadline(body: Body, deadline: tokio::time::Instant) -> Body {
    boxed(Deadline {
        inner: body,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    })
}

struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() && self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(RouteTimeout))));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a body ended, for [`on_end`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Ended {
    /// Data bytes it carried.
    pub bytes: u64,
    /// The `grpc-status` of its trailers.
    pub grpc_status: Option<u32>,
    /// gRPC messages it carried (counted only when asked).
    pub messages: u64,
}

/// `body`, calling `done` once when it ends (or fails, or is dropped
/// unfinished) with what it carried: where a response's metrics are
/// recorded. `grpc`: count its gRPC messages.
pub fn on_end<F>(body: Body, grpc: bool, done: F) -> Body
where
    F: FnOnce(Ended) + Send + Sync + Unpin + 'static,
{
    boxed(OnEnd {
        inner: body,
        ended: Ended::default(),
        frames: grpc.then(GrpcFrames::default),
        done: Some(done),
    })
}

struct OnEnd<F: FnOnce(Ended)> {
    inner: Body,
    ended: Ended,
    frames: Option<GrpcFrames>,
    done: Option<F>,
}

impl<F: FnOnce(Ended)> OnEnd<F> {
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            self.ended.messages = self.frames.as_ref().map_or(0, |f| f.messages);
            done(self.ended);
        }
    }
}

impl<F: FnOnce(Ended) + Unpin> HttpBody for OnEnd<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.ended.bytes += data.len() as u64;
                    if let Some(frames) = self.frames.as_mut() {
                        frames.feed(data);
                    }
                }
                if let Some(trailers) = frame.trailers_ref() {
                    self.ended.grpc_status = super::reply::grpc_status(trailers);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(Ended)> Drop for OnEnd<F> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Counts the messages of a gRPC stream as its bytes go by: each message
/// is a 5-byte prefix (compressed flag, big-endian length) and its
/// payload, and either may be split across data frames.
#[derive(Debug, Default, Clone)]
pub struct GrpcFrames {
    /// Messages whose prefix has been seen.
    pub messages: u64,
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
}

impl GrpcFrames {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len() as u64);
                self.remaining -= skip;
                data = &data[skip as usize..];
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                let [_, a, b, c, d] = self.prefix;
                self.remaining = u32::from_be_bytes([a, b, c, d]) as u64;
                self.messages += 1;
                self.prefix_len = 0;
            }
        }
    }
}

/// What a request's body did on its way upstream, counted as it passes
/// ([`observe`]) and read by whoever records the request when it is
/// answered: its data bytes (Envoy's `%BYTES_RECEIVED%`, whatever the
/// `content-length` says, and with none: gRPC, chunked), its gRPC
/// messages when they are counted, and when the proxy passed its end on
/// upstream (`%REQUEST_DURATION%`: a body that waited for the upstream's
/// connection ends after it).
#[derive(Debug)]
pub struct RequestBody {
    started: Instant,
    /// Its `content-length`, for a body answered before it was read.
    declared: Option<u64>,
    bytes: AtomicU64,
    /// `None`: not counted.
    messages: Option<AtomicU64>,
    /// Nanoseconds after `started` when the end went by, plus one; 0:
    /// not yet.
    ended: AtomicU64,
}

impl RequestBody {
    /// The body of a request that started at `started` with `headers`.
    pub fn new(started: Instant, headers: &HeaderMap, count_messages: bool) -> Arc<RequestBody> {
        Arc::new(RequestBody {
            started,
            declared: headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            bytes: AtomicU64::new(0),
            messages: count_messages.then(|| AtomicU64::new(0)),
            ended: AtomicU64::new(0),
        })
    }

    /// The bytes that went by; for a body never read (the request was
    /// answered first: a denial, a local reply), its `content-length`.
    pub fn bytes(&self) -> u64 {
        match self.bytes.load(Ordering::Relaxed) {
            0 if self.ended_after().is_none() => self.declared.unwrap_or(0),
            read => read,
        }
    }

    /// Its gRPC messages so far (0 when they are not counted).
    pub fn messages(&self) -> u64 {
        self.messages
            .as_ref()
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// How long after the request's start its body ended, if it has.
    pub fn ended_after(&self) -> Option<Duration> {
        match self.ended.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns - 1)),
        }
    }

    /// When its body ended, if it has.
    pub fn ended_at(&self) -> Option<Instant> {
        self.ended_after().map(|after| self.started + after)
    }

    fn end(&self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        let _ = self
            .ended
            .compare_exchange(0, ns + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// `body`, observed into `seen` as it passes: read once, whatever the
/// retries replay of it.
pub fn observe(body: Body, seen: Arc<RequestBody>) -> Body {
    if body.is_end_stream() {
        seen.end();
        return body;
    }
    boxed(Observed {
        inner: body,
        frames: GrpcFrames::default(),
        seen,
    })
}

struct Observed {
    inner: Body,
    frames: GrpcFrames,
    seen: Arc<RequestBody>,
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let seen = &this.seen;
                    seen.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(count) = &seen.messages {
                        let before = this.frames.messages;
                        this.frames.feed(data);
                        let new = this.frames.messages - before;
                        if new > 0 {
                            count.fetch_add(new, Ordering::Relaxed);
                        }
                    }
                }
                // The last frame: the reader may not ask again.
                if this.inner.is_end_stream() {
                    this.seen.end();
                }
            }
            Poll::Ready(None) => this.seen.end(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames)).boxed()
    }

    async fn collect(body: Body) -> Result<Bytes, BoxError> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn every_attempt_gets_the_whole_body() {
        let replay = Replay::new(chunks(&["a", "b", "c"]));
        let mut first = replay.body();
        // The first attempt reads part of the body, then fails.
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        drop(first);
        assert!(replay.can_replay());
        assert_eq!(collect(replay.body()).await.unwrap(), "abc");
        assert_eq!(collect(replay.body()).await.unwrap(), "abc");
    }

    #[tokio::test]
    async fn a_retry_after_a_body_read_to_its_length_but_not_to_its_end() {
        // An HTTP/1.1 client stops at the `content-length`: the source is
        // never polled to its end, and its hint is exactly 0 bytes left.
        let full = http_body_util::Full::new(Bytes::from_static(b"posted"));
        let replay = Replay::new(full.map_err(|never| match never {}).boxed());
        let mut first = replay.body();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "posted");
        drop(first);
        let again = replay.body();
        assert_eq!(again.size_hint().exact(), Some(6));
        assert_eq!(collect(again).await.unwrap(), "posted");
    }

    #[test]
    fn two_leaders_waiting_on_the_source_are_both_woken() {
        use std::sync::atomic::AtomicBool;
        use std::task::Wake;
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, BoxError>>();
        let replay = Replay::new(StreamBody::new(rx).boxed());
        // An attempt being given up, and its retry, both wait for the
        // source, which keeps only the retry's waker.
        let (old, new) = (
            Arc::new(Flag(AtomicBool::new(false))),
            Arc::new(Flag(AtomicBool::new(false))),
        );
        let (old_waker, new_waker) = (Waker::from(old.clone()), Waker::from(new.clone()));
        let (mut a, mut b) = (replay.body(), replay.body());
        let poll = |body: &mut Body, waker: &Waker| {
            Pin::new(body).poll_frame(&mut Context::from_waker(waker))
        };
        assert!(poll(&mut a, &old_waker).is_pending());
        assert!(poll(&mut b, &new_waker).is_pending());
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .unwrap();
        assert!(new.0.load(Ordering::SeqCst) && !old.0.load(Ordering::SeqCst));
        assert!(matches!(poll(&mut b, &new_waker), Poll::Ready(Some(Ok(_)))));
        // The retry's read wakes the other reader, which gets the frame.
        assert!(old.0.load(Ordering::SeqCst));
        assert!(matches!(poll(&mut a, &old_waker), Poll::Ready(Some(Ok(_)))));
    }

    #[tokio::test]
    async fn a_follower_sees_what_the_leader_reads() {
        let replay = Replay::new(chunks(&["x", "y"]));
        let follower = tokio::spawn(collect(replay.follower()));
        assert_eq!(collect(replay.body()).await.unwrap(), "xy");
        assert_eq!(follower.await.unwrap().unwrap(), "xy");
    }

    #[tokio::test]
    async fn a_large_body_streams_once_and_cannot_be_replayed() {
        static BIG: [u8; REPLAY_LIMIT] = [b'z'; REPLAY_LIMIT];
        let big = std::str::from_utf8(&BIG).unwrap();
        let replay = Replay::new(chunks(&["head", big]));
        let follower = tokio::spawn(collect(replay.follower()));
        let all = collect(replay.body()).await.unwrap();
        assert_eq!(all.len(), 4 + REPLAY_LIMIT);
        assert!(!replay.can_replay());
        assert!(collect(replay.body()).await.is_err());
        assert!(follower.await.unwrap().is_err(), "the mirror gives up");
    }

    #[tokio::test]
    async fn observed_bodies_count_bytes_messages_and_their_end() {
        // A gRPC body of two messages (3 and 1 bytes) in three frames, no
        // `content-length`.
        let grpc = || {
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = [
                &[0u8, 0, 0, 0, 3, b'a'][..],
                &[b'b', b'c', 0, 0, 0],
                &[0, 1, b'z'],
            ]
            .iter()
            .map(|part| Ok(Frame::data(Bytes::copy_from_slice(part))))
            .collect();
            StreamBody::new(futures::stream::iter(frames)).boxed()
        };
        let started = Instant::now();
        let seen = RequestBody::new(started, &HeaderMap::new(), true);
        let body = observe(grpc(), seen.clone());
        assert_eq!((seen.bytes(), seen.ended_after()), (0, None));
        assert_eq!(collect(body).await.unwrap().len(), 14);
        assert_eq!((seen.bytes(), seen.messages()), (14, 2));
        let ended = seen.ended_after().expect("read to its end");
        assert!(ended <= started.elapsed());
        // Messages not counted: bytes still are.
        let seen = RequestBody::new(started, &HeaderMap::new(), false);
        collect(observe(grpc(), seen.clone())).await.unwrap();
        assert_eq!((seen.bytes(), seen.messages()), (14, 0));
        // A body that is over before it is read ends at once.
        let seen = RequestBody::new(started, &HeaderMap::new(), false);
        let body = observe(empty(), seen.clone());
        assert!(body.is_end_stream() && seen.ended_after().is_some());
        // A body never read (the request was answered first) is its
        // `content-length`.
        let mut declared = HeaderMap::new();
        declared.insert(http::header::CONTENT_LENGTH, "5".parse().unwrap());
        let seen = RequestBody::new(started, &declared, false);
        let body = observe(full("12345"), seen.clone());
        assert_eq!(seen.bytes(), 5);
        drop(body);
        // One whose last frame says so ends with it, even if never polled
        // again.
        let seen = RequestBody::new(started, &HeaderMap::new(), false);
        let mut body = observe(full("abc"), seen.clone());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert_eq!(seen.bytes(), 3);
        assert!(seen.ended_after().is_some(), "the last frame ends it");
    }

    #[test]
    fn grpc_messages_are_counted_across_frames() {
        let mut frames = GrpcFrames::default();
        // Two messages (3 and 0 bytes), the first prefix split in two.
        frames.feed(&[0, 0, 0]);
        assert_eq!(frames.messages, 0);
        frames.feed(&[0, 3, b'a', b'b']);
        assert_eq!(frames.messages, 1);
        frames.feed(&[b'c', 0, 0, 0, 0, 0]);
        assert_eq!(frames.messages, 2);
        // A third whose payload spans frames.
        frames.feed(&[1, 0, 0, 0, 4, b'w']);
        frames.feed(&[b'x', b'y', b'z', 0]);
        assert_eq!(
            frames.messages, 3,
            "a message counts once its prefix is whole"
        );
        frames.feed(&[0, 0, 0, 9]);
        assert_eq!(frames.messages, 4);
    }

    #[tokio::test]
    async fn on_end_reports_bytes_and_messages() {
        let (tx, rx) = std::sync::mpsc::channel();
        let message: &'static [u8] = &[0, 0, 0, 0, 2, b'h', b'i'];
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(message))),
            Ok(Frame::data(Bytes::from_static(message))),
        ];
        let body = StreamBody::new(futures::stream::iter(frames)).boxed();
        let body = on_end(body, true, move |ended| tx.send(ended).unwrap());
        collect(body).await.unwrap();
        let ended = rx.recv().unwrap();
        assert_eq!((ended.bytes, ended.messages), (14, 2));
    }

    #[tokio::test]
    async fn empty_body_is_at_its_end() {
        let replay = Replay::new(empty());
        assert!(replay.body().is_end_stream());
        assert_eq!(collect(replay.body()).await.unwrap(), "");
    }

    #[tokio::test]
    async fn a_deadline_cuts_a_body_that_has_not_ended() {
        let endless = StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, BoxError>>());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        let err = collect(with_deadline(endless.boxed(), deadline))
            .await
            .expect_err("cut");
        assert!(err.is::<RouteTimeout>(), "{err}");
        // One that ends in time is whole.
        let body = with_deadline(chunks(&["a", "b"]), deadline);
        assert_eq!(collect(body).await.unwrap(), "ab");
    }
}
