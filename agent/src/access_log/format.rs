//! Renders an [`Entry`] with a format weft-control parsed (Envoy's
//! command operators, see `control/src/model/access_log/format.rs`): text,
//! one line, `-` for what is missing; or JSON, one object per line, with
//! numbers for numeric operators standing alone and `null` for what is
//! missing, as Envoy's JSON format does.

use std::{fmt::Write as _, time::SystemTime};

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
    fn render(&self, e: &Entry<'_>, out: &mut String) -> bool {
        fn some(out: &mut String, value: impl std::fmt::Display) -> bool {
            let _ = write!(out, "{value}");
            true
        }
        fn number(out: &mut String, value: u64) -> bool {
            push_u64(out, value);
            true
        }
        fn text(out: &mut String, value: &str) -> bool {
            if value.is_empty() {
                return false;
            }
            out.push_str(value);
            true
        }
        fn addr(out: &mut String, value: Option<std::net::SocketAddr>, port: bool) -> bool {
            match value {
                Some(a) => {
                    push_addr(out, a, port);
                    true
                }
                None => false,
            }
        }
        fn identity(out: &mut String, value: Option<&Identity>) -> bool {
            value.is_some_and(|id| some(out, id))
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
            Op::ResponseFlags => some(out, e.flags),
            Op::ResponseCodeDetails => text(out, &e.code_details()),
            Op::ConnectionTerminationDetails => false,
            Op::UpstreamTransportFailureReason => text(out, e.transport_failure),
            Op::BytesReceived => number(out, e.bytes_received),
            Op::BytesSent => number(out, e.bytes_sent),
            Op::Duration => number(out, e.duration.as_millis() as u64),
            Op::UpstreamHost => addr(out, e.upstream_host, true),
            Op::UpstreamCluster => text(out, e.upstream_cluster),
            Op::UpstreamLocalAddress => addr(out, e.upstream_local, true),
            Op::UpstreamRequestAttemptCount => number(out, e.attempts.into()),
            Op::DownstreamLocalAddress => addr(out, e.downstream_local, true),
            Op::DownstreamLocalAddressWithoutPort => addr(out, e.downstream_local, false),
            Op::DownstreamRemoteAddress => addr(out, e.downstream_remote, true),
            Op::DownstreamRemoteAddressWithoutPort => addr(out, e.downstream_remote, false),
            Op::DownstreamPeerUriSan => identity(out, e.peer_identity),
            Op::DownstreamLocalUriSan => identity(out, e.local_identity),
            Op::RequestedServerName => text(out, e.sni),
            Op::RouteName => text(out, e.route),
            Op::ConnectionId => match e.connection_id {
                Some(id) => number(out, id),
                None => false,
            },
            Op::GrpcStatus => match e.http.as_ref().and_then(|h| h.grpc_status) {
                Some(s) => number(out, s.into()),
                None => false,
            },
            Op::Hostname => text(out, hostname()),
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
        let mut out = String::with_capacity(384);
        self.render_into(e, &mut out);
        out
    }

    /// Appends one line, with its `\n`, to `out`.
    pub fn render_into(&self, e: &Entry<'_>, out: &mut String) {
        match &self.layout {
            Layout::Text(pieces) => {
                let start = out.len();
                render_pieces(pieces, e, out);
                // A line is a line: never let a value break it.
                if out[start..].contains('\n') {
                    let line = out.split_off(start).replace('\n', " ");
                    out.push_str(&line);
                }
            }
            Layout::Json(fields) => {
                out.push('{');
                let mut value = String::new();
                for (i, (key, pieces)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(key, out);
                    out.push(':');
                    value.clear();
                    match pieces.as_slice() {
                        [Piece::Op(op, max)] => {
                            if !op.render(e, &mut value) {
                                out.push_str("null");
                                continue;
                            }
                            truncate(&mut value, *max);
                            if op.numeric() {
                                out.push_str(&value);
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
                out.push('}');
            }
        }
        out.push('\n');
    }
}

fn render_pieces(pieces: &[Piece], e: &Entry<'_>, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Literal(text) => out.push_str(text),
            Piece::Op(op, max) => {
                let start = out.len();
                if op.render(e, out) {
                    if *max > 0 {
                        let mut value = out.split_off(start);
                        truncate(&mut value, *max);
                        out.push_str(&value);
                    }
                } else {
                    out.push('-');
                }
            }
        }
    }
}

/// Cuts to `max` characters (0: no limit).
fn truncate(value: &mut String, max: usize) {
    if max > 0
        && let Some((at, _)) = value.char_indices().nth(max)
    {
        value.truncate(at);
    }
}

fn json_string(value: &str, out: &mut String) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Envoy's default START_TIME: `2026-12-02T19:17:14.123Z` (UTC).
fn write_time(t: SystemTime, out: &mut String) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // Lines come in thousands a second: the date and time up to the
    // second are written once per second and thread.
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *cached = secs;
            text.clear();
            let (days, rest) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = civil_from_days(days as i64);
            let parts = [
                (y.max(0) as u64, 4, '-'),
                (m.into(), 2, '-'),
                (d.into(), 2, 'T'),
                (rest / 3600, 2, ':'),
                (rest / 60 % 60, 2, ':'),
                (rest % 60, 2, '.'),
            ];
            for (value, width, then) in parts {
                push_padded(text, value, width);
                text.push(then);
            }
        }
        out.push_str(text);
    });
    push_padded(out, since.subsec_millis().into(), 3);
    out.push('Z');
}

