//! `serve --call URL`: a request for `/call` is answered by a GET to URL
//! that carries on the request's trace context headers, as Istio asks
//! applications to, so the mesh's spans join into one trace.

use std::time::Duration;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::conn::{self, RequestSpec, Target};
use crate::headers::HeaderArg;

/// The path answered by calling the upstream.
pub const CALL_PATH: &str = "/call";

/// The headers copied from the request to the upstream call, when present
/// (Istio's list of what applications must propagate).
pub const PROPAGATED: [&str; 13] = [
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "baggage",
];

/// How long connecting, and then the request and its response, may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of the upstream's body is kept.
const BODY_KEPT: usize = 1 << 20;

/// `--call`'s URL: `http://host[:port][/path]`.
pub fn parse_call(arg: &str) -> Result<Target, String> {
    Target::parse(arg).map_err(|e| format!("{e:#}"))
}

/// The reply when the upstream answered.
#[derive(Debug, Serialize)]
struct Called<'a> {
    server: &'a str,
    upstream_status: u16,
    /// The upstream's body: its JSON, else its text.
    upstream: Value,
}

/// The reply when it did not.
#[derive(Debug, Serialize)]
struct Failed<'a> {
    server: &'a str,
    error: String,
}

/// The headers of `incoming` to carry on, every value of each.
fn propagated(incoming: &HeaderMap) -> Vec<HeaderArg> {
    PROPAGATED
        .iter()
        .flat_map(|name| incoming.get_all(*name).iter().map(move |v| (name, v)))
        .map(|(name, value)| HeaderArg {
            name: http::HeaderName::from_static(name),
            value: value.clone(),
        })
        .collect()
}

/// GETs `target` with the trace context of `incoming`, as server `server`:
/// the status and the JSON body (with its newline) of the reply.
pub async fn call(server: &str, target: &Target, incoming: &HeaderMap) -> (StatusCode, Vec<u8>) {
    let (status, json) = match get(target, incoming).await {
        Ok((status, body)) => {
            let upstream = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let called = Called {
                server,
                upstream_status: status.as_u16(),
                upstream,
            };
            (status, serde_json::to_vec(&called))
        }
        Err(e) => {
            let failed = Failed {
                server,
                error: format!("calling http://{}{}: {e:#}", target.addr, target.path),
            };
            (StatusCode::BAD_GATEWAY, serde_json::to_vec(&failed))
        }
    };
    let mut json = json.expect("plain data serialises");
    json.push(b'\n');
    (status, json)
}

async fn get(target: &Target, incoming: &HeaderMap) -> Result<(StatusCode, Bytes)> {
    let spec = RequestSpec::new(
        Method::GET,
        target,
        &propagated(incoming),
        Bytes::new(),
        false,
    )?;
    let mut c = conn::connect(&target.addr, false, CALL_TIMEOUT).await?;
    let answer = tokio::time::timeout(
        CALL_TIMEOUT,
        conn::exchange(&mut c, spec.build(), BODY_KEPT),
    )
    .await
    .map_err(|_| anyhow!("no response within {CALL_TIMEOUT:?}"))??;
    Ok((answer.status, answer.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_trace_context_headers_are_carried_on() {
        let mut incoming = HeaderMap::new();
        for (k, v) in [
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-b3-sampled", "1"),
            ("baggage", "a=1"),
            ("baggage", "b=2"),
            ("x-request-id", "r-1"),
            ("authorization", "Bearer t"),
            ("host", "web"),
            ("x-other", "no"),
        ] {
            incoming.append(k, HeaderValue::from_static(v));
        }
        let names: Vec<_> = propagated(&incoming)
            .iter()
            .map(|h| format!("{}={}", h.name, h.value.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                "x-request-id=r-1",
                "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "x-b3-sampled=1",
                "baggage=a=1",
                "baggage=b=2",
            ]
        );
    }

    #[test]
    fn reply_shapes() {
        let called = Called {
            server: "web-1",
            upstream_status: 503,
            upstream: serde_json::json!({"server": "api-1"}),
        };
        assert_eq!(
            serde_json::to_string(&called).unwrap(),
            r#"{"server":"web-1","upstream_status":503,"upstream":{"server":"api-1"}}"#
        );
        let failed = Failed {
            server: "web-1",
            error: "refused".into(),
        };
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"server":"web-1","error":"refused"}"#
        );
        assert!(parse_call("http://api.shop:8080/x").is_ok());
        assert!(parse_call("https://api.shop/").is_err());
    }
}
