//! The request body for a provider that asks for it
//! (`includeRequestBodyInCheck`): read up to `maxRequestBytes` before the
//! check, then handed to the app in full, the buffered bytes first.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use super::CheckBody;
use crate::l7::body::{self, Body};

/// Why a body could not be buffered for a provider.
#[derive(Debug)]
pub enum BufferError {
    /// Longer than `maxRequestBytes` without `allowPartialMessage`.
    TooLarge,
    Read(body::BoxError),
}

/// Reads the start of `body` for a provider, as Envoy's ext_authz filter
/// buffers it: all of it (a longer one than `max` is refused), or with
/// `partial` until `max` bytes have come. The check gets at most `max`
/// bytes, marked partial when more had been read; the app gets everything
/// read, then the rest; and whether `body` ended within what was read.
pub async fn buffer<B>(
    mut body: B,
    max: usize,
    partial: bool,
) -> Result<(CheckBody, Body, bool), BufferError>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    B::Error: Into<body::BoxError>,
{
    let mut chunks = VecDeque::new();
    let (mut read, mut trailers, mut ended) = (0usize, None, false);
    while !(partial && read >= max) {
        let Some(frame) = body.frame().await else {
            ended = true;
            break;
        };
        let frame = frame.map_err(|e| BufferError::Read(e.into()))?;
        match frame.into_data() {
            Ok(data) => {
                read += data.len();
                chunks.push_back(data);
                if !partial && read > max {
                    return Err(BufferError::TooLarge);
                }
            }
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                ended = true;
                break;
            }
        }
    }
    let mut checked = BytesMut::with_capacity(read.min(max));
    for chunk in &chunks {
        let room = max - checked.len();
        checked.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    let check = CheckBody {
        bytes: checked.freeze(),
        partial: read > max,
    };
    let rest = (!ended).then_some(body);
    Ok((
        check,
        body::boxed(Prefixed {
            chunks,
            trailers,
            rest,
        }),
        ended,
    ))
}

/// A body that was partly read: the chunks read, then the rest of it.
struct Prefixed<B> {
    chunks: VecDeque<Bytes>,
    /// The trailers, when they were read.
    trailers: Option<http::HeaderMap>,
    rest: Option<B>,
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let kept: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + kept);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + kept);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::StreamBody;

    /// A body arriving in `chunks`.
    fn chunked(
        chunks: &[&'static str],
    ) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> + Unpin + Send + Sync + 'static
    {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    async fn all(body: Body) -> Bytes {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_fitting_body_is_checked_whole_and_sent_whole() {
        let (check, app, ended) = buffer(chunked(&["ab", "cd"]), 4, false).await.unwrap();
        assert!(ended);
        assert_eq!((&check.bytes[..], check.partial), (&b"abcd"[..], false));
        assert_eq!(app.size_hint().exact(), Some(4));
        assert_eq!(all(app).await, "abcd");
    }

    #[tokio::test]
    async fn a_larger_body_is_refused_or_cut_for_the_check_only() {
        assert!(matches!(
            buffer(chunked(&["ab", "cd", "e"]), 4, false).await,
            Err(BufferError::TooLarge)
        ));
        let (check, app, ended) = buffer(chunked(&["abc", "def", "gh"]), 4, true)
            .await
            .unwrap();
        assert_eq!((&check.bytes[..], check.partial), (&b"abcd"[..], true));
        assert!(!ended, "the rest is still to come");
        assert_eq!(all(app).await, "abcdefgh", "the app gets all of it");
    }
}
