//! The HTTP-facing parsers: the agent's L7 (`policy::http` path
//! normalisation, path templates and `when` keys; `retryOn`; the TLS
//! ClientHello's SNI) and the control plane's access-log formats and CEL
//! filters (`model::access_log::{format, cel}`).
//!
//! Input: the first line names the parser, the rest is its input:
//! `cel`, `format`, `json_format`, `path`, `template` (the template, then
//! paths, one a line), `attr` (a key, then a request head, see
//! `weft_fuzz::Head`), `retry`, or `sni` (raw bytes). Any other first line:
//! every text parser on the whole input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_agent::{
    l7::{route::RetryOn, sni},
    policy::http::{self as policy_http, AttributeKey, PathTemplate},
};
use weft_control::model::access_log::{cel, format};
use weft_fuzz::{Head, first_line};

fuzz_target!(|data: &[u8]| {
    let (kind, rest) = first_line(data);
    if kind == b"sni" {
        return sni_hello(rest);
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match kind {
        b"cel" => {
            let _ = cel::parse(text);
        }
        b"format" => {
            let _ = format::parse(text);
        }
        b"json_format" => {
            let _ = format::parse_json(text);
        }
        b"path" => path(text),
        b"template" => template(text),
        b"attr" => attr(rest),
        b"retry" => retry(text),
        _ => {
            let Ok(all) = std::str::from_utf8(data) else {
                return;
            };
            let _ = cel::parse(all);
            let _ = format::parse(all);
            let _ = format::parse_json(all);
            path(all);
            retry(all);
        }
    }
});

/// Istio's normalisation is a fixed point: a normalised path normalises
/// to itself (authorization and routing see one path).
fn path(raw: &str) {
    if let Ok(normal) = policy_http::normalize_path(raw) {
        assert!(normal.starts_with('/'), "{raw:?} -> {normal:?}");
        assert_eq!(
            policy_http::normalize_path(&normal).as_deref(),
            Ok(normal.as_str()),
            "normalising {raw:?} twice"
        );
    }
}

fn template(text: &str) {
    let mut lines = text.lines();
    let template = PathTemplate::parse(lines.next().unwrap_or_default());
    for path in lines.take(16) {
        let _ = template.matches(path);
    }
}

fn attr(rest: &[u8]) {
    let (key, head) = first_line(rest);
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let Some(head) = Head::parse(head) else {
        return;
    };
    let key = AttributeKey::parse(key);
    let path = policy_http::normalize_path(head.uri.path()).unwrap_or_default();
    let request = policy_http::Request {
        method: head.method.as_str(),
        host: head.uri.authority().map_or("", |a| a.as_str()),
        path: &path,
        headers: &head.headers,
        auth: None,
        sni: Some("web.default.svc.cluster.local"),
    };
    let _ = key.values(&request);
}

fn retry(text: &str) {
    let (on, codes) = RetryOn::parse(text);
    if !codes.is_empty() {
        assert!(on.intersects(RetryOn::RETRIABLE_STATUS_CODES));
    }
}

fn sni_hello(bytes: &[u8]) {
    if let sni::Parsed::Sni(name) = sni::parse(bytes) {
        assert_eq!(name, name.to_ascii_lowercase());
    }
}
