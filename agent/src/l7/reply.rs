//! Answers the proxy gives itself, as Envoy gives them, so that Istio
//! users' runbooks still apply: the same status codes, bodies and
//! response flags (the access log's `response_flags`), and for gRPC
//! requests a `grpc-status` instead of an HTTP error.

use std::{borrow::Cow, fmt};

use bytes::Bytes;
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

    /// Envoy's short name (`%RESPONSE_FLAGS%`, the `response_flags`
    /// label) and long one (`%RESPONSE_FLAGS_LONG%`). `None` for a denial
    /// by an AuthorizationPolicy: Envoy's RBAC filters set no flag, so
    /// Istio's lines and metrics show `-` for it and say it in the
    /// response code details (or, for a connection, the termination
    /// details); weft keeps the flag to word those.
    pub fn names(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Flag::NoHealthyUpstream => ("UH", "NoHealthyUpstream"),
            Flag::UpstreamConnectFailure => ("UF", "UpstreamConnectionFailure"),
            Flag::UpstreamOverflow => ("UO", "UpstreamOverflow"),
            Flag::NoRoute => ("NR", "NoRouteFound"),
            Flag::RetryLimitExceeded => ("URX", "UpstreamRetryLimitExceeded"),
            Flag::UpstreamTimeout => ("UT", "UpstreamRequestTimeout"),
            Flag::FaultInjected => ("FI", "FaultInjected"),
            Flag::DelayInjected => ("DI", "DelayInjected"),
            Flag::DownstreamTerminated => ("DC", "DownstreamConnectionTermination"),
            Flag::UpstreamTerminated => ("UC", "UpstreamConnectionTermination"),
            Flag::UpstreamReset => ("UR", "UpstreamRemoteReset"),
            Flag::NoCluster => ("NC", "NoClusterFound"),
            Flag::RbacDenied => return None,
            Flag::ExternalDenied => ("UAEX", "UnauthorizedExternalService"),
        })
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

/// As in Envoy's access log: codes joined by commas, `-` for none (see
/// [`Flags::long`] for the long names).
impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, |(short, _)| short)
    }
}

