//! The `x-envoy-*` headers an Istio sidecar's Envoy adds to what it
//! forwards, by default (istiod leaves the router's
//! `suppress_envoy_headers` off and turns the virtual host's
//! `include_request_attempt_count` on for outbound traffic; ProxyConfig's
//! `proxyHeaders` can turn them off, which weft does not read):
//!
//! - on each upstream attempt (and a mirror's), `x-envoy-attempt-count`
//!   (1 for the first) and, when a timeout bounds it,
//!   `x-envoy-expected-rq-timeout-ms` (and a gRPC request's `grpc-timeout`);
//! - on a request whose path a route rewrites, `x-envoy-original-path`;
//! - on a response from upstream, `x-envoy-upstream-service-time`, when
//!   the app's request was complete before the response came
//!   ([`set_service_time`]);
//!
//! and the internal ones it removes from what the app sends
//! ([`strip_internal`]).

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::body::RequestBody;

pub static ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub static EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub static ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub static UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The request headers Envoy's connection manager removes from a request
/// it does not take for internal (`cleanInternalHeaders`): a sidecar's
/// listeners do not use the remote address, so every request the app
/// sends, and every one the destination's side receives, loses them.
const INTERNAL: [&str; 14] = [
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Removes [`INTERNAL`]'s headers: one pass over the names, and the
/// removals only when one starts with `x-envoy-`.
pub fn strip_internal(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|name| name.as_str().starts_with("x-envoy-"))
    {
        return;
    }
    for name in INTERNAL {
        headers.remove(name);
    }
}

/// Marks an upstream attempt (0: the first) as Envoy's router does
/// (`setTimeoutHeaders`): its number, and the time it may take, when a
/// timeout bounds it: the per-try timeout, else the route's (`global`,
/// a gRPC deadline included), either cut to what is left of the route's
/// after `elapsed` (whole milliseconds; 0 for the first attempt), at
/// least 1 ms. A gRPC request's `grpc-timeout` says the same (istiod sets
/// the route's `max_grpc_timeout`).
pub fn mark_attempt(
    headers: &mut HeaderMap,
    attempt: u32,
    per_try: Option<Duration>,
    global: Option<Duration>,
    elapsed: Duration,
    grpc: bool,
) {
    headers.insert(&ATTEMPT_COUNT, HeaderValue::from(attempt.saturating_add(1)));
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let global = global.map_or(0, millis);
    let mut expected = match per_try.map_or(0, millis) {
        0 => global,
        per_try => per_try,
    };
    if expected == 0 {
        return;
    }
    if global > 0 {
        let elapsed = if attempt == 0 { 0 } else { millis(elapsed) };
        expected = if elapsed >= global {
            1
        } else {
            expected.min(global - elapsed)
        };
    }
    headers.insert(&EXPECTED_RQ_TIMEOUT_MS, HeaderValue::from(expected));
    if grpc {
        headers.insert(&GRPC_TIMEOUT, grpc_timeout(expected));
    }
}

/// A `grpc-timeout` of `millis`, in the smallest unit whose value has at
/// most 8 digits (Envoy's `toGrpcTimeout`).
fn grpc_timeout(millis: u64) -> HeaderValue {
    let (mut value, mut unit) = (millis, "m");
    for (next, divisor) in [("S", 1000), ("M", 60), ("H", 60)] {
        if value < 100_000_000 {
            break;
        }
        (value, unit) = (value / divisor, next);
    }
    HeaderValue::try_from(format!("{}{unit}", value.min(99_999_999)))
        .expect("digits and a letter make a header value")
}

