//! Renders an [`Entry`] with a format weft-control parsed (Envoy's
//! command operators, see `control/src/model/access_log/format.rs`): text,
//! one line, `-` for what is missing; or JSON, one object per line, with
//! numbers for numeric operators standing alone and `null` for what is
//! missing, as Envoy's JSON format does.

use std::time::SystemTime;

use http::HeaderName;
use weft_proto::telemetry::{FormatToken, JsonField};

use super::entry::{Entry, Header};
use crate::state::Identity;

/// A command operator weft renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    StartTime,
    /// `REQ(header?alternative)`.
    Req(Header, Option<Header>),
    Resp(Header, Option<Header>),
    Trailer,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
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
    RequestedServerName,
    RouteName,
    ConnectionId,
    GrpcStatus,
    Hostname,
}

impl Op {
    fn from_token(t: &FormatToken) -> Result<Op, String> {
        let header = || Header::parse(&t.argument);
        let alternative = || (!t.alternative.is_empty()).then(|| Header::parse(&t.alternative));
        Ok(match t.operator.as_str() {
            "START_TIME" => Op::StartTime,
            "REQ" => Op::Req(header(), alternative()),
            "RESP" => Op::Resp(header(), alternative()),
            "TRAILER" => Op::Trailer,
            "PROTOCOL" => Op::Protocol,
            "RESPONSE_CODE" => Op::ResponseCode,
            "RESPONSE_FLAGS" => Op::ResponseFlags,
            "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
            "CONNECTION_TERMINATION_DETAILS" => Op::ConnectionTerminationDetails,
            "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
            "BYTES_RECEIVED" => Op::BytesReceived,
            "BYTES_SENT" => Op::BytesSent,
            "DURATION" => Op::Duration,
            "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => Op::UpstreamHost,
            "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster,
            "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
            "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Op::UpstreamRequestAttemptCount,
            "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocalAddressWithoutPort,
            "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
            "DOWNSTREAM_PEER_URI_SAN" => Op::DownstreamPeerUriSan,
            "DOWNSTREAM_LOCAL_URI_SAN" => Op::DownstreamLocalUriSan,
            "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
            "ROUTE_NAME" => Op::RouteName,
            "CONNECTION_ID" => Op::ConnectionId,
            "GRPC_STATUS" => Op::GrpcStatus,
            "HOSTNAME" => Op::Hostname,
            other => return Err(format!("unknown access log command operator `%{other}%`")),
        })
    }

    /// Rendered as a JSON number when it stands alone.
    fn numeric(&self) -> bool {
        matches!(
            self,
            Op::ResponseCode
                | Op::BytesReceived
                | Op::BytesSent
                | Op::Duration
                | Op::UpstreamRequestAttemptCount
                | Op::ConnectionId
        )
    }

    /// Appends the value, or returns `false` when there is none.
    ///
    /// Only values that come from free text (an error, a name in the
    /// config, a certificate, a client's SNI) are checked for line
    /// breaks: the request line, header values (visible ASCII, `http`
    /// checks it), numbers and addresses cannot hold one.
    fn render(&self, e: &Entry<'_>, out: &mut Vec<u8>) -> bool {
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
        fn identity(out: &mut Vec<u8>, value: Option<&Identity>) -> bool {
            match value {
                Some(id) => free_text(out, &id.to_string()),
                None => false,
            }
        }
        match self {
            Op::StartTime => {
                write_time(e.start, out);
                true
            }
            Op::Req(name, alt) => match e
                .request(name)
                .or_else(|| alt.as_ref().and_then(|alt| e.request(alt)))
            {
                Some(v) => text(out, v),
                None => false,
            },
            Op::Resp(name, alt) => match e
                .response(name)
                .or_else(|| alt.as_ref().and_then(|alt| e.response(alt)))
            {
                Some(v) => text(out, v),
                None => false,
            },
            Op::Trailer => false,
            Op::Protocol => text(out, e.protocol),
            Op::ResponseCode => number(out, e.response_code().into()),
            Op::ResponseFlags if e.flags.is_empty() => text(out, "-"),
            Op::ResponseFlags => text(out, &e.flags.to_string()),
            Op::ResponseCodeDetails => text(out, &e.code_details()),
            Op::ConnectionTerminationDetails => false,
            Op::UpstreamTransportFailureReason => free_text(out, e.transport_failure),
            Op::BytesReceived => number(out, e.bytes_received),
            Op::BytesSent => number(out, e.bytes_sent),
            Op::Duration => number(out, e.duration.as_millis() as u64),
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
            Op::RequestedServerName => free_text(out, e.sni),
            Op::RouteName => free_text(out, e.route),
            Op::ConnectionId => match e.connection_id {
                Some(id) => number(out, id),
                None => false,
            },
            Op::GrpcStatus => match e.http.as_ref().and_then(|h| h.grpc_status) {
                Some(s) => number(out, s.into()),
                None => false,
            },
            Op::Hostname => free_text(out, hostname()),
        }
    }
}

