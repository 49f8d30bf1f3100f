//! How many bytes a request's or a response's head takes on the wire, for
//! Istio's `istio_request_bytes` and `istio_response_bytes`. Istio's stats
//! filter records the downstream stream's wire bytes (Envoy's bytes meter:
//! head and body as they crossed the connection), not the body alone, so a
//! `GET` counts its request line and headers.
//!
//! The head is counted as HTTP/1.1 writes it: the start line, each field
//! as `name: value\r\n`, and the blank line. For an HTTP/1.1 connection
//! that is what crossed it (give or take the spaces a sender put around a
//! colon); for HTTP/2, whose HPACK-compressed headers the proxy does not
//! see, it is the uncompressed size, an upper bound.

use http::{HeaderMap, Method, StatusCode, Uri};

/// `METHOD SP target SP HTTP/1.1 CRLF`, the fields, `CRLF`. A request
/// without a `host` field (HTTP/2 carries `:authority` instead) counts
/// one for its authority, as HTTP/1.1 would send it.
pub fn request_head(method: &Method, uri: &Uri, headers: &HeaderMap) -> u64 {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    let host = match (headers.contains_key(http::header::HOST), uri.authority()) {
        (false, Some(authority)) => field("host", authority.as_str().len()),
        _ => 0,
    };
    let line = method.as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    (line + host + fields(headers) + 2) as u64
}

/// `HTTP/1.1 SP code SP reason CRLF`, the fields, `CRLF`.
pub fn response_head(status: StatusCode, headers: &HeaderMap) -> u64 {
    let reason = status.canonical_reason().map_or(0, str::len);
    let line = "HTTP/1.1 200 ".len() + reason + 2;
    (line + fields(headers) + 2) as u64
}

fn fields(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| field(name.as_str(), value.len()))
        .sum()
}

/// `name: value\r\n`
fn field(name: &str, value: usize) -> usize {
    name.len() + 2 + value + 2
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Request, Response};

    use super::*;

    #[test]
    fn a_request_head_is_counted_as_http1_writes_it() {
        let request = Request::get("/reviews/1?x=2")
            .header("host", "reviews:9080")
            .header("user-agent", "curl/8.0")
            .body(())
            .unwrap();
        let wire =
            "GET /reviews/1?x=2 HTTP/1.1\r\nhost: reviews:9080\r\nuser-agent: curl/8.0\r\n\r\n";
        assert_eq!(
            request_head(request.method(), request.uri(), request.headers()),
            wire.len() as u64
        );
    }

    #[test]
    fn an_http2_request_counts_its_authority_as_a_host_field() {
        let request = Request::post("http://grpc.ns:50051/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let wire = "POST /pkg.Svc/Call HTTP/1.1\r\nhost: grpc.ns:50051\r\ncontent-type: application/grpc\r\n\r\n";
        assert_eq!(
            request_head(request.method(), request.uri(), request.headers()),
            wire.len() as u64
        );
    }

    #[test]
    fn a_response_head_is_counted_with_its_reason() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert("content-length", HeaderValue::from_static("19"));
        let wire = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19\r\n\r\n";
        assert_eq!(
            response_head(response.status(), response.headers()),
            wire.len() as u64
        );
    }
}
