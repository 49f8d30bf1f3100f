//! Envoy's command operators as weft renders them: what each reads of an
//! [`Entry`] and how it is written ([`Op::render`]), compiled from
//! weft-control's tokens ([`Op::from_token`]).

use std::time::SystemTime;

use weft_proto::{
    telemetry::FormatToken,
    time_format::{self, Piece as TimePiece},
};

use super::write::{hostname, push_addr, push_hex, push_one_line, push_u64, write_time};
use crate::{
    access_log::{
        entry::{Entry, Header},
        stable::Reads,
    },
    state::Identity,
};

/// A command operator weft renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// In Envoy's default form, or as the format given says.
    StartTime(Option<Box<[TimePiece]>>),
    /// `REQ(header?alternative)`.
    Req(Header, Option<Header>),
    /// `REQ_WITHOUT_QUERY(header?alternative)`: the value up to its `?`.
    ReqWithoutQuery(Header, Option<Header>),
    Resp(Header, Option<Header>),
    Trailer,
    /// One of Envoy's operators weft has no value for (weft-control's
    /// `UNSET`): `-` in a line, `null` in JSON, as a missing value.
    Unset,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    ResponseDuration,
    /// From the start to the request body's end.
    RequestDuration,
    /// From the response's first byte from upstream to its last sent.
    ResponseTxDuration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    UpstreamRequestAttemptCount,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamPeerUriSan,
    DownstreamLocalUriSan,
    /// The HBONE server's SPIFFE id, when the request went to one.
    UpstreamPeerUriSan,
    DownstreamTlsVersion,
    UpstreamTlsVersion,
    RequestedServerName,
    RouteName,
    ConnectionId,
    GrpcStatus(GrpcStatusAs),
    Hostname,
    /// Envoy's long names of the flags (`NoHealthyUpstream`...).
    ResponseFlagsLong,
    /// `UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT`.
    UpstreamHostWithoutPort,
    UpstreamLocalAddressWithoutPort,
    /// `<ADDRESS>_PORT`: the port of one of the line's addresses.
    Port(Endpoint),
    /// `DownstreamEnd` for a request's line, `TcpConnectionEnd` for a
    /// connection's: when Envoy writes such a line.
    AccessLogType,
    /// This side's span's trace id (32 hex digits), when it is traced.
    TraceId,
    /// This side's span's id (16 hex digits), when it is traced.
    SpanId,
    /// A random UUID, another at every use.
    UniqueId,
    /// When the line is written: `START_TIME`'s forms.
    EmitTime(Option<Box<[TimePiece]>>),
    /// `ENVIRONMENT(NAME)`: the agent's variable, read when the format
    /// is compiled, as Envoy reads it when it loads its config. Unset,
    /// it is written `-`, a string even in JSON, as Envoy writes it.
    Environment(Option<Box<str>>),
    /// A request's virtual cluster: Istio configures none, so always
    /// missing, as in Envoy under Istio.
    VirtualClusterName,
}

/// One of the addresses a line has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    DownstreamLocal,
    /// The client's address. weft never takes it from a header or the
    /// PROXY protocol, so it is also Envoy's "direct" remote address.
    DownstreamRemote,
    /// `UPSTREAM_HOST`, `UPSTREAM_REMOTE_ADDRESS`.
    UpstreamHost,
    UpstreamLocal,
}

impl Endpoint {
    fn of(self, e: &Entry<'_>) -> Option<std::net::SocketAddr> {
        match self {
            Endpoint::DownstreamLocal => e.downstream_local,
            Endpoint::DownstreamRemote => e.downstream_remote,
            Endpoint::UpstreamHost => e.upstream_host,
            Endpoint::UpstreamLocal => e.upstream_local,
        }
    }

    fn reads(self) -> Reads {
        match self {
            Endpoint::DownstreamLocal => Reads::DOWNSTREAM_LOCAL,
            Endpoint::DownstreamRemote => Reads::DOWNSTREAM_REMOTE,
            Endpoint::UpstreamHost => Reads::UPSTREAM_HOST,
            Endpoint::UpstreamLocal => Reads::UPSTREAM_LOCAL,
        }
    }
}

