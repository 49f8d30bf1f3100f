//! Trace context on the wire: W3C Trace Context (`traceparent`,
//! `tracestate`) and Zipkin's B3 (the `x-b3-*` headers and the single
//! `b3` header), read from a request and written back with the span the
//! agent records as the new parent. `tracestate` and `baggage` pass
//! through untouched.

use http::{HeaderMap, HeaderName, HeaderValue};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static B3: HeaderName = HeaderName::from_static("b3");
static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// What a request says about the trace it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Incoming {
    /// The trace and the caller's span, if the request carries them.
    pub parent: Option<Parent>,
    /// The caller's sampling decision; `None`: the agent decides.
    pub sampled: Option<bool>,
}

/// The span a request continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
}

/// The span the agent records, as it is written into the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl Incoming {
    /// Reads `traceparent` first (W3C), then B3 (single, then multi).
    /// Malformed headers count as absent, as in Envoy: the request then
    /// starts a new trace.
    pub fn read(headers: &HeaderMap) -> Incoming {
        if let Some(parsed) = headers
            .get(&TRACEPARENT)
            .and_then(|v| traceparent(v.as_bytes()))
        {
            return parsed;
        }
        if let Some(parsed) = headers.get(&B3).and_then(|v| b3_single(v.as_bytes())) {
            return parsed;
        }
        b3_multi(headers)
    }
}

impl SpanContext {
    /// A new span under `incoming` (a new trace when it has none), sampled
    /// as the caller decided, else as `decide` says.
    pub fn child_of(incoming: &Incoming, decide: impl FnOnce() -> bool) -> SpanContext {
        SpanContext {
            trace_id: incoming
                .parent
                .map_or_else(|| fastrand::u128(1..), |p| p.trace_id),
            span_id: fastrand::u64(1..),
            sampled: incoming.sampled.unwrap_or_else(decide),
        }
    }

    /// `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// Writes this span into a request as its callee's parent: always
    /// `traceparent` and the B3 multi headers (apps propagate one or the
    /// other), and `b3` when the request came with it. `parent` is the
    /// caller's span (`x-b3-parentspanid`).
    pub fn write(&self, headers: &mut HeaderMap, parent: Option<u64>) {
        let mut put = |name: &HeaderName, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        put(&TRACEPARENT, self.traceparent());
        let sampled = if self.sampled { "1" } else { "0" };
        put(&B3_TRACE_ID, format!("{:032x}", self.trace_id));
        put(&B3_SPAN_ID, format!("{:016x}", self.span_id));
        put(&B3_SAMPLED, sampled.to_string());
        match parent {
            Some(parent) => put(&B3_PARENT_SPAN_ID, format!("{parent:016x}")),
            None => {
                headers.remove(&B3_PARENT_SPAN_ID);
            }
        }
        // The debug flag is the caller's; the decision is in `sampled`.
        headers.remove(&B3_FLAGS);
        if headers.contains_key(&B3) {
            let mut single = format!("{:032x}-{:016x}-{sampled}", self.trace_id, self.span_id);
            if let Some(parent) = parent {
                single.push_str(&format!("-{parent:016x}"));
            }
            if let Ok(value) = HeaderValue::from_str(&single) {
                headers.insert(&B3, value);
            }
        }
    }
}

/// Lower-case hex of exactly `len` digits, not all zero.
fn hex_id(text: &[u8], len: usize) -> Option<u128> {
    if text.len() != len
        || !text
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let value = u128::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()?;
    (value != 0).then_some(value)
}

/// Two lower-case hex digits.
fn lower_hex_byte(text: &[u8]) -> Option<u8> {
    if !text
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()
}

/// A B3 trace id: 16 or 32 hex digits (B3 also allows upper case).
fn b3_trace_id(text: &[u8]) -> Option<u128> {
    let lower = text.to_ascii_lowercase();
    hex_id(&lower, 32).or_else(|| hex_id(&lower, 16))
}

fn b3_span_id(text: &[u8]) -> Option<u64> {
    hex_id(&text.to_ascii_lowercase(), 16).map(|v| v as u64)
}

