//! How a downstream HTTP connection (an app's to 15001, a peer's stream or
//! a plaintext client's at the destination) ends when its client does not
//! end it: it is closed gracefully once it has carried no request for
//! `--idle-timeout` (Envoy's and Istio's HTTP `idle_timeout`, 1 h by
//! default), and when the agent drains (see [`super::drain`]). A request
//! counts as in flight until its response body has been sent, so a long
//! stream is never idle. A graceful close lets a response in progress
//! finish: HTTP/1.1 closes after it, HTTP/2 sends a GOAWAY.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use super::body::{Body, BoxError};
use crate::proxy::{ProxyContext, limits::Stage};

/// Requests in flight on one connection, and when the last one ended.
pub(super) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request.
    last_end_ms: AtomicU64,
    opened: Instant,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            opened: Instant::now(),
        })
    }

    /// A request starts; it ends when the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// `response`, with the request held in flight until its body is
    /// sent (or dropped).
    pub(super) fn hold(
        in_flight: InFlight,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        // Boxed as it is: its error is already the boxed one.
        response.map(|body| {
            http_body_util::BodyExt::boxed(Held {
                body,
                _in_flight: in_flight,
            })
        })
    }

    /// How long the connection has carried no request; zero while one is
    /// in flight.
    fn idle(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        self.opened.elapsed().saturating_sub(last_end)
    }

    /// Returns once the connection has carried no request for `timeout`,
    /// looking four times per timeout (so it closes between 1 and 1.25
    /// timeouts after its last request).
    async fn idle_for(&self, timeout: Duration) {
        let every = (timeout / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            if self.idle() >= timeout {
                return;
            }
        }
    }
}

/// One request in flight.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.opened.elapsed().as_millis() as u64;
        activity.last_end_ms.fetch_max(now, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight.
struct Held {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Returns when a downstream connection should be closed gracefully,
/// if its client has not closed it by then: it stayed idle for
/// `--idle-timeout` (counted as `timeouts_total{stage="idle"}`), or the
/// agent drains and [`super::drain::IDLE_GRACE`] has passed since.
pub(super) async fn closing(activity: &Activity, ctx: &ProxyContext) {
    let draining = async {
        ctx.drain.cancelled().await;
        tokio::time::sleep(super::drain::IDLE_GRACE).await;
    };
    tokio::select! {
        () = draining => {}
        () = activity.idle_for(ctx.limits.idle_timeout) => {
            ctx.metrics.timed_out(Stage::Idle);
            tracing::debug!(timeout = ?ctx.limits.idle_timeout, "closing an idle HTTP connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_body_is_sent() {
        let activity = Activity::new();
        let response = Activity::hold(
            activity.begin(),
            http::Response::new(super::super::body::full("hello")),
        );
        assert_eq!(activity.idle(), Duration::ZERO, "in flight");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 0);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(activity.idle() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn a_connection_is_not_idle_while_a_request_is_in_flight() {
        let timeout = Duration::from_millis(50);
        let activity = Activity::new();
        let guard = activity.begin();
        let idle = tokio::time::timeout(timeout * 6, activity.idle_for(timeout)).await;
        assert!(idle.is_err(), "idle with a request in flight");
        drop(guard);
        let idle = tokio::time::timeout(Duration::from_secs(10), activity.idle_for(timeout)).await;
        assert!(idle.is_ok(), "not idle after its last request");
    }
}
