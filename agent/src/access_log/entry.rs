//! One access-log entry: what a request (L7) or a connection (L4) is
//! known by when it ends, borrowed from where it was recorded. The
//! format renders it; the filter reads it.

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    l7::reply::{Flag, Flags},
    state::{Identity, Workload},
};

/// The HTTP part of an entry.
#[derive(Debug, Clone, Copy)]
pub struct Http<'a> {
    pub method: &'a str,
    /// The path with its query.
    pub path: &'a str,
    pub authority: &'a str,
    /// The request's headers that the format or the filter names.
    pub headers: Option<&'a Headers>,
    pub response_headers: Option<&'a Headers>,
    /// 0: no response.
    pub status: u16,
    pub grpc_status: Option<u32>,
}

#[cfg(test)]
impl Http<'static> {
    /// `GET /` to `a`, answered `status`, no header kept.
    pub fn get(status: u16) -> Http<'static> {
        Http {
            method: "GET",
            path: "/",
            authority: "a",
            headers: None,
            response_headers: None,
            status,
            grpc_status: None,
        }
    }
}

/// The headers of a request or a response that a line may print or its
/// filter read, copied when they pass (the first value of each): a few,
/// not the whole map, so that logging a request costs little more than
/// the line. Their names and values are copied into one buffer, each
/// header as its name's length and its value's (4 bytes each), then both:
/// one allocation, and none of the reference counting that keeping
/// `HeaderValue`s (a share of the request's buffer each) cost.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    /// A bit per length of the names kept (see [`length_bit`]): most
    /// names a line asks for and the request lacks are told missing by
    /// it alone.
    lengths: u64,
}

/// The bit of a name's length in a mask of lengths (63: 63 and longer).
fn length_bit(name: &[u8]) -> u64 {
    1 << name.len().min(63)
}

/// The room a first kept header reserves: a request's few usually fit.
const ROOM: usize = 512;

impl Headers {
    /// Those of `map` that the format prints or the filter reads.
    pub fn capture(map: &HeaderMap, format: &[HeaderName], filter: &[HeaderName]) -> Headers {
        let mut kept = Headers::default();
        // A request has a few headers: one pass over them, comparing
        // names, is cheaper than hashing each name for a lookup. Past a
        // few dozen, the lookups are.
        if map.keys_len() <= 32 {
            // Most of a request's headers are passed over by their name's
            // length alone: a name is compared only with those as long.
            let bit = |name: &HeaderName| length_bit(name.as_str().as_bytes());
            let lengths = format.iter().chain(filter).fold(0, |mask, n| mask | bit(n));
            // A name's values come one after the other, by the same
            // `HeaderName`: the first is kept, the others passed over.
            let mut last: Option<&HeaderName> = None;
            for (name, value) in map {
                if last.is_some_and(|last| std::ptr::eq(last, name)) {
                    continue;
                }
                if lengths & bit(name) != 0 && (format.contains(name) || filter.contains(name)) {
                    kept.push(name, value);
                    last = Some(name);
                }
            }
        } else {
            for name in format.iter().chain(filter) {
                if let Some(value) = map.get(name) {
                    kept.add(name, value);
                }
            }
        }
        kept
    }

    /// Every header of `map` (for tests and tools).
    pub fn all(map: &HeaderMap) -> Headers {
        let mut kept = Headers::default();
        for (name, value) in map {
            kept.add(name, value);
        }
        kept
    }

    /// Keeps `value` unless `name` is kept already.
    pub fn add(&mut self, name: &HeaderName, value: &HeaderValue) {
        if self.get(name).is_none() {
            self.push(name, value);
        }
    }

    /// Keeps `value` for `name`, not kept yet.
    fn push(&mut self, name: &HeaderName, value: &HeaderValue) {
        let name = name.as_str().as_bytes();
        let value = value.as_bytes();
        let size = 8 + name.len() + value.len();
        if self.bytes.capacity() == 0 {
            self.bytes.reserve(size.max(ROOM));
        }
        // The lengths fit in 4 bytes: the proxy's servers and clients
        // refuse header blocks over 64 KiB (`MAX_REQUEST_HEADERS`,
        // `MAX_HEADERS_BYTES`; an upgrade's answer, hyper's default
        // read buffer of about 400 KiB).
        self.bytes
            .extend_from_slice(&(name.len() as u32).to_ne_bytes());
        self.bytes
            .extend_from_slice(&(value.len() as u32).to_ne_bytes());
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.lengths |= length_bit(name);
    }