/// One piece of a format: literal text or an operator, cut to a length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Op(Op, usize),
}

fn pieces(tokens: &[FormatToken]) -> Result<Vec<Piece>, String> {
    tokens
        .iter()
        .map(|t| {
            if t.operator.is_empty() {
                Ok(Piece::Literal(t.literal.clone()))
            } else {
                Ok(Piece::Op(Op::from_token(t)?, t.max_length as usize))
            }
        })
        .collect()
}

/// A compiled format, and the headers it prints (the only ones a logged
/// request keeps for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    layout: Layout,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    Text(Vec<Piece>),
    Json(Vec<(String, Vec<Piece>)>),
}

impl Format {
    pub fn text(tokens: &[FormatToken]) -> Result<Format, String> {
        let mut pieces = pieces(tokens)?;
        // A line is a line: not even the format's own text breaks it.
        for piece in &mut pieces {
            if let Piece::Literal(text) = piece {
                *text = text.replace('\n', " ");
            }
        }
        Ok(Format::new(Layout::Text(pieces)))
    }

    pub fn json(fields: &[JsonField]) -> Result<Format, String> {
        fields
            .iter()
            .map(|f| Ok((f.key.clone(), pieces(&f.value)?)))
            .collect::<Result<_, String>>()
            .map(|fields| Format::new(Layout::Json(fields)))
    }

    fn new(layout: Layout) -> Format {
        let mut request_headers = Vec::new();
        let mut response_headers = Vec::new();
        let all: Vec<&Piece> = match &layout {
            Layout::Text(pieces) => pieces.iter().collect(),
            Layout::Json(fields) => fields.iter().flat_map(|(_, p)| p).collect(),
        };
        for piece in all {
            let (names, headers) = match piece {
                Piece::Op(Op::Req(name, alt), _) => {
                    ([Some(name), alt.as_ref()], &mut request_headers)
                }
                Piece::Op(Op::Resp(name, alt), _) => {
                    ([Some(name), alt.as_ref()], &mut response_headers)
                }
                _ => continue,
            };
            for header in names.into_iter().flatten() {
                let name = match header {
                    Header::Named(name) => name.clone(),
                    // Without an `:authority`, the request's `host`.
                    Header::Authority => http::header::HOST,
                    _ => continue,
                };
                if !headers.contains(&name) {
                    headers.push(name);
                }
            }
        }
        Format {
            layout,
            request_headers,
            response_headers,
        }
    }

    /// The request headers the format prints.
    pub fn request_headers(&self) -> &[HeaderName] {
        &self.request_headers
    }

    /// The response headers the format prints.
    pub fn response_headers(&self) -> &[HeaderName] {
        &self.response_headers
    }

