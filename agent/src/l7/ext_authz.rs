//! CUSTOM AuthorizationPolicies: a request that matches one is sent to the
//! policy's external authorization provider with Envoy's ext_authz gRPC
//! API (`envoy.service.auth.v3.Authorization/Check`, the mesh config's
//! `envoyExtAuthzGrpc`), before any DENY or ALLOW policy, as Istio orders
//! them. The provider's answer is honoured as Envoy's ext_authz filter
//! does: OK lets the request on with the headers it adds or removes (and
//! adds its response headers to the answer); anything else is answered
//! with the provider's status (403 when it sets none), headers and body.
//! A provider that cannot be reached, fails or is late (its `timeout`,
//! Istio's default 600 s) lets the request through with `failOpen`, else
//! answers `statusOnError` (403).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, SystemTime},
};

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

use crate::{state::Identity, state::WorkloadStore};

/// Istio's default deadline for a Check call.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long connecting to a provider may take (within the deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a provider decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on; `request` edits were applied, `response_headers` are for the
    /// answer.
    Allow {
        response_headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Answer with this.
    Deny {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: String,
    },
}

/// Why a provider could not decide.
#[derive(Debug, thiserror::Error)]
pub enum ExtAuthzError {
    #[error("extension provider {provider}: no endpoint for `{service}`")]
    NoEndpoint { provider: String, service: String },
    #[error("extension provider {provider} at {addr}: {reason}")]
    Call {
        provider: String,
        addr: SocketAddr,
        reason: String,
    },
    #[error("extension provider {provider} at {addr}: no answer within {timeout:?}")]
    Timeout {
        provider: String,
        addr: SocketAddr,
        timeout: Duration,
    },
}

/// The channels to providers, one per address, opened on first use.
#[derive(Default)]
pub struct Providers {
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

/// Who is asking, for the provider's `AttributeContext`.
pub struct Peers<'a> {
    pub source: SocketAddr,
    pub source_identity: Option<&'a Identity>,
    pub destination: SocketAddr,
    pub destination_identity: &'a Identity,
}

impl Providers {
    /// Asks `provider` about the request; on Allow its edits are applied
    /// to `parts`. Errors are the provider's failures (the caller applies
    /// `fail_open`).
    pub async fn check(
        &self,
        store: &WorkloadStore,
        provider: &ExtAuthz,
        parts: &mut Parts,
        peers: &Peers<'_>,
    ) -> Result<Verdict, ExtAuthzError> {
        let addr = resolve(store, provider).ok_or_else(|| ExtAuthzError::NoEndpoint {
            provider: provider.provider.clone(),
            service: provider.service.clone(),
        })?;
        let timeout = match provider.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms.into()),
        };
        let mut client = AuthorizationClient::new(self.channel(addr));
        let call_error = |reason: String| ExtAuthzError::Call {
            provider: provider.provider.clone(),
            addr,
            reason,
        };
        let request = check_request(parts, peers);
        let answer = tokio::time::timeout(timeout, client.check(request))
            .await
            .map_err(|_| ExtAuthzError::Timeout {
                provider: provider.provider.clone(),
                addr,
                timeout,
            })?
            .map_err(|status| call_error(status.to_string()))?
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

/// The provider's address: an IP, or an endpoint of its service
/// (`<name>.<namespace>.svc...` or `<namespace>/<hostname>`) that has an
/// address, with the port its service port targets.
fn resolve(store: &WorkloadStore, provider: &ExtAuthz) -> Option<SocketAddr> {
    let port = u16::try_from(provider.port).ok()?;
    if let Ok(ip) = provider.service.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let key = match provider.service.split_once('/') {
        Some(_) => provider.service.clone(),
        None => {
            let namespace = provider.service.split('.').nth(1)?;
            format!("{namespace}/{}", provider.service)
        }
    };
    let endpoint = store.endpoints(&key).into_iter().next()?;
    let target = endpoint
        .services
        .get(&key)
        .and_then(|ports| ports.get(&port))
        .copied()
        .filter(|t| *t != 0)
        .unwrap_or(port);
    Some(SocketAddr::new(*endpoint.ips.first()?, target))
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

/// Envoy's CheckRequest for a request head (no body).
fn check_request(parts: &Parts, peers: &Peers<'_>) -> CheckRequest {
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
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
            body: denied.body,
        },
        _ => Verdict::Deny {
            status: StatusCode::FORBIDDEN,
            headers: Vec::new(),
            body: String::new(),
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
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, "go away")
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
}