    /// The value kept for `name`, as it came.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        let name = name.as_str().as_bytes();
        if self.lengths & length_bit(name) == 0 {
            return None;
        }
        let mut rest = self.bytes.as_slice();
        while let Some((lengths, after)) = rest.split_first_chunk::<8>() {
            let [n0, n1, n2, n3, v0, v1, v2, v3] = *lengths;
            let name_len = u32::from_ne_bytes([n0, n1, n2, n3]) as usize;
            let value_len = u32::from_ne_bytes([v0, v1, v2, v3]) as usize;
            let (kept, after) = after.split_at(name_len);
            let (value, after) = after.split_at(value_len);
            if kept == name {
                return Some(value);
            }
            rest = after;
        }
        None
    }
}

/// A header's value as text, as Envoy prints it: UTF-8 as it came. A
/// `HeaderValue` holds no ASCII control character but a tab (hyper's
/// parser and `http` refuse them), so no line break either; only bytes that are
/// not UTF-8 make it missing. (`to_str`, which also refuses UTF-8 beyond
/// ASCII, checked byte by byte and was a tenth of a line's cost.)
fn text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value).ok()
}

/// A header as a format names it, parsed once: the request line's
/// pseudo-headers, or a header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    Method,
    Path,
    Scheme,
    /// `:authority`, or `host`: the request's authority.
    Authority,
    Named(HeaderName),
    /// Not a valid header name: never present.
    Invalid,
}

impl Header {
    /// From a lower-case name.
    pub fn parse(name: &str) -> Header {
        match name {
            ":method" => Header::Method,
            ":path" => Header::Path,
            ":scheme" => Header::Scheme,
            ":authority" | "host" => Header::Authority,
            _ => HeaderName::from_bytes(name.as_bytes()).map_or(Header::Invalid, Header::Named),
        }
    }
}

/// What a line says (Envoy's names in the comments).
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// `%START_TIME%`.
    pub start: SystemTime,
    /// `%DURATION%`.
    pub duration: Duration,
    /// `%RESPONSE_DURATION%`: from the start to the response's first
    /// byte from upstream (the app's, on the server side); `None`
    /// without one (the proxy answered itself, or nothing came).
    pub response_duration: Option<Duration>,
    /// `%REQUEST_DURATION%`: from the start to the request body's end
    /// (at once without a body); `None` before it ended, and at L4.
    pub request_duration: Option<Duration>,
    /// `None` at L4.
    pub http: Option<Http<'a>>,
    /// `%PROTOCOL%`: `HTTP/1.1`, `HTTP/2`; empty at L4.
    pub protocol: &'a str,
    pub flags: Flags,
    /// `%RESPONSE_CODE_DETAILS%` of an answer of the proxy's own that its
    /// flags do not name (a direct response, a CORS preflight, a JWT or
    /// ext_authz refusal); otherwise derived from the flags.
    pub details: Option<&'a str>,
    /// The RBAC policy that refused or closed an L4 connection, as
    /// Envoy's log names it (`ns[NS]-policy[NAME]-rule[N]`, or `none` when
    /// no ALLOW policy matched), for `%CONNECTION_TERMINATION_DETAILS%`
    /// (see [`Entry::denied_by`]); set on the side that decided.
    pub denied_rule: Option<&'a str>,
    pub transport_failure: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub upstream_host: Option<SocketAddr>,
    /// The workload behind `upstream_host`, when the proxy chose it
    /// knowing which (an access-log service's `upstream_peer`; otherwise
    /// it is looked up by address).
    pub upstream_workload: Option<&'a Arc<Workload>>,
    /// Istio's cluster name: `outbound|<port>|<subset>|<host>`,
    /// `inbound|<port>||`, `PassthroughCluster`.
    pub upstream_cluster: &'a str,
    pub upstream_local: Option<SocketAddr>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    /// `%DOWNSTREAM_PEER_URI_SAN%`: the client's SPIFFE id, if proven
    /// (written out only when a format prints it).
    pub peer_identity: Option<&'a Identity>,
    /// `%DOWNSTREAM_LOCAL_URI_SAN%`.
    pub local_identity: Option<&'a Identity>,
    /// `%REQUESTED_SERVER_NAME%`.
    pub sni: &'a str,
    pub route: &'a str,
    pub connection_id: Option<u64>,
    pub attempts: u32,
    /// `connection.mtls` in filters.
    pub mtls: bool,
    /// The downstream connection was HBONE's mutual TLS (the server
    /// side; a same-node client is handed over in the process, in
    /// plaintext).
    pub downstream_tls: bool,
    /// The upstream connection was HBONE's mutual TLS, and it was made
    /// (the client side, to another node).
    pub upstream_tls: bool,
    /// This side's span (trace id, span id), when the request is traced:
    /// an OpenTelemetry record carries them, as Envoy's does.
    pub trace: Option<(u128, u64)>,
}

