//! `authz-server`: an Envoy ext_authz provider for the tests of CUSTOM
//! AuthorizationPolicies: gRPC (`envoy.service.auth.v3.Authorization/
//! Check`, `envoyExtAuthzGrpc`) or, with `--http`, a plain HTTP service
//! (`envoyExtAuthzHttp`). Both decide by the checked request's
//! `x-ext-authz` header and report what they received as JSON (`seen`:
//! method, path, headers, body, and for gRPC `raw_body` and
//! `partial_body`, the check's `x-envoy-auth-partial-body`):
//!
//! - `allow`: allowed, with `x-ext-authz-check: allowed` for the request,
//!   `x-ext-authz-response: yes` and `x-ext-authz-seen: <seen>` for the
//!   answer (gRPC: as OkHttpResponse headers and response headers; HTTP:
//!   as 200 response headers, for `headersToUpstreamOnAllow` /
//!   `headersToDownstreamOnAllow` to pick);
//! - anything else: denied with the status in `x-ext-authz-status` (else
//!   403; over HTTP a 5xx is the provider failing), the headers
//!   `x-ext-authz-check: denied` and `x-ext-authz-extra: 1`, and the body
//!   `denied by ext_authz` (gRPC) or `<seen>` (HTTP).

use std::{collections::BTreeMap, convert::Infallible, process::ExitCode};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tonic::{Request, Response, Status, transport::Server};
use weft_proto::{
    core::{HeaderValue, HeaderValueOption},
    envoy_type::HttpStatus,
    ext_authz::{
        CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
        authorization_server::{Authorization, AuthorizationServer},
        check_response::HttpResponse,
    },
    rpc,
};

#[derive(Debug, clap::Args)]
pub struct AuthzServerArgs {
    /// Port to listen on, on 0.0.0.0.
    #[arg(long)]
    pub port: u16,
    /// Serve the HTTP provider API (`envoyExtAuthzHttp`) instead of gRPC.
    #[arg(long)]
    pub http: bool,
}

/// What a provider received, reported back to the test.
#[derive(Debug, Default, Serialize)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_body: Option<String>,
}

impl Seen {
    fn json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }
}

pub async fn run(args: AuthzServerArgs) -> Result<ExitCode> {
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    if args.http {
        crate::emit(&format!("serving ext_authz over HTTP on {addr}"))?;
        return serve_http(listener).await;
    }
    crate::emit(&format!("serving ext_authz on {addr}"))?;
    Server::builder()
        .add_service(AuthorizationServer::new(Provider))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(ExitCode::SUCCESS)
}

struct Provider;

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The decision for a request's headers.
fn decide(request: &CheckRequest) -> CheckResponse {
    let http = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.clone())
        .unwrap_or_default();
    let headers = http.headers.clone();
    if headers.get("x-ext-authz").map(String::as_str) == Some("allow") {
        let seen = Seen {
            method: http.method,
            path: http.path,
            body: http.body,
            raw_body: (!http.raw_body.is_empty())
                .then(|| String::from_utf8_lossy(&http.raw_body).into_owned()),
            partial_body: headers.get("x-envoy-auth-partial-body").cloned(),
            ..Default::default()
        };
        return CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![header("x-ext-authz-check", "allowed")],
                headers_to_remove: vec![],
                response_headers_to_add: vec![
                    header("x-ext-authz-response", "yes"),
                    header("x-ext-authz-seen", &seen.json()),
                ],
            })),
        };
    }
    let status = headers
        .get("x-ext-authz-status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(403);
    CheckResponse {
        // PERMISSION_DENIED.
        status: Some(rpc::Status {
            code: 7,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: status }),
            headers: vec![
                header("x-ext-authz-check", "denied"),
                header("x-ext-authz-extra", "1"),
            ],
            body: "denied by ext_authz".into(),
        })),
    }
}

#[tonic::async_trait]
impl Authorization for Provider {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let answer = decide(&request);
        let http = request
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http);
        if let Some(http) = http {
            eprintln!(
                "check {} {} -> {}",
                http.method,
                http.path,
                answer.status.as_ref().map_or(0, |s| s.code)
            );
        }
        Ok(Response::new(answer))
    }
}

/// Serves the HTTP provider API until the process is stopped.
async fn serve_http(listener: tokio::net::TcpListener) -> Result<ExitCode> {
    loop {
        let (stream, _) = listener.accept().await.context("accepting")?;
        tokio::spawn(async move {
            let service =
                service_fn(
                    |request| async move { Ok::<_, Infallible>(http_answer(request).await) },
                );
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("ext_authz HTTP connection: {err}");
            }
        });
    }
}

async fn http_answer(request: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
        ..Default::default()
    };
    let decide = |name: &str| seen.headers.get(name).map(String::as_str);
    let allowed = decide("x-ext-authz") == Some("allow");
    let status = if allowed {
        200
    } else {
        decide("x-ext-authz-status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(403)
    };
    eprintln!("check {} {} -> {status}", seen.method, seen.path);
    let json = seen.json();
    let builder = http::Response::builder().status(status);
    let response = if allowed {
        builder
            .header("x-ext-authz-check", "allowed")
            .header("x-ext-authz-response", "yes")
            .header("x-ext-authz-seen", json)
            .body(Full::new(Bytes::new()))
    } else {
        builder
            .header("x-ext-authz-check", "denied")
            .header("x-ext-authz-extra", "1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json)))
    };
    response.unwrap_or_else(|_| {
        let mut response = http::Response::new(Full::new(Bytes::from("bad answer")));
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::ext_authz::{AttributeContext, attribute_context};

    fn request(headers: &[(&str, &str)]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn allows_on_the_header_and_denies_otherwise() {
        let ok = decide(&request(&[("x-ext-authz", "allow")]));
        assert_eq!(ok.status.unwrap().code, 0);
        let denied = decide(&request(&[("x-ext-authz-status", "429")]));
        assert_eq!(denied.status.unwrap().code, 7);
        let Some(HttpResponse::DeniedResponse(d)) = denied.http_response else {
            panic!("not a denial")
        };
        assert_eq!(d.status.unwrap().code, 429);
    }
}
