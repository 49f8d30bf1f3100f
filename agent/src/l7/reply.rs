//! Answers the proxy gives itself, as Envoy gives them, so that Istio
//! users' runbooks still apply: the same status codes, bodies and
//! response flags (the access log's `response_flags`), and for gRPC
//! requests a `grpc-status` instead of an HTTP error.

use std::fmt;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::body::{self, Body};

/// Envoy's response flags: why the proxy answered as it did. Several may
/// apply to one request (a fault delay, then a retry limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u16);

/// One response flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Flag {
    /// UH: no healthy upstream.
    NoHealthyUpstream = 1 << 0,
    /// UF: upstream connection failure.
    UpstreamConnectFailure = 1 << 1,
    /// UO: upstream overflow (circuit breaking).
    UpstreamOverflow = 1 << 2,
    /// NR: no route.
    NoRoute = 1 << 3,
    /// URX: the retry limit was reached.
    RetryLimitExceeded = 1 << 4,
    /// UT: upstream request timeout.
    UpstreamTimeout = 1 << 5,
    /// FI: the request was aborted by fault injection.
    FaultInjected = 1 << 6,
    /// DI: the request was delayed by fault injection.
    DelayInjected = 1 << 7,
    /// DC: the downstream connection ended mid-request.
    DownstreamTerminated = 1 << 8,
    /// UC: the upstream connection ended mid-request.
    UpstreamTerminated = 1 << 9,
    /// UR: the upstream reset the request.
    UpstreamReset = 1 << 10,
    /// NC: the route's destination has no cluster (no such service).
    NoCluster = 1 << 11,
    /// RBAC: denied by an authorization policy.
    RbacDenied = 1 << 12,
    /// UAEX: denied by an external authorization provider.
    ExternalDenied = 1 << 13,
}

impl Flag {
    pub const ALL: [Flag; 14] = [
        Flag::NoHealthyUpstream,
        Flag::UpstreamConnectFailure,
        Flag::UpstreamOverflow,
        Flag::NoRoute,
        Flag::RetryLimitExceeded,
        Flag::UpstreamTimeout,
        Flag::FaultInjected,
        Flag::DelayInjected,
        Flag::DownstreamTerminated,
        Flag::UpstreamTerminated,
        Flag::UpstreamReset,
        Flag::NoCluster,
        Flag::RbacDenied,
        Flag::ExternalDenied,
    ];

    /// Envoy's short name.
    pub fn code(self) -> &'static str {
        match self {
            Flag::NoHealthyUpstream => "UH",
            Flag::UpstreamConnectFailure => "UF",
            Flag::UpstreamOverflow => "UO",
            Flag::NoRoute => "NR",
            Flag::RetryLimitExceeded => "URX",
            Flag::UpstreamTimeout => "UT",
            Flag::FaultInjected => "FI",
            Flag::DelayInjected => "DI",
            Flag::DownstreamTerminated => "DC",
            Flag::UpstreamTerminated => "UC",
            Flag::UpstreamReset => "UR",
            Flag::NoCluster => "NC",
            Flag::RbacDenied => "RBAC",
            Flag::ExternalDenied => "UAEX",
        }
    }
}

impl Flags {
    pub fn set(&mut self, flag: Flag) {
        self.0 |= flag as u16;
    }

    pub fn has(self, flag: Flag) -> bool {
        self.0 & flag as u16 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl From<Flag> for Flags {
    fn from(flag: Flag) -> Self {
        Flags(flag as u16)
    }
}

/// As in Envoy's access log: codes joined by commas, `-` for none.
impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for flag in Flag::ALL.iter().filter(|flag| self.has(**flag)) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(flag.code())?;
            first = false;
        }
        Ok(())
    }
}

/// An answer from the proxy itself.
#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: StatusCode,
    pub flag: Option<Flag>,
    /// Envoy's body text (sent as text/plain).
    pub body: &'static str,
    /// For gRPC requests: the status to send instead (else derived from
    /// `status` as Envoy does).
    pub grpc_status: Option<u32>,
}