    /// One line, with its `\n`.
    pub fn render(&self, e: &Entry<'_>) -> String {
        let mut out = Vec::with_capacity(384);
        self.render_into(e, &mut out);
        // Every value written is a `str` or ASCII.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends one line, with its `\n`, to `out` (UTF-8: every value
    /// written is a `str` or ASCII).
    pub fn render_into(&self, e: &Entry<'_>, out: &mut Vec<u8>) {
        out.reserve(512);
        match &self.layout {
            Layout::Text(pieces) => render_pieces(pieces, e, out),
            Layout::Json(fields) => {
                out.push(b'{');
                let mut value = Vec::new();
                for (i, (key, pieces)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_string(key.as_bytes(), out);
                    out.push(b':');
                    value.clear();
                    match pieces.as_slice() {
                        [Piece::Op(op, max)] => {
                            if !op.render(e, &mut value) {
                                out.extend_from_slice(b"null");
                                continue;
                            }
                            truncate(&mut value, 0, *max);
                            if op.numeric() {
                                out.extend_from_slice(&value);
                            } else {
                                json_string(&value, out);
                            }
                        }
                        _ => {
                            render_pieces(pieces, e, &mut value);
                            json_string(&value, out);
                        }
                    }
                }
                out.push(b'}');
            }
        }
        out.push(b'\n');
    }
}

fn render_pieces(pieces: &[Piece], e: &Entry<'_>, out: &mut Vec<u8>) {
    for piece in pieces {
        match piece {
            Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
            Piece::Op(op, max) => {
                let start = out.len();
                if op.render(e, out) {
                    truncate(out, start, *max);
                } else {
                    out.push(b'-');
                }
            }
        }
    }
}

/// Cuts the UTF-8 text `out[start..]` to `max` characters (0: no limit).
fn truncate(out: &mut Vec<u8>, start: usize, max: usize) {
    if max == 0 {
        return;
    }
    // A character starts at every byte that is not a continuation byte.
    let cut = out[start..]
        .iter()
        .enumerate()
        .filter(|(_, b)| (**b & 0xC0) != 0x80)
        .nth(max)
        .map(|(at, _)| at);
    if let Some(at) = cut {
        out.truncate(start + at);
    }
}

/// Appends `value` with its line breaks made spaces: a line is a line.
fn push_one_line(out: &mut Vec<u8>, value: &[u8]) {
    let start = out.len();
    out.extend_from_slice(value);
    if value.contains(&b'\n') {
        for b in &mut out[start..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
    }
}

/// A JSON string of the UTF-8 text `value`.
fn json_string(value: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if b < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xF)]);
            }
            // Multi-byte characters are copied as they are.
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// Envoy's default START_TIME: `2026-12-02T19:17:14.123Z` (UTC).
fn write_time(t: SystemTime, out: &mut Vec<u8>) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // Lines come in thousands a second: the date and time up to the
    // second are written once per second and thread.
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, Vec<u8>)> =
            const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
    }
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *cached = secs;
            text.clear();
            let (days, rest) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = civil_from_days(days as i64);
            let parts = [
                (y.max(0) as u64, 4, b'-'),
                (m.into(), 2, b'-'),
                (d.into(), 2, b'T'),
                (rest / 3600, 2, b':'),
                (rest / 60 % 60, 2, b':'),
                (rest % 60, 2, b'.'),
            ];
            for (value, width, then) in parts {
                push_padded(text, value, width);
                text.push(then);
            }
        }
        out.extend_from_slice(text);
    });
    push_padded(out, since.subsec_millis().into(), 3);
    out.push(b'Z');
}

// Numbers and addresses are written by hand: `fmt` (padding, dynamic
// dispatch) was most of a line's cost.

/// The decimal digits of `value`.
fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(value).as_bytes());
}

/// The decimal digits of `value`, zero-padded to `width`.
fn push_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(value);
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
}

