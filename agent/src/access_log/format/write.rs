//! The bytes of a line: values cut, kept on one line or quoted for JSON,
//! and the numbers, addresses and times written by hand (`fmt`'s padding
//! and dynamic dispatch were most of a line's cost).

use std::time::SystemTime;

use weft_proto::time_format;

/// Cuts the UTF-8 text `out[start..]` to `max` characters (0: no limit).
pub(super) fn truncate(out: &mut Vec<u8>, start: usize, max: usize) {
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
pub(super) fn push_one_line(out: &mut Vec<u8>, value: &[u8]) {
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
pub(super) fn json_string(value: &[u8], out: &mut Vec<u8>) {
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
pub(super) fn write_time(t: SystemTime, out: &mut Vec<u8>) {
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
            let (y, m, d) = time_format::civil_from_days(days as i64);
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

/// The decimal digits of `value`.
pub(super) fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(value).as_bytes());
}

/// The low `digits` hexadecimal digits of `value`, lower case, zero-padded.
pub(super) fn push_hex(out: &mut Vec<u8>, value: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for at in (0..digits).rev() {
        out.push(HEX[((value >> (4 * at)) & 0xf) as usize]);
    }
}

/// The decimal digits of `value`, zero-padded to `width`.
pub(super) fn push_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(value);
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
}

/// `ip:port` (`[ip]:port` for IPv6), or the IP alone.
pub(super) fn push_addr(out: &mut Vec<u8>, addr: std::net::SocketAddr, port: bool) {
    use std::io::Write as _;
    match addr {
        std::net::SocketAddr::V4(v4) => {
            // Up to `255.255.255.255:65535`, written into a small buffer
            // and copied once; octets from a table.
            let mut text = [0u8; 21];
            let mut at = 0;
            for octet in v4.ip().octets() {
                let (len, digits) = OCTETS[usize::from(octet)];
                text[at..at + 3].copy_from_slice(&digits);
                at += usize::from(len);
                text[at] = b'.';
                at += 1;
            }
            // The last octet's dot is the port's colon, or cut.
            at -= 1;
            if port {
                text[at] = b':';
                at += 1;
                at += put_digits(&mut text[at..], v4.port());
            }
            out.extend_from_slice(&text[..at]);
        }
        std::net::SocketAddr::V6(_) if port => {
            let _ = write!(out, "{addr}");
        }
        std::net::SocketAddr::V6(v6) => {
            let _ = write!(out, "{}", v6.ip());
        }
    }
}

/// The digits of each octet, and how many of them count.
static OCTETS: [(u8, [u8; 3]); 256] = {
    let mut table = [(0, [0; 3]); 256];
    let mut i = 0;
    while i < 256 {
        let (a, b, c) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        table[i] = match i {
            0..=9 => (1, [b'0' + c, 0, 0]),
            10..=99 => (2, [b'0' + b, b'0' + c, 0]),
            _ => (3, [b'0' + a, b'0' + b, b'0' + c]),
        };
        i += 1;
    }
    table
};

/// Writes the decimal digits of `value` at the start of `to`, which has
/// room for five; returns how many.
pub(super) fn put_digits(to: &mut [u8], value: u16) -> usize {
    let len = match value {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1_000..=9_999 => 4,
        _ => 5,
    };
    let mut rest = value;
    for at in (0..len).rev() {
        to[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    len
}

pub(super) fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}