/// How `%GRPC_STATUS(...)%` writes a status, as Envoy's formatter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcStatusAs {
    /// `CAMEL_STRING`, the default: `OK`, `InvalidArgument`, ...
    Camel,
    /// `SNAKE_STRING`: `OK`, `INVALID_ARGUMENT`, ...
    Snake,
    /// `NUMBER` (and `%GRPC_STATUS_NUMBER%`).
    Number,
}

/// gRPC's status codes by number: Envoy's camel-case names, then the
/// snake-case ones (Abseil's, `CANCELLED` with two Ls).
const GRPC_STATUS_NAMES: [(&str, &str); 17] = [
    ("OK", "OK"),
    ("Canceled", "CANCELLED"),
    ("Unknown", "UNKNOWN"),
    ("InvalidArgument", "INVALID_ARGUMENT"),
    ("DeadlineExceeded", "DEADLINE_EXCEEDED"),
    ("NotFound", "NOT_FOUND"),
    ("AlreadyExists", "ALREADY_EXISTS"),
    ("PermissionDenied", "PERMISSION_DENIED"),
    ("ResourceExhausted", "RESOURCE_EXHAUSTED"),
    ("FailedPrecondition", "FAILED_PRECONDITION"),
    ("Aborted", "ABORTED"),
    ("OutOfRange", "OUT_OF_RANGE"),
    ("Unimplemented", "UNIMPLEMENTED"),
    ("Internal", "INTERNAL"),
    ("Unavailable", "UNAVAILABLE"),
    ("DataLoss", "DATA_LOSS"),
    ("Unauthenticated", "UNAUTHENTICATED"),
];