/// `x-envoy-upstream-service-time` on a response whose head just came:
/// how long upstream took, in whole milliseconds, from when the app's
/// request was complete, as Envoy's router times it. That is when the
/// request went upstream (`sent_at`), or later, when its body (`body`;
/// `None`: it had none) ended. A response that came before the request's
/// body ended (a stream, a server that answers before it has read) gets
/// none, as Envoy's does not.
pub fn set_service_time(headers: &mut HeaderMap, sent_at: Instant, body: Option<&RequestBody>) {
    let complete = match body {
        None => sent_at,
        Some(body) => match body.ended_at() {
            Some(ended) => ended.max(sent_at),
            None => return,
        },
    };
    let millis = u64::try_from(complete.elapsed().as_millis()).unwrap_or(u64::MAX);
    headers.insert(&UPSTREAM_SERVICE_TIME, HeaderValue::from(millis));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(attempt: u32, per_try: Option<u64>, global: Option<u64>, elapsed: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(&ATTEMPT_COUNT, HeaderValue::from_static("7"));
        mark_attempt(
            &mut headers,
            attempt,
            per_try.map(Duration::from_millis),
            global.map(Duration::from_millis),
            Duration::from_micros(elapsed * 1000 + 999),
            false,
        );
        headers
    }

    fn expected(headers: &HeaderMap) -> Option<&str> {
        headers
            .get(&EXPECTED_RQ_TIMEOUT_MS)
            .map(|v| v.to_str().unwrap())
    }

    #[test]
    fn attempts_are_counted_from_one_and_bounded_by_the_tighter_timeout() {
        // The app's own count is replaced.
        let first = marked(0, None, None, 0);
        assert_eq!(first.get(&ATTEMPT_COUNT).unwrap(), "1");
        assert_eq!(expected(&first), None);
        assert_eq!(marked(2, None, None, 0).get(&ATTEMPT_COUNT).unwrap(), "3");
        // Envoy's `setTimeoutHeaders`: the per-try timeout, unless less of
        // the route's is left; the route's alone, whole for the first
        // attempt; never 0.
        assert_eq!(expected(&marked(0, Some(500), None, 0)), Some("500"));
        assert_eq!(expected(&marked(0, Some(500), Some(2000), 0)), Some("500"));
        assert_eq!(expected(&marked(0, None, Some(3000), 7)), Some("3000"));
        assert_eq!(
            expected(&marked(1, Some(500), Some(2000), 1880)),
            Some("120")
        );
        assert_eq!(expected(&marked(1, None, Some(3000), 1)), Some("2999"));
        assert_eq!(expected(&marked(3, None, Some(3000), 3000)), Some("1"));
        assert_eq!(expected(&marked(3, Some(100), None, 5000)), Some("100"));
    }

    #[test]
    fn a_grpc_request_gets_its_deadline_as_grpc_timeout() {
        let mut headers = HeaderMap::new();
        headers.insert(&GRPC_TIMEOUT, HeaderValue::from_static("5S"));
        let s = Duration::from_secs;
        mark_attempt(
            &mut headers,
            0,
            Some(s(1)),
            Some(s(5)),
            Duration::ZERO,
            true,
        );
        assert_eq!(headers.get(&GRPC_TIMEOUT).unwrap(), "1000m");
        // None without a timeout: the app's stays.
        let mut headers = HeaderMap::new();
        headers.insert(&GRPC_TIMEOUT, HeaderValue::from_static("5S"));
        mark_attempt(&mut headers, 0, None, None, Duration::ZERO, true);
        assert_eq!(headers.get(&GRPC_TIMEOUT).unwrap(), "5S");
        assert_eq!(grpc_timeout(99_999_999), "99999999m");
        assert_eq!(grpc_timeout(100_000_000), "100000S");
        assert_eq!(grpc_timeout(u64::MAX), "99999999H");
    }

    #[test]
    fn internal_headers_are_removed_and_the_rest_kept() {
        let mut headers = HeaderMap::new();
        for name in INTERNAL {
            headers.insert(name, HeaderValue::from_static("1"));
        }
        headers.insert(&ATTEMPT_COUNT, HeaderValue::from_static("2"));
        headers.insert(&ORIGINAL_PATH, HeaderValue::from_static("/a"));
        headers.insert("x-user", HeaderValue::from_static("u"));
        strip_internal(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["x-envoy-attempt-count", "x-envoy-original-path", "x-user"]
        );
    }

    #[test]
    fn service_time_counts_from_when_the_request_was_complete() {
        let millis = |headers: &HeaderMap| -> Option<u64> {
            Some(
                headers
                    .get(&UPSTREAM_SERVICE_TIME)?
                    .to_str()
                    .ok()?
                    .parse()
                    .unwrap(),
            )
        };
        let long_ago = Instant::now() - Duration::from_secs(60);
        // No body: from when the request went upstream.
        let mut headers = HeaderMap::new();
        set_service_time(&mut headers, long_ago, None);
        assert!(millis(&headers).unwrap() >= 60_000);
        // A body that ended after that: from its end (just now), not from
        // the send a minute ago.
        let body = RequestBody::new(long_ago, &HeaderMap::new(), false);
        drop(crate::l7::body::observe(
            crate::l7::body::empty(),
            body.clone(),
        ));
        set_service_time(&mut headers, long_ago, Some(&body));
        assert!(millis(&headers).unwrap() < 60_000, "{headers:?}");
        assert_eq!(headers.get_all(&UPSTREAM_SERVICE_TIME).iter().count(), 1);
        // A body still coming when the response's head came: none.
        let mut headers = HeaderMap::new();
        let streaming = RequestBody::new(long_ago, &HeaderMap::new(), false);
        set_service_time(&mut headers, long_ago, Some(&streaming));
        assert_eq!(millis(&headers), None);
    }
}
