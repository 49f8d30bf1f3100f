//! The `x-envoy-*` headers an Istio sidecar's Envoy adds to what it
//! forwards, by default (istiod leaves the router's
//! `suppress_envoy_headers` off and turns the virtual host's
//! `include_request_attempt_count` on for outbound traffic; ProxyConfig's
//! `proxyHeaders` can turn them off, which weft does not read):
//!
//! - on each upstream attempt, `x-envoy-attempt-count` (1 for the first)
//!   and, when a timeout bounds it, `x-envoy-expected-rq-timeout-ms`;
//! - on a request whose path a route rewrites, `x-envoy-original-path`;
//! - on a response from upstream, `x-envoy-upstream-service-time`.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

pub static ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub static EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub static ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub static UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// Marks an upstream attempt (0: the first) as Envoy's router does: its
/// number, and the time it may take (`per_try`, else what is left of the
/// route's timeout, `remaining`; at least 1 ms), when either bounds it.
pub fn mark_attempt(
    headers: &mut HeaderMap,
    attempt: u32,
    per_try: Option<Duration>,
    remaining: Option<Duration>,
) {
    headers.insert(&ATTEMPT_COUNT, HeaderValue::from(attempt.saturating_add(1)));
    let expected = match (per_try, remaining) {
        (Some(per_try), Some(remaining)) => per_try.min(remaining),
        (Some(limit), None) | (None, Some(limit)) => limit,
        (None, None) => return,
    };
    let millis = u64::try_from(expected.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    headers.insert(&EXPECTED_RQ_TIMEOUT_MS, HeaderValue::from(millis));
}

/// `x-envoy-upstream-service-time`: how long upstream took to answer, in
/// whole milliseconds.
pub fn set_service_time(headers: &mut HeaderMap, took: Duration) {
    let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    headers.insert(&UPSTREAM_SERVICE_TIME, HeaderValue::from(millis));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(attempt: u32, per_try: Option<u64>, remaining: Option<u64>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(&ATTEMPT_COUNT, HeaderValue::from_static("7"));
        mark_attempt(
            &mut headers,
            attempt,
            per_try.map(Duration::from_millis),
            remaining.map(Duration::from_millis),
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
        let first = marked(0, None, None);
        assert_eq!(first.get(&ATTEMPT_COUNT).unwrap(), "1");
        assert_eq!(expected(&first), None);
        assert_eq!(marked(2, None, None).get(&ATTEMPT_COUNT).unwrap(), "3");
        // Envoy's `setTimeoutHeaders`: the per-try timeout, unless less of
        // the route's is left; the route's alone; never 0.
        assert_eq!(expected(&marked(0, Some(500), None)), Some("500"));
        assert_eq!(expected(&marked(0, Some(500), Some(2000))), Some("500"));
        assert_eq!(expected(&marked(1, Some(500), Some(120))), Some("120"));
        assert_eq!(expected(&marked(0, None, Some(2999))), Some("2999"));
        assert_eq!(expected(&marked(3, None, Some(0))), Some("1"));
    }

    #[test]
    fn service_time_is_whole_milliseconds() {
        let mut headers = HeaderMap::new();
        set_service_time(&mut headers, Duration::from_micros(12_999));
        assert_eq!(headers.get(&UPSTREAM_SERVICE_TIME).unwrap(), "12");
        set_service_time(&mut headers, Duration::ZERO);
        assert_eq!(headers.get(&UPSTREAM_SERVICE_TIME).unwrap(), "0");
        assert_eq!(headers.get_all(&UPSTREAM_SERVICE_TIME).iter().count(), 1);
    }
}