impl Op {
    pub(super) fn from_token(t: &FormatToken) -> Result<Op, String> {
        let header = || Header::parse(&t.argument);
        let alternative = || (!t.alternative.is_empty()).then(|| Header::parse(&t.alternative));
        let time = || {
            Ok::<_, String>(if t.argument.is_empty() {
                None
            } else {
                Some(
                    time_format::parse(&t.argument)
                        .map_err(|e| format!("`%{}({})%`: {e}", t.operator, t.argument))?
                        .into(),
                )
            })
        };
        Ok(match t.operator.as_str() {
            "START_TIME" => Op::StartTime(time()?),
            "EMIT_TIME" => Op::EmitTime(time()?),
            "REQ" => Op::Req(header(), alternative()),
            "REQ_WITHOUT_QUERY" => Op::ReqWithoutQuery(header(), alternative()),
            "RESP" => Op::Resp(header(), alternative()),
            "TRAILER" => Op::Trailer,
            "UNSET" => Op::Unset,
            "PROTOCOL" => Op::Protocol,
            "RESPONSE_CODE" => Op::ResponseCode,
            "RESPONSE_FLAGS" => Op::ResponseFlags,
            "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
            "CONNECTION_TERMINATION_DETAILS" => Op::ConnectionTerminationDetails,
            "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
            "BYTES_RECEIVED" => Op::BytesReceived,
            "BYTES_SENT" => Op::BytesSent,
            "DURATION" => Op::Duration,
            "RESPONSE_DURATION" => Op::ResponseDuration,
            "REQUEST_DURATION" => Op::RequestDuration,
            "RESPONSE_TX_DURATION" => Op::ResponseTxDuration,
            "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => Op::UpstreamHost,
            "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster,
            "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
            "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Op::UpstreamRequestAttemptCount,
            "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocalAddressWithoutPort,
            "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
                Op::DownstreamRemoteAddress
            }
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
            | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
                Op::DownstreamRemoteAddressWithoutPort
            }
            "DOWNSTREAM_REMOTE_PORT" | "DOWNSTREAM_DIRECT_REMOTE_PORT" => {
                Op::Port(Endpoint::DownstreamRemote)
            }
            "DOWNSTREAM_LOCAL_PORT" => Op::Port(Endpoint::DownstreamLocal),
            "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::UpstreamHostWithoutPort,
            "UPSTREAM_REMOTE_PORT" => Op::Port(Endpoint::UpstreamHost),
            "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::UpstreamLocalAddressWithoutPort,
            "UPSTREAM_LOCAL_PORT" => Op::Port(Endpoint::UpstreamLocal),
            "DOWNSTREAM_PEER_URI_SAN" => Op::DownstreamPeerUriSan,
            "DOWNSTREAM_LOCAL_URI_SAN" => Op::DownstreamLocalUriSan,
            "UPSTREAM_PEER_URI_SAN" => Op::UpstreamPeerUriSan,
            "DOWNSTREAM_TLS_VERSION" => Op::DownstreamTlsVersion,
            "UPSTREAM_TLS_VERSION" => Op::UpstreamTlsVersion,
            "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
            "ROUTE_NAME" => Op::RouteName,
            "CONNECTION_ID" => Op::ConnectionId,
            "GRPC_STATUS" => Op::GrpcStatus(match t.argument.as_str() {
                "" | "CAMEL_STRING" => GrpcStatusAs::Camel,
                "SNAKE_STRING" => GrpcStatusAs::Snake,
                "NUMBER" => GrpcStatusAs::Number,
                other => {
                    return Err(format!(
                        "`%GRPC_STATUS({other})%`: the form is CAMEL_STRING, SNAKE_STRING or NUMBER"
                    ));
                }
            }),
            "GRPC_STATUS_NUMBER" => Op::GrpcStatus(GrpcStatusAs::Number),
            "HOSTNAME" => Op::Hostname,
            "RESPONSE_FLAGS_LONG" => Op::ResponseFlagsLong,
            "ACCESS_LOG_TYPE" => Op::AccessLogType,
            "TRACE_ID" => Op::TraceId,
            "SPAN_ID" => Op::SpanId,
            "UNIQUE_ID" => Op::UniqueId,
            "ENVIRONMENT" if t.argument.is_empty() => {
                return Err("`%ENVIRONMENT()%` needs a variable's name".into());
            }
            "ENVIRONMENT" => Op::Environment(std::env::var(&t.argument).ok().map(Into::into)),
            "VIRTUAL_CLUSTER_NAME" => Op::VirtualClusterName,
            other => return Err(format!("unknown access log command operator `%{other}%`")),
        })
    }

    /// For a text line: a time format's own line breaks (`%n`, or one in
    /// its text) written as spaces, as the format's literals are.
    pub(super) fn on_one_line(&mut self) {
        if let Op::StartTime(Some(pieces)) | Op::EmitTime(Some(pieces)) = self {
            for piece in pieces.iter_mut() {
                if let TimePiece::Literal(text) = piece
                    && text.contains('\n')
                {
                    *text = text.replace('\n', " ");
                }
            }
        }
    }

    /// What of the entry the operator reads, when that seldom changes
    /// from one request of a connection to the next (see [`stable`]).
    pub(super) fn stable(&self) -> Option<Reads> {
        Some(match self {
            Op::Protocol => Reads::PROTOCOL,
            Op::UpstreamHost => Reads::UPSTREAM_HOST,
            Op::UpstreamCluster => Reads::UPSTREAM_CLUSTER,
            Op::UpstreamLocalAddress => Reads::UPSTREAM_LOCAL,
            Op::DownstreamLocalAddress | Op::DownstreamLocalAddressWithoutPort => {
                Reads::DOWNSTREAM_LOCAL
            }
            Op::DownstreamRemoteAddress | Op::DownstreamRemoteAddressWithoutPort => {
                Reads::DOWNSTREAM_REMOTE
            }
            Op::RequestedServerName => Reads::SNI,
            Op::RouteName => Reads::ROUTE,
            Op::UpstreamHostWithoutPort => Reads::UPSTREAM_HOST,
            Op::UpstreamLocalAddressWithoutPort => Reads::UPSTREAM_LOCAL,
            Op::Port(endpoint) => endpoint.reads(),
            // The same for every line of a stable run (a request's).
            Op::Hostname | Op::Environment(_) | Op::VirtualClusterName | Op::AccessLogType => {
                Reads::NOTHING
            }
            _ => return None,
        })
    }

    /// Rendered as a JSON number when it stands alone.
    pub(super) fn numeric(&self) -> bool {
        matches!(
            self,
            Op::ResponseCode
                | Op::BytesReceived
                | Op::BytesSent
                | Op::Duration
                | Op::ResponseDuration
                | Op::RequestDuration
                | Op::ResponseTxDuration
                | Op::UpstreamRequestAttemptCount
                | Op::ConnectionId
                | Op::GrpcStatus(GrpcStatusAs::Number)
                | Op::Port(_)
        )
    }

    /// Appends the value, or returns `false` when there is none.
    ///
    /// Only values that come from free text (an error, a name in the
    /// config, a certificate, a client's SNI) are checked for line
    /// breaks: the request line, header values (no ASCII control
    /// character but a tab, `http` checks it), numbers and addresses
    /// cannot hold one.
    ///
    /// Inlined into the loop over a format's steps: a call per operator
    /// was a fifth of a line's cost.
    #[inline(always)]
    pub(super) fn render(&self, e: &Entry<'_>, out: &mut Vec<u8>) -> bool {
        fn number(out: &mut Vec<u8>, value: u64) -> bool {
            push_u64(out, value);
            true
        }
        fn text(out: &mut Vec<u8>, value: &str) -> bool {
            if value.is_empty() {
                return false;
            }
            out.extend_from_slice(value.as_bytes());
            true
        }
        fn free_text(out: &mut Vec<u8>, value: &str) -> bool {
            if value.is_empty() {
                return false;
            }
            push_one_line(out, value.as_bytes());
            true
        }
        fn addr(out: &mut Vec<u8>, value: Option<std::net::SocketAddr>, port: bool) -> bool {
            match value {
                Some(a) => {
                    push_addr(out, a, port);
                    true
                }
                None => false,
            }
        }
        fn time(out: &mut Vec<u8>, at: SystemTime, pieces: Option<&[TimePiece]>) -> bool {
            match pieces {
                None => write_time(at, out),
                Some(pieces) => {
                    let since = at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    time_format::write(pieces, since, out);
                }
            }
            true
        }
        fn identity(out: &mut Vec<u8>, value: Option<&Identity>) -> bool {
            match value {
                Some(id) => free_text(out, &id.to_string()),
                None => false,
            }
        }
        match self {
            Op::StartTime(pieces) => time(out, e.start, pieces.as_deref()),
            Op::EmitTime(pieces) => time(out, SystemTime::now(), pieces.as_deref()),
            Op::Req(name, alt) => match e
                .request(name)
                .or_else(|| alt.as_ref().and_then(|alt| e.request(alt)))
            {
                Some(v) => text(out, v),
                None => false,
            },
            Op::ReqWithoutQuery(name, alt) => match e
                .request(name)
                .or_else(|| alt.as_ref().and_then(|alt| e.request(alt)))
            {
                Some(v) => text(out, v.split_once('?').map_or(v, |(path, _)| path)),
                None => false,
            },
            Op::Resp(name, alt) => match e
                .response(name)
                .or_else(|| alt.as_ref().and_then(|alt| e.response(alt)))
            {
                Some(v) => text(out, v),
                None => false,
            },
            Op::Trailer | Op::Unset => false,
            Op::Protocol => text(out, e.protocol),
            Op::ResponseCode => number(out, e.response_code().into()),
            Op::ResponseFlags if e.flags.is_empty() => text(out, "-"),
            Op::ResponseFlags => text(out, &e.flags.to_string()),
            Op::ResponseCodeDetails => text(out, e.code_details()),
            Op::ConnectionTerminationDetails => match e.denied_by() {
                // Written in place: nothing is formatted for a line.
                Some(rule) => {
                    for part in [crate::l7::reply::details::RBAC_DENIED, "[", rule, "]"] {
                        out.extend_from_slice(part.as_bytes());
                    }
                    true
                }
                None => false,
            },
            Op::UpstreamTransportFailureReason => free_text(out, e.transport_failure),
            Op::BytesReceived => number(out, e.bytes_received),
            Op::BytesSent => number(out, e.bytes_sent),
            Op::Duration => number(out, e.duration.as_millis() as u64),
            Op::ResponseDuration => match e.response_duration {
                Some(d) => number(out, d.as_millis() as u64),
                None => false,
            },
            Op::RequestDuration => match e.request_duration {
                Some(d) => number(out, d.as_millis() as u64),
                None => false,
            },
            Op::ResponseTxDuration => match e.response_duration {
                Some(d) => number(out, e.duration.saturating_sub(d).as_millis() as u64),
                None => false,
            },
            Op::UpstreamHost => addr(out, e.upstream_host, true),
            Op::UpstreamCluster => free_text(out, e.upstream_cluster),
            Op::UpstreamLocalAddress => addr(out, e.upstream_local, true),
            Op::UpstreamRequestAttemptCount => number(out, e.attempts.into()),
            Op::DownstreamLocalAddress => addr(out, e.downstream_local, true),
            Op::DownstreamLocalAddressWithoutPort => addr(out, e.downstream_local, false),
            Op::DownstreamRemoteAddress => addr(out, e.downstream_remote, true),
            Op::DownstreamRemoteAddressWithoutPort => addr(out, e.downstream_remote, false),
            Op::DownstreamPeerUriSan => identity(out, e.peer_identity),
            Op::DownstreamLocalUriSan => identity(out, e.local_identity),
            Op::UpstreamPeerUriSan => identity(out, e.upstream_tls_peer().map(|w| &w.identity)),
            // HBONE is TLS 1.3 only; the app's side of either proxy, and
            // a same-node handover, are plaintext.
            Op::DownstreamTlsVersion => e.downstream_tls && text(out, "TLSv1.3"),
            Op::UpstreamTlsVersion => e.upstream_tls && text(out, "TLSv1.3"),
            Op::RequestedServerName => free_text(out, e.sni),
            Op::RouteName => free_text(out, e.route),
            Op::ConnectionId => match e.connection_id {
                Some(id) => number(out, id),
                None => false,
            },
            Op::GrpcStatus(form) => match e.http.as_ref().and_then(|h| h.grpc_status) {
                // Envoy writes a code it has no name for as its number.
                Some(s) => match (form, GRPC_STATUS_NAMES.get(s as usize)) {
                    (GrpcStatusAs::Camel, Some((camel, _))) => text(out, camel),
                    (GrpcStatusAs::Snake, Some((_, snake))) => text(out, snake),
                    _ => number(out, s.into()),
                },
                None => false,
            },
            Op::Hostname => free_text(out, hostname()),
            Op::ResponseFlagsLong => {
                use std::io::Write as _;
                let _ = write!(out, "{}", e.flags.long());
                true
            }
            Op::UpstreamHostWithoutPort => addr(out, e.upstream_host, false),
            Op::UpstreamLocalAddressWithoutPort => addr(out, e.upstream_local, false),
            Op::Port(endpoint) => match endpoint.of(e) {
                Some(a) => number(out, a.port().into()),
                None => false,
            },
            Op::AccessLogType => text(out, e.access_log_type()),
            Op::TraceId => match e.trace {
                Some((trace, _)) => {
                    push_hex(out, trace, 32);
                    true
                }
                None => false,
            },
            Op::SpanId => match e.trace {
                Some((_, span)) => {
                    push_hex(out, span.into(), 16);
                    true
                }
                None => false,
            },
            Op::UniqueId => {
                out.extend_from_slice(&crate::l7::forward::random_uuid());
                true
            }
            Op::Environment(Some(value)) => free_text(out, value),
            Op::Environment(None) => text(out, "-"),
            Op::VirtualClusterName => false,
        }
    }
}
