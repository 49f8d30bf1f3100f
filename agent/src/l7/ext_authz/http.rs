//! `envoyExtAuthzHttp` providers, as Envoy's ext_authz filter with an
//! `http_service` talks to them (its `RawHttpClientImpl`):
//!
//! - the check request has the original method, `pathPrefix` + the
//!   original path and query, the original Host, the request's
//!   `Authorization` and the headers `includeRequestHeadersInCheck`
//!   names, then `includeAdditionalHeadersInCheck` (set, overwriting);
//!   its `Content-Length` is the length of the buffered body it carries
//!   (0 without one), and with a body `x-envoy-auth-partial-body` says
//!   whether it was cut;
//! - 200 allows: the provider's headers `headersToUpstreamOnAllow` names
//!   are set on the request (overwriting), those
//!   `x-envoy-auth-headers-to-remove` lists are removed from it (never
//!   Host), and those `headersToDownstreamOnAllow` names are added to the
//!   app's answer;
//! - a 5xx is a failure of the provider (`failOpen` / `statusOnError`);
//! - any other status is the answer: that status, the provider's body,
//!   and its headers that `headersToDownstreamOnDeny` names (with
//!   Content-Length, WWW-Authenticate and Location), or all of them but
//!   Host when that list is empty.
//!
//! Connections are HTTP/1.1 (hyper), kept per provider address.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header, request::Parts,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use weft_proto::security::ExtAuthz;

use super::{CONNECT_TIMEOUT, CheckBody, PARTIAL_BODY, Verdict, header_matches};

/// The largest provider answer read (its body is the denial's).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Idle connections kept per provider address.
const MAX_IDLE: usize = 16;

/// The provider's list of request headers to remove on an allow.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Headers of a connection, never copied from one message to another.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

type Conn = http1::SendRequest<Full<Bytes>>;

/// Idle HTTP/1.1 connections to providers, per address.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Conn>>>,
}

/// A provider's answer, read in full.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The check request, kept so that it can be sent again on a new
/// connection when a kept one turns out closed.
#[derive(Debug)]
struct CheckRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl CheckRequest {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

impl Pool {
    /// One check; the error is the reason it failed (a 5xx included).
    pub(super) async fn check(
        &self,
        addr: SocketAddr,
        provider: &ExtAuthz,
        parts: &mut Parts,
        body: Option<&CheckBody>,
    ) -> Result<Verdict, String> {
        let request = check_request(provider, parts, body)?;
        let answer = self.send(addr, &request).await?;
        decide(provider, answer, parts)
    }

    async fn send(&self, addr: SocketAddr, request: &CheckRequest) -> Result<Answer, String> {
        // A kept connection the provider closed meanwhile: once more on a
        // new one.
        while let Some(mut conn) = self.take(addr) {
            if conn.ready().await.is_err() {
                continue;
            }
            if let Ok(answer) = exchange(&mut conn, request).await {
                self.put_back(addr, conn);
                return Ok(answer);
            }
            break;
        }
        let mut conn = connect(addr).await?;
        let answer = exchange(&mut conn, request).await?;
        self.put_back(addr, conn);
        Ok(answer)
    }

    fn take(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("ext_authz pool lock");
        idle.get_mut(&addr)?.pop()
    }

    fn put_back(&self, addr: SocketAddr, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("ext_authz pool lock");
        let conns = idle.entry(addr).or_default();
        if conns.len() < MAX_IDLE {
            conns.push(conn);
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect: no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "connection to an ext_authz provider ended");
        }
    });
    Ok(send)
}

async fn exchange(conn: &mut Conn, request: &CheckRequest) -> Result<Answer, String> {
    let response = conn
        .send_request(request.request())
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let (head, body) = response.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Answer {
        status: head.status,
        headers: head.headers,
        body,
    })
}

/// Envoy's check request for `parts` (see the module's description).
fn check_request(
    provider: &ExtAuthz,
    parts: &Parts,
    body: Option<&CheckBody>,
) -> Result<CheckRequest, String> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("{}{path}", provider.path_prefix)
        .parse()
        .map_err(|e| format!("the check path: {e}"))?;
    let mut headers = HeaderMap::new();
    let host = crate::authn::authority(parts);
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, host);
    }
    for (name, value) in &parts.headers {
        let key = name.as_str();
        let skipped = name == header::HOST
            || name == header::CONTENT_LENGTH
            || key == PARTIAL_BODY
            || HOP_BY_HOP.contains(&key);
        if !skipped
            && (name == header::AUTHORIZATION
                || header_matches(&provider.include_request_headers, key))
        {
            headers.append(name, value.clone());
        }
    }
    let bytes = body.map(|b| b.bytes.clone()).unwrap_or_default();
    if let Some(body) = body {
        headers.insert(
            PARTIAL_BODY,
            HeaderValue::from_static(if body.partial { "true" } else { "false" }),
        );
    }
    for added in &provider.include_additional_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(added.name.as_bytes()),
            HeaderValue::from_str(&added.value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(CheckRequest {
        method: parts.method.clone(),
        uri,
        headers,
        body: bytes,
    })
}