/// W3C `traceparent`: `version-traceid-parentid-flags`. Version `ff` is
/// invalid; a later version may append fields after the four.
fn traceparent(value: &[u8]) -> Option<Incoming> {
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let version = lower_hex_byte(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex_id(&value[3..35], 32)?;
    let span_id = hex_id(&value[36..52], 16)? as u64;
    let flags = lower_hex_byte(&value[53..55])?;
    Some(Incoming {
        parent: Some(Parent { trace_id, span_id }),
        sampled: Some(flags & 1 == 1),
    })
}

/// B3's sampling state: `1`, `0`, `d` (debug: sampled), and the legacy
/// `true`/`false`.
fn b3_sampled(value: &[u8]) -> Option<bool> {
    match value {
        b"1" | b"d" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or only the
/// sampling state (`b3: 0`).
fn b3_single(value: &[u8]) -> Option<Incoming> {
    let parts: Vec<&[u8]> = value.split(|b| *b == b'-').collect();
    match parts.as_slice() {
        [sampled] => Some(Incoming {
            parent: None,
            sampled: Some(b3_sampled(sampled)?),
        }),
        [trace, span, rest @ ..] if rest.len() <= 2 => {
            let sampled = match rest.first() {
                Some(s) => Some(b3_sampled(s)?),
                None => None,
            };
            Some(Incoming {
                parent: Some(Parent {
                    trace_id: b3_trace_id(trace)?,
                    span_id: b3_span_id(span)?,
                }),
                sampled,
            })
        }
        _ => None,
    }
}

fn b3_multi(headers: &HeaderMap) -> Incoming {
    let get = |name: &HeaderName| headers.get(name).map(|v| v.as_bytes());
    let debug = get(&B3_FLAGS) == Some(b"1");
    let sampled = if debug {
        Some(true)
    } else {
        get(&B3_SAMPLED).and_then(b3_sampled)
    };
    let parent = match (
        get(&B3_TRACE_ID).and_then(b3_trace_id),
        get(&B3_SPAN_ID).and_then(b3_span_id),
    ) {
        (Some(trace_id), Some(span_id)) => Some(Parent { trace_id, span_id }),
        _ => None,
    };
    Incoming { parent, sampled }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn traceparent_is_read_with_its_sampled_flag() {
        let incoming = Incoming::read(&headers(&[(
            "traceparent",
            &format!("00-{TRACE}-00f067aa0ba902b7-01"),
        )]));
        assert_eq!(
            incoming.parent,
            Some(Parent {
                trace_id: u128::from_str_radix(TRACE, 16).unwrap(),
                span_id: 0x00f0_67aa_0ba9_02b7,
            })
        );
        assert_eq!(incoming.sampled, Some(true));
        let unsampled = Incoming::read(&headers(&[(
            "traceparent",
            &format!("00-{TRACE}-00f067aa0ba902b7-00"),
        )]));
        assert_eq!(unsampled.sampled, Some(false));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("ff-{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            format!("00-{TRACE}-00f067aa0ba902b7"),
            "garbage".into(),
        ] {
            assert_eq!(
                Incoming::read(&headers(&[("traceparent", &bad)])),
                Incoming::default(),
                "{bad}"
            );
        }
        // A later version may carry more fields.
        let later = Incoming::read(&headers(&[(
            "traceparent",
            &format!("01-{TRACE}-00f067aa0ba902b7-01-more"),
        )]));
        assert!(later.parent.is_some());
    }

    #[test]
    fn b3_multi_and_single_headers_are_read() {
        let multi = Incoming::read(&headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00F067AA0BA902B7"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(multi.parent.unwrap().trace_id, 0xa3ce_929d_0e0e_4736);
        assert_eq!(multi.sampled, Some(false));
        let debug = Incoming::read(&headers(&[("x-b3-flags", "1"), ("x-b3-sampled", "0")]));
        assert_eq!((debug.parent, debug.sampled), (None, Some(true)));
        let single = Incoming::read(&headers(&[(
            "b3",
            &format!("{TRACE}-00f067aa0ba902b7-1-05e3ac9a4f6e3b90"),
        )]));
        assert_eq!(single.parent.unwrap().span_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(single.sampled, Some(true));
        let deny = Incoming::read(&headers(&[("b3", "0")]));
        assert_eq!((deny.parent, deny.sampled), (None, Some(false)));
        let undecided = Incoming::read(&headers(&[("b3", &format!("{TRACE}-00f067aa0ba902b7"))]));
        assert_eq!(undecided.sampled, None);
    }

    #[test]
    fn traceparent_wins_over_b3() {
        let incoming = Incoming::read(&headers(&[
            ("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-00")),
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ]));
        assert_eq!(incoming.sampled, Some(false));
    }

    #[test]
    fn a_child_keeps_the_trace_and_the_callers_decision() {
        let incoming = Incoming::read(&headers(&[(
            "traceparent",
            &format!("00-{TRACE}-00f067aa0ba902b7-01"),
        )]));
        let child = SpanContext::child_of(&incoming, || false);
        assert_eq!(child.trace_id, incoming.parent.unwrap().trace_id);
        assert_ne!(child.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(child.sampled, "the caller's decision, not ours");
        let root = SpanContext::child_of(&Incoming::default(), || true);
        assert!(root.sampled && root.trace_id != 0);
    }

    #[test]
    fn written_headers_read_back_as_the_same_span() {
        let span = SpanContext {
            trace_id: 0x1234,
            span_id: 0x99,
            sampled: true,
        };
        let mut map = headers(&[("b3", "1"), ("x-b3-flags", "1"), ("tracestate", "k=v")]);
        span.write(&mut map, Some(0x42));
        assert_eq!(
            map["traceparent"],
            "00-00000000000000000000000000001234-0000000000000099-01"
        );
        assert_eq!(map["x-b3-parentspanid"], "0000000000000042");
        assert_eq!(
            map["b3"],
            "00000000000000000000000000001234-0000000000000099-1-0000000000000042"
        );
        assert!(!map.contains_key("x-b3-flags"));
        assert_eq!(map["tracestate"], "k=v");
        map.remove("traceparent");
        map.remove("b3");
        let back = Incoming::read(&map);
        assert_eq!(
            back.parent,
            Some(Parent {
                trace_id: 0x1234,
                span_id: 0x99
            })
        );
        assert_eq!(back.sampled, Some(true));
    }
}
