//! `envoyExtAuthzGrpc` providers: Envoy's ext_authz gRPC API
//! (`envoy.service.auth.v3.Authorization/Check`) over a lazily connected
//! tonic channel per provider address.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, request::Parts};
use tonic::transport::{Channel, Endpoint};
use weft_proto::{
    core::{Address, HeaderValueOption, SocketAddress, address, socket_address},
    ext_authz::{
        AttributeContext, CheckRequest, CheckResponse, attribute_context,
        authorization_client::AuthorizationClient, check_response::HttpResponse,
    },
    security::ExtAuthz,
};

use super::{CONNECT_TIMEOUT, CheckBody, PARTIAL_BODY, Peers, Verdict};
use crate::state::Identity;

/// The channels to gRPC providers, one per address, opened on first use.
#[derive(Default)]
pub(super) struct Channels {
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

impl Channels {
    /// One Check call; the error is the reason it failed.
    pub(super) async fn check(
        &self,
        addr: SocketAddr,
        provider: &ExtAuthz,
        parts: &mut Parts,
        body: Option<&CheckBody>,
        peers: &Peers<'_>,
    ) -> Result<Verdict, String> {
        let mut client = AuthorizationClient::new(self.channel(addr));
        let pack_as_bytes = provider
            .request_body
            .as_ref()
            .is_some_and(|b| b.pack_as_bytes);
        let request = check_request(parts, body, pack_as_bytes, peers);
        let answer = client
            .check(request)
            .await
            .map_err(|status| status.to_string())?
            .into_inner();
        Ok(apply(answer, parts))
    }

    fn channel(&self, addr: SocketAddr) -> Channel {
        let mut channels = self.channels.lock().expect("ext_authz channels lock");
        channels
            .entry(addr)
            .or_insert_with(|| {
                Endpoint::from_shared(format!("http://{addr}"))
                    .expect("a socket address is a valid URI")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .connect_lazy()
            })
            .clone()
    }
}

fn peer(addr: SocketAddr, identity: Option<&Identity>) -> attribute_context::Peer {
    attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(addr.port().into())),
                ..Default::default()
            })),
        }),
        principal: identity.map(ToString::to_string).unwrap_or_default(),
        ..Default::default()
    }
}