/// The provider's answer, applied to the request as Envoy does.
fn decide(provider: &ExtAuthz, answer: Answer, parts: &mut Parts) -> Result<Verdict, String> {
    let Answer {
        status,
        mut headers,
        body,
    } = answer;
    if status.is_server_error() {
        return Err(format!("answered {status}"));
    }
    let to_remove: Vec<String> = headers
        .get_all(HEADERS_TO_REMOVE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    headers.remove(HEADERS_TO_REMOVE);
    let copied = |patterns: &[String]| -> Vec<(HeaderName, HeaderValue)> {
        headers
            .iter()
            .filter(|(name, _)| header_matches(patterns, name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    };
    if status == StatusCode::OK {
        for (name, value) in copied(&provider.headers_to_upstream_on_allow) {
            parts.headers.insert(name, value);
        }
        for name in to_remove {
            // Host is not the provider's to remove.
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
                && name != header::HOST
            {
                parts.headers.remove(name);
            }
        }
        return Ok(Verdict::Allow {
            response_headers: copied(&provider.headers_to_downstream_on_allow),
        });
    }
    let deny = &provider.headers_to_downstream_on_deny;
    let headers = headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            // The answer's own framing is hyper's.
            let framing = HOP_BY_HOP.contains(&name) || name == "content-length";
            let wanted = if deny.is_empty() {
                name != "host"
            } else {
                header_matches(deny, name) || ["www-authenticate", "location"].contains(&name)
            };
            wanted && !framing
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Ok(Verdict::Deny {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::security::{ExtAuthzHeader, ExtAuthzKind};

    fn provider() -> ExtAuthz {
        ExtAuthz {
            provider: "web".into(),
            kind: ExtAuthzKind::ExtAuthzHttp as i32,
            path_prefix: "/check".into(),
            include_request_headers: vec!["x-user".into(), "x-ext-*".into()],
            include_additional_headers: vec![ExtAuthzHeader {
                name: "x-from".into(),
                value: "weft".into(),
            }],
            headers_to_upstream_on_allow: vec!["*-id".into()],
            headers_to_downstream_on_deny: vec!["x-why".into()],
            headers_to_downstream_on_allow: vec!["x-ok".into()],
            ..Default::default()
        }
    }

    fn parts() -> Parts {
        let (parts, ()) = Request::builder()
            .method("POST")
            .uri("/a/b?c=d")
            .header("host", "api:8080")
            .header("authorization", "Bearer t")
            .header("x-user", "bob")
            .header("X-Ext-Flag", "1")
            .header("x-other", "no")
            .header("x-from", "client")
            .header("content-length", "5")
            .header(PARTIAL_BODY, "forged")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn the_check_request_has_the_method_prefixed_path_and_allowed_headers() {
        let body = CheckBody {
            bytes: Bytes::from_static(b"hel"),
            partial: true,
        };
        let request = check_request(&provider(), &parts(), Some(&body)).unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.uri, "/check/a/b?c=d");
        let h = &request.headers;
        assert_eq!(h["host"], "api:8080");
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["x-user"], "bob");
        assert_eq!(h["x-ext-flag"], "1");
        assert!(h.get("x-other").is_none(), "not asked for");
        assert_eq!(h["x-from"], "weft", "additional headers overwrite");
        assert_eq!(h["content-length"], "3", "the length of what is sent");
        assert_eq!(h[PARTIAL_BODY], "true");
        assert_eq!(request.body, "hel");

        let bare = check_request(&provider(), &parts(), None).unwrap();
        assert_eq!(bare.headers["content-length"], "0");
        assert!(
            bare.headers.get(PARTIAL_BODY).is_none(),
            "the client's is dropped"
        );
    }

    #[test]
    fn a_200_sets_upstream_headers_removes_listed_ones_and_keeps_answer_headers() {
        let mut parts = parts();
        let verdict = decide(
            &provider(),
            answer(
                200,
                &[
                    ("x-user-id", "42"),
                    ("x-user", "mallory"),
                    ("x-ok", "yes"),
                    (HEADERS_TO_REMOVE, "x-other, host"),
                ],
                "",
            ),
            &mut parts,
        )
        .unwrap();
        let Verdict::Allow { response_headers } = verdict else {
            panic!("denied")
        };
        assert_eq!(parts.headers["x-user-id"], "42");
        assert_eq!(parts.headers["x-user"], "bob", "not in the upstream list");
        assert!(parts.headers.get("x-other").is_none());
        assert!(parts.headers.get("host").is_some(), "Host is not removable");
        assert_eq!(response_headers.len(), 1);
        assert_eq!(response_headers[0].0, "x-ok");
    }

    #[test]
    fn other_statuses_deny_with_the_listed_headers_and_5xx_fails() {
        let mut parts = parts();
        let headers = [
            ("x-why", "no"),
            ("x-other", "1"),
            ("www-authenticate", "Basic"),
            ("host", "provider"),
            ("content-length", "4"),
        ];
        let Verdict::Deny {
            status,
            headers: sent,
            body,
        } = decide(&provider(), answer(401, &headers, "nope"), &mut parts).unwrap()
        else {
            panic!("allowed")
        };
        assert_eq!(
            (status, &body[..]),
            (StatusCode::UNAUTHORIZED, &b"nope"[..])
        );
        let names: Vec<_> = sent.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-why", "www-authenticate"]);

        // No list: everything but Host (and framing).
        let mut all = provider();
        all.headers_to_downstream_on_deny.clear();
        let Verdict::Deny { headers: sent, .. } =
            decide(&all, answer(403, &headers, ""), &mut parts).unwrap()
        else {
            panic!("allowed")
        };
        let names: Vec<_> = sent.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-why", "x-other", "www-authenticate"]);

        assert!(decide(&provider(), answer(503, &[], ""), &mut parts).is_err());
        assert!(matches!(
            decide(&provider(), answer(204, &[], ""), &mut parts),
            Ok(Verdict::Deny {
                status: StatusCode::NO_CONTENT,
                ..
            })
        ));
    }
}