impl Flags {
    /// `%RESPONSE_FLAGS_LONG%`: Envoy's long names joined by commas, `-`
    /// for none.
    pub fn long(self) -> impl fmt::Display {
        struct Long(Flags);
        impl fmt::Display for Long {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write(f, |(_, long)| long)
            }
        }
        Long(self)
    }

    fn write(
        self,
        f: &mut fmt::Formatter<'_>,
        name: fn((&'static str, &'static str)) -> &'static str,
    ) -> fmt::Result {
        let mut names = Flag::ALL
            .iter()
            .filter(|flag| self.has(**flag))
            .filter_map(|flag| flag.names().map(name));
        let Some(first) = names.next() else {
            return f.write_str("-");
        };
        f.write_str(first)?;
        for name in names {
            f.write_str(",")?;
            f.write_str(name)?;
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
    /// `%RESPONSE_CODE_DETAILS%` when the flag does not say (see
    /// [`details`]).
    pub details: Option<Cow<'static, str>>,
}

impl LocalReply {
    pub fn new(status: StatusCode, flag: Flag, body: &'static str) -> LocalReply {
        LocalReply {
            status,
            flag: Some(flag),
            body,
            grpc_status: None,
            details: None,
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

    /// Envoy's router for a route whose cluster does not exist: 503 with
    /// no body.
    pub fn no_cluster() -> LocalReply {
        LocalReply::new(StatusCode::SERVICE_UNAVAILABLE, Flag::NoCluster, "")
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
    pub fn path_normalization_failed() -> LocalReply {
        LocalReply {
            status: StatusCode::BAD_REQUEST,
            flag: None,
            body: "Bad Request",
            grpc_status: None,
            details: Some(Cow::Borrowed(details::PATH_NORMALIZATION_FAILED)),
        }
    }

    /// A request whose body could not be read to its end (the client
    /// went away or broke its framing): Envoy's `DC`.
    pub fn request_body_unread() -> LocalReply {
        LocalReply::new(
            StatusCode::BAD_REQUEST,
            Flag::DownstreamTerminated,
            "Bad Request",
        )
    }

    /// A request body longer than a filter may buffer.
    pub fn payload_too_large() -> LocalReply {
        LocalReply {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            flag: None,
            body: "Payload Too Large",
            grpc_status: None,
            details: Some(Cow::Borrowed(details::REQUEST_PAYLOAD_TOO_LARGE)),
        }
    }

    /// Denied by an authorization policy, as Envoy's RBAC filter answers,
    /// naming `policy`: the DENY policy's rule that matched (Istio's name
    /// for it, see `envoy_rule_name` in `policy/eval.rs`), or `none` when no ALLOW
    /// policy matched.
    pub fn rbac_denied(policy: &str) -> LocalReply {
        LocalReply {
            details: Some(details::rbac_denied(policy)),
            ..LocalReply::new(
                StatusCode::FORBIDDEN,
                Flag::RbacDenied,
                "RBAC: access denied",
            )
        }
    }

    pub fn fault_abort(status: StatusCode, grpc_status: Option<u32>) -> LocalReply {
        LocalReply {
            status,
            flag: Some(Flag::FaultInjected),
            body: "fault filter abort",
            grpc_status,
            details: None,
        }
    }

    /// The response for a request that was gRPC (`grpc`) or not.
    pub fn into_response(self, grpc: bool) -> Response<Body> {
        let grpc_status = grpc.then(|| {
            self.grpc_status
                .unwrap_or_else(|| grpc_status_for(self.status))
        });
        let response = local_response(
            self.status,
            Bytes::from_static(self.body.as_bytes()),
            grpc_status,
        );
        let flags = self.flag.map(Flags::from).unwrap_or_default();
        Replied::mark(response, flags, self.details)
    }
}

/// An answer of the proxy's own as Envoy's `sendLocalReply` makes it:
/// `status` with `body` (`text/plain` when there is one); for a gRPC
/// request (`grpc_status` set), a trailers-only answer (HTTP 200) with
/// that `grpc-status` and the body, percent-encoded, as `grpc-message`.
pub fn local_response(status: StatusCode, body: Bytes, grpc_status: Option<u32>) -> Response<Body> {
    match grpc_status {
        Some(code) => {
            let mut response = Response::new(body::empty());
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(code));
            if !body.is_empty()
                && let Ok(message) = HeaderValue::from_bytes(&grpc_message(&body))
            {
                headers.insert("grpc-message", message);
            }
            response
        }
        None => {
            let text = !body.is_empty();
            let mut response = Response::new(body::full(body));
            *response.status_mut() = status;
            if text {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            response
        }
    }
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and
/// `%`, as `%XX`.
fn grpc_message(text: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    out
}

/// Marks a response the proxy made itself: its flags, and what Envoy's
/// `%RESPONSE_CODE_DETAILS%` says of it when the flags do not tell
/// (see [`details`]).
#[derive(Debug, Clone)]
pub struct Replied {
    pub flags: Flags,
    pub details: Option<Cow<'static, str>>,
}

impl Replied {
    /// Marks `response` as the proxy's own answer (a redirect, a direct
    /// response, a denial): nothing of it came from upstream.
    pub fn mark<B>(
        mut response: http::Response<B>,
        flags: Flags,
        details: Option<Cow<'static, str>>,
    ) -> http::Response<B> {
        response.extensions_mut().insert(Replied { flags, details });
        response
    }
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` for the proxy's own answers that no
/// response flag names (a flag's own details are the access log's, see
/// `Entry::code_details`).
pub mod details {
    use std::borrow::Cow;

    /// A route's `redirect` or `directResponse` (Envoy's router).
    pub const DIRECT_RESPONSE: &str = "direct_response";
    /// A CORS preflight answered by the route's policy (Envoy's CORS filter).
    pub const CORS_RESPONSE: &str = "cors_response";
    /// The extension provider said no.
    pub const EXT_AUTHZ_DENIED: &str = "ext_authz_denied";
    /// The extension provider could not be asked or did not answer.
    pub const EXT_AUTHZ_ERROR: &str = "ext_authz_error";
    /// A path the proxy would not normalise (Envoy's connection manager).
    pub const PATH_NORMALIZATION_FAILED: &str = "path_normalization_failed";
    /// A body longer than a filter may buffer.
    pub const REQUEST_PAYLOAD_TOO_LARGE: &str = "request_payload_too_large";

    /// What Envoy's RBAC filters say before the policy they name.
    pub const RBAC_DENIED: &str = "rbac_access_denied_matched_policy";

    /// An authorization policy's denial, as Envoy's RBAC filter words it,
    /// for the `policy` it names (`DenyReason::matched_policy`):
    /// `rbac_access_denied_matched_policy[ns[NS]-policy[NAME]-rule[N]]`
    /// for a DENY policy's rule, `...[none]` when no ALLOW policy matched.
    pub fn rbac_denied(policy: &str) -> Cow<'static, str> {
        Cow::Owned(format!("{RBAC_DENIED}[{policy}]"))
    }

    /// A RequestAuthentication refusal, as Envoy's `jwt_authn` filter
    /// words it: `jwt_authn_access_denied{Jwt_is_expired}`, the reason's
    /// spaces made underscores so that the log's fields stay apart.
    pub fn jwt_denied(reason: &str) -> Cow<'static, str> {
        let reason: String = reason
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        Cow::Owned(format!("jwt_authn_access_denied{{{reason}}}"))
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

/// The HTTP status a gRPC status stands for (Envoy's `grpcToHttpStatus`):
/// what outlier detection counts for a gRPC answer.
pub fn http_status_for_grpc(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,          // CANCELLED
        3 | 9 | 11 => 400, // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
        4 => 504,          // DEADLINE_EXCEEDED
        5 => 404,          // NOT_FOUND
        6 | 10 => 409,     // ALREADY_EXISTS, ABORTED
        7 => 403,          // PERMISSION_DENIED
        8 => 429,          // RESOURCE_EXHAUSTED
        12 => 501,         // UNIMPLEMENTED
        14 => 503,         // UNAVAILABLE
        16 => 401,         // UNAUTHENTICATED
        _ => 500,          // UNKNOWN, INTERNAL, DATA_LOSS, and any other
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
        assert_eq!(
            flags.long().to_string(),
            "UpstreamConnectionFailure,UpstreamRetryLimitExceeded"
        );
        // Envoy's RBAC filters set no flag: an RBAC denial alone is `-`.
        let denied = Flags::from(Flag::RbacDenied);
        assert_eq!(
            (denied.to_string(), denied.long().to_string()),
            ("-".into(), "-".into())
        );
        flags.set(Flag::RbacDenied);
        assert_eq!(flags.to_string(), "UF,URX");
        assert!(
            Flag::ALL
                .iter()
                .filter_map(|f| f.names())
                .all(|(short, long)| !short.is_empty() && long.len() > short.len()),
            "every other flag has both names"
        );
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

    #[test]
    fn direct_responses_are_local_replies() {
        let text = local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"down"),
            None,
        );
        assert_eq!(text.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text.headers()[header::CONTENT_TYPE], "text/plain");
        let empty = local_response(StatusCode::NO_CONTENT, Bytes::new(), None);
        assert!(empty.headers().get(header::CONTENT_TYPE).is_none());
        let grpc = local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from("down 100% \u{e9}"),
            Some(grpc_status_for(StatusCode::SERVICE_UNAVAILABLE)),
        );
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(grpc.headers()["grpc-message"], "down 100%25 %C3%A9");
    }

    #[test]
    fn local_replies_carry_their_flags_and_details() {
        let replied = |reply: LocalReply| {
            let response = reply.into_response(false);
            response
                .extensions()
                .get::<Replied>()
                .expect("marked")
                .clone()
        };
        // The flag, and which rule denied.
        let rbac = replied(LocalReply::rbac_denied("ns[demo]-policy[p]-rule[1]"));
        assert!(rbac.flags.has(Flag::RbacDenied));
        assert_eq!(
            rbac.details.as_deref(),
            Some("rbac_access_denied_matched_policy[ns[demo]-policy[p]-rule[1]]")
        );
        let none = replied(LocalReply::rbac_denied("none"));
        assert_eq!(
            none.details.as_deref(),
            Some("rbac_access_denied_matched_policy[none]")
        );
        // No flag: the reply's own details.
        let path = replied(LocalReply::path_normalization_failed());
        assert!(path.flags.is_empty());
        assert_eq!(path.details.as_deref(), Some("path_normalization_failed"));
        let large = replied(LocalReply::payload_too_large());
        assert_eq!(large.details.as_deref(), Some("request_payload_too_large"));
        assert!(
            replied(LocalReply::request_body_unread())
                .flags
                .has(Flag::DownstreamTerminated)
        );
    }

    #[test]
    fn jwt_refusals_are_worded_as_envoy_does() {
        assert_eq!(
            details::jwt_denied("Jwt is expired"),
            "jwt_authn_access_denied{Jwt_is_expired}"
        );
        assert_eq!(
            details::jwt_denied("Jwt header [alg] is not supported"),
            "jwt_authn_access_denied{Jwt_header_[alg]_is_not_supported}"
        );
    }

    #[test]
    fn grpc_statuses_as_http_statuses_for_outlier_detection() {
        assert_eq!(http_status_for_grpc(0), 200);
        assert_eq!(http_status_for_grpc(14), 503);
        assert_eq!(http_status_for_grpc(4), 504);
        assert_eq!(http_status_for_grpc(13), 500);
        assert_eq!(http_status_for_grpc(8), 429);
        assert_eq!(http_status_for_grpc(99), 500);
    }
}
