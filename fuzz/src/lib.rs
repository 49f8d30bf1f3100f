//! Helpers shared by weft's fuzz targets (`fuzz_targets/`).
//!
//! Targets that take a request read their input as an HTTP/1-style head,
//! so that seeds are readable text:
//!
//! ```text
//! CONNECT 10.0.1.2:8080
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//! ```
//!
//! The first line is the method and the request target; each further line
//! up to an empty one is `name: value`. Parts that HTTP/2 or hyper would
//! refuse (a bad method, URI, header name or value) are dropped here, as
//! they never reach weft's code.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

/// A request head read from fuzz input.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// What follows the empty line after the headers (or nothing).
    pub body: Vec<u8>,
}

impl Head {
    /// Reads `data` as a head; `None` when the first line has no valid
    /// method and URI.
    pub fn parse(data: &[u8]) -> Option<Head> {
        let mut lines = data.split(|&b| b == b'\n');
        let first = trim_cr(lines.next()?);
        let space = first.iter().position(|&b| b == b' ')?;
        let method = Method::from_bytes(&first[..space]).ok()?;
        let uri = Uri::try_from(&first[space + 1..]).ok()?;
        let mut headers = HeaderMap::new();
        let mut consumed = first.len() + 1;
        for line in lines.by_ref() {
            consumed += line.len() + 1;
            let line = trim_cr(line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let value = trim_ows(&line[colon + 1..]);
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        let body = data.get(consumed..).unwrap_or_default().to_vec();
        Some(Head {
            method,
            uri,
            headers,
            body,
        })
    }
}

/// Splits `data` at its first newline: the first line and the rest.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (trim_cr(&data[..i]), &data[i + 1..]),
        None => (data, &[]),
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}
