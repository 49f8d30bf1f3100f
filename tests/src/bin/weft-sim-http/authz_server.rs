//! `authz-server`: an Envoy ext_authz gRPC provider
//! (`envoy.service.auth.v3.Authorization/Check`), for the tests of CUSTOM
//! AuthorizationPolicies. It decides by the checked request's
//! `x-ext-authz` header: `allow` is OK, adding `x-ext-authz-check:
//! allowed` to the request and `x-ext-authz-response: yes` to the answer;
//! anything else is denied with the status in `x-ext-authz-status` (else
//! 403), the header `x-ext-authz-check: denied` and the body `denied by
//! ext_authz`.

use std::process::ExitCode;

use anyhow::{Context, Result};
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
}

pub async fn run(args: AuthzServerArgs) -> Result<ExitCode> {
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
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
    let headers = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map(|h| h.headers.clone())
        .unwrap_or_default();
    if headers.get("x-ext-authz").map(String::as_str) == Some("allow") {
        return CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![header("x-ext-authz-check", "allowed")],
                headers_to_remove: vec![],
                response_headers_to_add: vec![header("x-ext-authz-response", "yes")],
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
            headers: vec![header("x-ext-authz-check", "denied")],
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