// Numbers and addresses are written by hand: `fmt` (padding, dynamic
// dispatch) was most of a line's cost.

/// The decimal digits of `value`.
fn push_u64(out: &mut String, value: u64) {
    push_padded(out, value, 1);
}

/// The decimal digits of `value`, zero-padded to `width`.
fn push_padded(out: &mut String, value: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(value);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// `ip:port` (`[ip]:port` for IPv6), or the IP alone.
fn push_addr(out: &mut String, addr: std::net::SocketAddr, port: bool) {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            // `255.255.255.255:65535` at most, written in place and
            // copied once.
            let mut text = [0u8; 21];
            let mut len = 0;
            let mut put = |value: u32, then: u8| {
                let mut digits = [0u8; 5];
                let (mut at, mut rest) = (digits.len(), value);
                loop {
                    at -= 1;
                    digits[at] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                    if rest == 0 {
                        break;
                    }
                }
                for digit in &digits[at..] {
                    text[len] = *digit;
                    len += 1;
                }
                if then != 0 {
                    text[len] = then;
                    len += 1;
                }
            };
            let [a, b, c, d] = ip.octets();
            put(a.into(), b'.');
            put(b.into(), b'.');
            put(c.into(), b'.');
            put(d.into(), if port { b':' } else { 0 });
            if port {
                put(addr.port().into(), 0);
            }
            out.push_str(std::str::from_utf8(&text[..len]).unwrap_or_default());
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
        let mut out = String::new();
        write_time(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_239_034_123),
            &mut out,
        );
        assert_eq!(out, "2026-12-02T19:17:14.123Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn numbers_and_addresses_are_written_as_fmt_would() {
        let mut out = String::new();
        for v in [0, 7, 10, 65_535, u64::MAX] {
            out.clear();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
        out.clear();
        push_padded(&mut out, 7, 3);
        push_padded(&mut out, 1234, 2);
        assert_eq!(out, "0071234");
        for a in [
            "10.0.0.1:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[fe80::1]:443",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            out.clear();
            push_addr(&mut out, addr, true);
            assert_eq!(out, a);
            out.clear();
            push_addr(&mut out, addr, false);
            assert_eq!(out, addr.ip().to_string());
        }
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
            Headers::capture(&map, format.request_headers())
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
        let mut out = String::from("kept\n");
        format.render_into(&e, &mut out);
        assert_eq!(out, "kept\na b reset by peer\n");
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
