//! Retries: Istio's `HTTPRetry` as Envoy's route retry policy.
//!
//! Istio (pilot `retry.ConvertPolicy`): no `retries` → its default policy;
//! `attempts <= 0` → none; a non-empty `retry_on` replaces the default
//! conditions, its numbers becoming retriable status codes (which implies
//! `retriable-status-codes`). Since Istio 1.24 the default policy no longer
//! retries 503 responses (`retriable-status-codes` with no codes): a 503 may
//! come from an application that already acted on the request.

use std::time::Duration;

use weft_proto::route as pb;

use super::{RouteError, duration};

/// A set of Envoy retry conditions (`retry_on`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetryOn(u32);

impl RetryOn {
    /// `5xx`: any 5xx response, or no response (connect failure, reset,
    /// refused stream, per-try timeout).
    pub const FIVE_XX: Self = Self(1);
    /// `gateway-error`: 502, 503, 504, or no response.
    pub const GATEWAY_ERROR: Self = Self(1 << 1);
    /// `reset`: no response (reset, disconnect, connect failure, per-try
    /// timeout).
    pub const RESET: Self = Self(1 << 2);
    /// `connect-failure`.
    pub const CONNECT_FAILURE: Self = Self(1 << 3);
    /// `refused-stream`: HTTP/2 REFUSED_STREAM.
    pub const REFUSED_STREAM: Self = Self(1 << 4);
    /// `retriable-4xx`: 409.
    pub const RETRIABLE_4XX: Self = Self(1 << 5);
    /// `retriable-status-codes`: the policy's listed codes.
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 6);
    /// `envoy-ratelimited`: responses carrying `x-envoy-ratelimited`, which
    /// only Envoy's rate limiting produces; parsed, never triggered here.
    pub const ENVOY_RATELIMITED: Self = Self(1 << 7);
    /// `retriable-headers`: parsed; the route carries no header list, so it
    /// never triggers.
    pub const RETRIABLE_HEADERS: Self = Self(1 << 8);
    /// `reset-before-request`: a reset before the request was sent.
    pub const RESET_BEFORE_REQUEST: Self = Self(1 << 9);
    /// gRPC `cancelled` (status 1).
    pub const CANCELLED: Self = Self(1 << 10);
    /// gRPC `deadline-exceeded` (status 4).
    pub const DEADLINE_EXCEEDED: Self = Self(1 << 11);
    /// gRPC `resource-exhausted` (status 8).
    pub const RESOURCE_EXHAUSTED: Self = Self(1 << 12);
    /// gRPC `internal` (status 13).
    pub const INTERNAL: Self = Self(1 << 13);
    /// gRPC `unavailable` (status 14).
    pub const UNAVAILABLE: Self = Self(1 << 14);

    const NAMES: [(&'static str, Self); 15] = [
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("envoy-ratelimited", Self::ENVOY_RATELIMITED),
        ("retriable-headers", Self::RETRIABLE_HEADERS),
        ("reset-before-request", Self::RESET_BEFORE_REQUEST),
        ("cancelled", Self::CANCELLED),
        ("deadline-exceeded", Self::DEADLINE_EXCEEDED),
        ("resource-exhausted", Self::RESOURCE_EXHAUSTED),
        ("internal", Self::INTERNAL),
        ("unavailable", Self::UNAVAILABLE),
    ];

    /// Istio's default conditions:
    /// "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes".
    pub const ISTIO_DEFAULT: Self = Self(
        Self::CONNECT_FAILURE.0
            | Self::REFUSED_STREAM.0
            | Self::UNAVAILABLE.0
            | Self::CANCELLED.0
            | Self::RETRIABLE_STATUS_CODES.0,
    );

    /// The empty set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Whether every condition of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any condition of `other` is in `self`.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// The condition named `name` (Envoy's spelling), if known.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
    }

    /// Parses Istio's `retryOn`: comma-separated Envoy conditions and HTTP
    /// status codes. Unknown conditions are ignored, as Envoy ignores them.
    /// Status codes imply `retriable-status-codes`.
    pub fn parse(retry_on: &str) -> (Self, Vec<u16>) {
        let mut on = Self::empty();
        let mut codes = Vec::new();
        for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            // Istio takes a number for a status code when Go knows its
            // name; `canonical_reason` is the same list, near enough.
            if let Ok(code) = part.parse::<u16>()
                && http::StatusCode::from_u16(code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .is_some()
            {
                codes.push(code);
            } else if let Some(c) = Self::from_name(part) {
                on |= c;
            }
        }
        if !codes.is_empty() {
            on |= Self::RETRIABLE_STATUS_CODES;
        }
        (on, codes)
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for RetryOn {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl std::fmt::Display for RetryOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (name, c) in Self::NAMES {
            if self.contains(c) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// How an upstream attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived: their status and, for a gRPC
    /// trailers-only response, its `grpc-status`.
    Response {
        /// The HTTP status.
        status: u16,
        /// The `grpc-status` header, if the response has one.
        grpc_status: Option<u32>,
    },
    /// The connection to the endpoint could not be established.
    ConnectFailure,
    /// The stream or connection was reset before response headers.
    Reset,
    /// The connection closed before any of the request was written to it
    /// (Envoy's `upstream_request_started` still false): the request is
    /// whole, and was never seen upstream.
    ResetBeforeRequest,
    /// HTTP/2 REFUSED_STREAM: the peer did not process the request.
    RefusedStream,
    /// No response headers within the per-try timeout.
    PerTryTimeout,
}

/// Whether a retry looks for an endpoint not tried yet (Envoy's
/// `previous_hosts` retry predicate, which istiod sets or leaves out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviousHosts {
    /// It does (`retryIgnorePreviousHosts: true`; Istio's default for a
    /// weighted route and for the default route).
    Avoid,
    /// It does not: the balancer picks as for a first attempt
    /// (`retryIgnorePreviousHosts: false`).
    Allow,
    /// It does, unless the destination balances by consistent hash: a
    /// retry then goes where the hash leads (Istio's default for a route
    /// with one destination, whose DestinationRule istiod looks up).
    AvoidUnlessHashed,
}

/// A route's compiled retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0: none.
    pub attempts: u32,
    /// Bound on each attempt; `None`: only the route timeout bounds them.
    pub per_try_timeout: Option<Duration>,
    /// When to retry.
    pub retry_on: RetryOn,
    /// Codes retried under `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// Envoy's base interval (default 25 ms).
    pub backoff_base: Duration,
    /// Envoy's maximum interval (10 times the base).
    pub backoff_max: Duration,
    /// Istio's `retryRemoteLocalities`: retries may go to other localities.
    pub retry_remote_localities: bool,
    /// Whether a retry avoids the endpoints already tried.
    pub previous_hosts: PreviousHosts,
}

