//! The inbound side of HBONE (port 15008): an HTTP/2 request's method and
//! authority as `hbone::connect_target` reads them (a CONNECT to `ip:port`
//! of the destination pod, or the refusal and its status), and the trace
//! context of the CONNECT (`traceparent`, `b3`, `x-b3-*`) as the tracer
//! reads it and writes the agent's span back for the next hop.
//!
//! Input: a request head (see `weft_fuzz::Head`), e.g. `CONNECT
//! 10.0.1.2:8080` then `name: value` lines.
#![no_main]

use std::net::IpAddr;

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use weft_agent::{
    proxy::hbone,
    trace::context::{Incoming, Parent, SpanContext},
};
use weft_fuzz::Head;

fuzz_target!(|data: &[u8]| {
    let Some(head) = Head::parse(data) else {
        return;
    };
    let served: [IpAddr; 2] = [[10, 0, 1, 2].into(), "fd00::2".parse().expect("an address")];
    match hbone::connect_target(&head.method, &head.uri, &served) {
        Ok(target) => assert!(served.contains(&target.ip())),
        Err(bad) => {
            assert!(bad.status().is_client_error());
            assert!(!bad.to_string().is_empty());
        }
    }

    let incoming = Incoming::read(&head.headers);
    if let Some(parent) = incoming.parent {
        assert_ne!(parent.trace_id, 0, "an all-zero trace id is invalid");
    }
    // The span written into the request is what the next hop reads.
    let span = SpanContext::child_of(&incoming, || true);
    let mut headers: HeaderMap = head.headers.clone();
    let caller = incoming.parent.map(|p| p.span_id);
    span.write(&mut headers, caller);
    let next = Incoming::read(&headers);
    assert_eq!(
        next.parent,
        Some(Parent {
            trace_id: span.trace_id,
            span_id: span.span_id,
        })
    );
    assert_eq!(next.sampled, Some(span.sampled));
});