/// `ip:port` (`[ip]:port` for IPv6), or the IP alone.
fn push_addr(out: &mut Vec<u8>, addr: std::net::SocketAddr, port: bool) {
    use std::io::Write as _;
    match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            // Up to `255.255.255.255:65535`: each number's digits are
            // written from the right into a small buffer, copied once.
            let mut put = |value: u32, then: Option<u8>| {
                let mut digits = [0u8; 6];
                let (mut at, mut rest) = (5, value);
                loop {
                    digits[at - 1] = b'0' + (rest % 10) as u8;
                    at -= 1;
                    rest /= 10;
                    if rest == 0 {
                        break;
                    }
                }
                let end = match then {
                    Some(byte) => {
                        digits[5] = byte;
                        6
                    }
                    None => 5,
                };
                out.extend_from_slice(&digits[at..end]);
            };
            let [a, b, c, d] = ip.octets();
            put(a.into(), Some(b'.'));
            put(b.into(), Some(b'.'));
            put(c.into(), Some(b'.'));
            if port {
                put(d.into(), Some(b':'));
                put(addr.port().into(), None);
            } else {
                put(d.into(), None);
            }
        }
        std::net::IpAddr::V6(_) if port => {
            let _ = write!(out, "{addr}");
        }
        std::net::IpAddr::V6(ip) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderMap;

    use super::*;
    use crate::{
        access_log::entry::{Headers, Http},
        l7::reply::Flag,
    };

    fn token(operator: &str, argument: &str, alternative: &str) -> FormatToken {
        FormatToken {
            operator: operator.into(),
            argument: argument.into(),
            alternative: alternative.into(),
            ..Default::default()
        }
    }

    fn literal(text: &str) -> FormatToken {
        FormatToken {
            literal: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn times_are_envoys_default_in_utc() {
        let mut out = Vec::new();
        write_time(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_239_034_123),
            &mut out,
        );
        assert_eq!(out, b"2026-12-02T19:17:14.123Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn numbers_and_addresses_are_written_as_fmt_would() {
        let mut out = Vec::new();
        for v in [0, 7, 10, 65_535, u64::MAX] {
            out.clear();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        out.clear();
        push_padded(&mut out, 7, 3);
        push_padded(&mut out, 1234, 2);
        assert_eq!(out, b"0071234");
        for a in [
            "10.0.0.1:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[fe80::1]:443",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            out.clear();
            push_addr(&mut out, addr, true);
            assert_eq!(out, a.as_bytes());
            out.clear();
            push_addr(&mut out, addr, false);
            assert_eq!(out, addr.ip().to_string().as_bytes());
        }
    }

    #[test]
    fn cuts_count_characters_not_bytes() {
        let mut out = b"kept:".to_vec();
        out.extend_from_slice("héllo".as_bytes());
        truncate(&mut out, 5, 2);
        assert_eq!(out, "kept:hé".as_bytes());
        truncate(&mut out, 5, 0);
        assert_eq!(out, "kept:hé".as_bytes());
        let mut json = Vec::new();
        json_string("a\"\\\n\u{1}é".as_bytes(), &mut json);
        assert_eq!(json, "\"a\\\"\\\\\\n\\u0001é\"".as_bytes());
    }

    #[test]
    fn text_renders_values_and_dashes() {
        let mut map = HeaderMap::new();
        map.insert("user-agent", "curl/8".parse().unwrap());
        map.insert("x-other", "x".parse().unwrap());
        let headers = Headers::all(&map);
        let http = Http {
            method: "GET",
            path: "/a?b=1",
            authority: "reviews:9080",
            headers: Some(&headers),
            response_headers: None,
            status: 403,
            grpc_status: None,
        };
        let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::from_millis(12));
        e.http = Some(http);
        e.protocol = "HTTP/1.1";
        e.flags.set(Flag::RbacDenied);
        e.bytes_sent = 19;
        e.downstream_remote = Some("10.0.0.1:40000".parse().unwrap());
        let format = Format::text(&[
            literal("\""),
            token("REQ", ":method", ""),
            literal(" "),
            token("REQ", "x-envoy-original-path", ":path"),
            literal(" "),
            token("PROTOCOL", "", ""),
            literal("\" "),
            token("RESPONSE_CODE", "", ""),
            literal(" "),
            token("RESPONSE_FLAGS", "", ""),
            literal(" "),
            token("RESPONSE_CODE_DETAILS", "", ""),
            literal(" \""),
            token("REQ", "user-agent", ""),
            literal("\" \""),
            token("REQ", "x-request-id", ""),
            literal("\" "),
            token("DURATION", "", ""),
            literal(" "),
            token("UPSTREAM_HOST", "", ""),
            literal(" "),
            token("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "", ""),
        ])
        .unwrap();
        assert_eq!(
            format.render(&e),
            "\"GET /a?b=1 HTTP/1.1\" 403 RBAC rbac_access_denied_matched_policy[none] \"curl/8\" \"-\" 12 - 10.0.0.1\n"
        );
        // What a logged request keeps for this format: the headers it
        // prints, not the pseudo-headers of the request line.
        assert_eq!(
            format.request_headers(),
            ["x-envoy-original-path", "user-agent", "x-request-id"].map(HeaderName::from_static)
        );
        assert_eq!(
            Headers::capture(&map, format.request_headers(), &[])
                .get(&HeaderName::from_static("x-other")),
            None
        );
        let mut short = token("REQ", ":path", "");
        short.max_length = 2;
        assert_eq!(Format::text(&[short]).unwrap().render(&e), "/a\n");
        let err = Format::text(&[token("BOGUS", "", "")]).unwrap_err();
        assert!(err.contains("%BOGUS%"), "{err}");
    }

    #[test]
    fn a_line_never_breaks() {
        let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
        e.transport_failure = "reset\nby peer";
        let format = Format::text(&[
            literal("a\nb "),
            token("UPSTREAM_TRANSPORT_FAILURE_REASON", "", ""),
        ])
        .unwrap();
        assert_eq!(format.render(&e), "a b reset by peer\n");
        let mut out = b"kept\n".to_vec();
        format.render_into(&e, &mut out);
        assert_eq!(out, b"kept\na b reset by peer\n");
    }

    #[test]
    fn json_has_numbers_strings_and_nulls() {
        let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::from_millis(3));
        e.bytes_received = 7;
        e.upstream_cluster = "outbound|80||a\"b";
        let format = Format::json(&[
            JsonField {
                key: "response_code".into(),
                value: vec![token("RESPONSE_CODE", "", "")],
            },
            JsonField {
                key: "method".into(),
                value: vec![token("REQ", ":method", "")],
            },
            JsonField {
                key: "bytes_received".into(),
                value: vec![token("BYTES_RECEIVED", "", "")],
            },
            JsonField {
                key: "upstream_cluster".into(),
                value: vec![token("UPSTREAM_CLUSTER", "", "")],
            },
            JsonField {
                key: "mixed".into(),
                value: vec![literal("took "), token("DURATION", "", "")],
            },
        ])
        .unwrap();
        let line = format.render(&e);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["response_code"], 0);
        assert!(v["method"].is_null());
        assert_eq!(v["bytes_received"], 7);
        assert_eq!(v["upstream_cluster"], "outbound|80||a\"b");
        assert_eq!(v["mixed"], "took 3");
    }
}