/// Envoy's default base interval between retries.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

impl Default for RetryPolicy {
    /// Istio's default policy: 2 retries on [`RetryOn::ISTIO_DEFAULT`].
    fn default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn::ISTIO_DEFAULT,
            retriable_status_codes: Vec::new(),
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_BASE * 10,
            retry_remote_localities: false,
            previous_hosts: PreviousHosts::Avoid,
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            attempts: 0,
            retry_on: RetryOn::empty(),
            ..Self::default()
        }
    }

    /// Compiles the route's `retries` (`None`: Istio's default), for a
    /// route with one destination or not (`single`: istiod then looks up
    /// whether it balances by consistent hash, see [`PreviousHosts`]).
    pub(crate) fn compile(
        retries: Option<&pb::HttpRetry>,
        single: bool,
        route: &str,
    ) -> Result<Self, RouteError> {
        let previous_hosts = if single {
            PreviousHosts::AvoidUnlessHashed
        } else {
            PreviousHosts::Avoid
        };
        let Some(r) = retries else {
            return Ok(Self {
                previous_hosts,
                ..Self::default()
            });
        };
        if r.attempts <= 0 {
            return Ok(Self::none());
        }
        let mut policy = Self {
            attempts: r.attempts.unsigned_abs(),
            retry_remote_localities: r.retry_remote_localities.unwrap_or(false),
            previous_hosts: match r.retry_ignore_previous_hosts {
                Some(true) => PreviousHosts::Avoid,
                Some(false) => PreviousHosts::Allow,
                None => previous_hosts,
            },
            ..Self::default()
        };
        if !r.retry_on.is_empty() {
            (policy.retry_on, policy.retriable_status_codes) = RetryOn::parse(&r.retry_on);
        }
        policy.per_try_timeout =
            duration(r.per_try_timeout.as_ref(), route, "retries.per_try_timeout")?;
        if let Some(base) = duration(r.backoff.as_ref(), route, "retries.backoff")? {
            policy.backoff_base = base;
            policy.backoff_max = base.saturating_mul(10);
        }
        Ok(policy)
    }

    /// The retries of the requests a destination's side sends to its app,
    /// as istiod's `retry.ConvertInboundPolicy` makes them from MeshConfig's
    /// `defaultInboundHttpRetryPolicy` (`None`: unset): by default 2
    /// retries on `reset-before-request`; `attempts <= 0`, none; a
    /// `retryOn` replaces the condition; a `backoff` sets the base
    /// interval. Its `perTryTimeout` and host options are not read.
    pub fn inbound(retries: Option<&pb::HttpRetry>, route: &str) -> Result<Self, RouteError> {
        let mut policy = Self {
            retry_on: RetryOn::RESET_BEFORE_REQUEST,
            previous_hosts: PreviousHosts::Allow,
            ..Self::default()
        };
        let Some(r) = retries else {
            return Ok(policy);
        };
        if r.attempts <= 0 {
            return Ok(Self::none());
        }
        policy.attempts = r.attempts.unsigned_abs();
        if !r.retry_on.is_empty() {
            (policy.retry_on, policy.retriable_status_codes) = RetryOn::parse(&r.retry_on);
        }
        if let Some(base) = duration(r.backoff.as_ref(), route, "retries.backoff")? {
            policy.backoff_base = base;
            policy.backoff_max = base.saturating_mul(10);
        }
        Ok(policy)
    }

    /// Whether these conditions retry a request that was (maybe) sent, so
    /// that its body has to be kept to send it again: any but
    /// `reset-before-request` and `connect-failure`, which retry only a
    /// request that never left.
    pub fn retries_sent_requests(&self) -> bool {
        self.attempts > 0
            && !(RetryOn::RESET_BEFORE_REQUEST | RetryOn::CONNECT_FAILURE).contains(self.retry_on)
    }

    /// Whether a retry looks for an endpoint not tried yet, to a
    /// destination that balances by consistent hash or not.
    pub fn avoids_previous_hosts(&self, consistent_hash: bool) -> bool {
        match self.previous_hosts {
            PreviousHosts::Avoid => true,
            PreviousHosts::Allow => false,
            PreviousHosts::AvoidUnlessHashed => !consistent_hash,
        }
    }

    /// Whether an attempt that ended with `outcome` may be retried under
    /// these conditions (Envoy's `wouldRetryFromHeaders` /
    /// `wouldRetryFromReset`). Whether attempts remain is the caller's
    /// count.
    pub fn retriable(&self, outcome: &Outcome) -> bool {
        let on = self.retry_on;
        let no_response = RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR | RetryOn::RESET;
        match *outcome {
            Outcome::Response {
                status,
                grpc_status,
            } => {
                (on.contains(RetryOn::FIVE_XX) && (500..600).contains(&status))
                    || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
                    || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
                    || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
                        && self.retriable_status_codes.contains(&status))
                    || grpc_status.is_some_and(|g| grpc_retriable(on, g))
            }
            // A connection never made: no request went upstream, which is
            // what `reset-before-request` retries (Envoy's
            // `upstream_request_started` is still false).
            Outcome::ConnectFailure => on
                .intersects(no_response | RetryOn::CONNECT_FAILURE | RetryOn::RESET_BEFORE_REQUEST),
            Outcome::ResetBeforeRequest => {
                on.intersects(no_response | RetryOn::RESET_BEFORE_REQUEST)
            }
            Outcome::RefusedStream => on.intersects(no_response | RetryOn::REFUSED_STREAM),
            Outcome::Reset | Outcome::PerTryTimeout => on.intersects(no_response),
        }
    }

    /// The wait before retry number `retry_number` (1-based), Envoy's fully
    /// jittered exponential back-off: uniform in
    /// `[0, min(base * 2^(n-1), max))`, drawn from `roll` (a uniform random
    /// u32).
    pub fn backoff(&self, retry_number: u32, roll: u32) -> Duration {
        let base = self.backoff_base.as_nanos();
        let max = self.backoff_max.as_nanos();
        let shift = retry_number.saturating_sub(1).min(64);
        let interval = base.checked_mul(1u128 << shift).map_or(max, |i| i.min(max));
        let nanos = (interval * u128::from(roll)) >> 32;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn grpc_retriable(on: RetryOn, status: u32) -> bool {
    let needs = match status {
        1 => RetryOn::CANCELLED,
        4 => RetryOn::DEADLINE_EXCEEDED,
        8 => RetryOn::RESOURCE_EXHAUSTED,
        13 => RetryOn::INTERNAL,
        14 => RetryOn::UNAVAILABLE,
        _ => return false,
    };
    on.contains(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: &str) -> RetryPolicy {
        RetryPolicy::compile(
            Some(&pb::HttpRetry {
                attempts: 3,
                retry_on: retry_on.to_string(),
                ..Default::default()
            }),
            false,
            "r",
        )
        .unwrap()
    }

    fn resp(status: u16) -> Outcome {
        Outcome::Response {
            status,
            grpc_status: None,
        }
    }

    fn grpc(code: u32) -> Outcome {
        Outcome::Response {
            status: 200,
            grpc_status: Some(code),
        }
    }

    const NO_RESPONSE: [Outcome; 4] = [
        Outcome::ConnectFailure,
        Outcome::Reset,
        Outcome::RefusedStream,
        Outcome::PerTryTimeout,
    ];

    #[test]
    fn istio_default_when_unset() {
        let p = RetryPolicy::compile(None, false, "r").unwrap();
        assert_eq!(p.attempts, 2);
        assert_eq!(
            p.retry_on.to_string(),
            "connect-failure,refused-stream,retriable-status-codes,cancelled,unavailable"
        );
        assert!(p.retriable_status_codes.is_empty());
        assert_eq!(p.backoff_base, Duration::from_millis(25));
        assert_eq!(p.backoff_max, Duration::from_millis(250));
        assert!(p.retriable(&Outcome::ConnectFailure));
        assert!(p.retriable(&Outcome::RefusedStream));
        assert!(!p.retriable(&Outcome::Reset));
        assert!(!p.retriable(&Outcome::PerTryTimeout));
        assert!(!p.retriable(&resp(503)));
        assert!(p.retriable(&grpc(14)));
        assert!(p.retriable(&grpc(1)));
        assert!(!p.retriable(&grpc(4)));
    }

    #[test]
    fn empty_retry_on_keeps_default_conditions() {
        let p = policy("");
        assert_eq!(p.attempts, 3);
        assert_eq!(p.retry_on, RetryOn::ISTIO_DEFAULT);
    }

    #[test]
    fn zero_or_negative_attempts_disable_retries() {
        for attempts in [0, -1] {
            let p = RetryPolicy::compile(
                Some(&pb::HttpRetry {
                    attempts,
                    retry_on: "5xx".into(),
                    ..Default::default()
                }),
                false,
                "r",
            )
            .unwrap();
            assert_eq!(p.attempts, 0);
            assert!(!p.retriable(&resp(500)));
        }
    }

    #[test]
    fn parse_conditions_codes_and_unknowns() {
        let (on, codes) = RetryOn::parse(" 5xx, connect-failure ,503,429,bogus,999,,");
        assert!(on.contains(RetryOn::FIVE_XX | RetryOn::CONNECT_FAILURE));
        assert!(on.contains(RetryOn::RETRIABLE_STATUS_CODES));
        assert_eq!(codes, [503, 429]);
        assert_eq!(on.to_string(), "5xx,connect-failure,retriable-status-codes");
        let (on, codes) = RetryOn::parse("gateway-error");
        assert_eq!(on, RetryOn::GATEWAY_ERROR);
        assert!(codes.is_empty());
    }

    #[test]
    fn five_xx() {
        let p = policy("5xx");
        assert!(p.retriable(&resp(500)));
        assert!(p.retriable(&resp(503)));
        assert!(p.retriable(&resp(599)));
        assert!(!p.retriable(&resp(404)));
        assert!(!p.retriable(&resp(200)));
        for o in NO_RESPONSE {
            assert!(p.retriable(&o), "{o:?}");
        }
    }

    #[test]
    fn gateway_error() {
        let p = policy("gateway-error");
        assert!(!p.retriable(&resp(500)));
        for s in [502, 503, 504] {
            assert!(p.retriable(&resp(s)));
        }
        for o in NO_RESPONSE {
            assert!(p.retriable(&o), "{o:?}");
        }
    }

    #[test]
    fn reset() {
        let p = policy("reset");
        assert!(!p.retriable(&resp(503)));
        for o in NO_RESPONSE {
            assert!(p.retriable(&o), "{o:?}");
        }
    }

    #[test]
    fn reset_before_request_retries_a_connection_never_made() {
        let p = policy("reset-before-request");
        assert!(p.retriable(&Outcome::ConnectFailure));
        assert!(
            !p.retriable(&Outcome::Reset),
            "the request may have been sent"
        );
        assert!(!p.retriable(&Outcome::PerTryTimeout));
        assert!(!p.retriable(&resp(503)));
    }

    #[test]
    fn connect_failure_and_refused_stream() {
        let p = policy("connect-failure");
        assert!(p.retriable(&Outcome::ConnectFailure));
        assert!(!p.retriable(&Outcome::Reset));
        assert!(!p.retriable(&Outcome::RefusedStream));
        assert!(!p.retriable(&resp(503)));
        let p = policy("refused-stream");
        assert!(p.retriable(&Outcome::RefusedStream));
        assert!(!p.retriable(&Outcome::ConnectFailure));
        assert!(!p.retriable(&Outcome::PerTryTimeout));
    }

    #[test]
    fn retriable_4xx_and_status_codes() {
        let p = policy("retriable-4xx");
        assert!(p.retriable(&resp(409)));
        assert!(!p.retriable(&resp(429)));
        let p = policy("429,503");
        assert!(p.retriable(&resp(429)));
        assert!(p.retriable(&resp(503)));
        assert!(!p.retriable(&resp(500)));
        assert!(!p.retriable(&Outcome::Reset));
        // The condition without codes retries nothing.
        let p = policy("retriable-status-codes");
        assert!(!p.retriable(&resp(503)));
    }

    #[test]
    fn grpc_conditions() {
        for (name, code) in [
            ("cancelled", 1),
            ("deadline-exceeded", 4),
            ("resource-exhausted", 8),
            ("internal", 13),
            ("unavailable", 14),
        ] {
            let p = policy(name);
            assert!(p.retriable(&grpc(code)), "{name}");
            for other in [0, 1, 2, 4, 8, 13, 14] {
                if other != code {
                    assert!(!p.retriable(&grpc(other)), "{name} {other}");
                }
            }
            assert!(!p.retriable(&resp(503)));
            assert!(!p.retriable(&Outcome::Reset));
        }
    }

    #[test]
    fn per_try_timeout_and_backoff_from_proto() {
        let p = RetryPolicy::compile(
            Some(&pb::HttpRetry {
                attempts: 1,
                per_try_timeout: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                backoff: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 100_000_000,
                }),
                retry_remote_localities: Some(true),
                ..Default::default()
            }),
            false,
            "r",
        )
        .unwrap();
        assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.backoff_base, Duration::from_millis(100));
        assert_eq!(p.backoff_max, Duration::from_secs(1));
        assert!(p.retry_remote_localities);
    }

    #[test]
    fn previous_hosts_as_istiod_sets_the_predicate() {
        let compile = |retries: Option<pb::HttpRetry>, single| {
            RetryPolicy::compile(retries.as_ref(), single, "r").unwrap()
        };
        let with = |ignore| pb::HttpRetry {
            attempts: 2,
            retry_ignore_previous_hosts: ignore,
            ..Default::default()
        };
        // Istio's default: one destination that hashes retries where the
        // hash leads; several destinations always move on.
        for retries in [None, Some(with(None))] {
            let one = compile(retries.clone(), true);
            assert!(one.avoids_previous_hosts(false));
            assert!(!one.avoids_previous_hosts(true));
            let weighted = compile(retries, false);
            assert!(weighted.avoids_previous_hosts(false));
            assert!(weighted.avoids_previous_hosts(true));
        }
        // `retryIgnorePreviousHosts` decides whatever the balancer.
        for single in [true, false] {
            for hashed in [true, false] {
                assert!(compile(Some(with(Some(true))), single).avoids_previous_hosts(hashed));
                assert!(!compile(Some(with(Some(false))), single).avoids_previous_hosts(hashed));
            }
        }
        // The default route's (no VirtualService) always moves on.
        assert!(RetryPolicy::default().avoids_previous_hosts(true));
    }

    #[test]
    fn backoff_bounds() {
        let p = RetryPolicy::default();
        let ms = Duration::from_millis;
        assert_eq!(p.backoff(1, 0), Duration::ZERO);
        // Just under the interval at the top roll.
        assert!(p.backoff(1, u32::MAX) < ms(25));
        assert!(p.backoff(1, u32::MAX) > ms(24));
        assert!(p.backoff(2, u32::MAX) < ms(50));
        assert!(p.backoff(2, u32::MAX) > ms(49));
        assert!(p.backoff(3, u32::MAX) < ms(100));
        assert!(p.backoff(4, u32::MAX) < ms(200));
        // Capped at 10x the base.
        assert!(p.backoff(5, u32::MAX) < ms(250));
        assert!(p.backoff(5, u32::MAX) > ms(249));
        assert!(p.backoff(100, u32::MAX) < ms(250));
        assert!(p.backoff(u32::MAX, u32::MAX) < ms(250));
        assert_eq!(p.backoff(2, 1 << 31), ms(25));
        // Retry 0 is treated as the first.
        assert_eq!(p.backoff(0, 1 << 31), p.backoff(1, 1 << 31));
    }

    #[test]
    fn the_inbound_policy_is_istiods_convert_inbound_policy() {
        // Unset: 2 retries of what never reached the app.
        let default = RetryPolicy::inbound(None, "~/inbound").unwrap();
        assert_eq!(
            (default.attempts, default.retry_on),
            (2, RetryOn::RESET_BEFORE_REQUEST)
        );
        assert!(default.retriable(&Outcome::ResetBeforeRequest));
        assert!(default.retriable(&Outcome::ConnectFailure));
        assert!(!default.retriable(&Outcome::Reset));
        let answered = Outcome::Response {
            status: 503,
            grpc_status: None,
        };
        assert!(!default.retriable(&answered));
        assert!(!default.retries_sent_requests());
        // `attempts: 0` (or less): none.
        let off = pb::HttpRetry {
            attempts: 0,
            ..Default::default()
        };
        assert_eq!(
            RetryPolicy::inbound(Some(&off), "~/inbound")
                .unwrap()
                .attempts,
            0
        );
        // Attempts alone keep the condition; a `retryOn` replaces it, and a
        // condition past the request's send needs its body kept.
        let more = pb::HttpRetry {
            attempts: 4,
            backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 5_000_000,
            }),
            ..Default::default()
        };
        let more = RetryPolicy::inbound(Some(&more), "~/inbound").unwrap();
        assert_eq!(
            (more.attempts, more.retry_on, more.backoff_base),
            (4, RetryOn::RESET_BEFORE_REQUEST, Duration::from_millis(5))
        );
        let on_5xx = pb::HttpRetry {
            attempts: 1,
            retry_on: "5xx".into(),
            per_try_timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let on_5xx = RetryPolicy::inbound(Some(&on_5xx), "~/inbound").unwrap();
        assert!(on_5xx.retriable(&answered) && on_5xx.retries_sent_requests());
        assert_eq!(on_5xx.per_try_timeout, None, "istiod does not carry it");
    }
}
