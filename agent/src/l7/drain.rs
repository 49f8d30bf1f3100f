//! HTTP connections when the agent winds down (SIGTERM, or a newer agent
//! took the node over): every HTTP/1.1 response from then on carries
//! `Connection: close`, so a client in the middle of its requests moves
//! to the new agent between two of them; a connection that stays idle is
//! closed after [`IDLE_GRACE`] (HTTP/2 with a GOAWAY). Closing an idle
//! HTTP/1.1 connection races with a request the client may be sending,
//! which is why busy connections are closed by their response instead.
//! When to close is [`super::idle::closing`]'s.

use std::time::Duration;

use http::{HeaderValue, Response, Version, header::CONNECTION};
use tokio_util::sync::CancellationToken;

/// How long a connection may stay open, idle, once the agent drains.
pub(super) const IDLE_GRACE: Duration = Duration::from_secs(5);

/// Asks the client to close its connection after `response` if the agent
/// drains by then (HTTP/1.x only: HTTP/2 is closed with a GOAWAY).
pub(super) fn close_if_draining<B>(
    version: Version,
    drain: &CancellationToken,
    mut response: Response<B>,
) -> Response<B> {
    if version <= Version::HTTP_11 && drain.is_cancelled() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