/// Envoy's CheckRequest for a request head, and its body when it was
/// buffered (`body`, or `raw_body` with `pack_as_bytes`), with
/// `x-envoy-auth-partial-body` saying whether it was cut.
fn check_request(
    parts: &Parts,
    body: Option<&CheckBody>,
    pack_as_bytes: bool,
    peers: &Peers<'_>,
) -> CheckRequest {
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &parts.headers {
        if name.as_str() == PARTIAL_BODY {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let (mut text, mut raw) = (String::new(), Vec::new());
    if let Some(body) = body {
        headers.insert(PARTIAL_BODY.into(), body.partial.to_string());
        if pack_as_bytes {
            raw = body.bytes.to_vec();
        } else {
            // A protobuf string is UTF-8: other bytes are replaced.
            text = String::from_utf8_lossy(&body.bytes).into_owned();
        }
    }
    let size = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(-1);
    let protocol = match parts.version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(peers.source, peers.source_identity)),
            destination: Some(peer(peers.destination, Some(peers.destination_identity))),
            request: Some(attribute_context::Request {
                time: Some(prost_types::Timestamp::from(SystemTime::now())),
                http: Some(attribute_context::HttpRequest {
                    id: headers.get("x-request-id").cloned().unwrap_or_default(),
                    method: parts.method.to_string(),
                    path: parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string(),
                    host: crate::authn::authority(parts).to_string(),
                    scheme: "http".into(),
                    headers,
                    size,
                    protocol: protocol.into(),
                    body: text,
                    raw_body: raw,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// The provider's answer, applied as Envoy's ext_authz filter does.
fn apply(answer: CheckResponse, parts: &mut Parts) -> Verdict {
    let allowed = answer.status.as_ref().is_none_or(|s| s.code == 0);
    if allowed {
        let mut response_headers = Vec::new();
        if let Some(HttpResponse::OkResponse(ok)) = answer.http_response {
            for name in &ok.headers_to_remove {
                // Pseudo headers and Host are not the provider's to remove.
                if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
                    && name != http::header::HOST
                {
                    parts.headers.remove(name);
                }
            }
            edit(&mut parts.headers, &ok.headers);
            response_headers = pairs(&ok.response_headers_to_add);
        }
        return Verdict::Allow { response_headers };
    }
    match answer.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => Verdict::Deny {
            status: denied
                .status
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|code| StatusCode::from_u16(code).ok())
                .filter(|code| *code != StatusCode::OK && code.as_u16() >= 200)
                .unwrap_or(StatusCode::FORBIDDEN),
            headers: pairs(&denied.headers),
            body: denied.body.into(),
        },
        _ => Verdict::Deny {
            status: StatusCode::FORBIDDEN,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        },
    }
}

/// Header options as name/value pairs; invalid ones are dropped.
fn pairs(options: &[HeaderValueOption]) -> Vec<(HeaderName, HeaderValue)> {
    options
        .iter()
        .filter_map(|o| {
            let h = o.header.as_ref()?;
            let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
            let value = HeaderValue::from_str(&h.value).ok()?;
            Some((name, value))
        })
        .collect()
}

/// Sets (or, with `append`, adds) each header.
fn edit(headers: &mut HeaderMap, options: &[HeaderValueOption]) {
    for (option, (name, value)) in options.iter().zip(pairs(options)) {
        if option.append.unwrap_or(false) {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::{
        core::HeaderValue as PbHeader,
        envoy_type::HttpStatus,
        ext_authz::{DeniedHttpResponse, OkHttpResponse},
        rpc::Status,
    };

    fn option(key: &str, value: &str, append: bool) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(PbHeader {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append: Some(append),
            ..Default::default()
        }
    }

    fn parts() -> Parts {
        let (parts, ()) = http::Request::builder()
            .uri("/a?b=c")
            .header("host", "api")
            .header("x-old", "1")
            .header("x-list", "a")
            .header("authorization", "secret")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn an_ok_answer_edits_the_request_and_keeps_response_headers() {
        let mut parts = parts();
        let answer = CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![option("x-old", "2", false), option("x-list", "b", true)],
                headers_to_remove: vec!["authorization".into(), "host".into()],
                response_headers_to_add: vec![option("x-checked", "yes", false)],
            })),
        };
        let Verdict::Allow { response_headers } = apply(answer, &mut parts) else {
            panic!("denied")
        };
        assert_eq!(parts.headers["x-old"], "2");
        let list: Vec<_> = parts.headers.get_all("x-list").iter().collect();
        assert_eq!(list, ["a", "b"]);
        assert!(parts.headers.get("authorization").is_none());
        assert!(parts.headers.get("host").is_some(), "Host is not removable");
        assert_eq!(response_headers[0].0, "x-checked");
    }

    #[test]
    fn a_denial_carries_the_providers_status_headers_and_body() {
        let mut parts = parts();
        let answer = CheckResponse {
            status: Some(Status {
                code: 7,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![option("x-why", "no", false)],
                body: "go away".into(),
            })),
        };
        let Verdict::Deny {
            status,
            headers,
            body,
        } = apply(answer, &mut parts)
        else {
            panic!("allowed")
        };
        assert_eq!(
            (status, &body[..]),
            (StatusCode::UNAUTHORIZED, &b"go away"[..])
        );
        assert_eq!(headers[0].1, "no");
        let bare = CheckResponse {
            status: Some(Status {
                code: 7,
                ..Default::default()
            }),
            http_response: None,
        };
        assert!(matches!(
            apply(bare, &mut parts),
            Verdict::Deny {
                status: StatusCode::FORBIDDEN,
                ..
            }
        ));
    }

    #[test]
    fn the_check_request_describes_the_request() {
        let parts = parts();
        let (src, dst) = (
            "10.0.1.2:40000".parse().unwrap(),
            "10.0.2.2:8080".parse().unwrap(),
        );
        let id: Identity = "spiffe://cluster.local/ns/shop/sa/api".parse().unwrap();
        let request = check_request(
            &parts,
            None,
            false,
            &Peers {
                source: src,
                source_identity: None,
                destination: dst,
                destination_identity: &id,
            },
        );
        let attributes = request.attributes.unwrap();
        let http = attributes.request.unwrap().http.unwrap();
        assert_eq!(
            (http.method.as_str(), http.path.as_str()),
            ("GET", "/a?b=c")
        );
        assert_eq!(http.host, "api");
        assert_eq!(http.headers["x-old"], "1");
        assert_eq!(http.size, -1);
        assert_eq!(
            attributes.destination.unwrap().principal,
            "spiffe://cluster.local/ns/shop/sa/api"
        );
        assert_eq!(attributes.source.unwrap().principal, "");
    }

    #[test]
    fn the_body_goes_as_text_or_bytes_with_the_partial_header() {
        let mut parts = parts();
        parts
            .headers
            .insert(PARTIAL_BODY, HeaderValue::from_static("forged"));
        let id: Identity = "spiffe://cluster.local/ns/shop/sa/api".parse().unwrap();
        let peers = Peers {
            source: "10.0.1.2:40000".parse().unwrap(),
            source_identity: None,
            destination: "10.0.2.2:8080".parse().unwrap(),
            destination_identity: &id,
        };
        let body = CheckBody {
            bytes: bytes::Bytes::from_static(b"hello"),
            partial: true,
        };
        let http =
            |request: CheckRequest| request.attributes.unwrap().request.unwrap().http.unwrap();
        let text = http(check_request(&parts, Some(&body), false, &peers));
        assert_eq!((text.body.as_str(), text.raw_body.len()), ("hello", 0));
        assert_eq!(text.headers[PARTIAL_BODY], "true");
        let raw = http(check_request(&parts, Some(&body), true, &peers));
        assert_eq!((raw.body.as_str(), &raw.raw_body[..]), ("", &b"hello"[..]));
        let none = http(check_request(&parts, None, false, &peers));
        assert!(
            !none.headers.contains_key(PARTIAL_BODY),
            "the client's own is dropped"
        );
    }
}