impl<'a> Entry<'a> {
    pub fn new(start: SystemTime, duration: Duration) -> Entry<'a> {
        Entry {
            start,
            duration,
            response_duration: None,
            request_duration: None,
            http: None,
            protocol: "",
            flags: Flags::default(),
            details: None,
            denied_rule: None,
            transport_failure: "",
            bytes_received: 0,
            bytes_sent: 0,
            upstream_host: None,
            upstream_workload: None,
            upstream_cluster: "",
            upstream_local: None,
            downstream_local: None,
            downstream_remote: None,
            peer_identity: None,
            local_identity: None,
            sni: "",
            trace: None,
            route: "",
            connection_id: None,
            attempts: 0,
            mtls: false,
            downstream_tls: false,
            upstream_tls: false,
        }
    }

    /// The workload at the other end of the upstream connection's mutual
    /// TLS (HBONE), if the request or connection went through one.
    pub fn upstream_tls_peer(&self) -> Option<&'a Arc<Workload>> {
        self.upstream_workload
            .filter(|w| self.upstream_tls && w.hbone)
    }

    /// `%ACCESS_LOG_TYPE%`: when Envoy would write this line, at the end
    /// of a request's stream or of a TCP connection.
    pub fn access_log_type(&self) -> &'static str {
        if self.http.is_some() {
            "DownstreamEnd"
        } else {
            "TcpConnectionEnd"
        }
    }

    /// `%RESPONSE_CODE%`: 0 without a response (and at L4).
    pub fn response_code(&self) -> u16 {
        self.http.as_ref().map_or(0, |h| h.status)
    }

    /// A request header, by lower-case name; pseudo-headers from the
    /// request line.
    pub fn request_header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.request(&Header::parse(name)).map(Cow::Borrowed)
    }

    /// A request header named by a format (parsed when it was compiled).
    pub fn request(&self, header: &Header) -> Option<&'a str> {
        let http = self.http.as_ref()?;
        match header {
            Header::Method => Some(http.method),
            Header::Path => Some(http.path),
            Header::Scheme => Some("http"),
            Header::Authority if !http.authority.is_empty() => Some(http.authority),
            Header::Authority => text(http.headers?.get(&http::header::HOST)?),
            Header::Named(name) => text(http.headers?.get(name)?),
            Header::Invalid => None,
        }
    }

    /// A response header named by a format.
    pub fn response(&self, header: &Header) -> Option<&'a str> {
        let headers = self.http.as_ref()?.response_headers?;
        match header {
            Header::Named(name) => text(headers.get(name)?),
            Header::Authority => text(headers.get(&http::header::HOST)?),
            _ => None,
        }
    }

    pub fn response_header(&self, name: &str) -> Option<&'a str> {
        self.response(&Header::parse(name))
    }

    /// What `%CONNECTION_TERMINATION_DETAILS%` names, as Envoy's network
    /// RBAC filter words it (`rbac_access_denied_matched_policy[` this
    /// `]`): the policy that refused or closed an L4 connection; nothing
    /// for a request (its denial is in its response code details), a
    /// connection no policy closed, or the side that did not decide.
    pub fn denied_by(&self) -> Option<&'a str> {
        self.denied_rule.filter(|_| self.http.is_none())
    }

    /// `%CONNECTION_TERMINATION_DETAILS%` as text (see [`Entry::denied_by`]).
    pub fn termination_details(&self) -> Option<String> {
        self.denied_by()
            .map(|policy| crate::l7::reply::details::rbac_denied(policy).into_owned())
    }

    /// `%RESPONSE_CODE_DETAILS%`, as Envoy words it: the proxy's own
    /// answer's, else for the flags set, else `via_upstream`.
    pub fn code_details(&self) -> &'a str {
        const DETAILS: [(Flag, &str); 11] = [
            (Flag::RbacDenied, "rbac_access_denied_matched_policy[none]"),
            (Flag::ExternalDenied, "ext_authz_denied"),
            (Flag::NoRoute, "route_not_found"),
            (Flag::NoCluster, "cluster_not_found"),
            (Flag::FaultInjected, "fault_filter_abort"),
            (Flag::UpstreamTimeout, "response_timeout"),
            (
                Flag::UpstreamOverflow,
                "upstream_reset_before_response_started{overflow}",
            ),
            (
                Flag::UpstreamConnectFailure,
                "upstream_reset_before_response_started{connection_failure}",
            ),
            (Flag::NoHealthyUpstream, "no_healthy_upstream"),
            (
                Flag::UpstreamTerminated,
                "upstream_reset_before_response_started{connection_termination}",
            ),
            (Flag::DownstreamTerminated, "downstream_remote_disconnect"),
        ];
        let Some(http) = &self.http else {
            return "";
        };
        if let Some(details) = self.details {
            return details;
        }
        if !self.flags.is_empty()
            && let Some((_, text)) = DETAILS.iter().find(|(f, _)| self.flags.has(*f))
        {
            return text;
        }
        if http.status == 0 {
            return "";
        }
        "via_upstream"
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::{Entry, Headers, Http};
    use crate::l7::reply::Flag;

    #[test]
    fn code_details_are_the_replys_own_then_the_flags_then_via_upstream() {
        let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
        // L4: none.
        assert_eq!(e.code_details(), "");
        e.http = Some(Http::get(200));
        assert_eq!(e.code_details(), "via_upstream");
        e.flags.set(Flag::NoRoute);
        assert_eq!(e.code_details(), "route_not_found");
        e.details = Some("direct_response");
        assert_eq!(e.code_details(), "direct_response");
    }

    #[test]
    fn termination_details_name_the_rule_that_closed_a_connection() {
        let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
        assert_eq!(e.termination_details(), None, "nothing closed it");
        e.flags.set(Flag::RbacDenied);
        assert_eq!(
            e.termination_details(),
            None,
            "refused, on the side that did not decide"
        );
        e.denied_rule = Some("none");
        assert_eq!(
            e.termination_details().as_deref(),
            Some("rbac_access_denied_matched_policy[none]"),
            "no ALLOW policy matched"
        );
        e.denied_rule = Some("ns[db]-policy[deny]-rule[0]");
        assert_eq!(
            e.termination_details().as_deref(),
            Some("rbac_access_denied_matched_policy[ns[db]-policy[deny]-rule[0]]")
        );
        e.http = Some(Http::get(403));
        assert_eq!(
            e.termination_details(),
            None,
            "a request's denial is in its response code details"
        );
    }

    fn name(n: &'static str) -> HeaderName {
        HeaderName::from_static(n)
    }

    #[test]
    fn headers_keep_the_first_value_of_the_names_wanted_only() {
        let mut map = HeaderMap::new();
        map.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        map.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        map.append("user-agent", HeaderValue::from_static("curl/8"));
        map.append("x-other", HeaderValue::from_static("not wanted"));
        // Longer than the room a first header reserves.
        let long = "v".repeat(1000);
        map.append("x-long", HeaderValue::from_str(&long).unwrap());
        map.append("x-bytes", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        let wanted = [name("x-forwarded-for"), name("x-long"), name("x-absent")];
        let kept = Headers::capture(&map, &wanted, &[name("user-agent"), name("x-bytes")]);
        let get = |n| kept.get(&name(n));
        assert_eq!(get("x-forwarded-for"), Some(&b"10.0.0.1"[..]));
        assert_eq!(get("user-agent"), Some(&b"curl/8"[..]));
        assert_eq!(get("x-long"), Some(long.as_bytes()));
        assert_eq!(get("x-bytes"), Some(&b"\xff\xfe"[..]));
        assert_eq!(get("x-other"), None);
        assert_eq!(get("x-absent"), None);
        // A name kept already keeps its value.
        let mut kept = kept;
        kept.add(&name("user-agent"), &HeaderValue::from_static("other"));
        assert_eq!(kept.get(&name("user-agent")), Some(&b"curl/8"[..]));
        assert_eq!(Headers::default().get(&name("user-agent")), None);
    }
}