impl LocalReply {
    pub fn new(status: StatusCode, flag: Flag, body: &'static str) -> LocalReply {
        LocalReply {
            status,
            flag: Some(flag),
            body,
            grpc_status: None,
        }
    }

    pub fn no_route() -> LocalReply {
        LocalReply::new(StatusCode::NOT_FOUND, Flag::NoRoute, "")
    }

    pub fn no_healthy_upstream() -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flag::NoHealthyUpstream,
            "no healthy upstream",
        )
    }

    pub fn no_cluster() -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flag::NoCluster,
            "no healthy upstream",
        )
    }

    pub fn connect_failure() -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flag::UpstreamConnectFailure,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        )
    }

    pub fn overflow() -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flag::UpstreamOverflow,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        )
    }

    pub fn upstream_reset() -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flag::UpstreamTerminated,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        )
    }

    pub fn timeout() -> LocalReply {
        LocalReply::new(
            StatusCode::GATEWAY_TIMEOUT,
            Flag::UpstreamTimeout,
            "upstream request timeout",
        )
    }

    /// A request the proxy refuses to interpret (a path it cannot
    /// normalise safely).
    pub fn bad_request() -> LocalReply {
        LocalReply {
            status: StatusCode::BAD_REQUEST,
            flag: None,
            body: "Bad Request",
            grpc_status: None,
        }
    }

    /// Denied by an authorization policy, as Envoy's RBAC filter answers.
    pub fn rbac_denied() -> LocalReply {
        LocalReply::new(
            StatusCode::FORBIDDEN,
            Flag::RbacDenied,
            "RBAC: access denied",
        )
    }

    pub fn fault_abort(status: StatusCode, grpc_status: Option<u32>) -> LocalReply {
        LocalReply {
            status,
            flag: Some(Flag::FaultInjected),
            body: "fault filter abort",
            grpc_status,
        }
    }

    /// The response for a request that was gRPC (`grpc`) or not.
    pub fn into_response(self, grpc: bool) -> Response<Body> {
        let mut response = if grpc {
            // Trailers-only: HTTP 200 with the status in the headers.
            let code = self
                .grpc_status
                .unwrap_or_else(|| grpc_status_for(self.status));
            let mut response = Response::new(body::empty());
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(code));
            if !self.body.is_empty() {
                headers.insert("grpc-message", HeaderValue::from_static(self.body));
            }
            response
        } else {
            let mut response = Response::new(body::full(self.body));
            *response.status_mut() = self.status;
            if !self.body.is_empty() {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            response
        };
        response
            .extensions_mut()
            .insert(Replied(self.flag.map(Flags::from).unwrap_or_default()));
        response
    }
}

/// Marks a response the proxy made itself, with its flags.
#[derive(Debug, Clone, Copy)]
pub struct Replied(pub Flags);

impl Replied {
    /// Marks `response` as the proxy's own answer (a redirect, a direct
    /// response, a denial): nothing of it came from upstream.
    pub fn mark<B>(mut response: http::Response<B>, flags: Flags) -> http::Response<B> {
        response.extensions_mut().insert(Replied(flags));
        response
    }
}

/// Envoy's mapping of an HTTP status to a gRPC status for local replies
/// (and gRPC's own, from the HTTP/2 spec for gRPC).
pub fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// Whether a request is gRPC (its content type says so).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The `grpc-status` of response headers (a trailers-only response).
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    const GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_envoy_does() {
        let mut flags = Flags::default();
        assert_eq!(flags.to_string(), "-");
        flags.set(Flag::UpstreamConnectFailure);
        flags.set(Flag::RetryLimitExceeded);
        assert_eq!(flags.to_string(), "UF,URX");
    }

    #[test]
    fn grpc_requests_get_a_grpc_status() {
        let response = LocalReply::no_healthy_upstream().into_response(true);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(grpc_status(response.headers()), Some(14));
        let response = LocalReply::no_route().into_response(true);
        assert_eq!(grpc_status(response.headers()), Some(12));
        let response = LocalReply::timeout().into_response(false);
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
