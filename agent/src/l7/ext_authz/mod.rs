//! CUSTOM AuthorizationPolicies: a request that matches one is sent to the
//! policy's external authorization provider before any DENY or ALLOW
//! policy, as Istio orders them, and its answer is honoured as Envoy's
//! ext_authz filter does. Two kinds of provider, as in Istio's mesh
//! config:
//!
//! - `envoyExtAuthzGrpc` ([`grpc`]): Envoy's ext_authz gRPC API
//!   (`envoy.service.auth.v3.Authorization/Check`). OK lets the request
//!   on with the headers it adds or removes (and adds its response headers
//!   to the answer); anything else is answered with the provider's status
//!   (403 when it sets none), headers and body.
//! - `envoyExtAuthzHttp` ([`http`]): the request's head (the headers the
//!   provider asked for) and body are sent to an HTTP service, with
//!   `pathPrefix` before the path; 200 allows (with the provider headers
//!   the lists name copied into the request and the answer), a 5xx is a
//!   failure, any other status is the answer.
//!
//! With `includeRequestBodyInCheck` the caller ([`super::inbound`])
//! buffers the body first ([`CheckBody`]). A provider that cannot be
//! reached, fails or is late (its `timeout`, Istio's default 600 s) lets
//! the request through with `failOpen`, else the caller answers
//! `statusOnError` (403).

pub mod buffer;
mod grpc;
mod http;

use std::{net::SocketAddr, time::Duration};

use ::http::{HeaderName, HeaderValue, StatusCode, request::Parts};
use bytes::Bytes;
use weft_proto::security::{ExtAuthz, ExtAuthzKind};

use crate::{state::Identity, state::WorkloadStore};

/// Istio's default deadline for a check.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long connecting to a provider may take (within the deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The header telling a provider whether the body it got was cut
/// (Envoy's `x-envoy-auth-partial-body`); a client's own is ignored.
pub const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// What a provider decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on; the request edits were applied, `response_headers` are for
    /// the answer.
    Allow {
        response_headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Answer with this.
    Deny {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
}

/// The buffered request body sent with a check
/// (`includeRequestBodyInCheck`).
#[derive(Debug, Clone, Default)]
pub struct CheckBody {
    /// At most `maxRequestBytes` of it.
    pub bytes: Bytes,
    /// The request's body was longer than what is sent.
    pub partial: bool,
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

/// The connections to providers: a gRPC channel per address (opened on
/// first use) and idle HTTP/1.1 connections per address.
#[derive(Default)]
pub struct Providers {
    grpc: grpc::Channels,
    http: http::Pool,
}

/// Who is asking, for the provider's `AttributeContext`.
pub struct Peers<'a> {
    pub source: SocketAddr,
    pub source_identity: Option<&'a Identity>,
    pub destination: SocketAddr,
    pub destination_identity: &'a Identity,
}

impl Providers {
    /// Asks `provider` about the request (and `body`, when the provider
    /// wants it); on Allow its edits are applied to `parts`. Errors are
    /// the provider's failures (the caller applies `fail_open`).
    pub async fn check(
        &self,
        store: &WorkloadStore,
        provider: &ExtAuthz,
        parts: &mut Parts,
        body: Option<&CheckBody>,
        peers: &Peers<'_>,
    ) -> Result<Verdict, ExtAuthzError> {
        let addr = u16::try_from(provider.port)
            .ok()
            .and_then(|port| store.service_address(&provider.service, port))
            .ok_or_else(|| ExtAuthzError::NoEndpoint {
                provider: provider.provider.clone(),
                service: provider.service.clone(),
            })?;
        let timeout = match provider.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms.into()),
        };
        let asked = async {
            if provider.kind() == ExtAuthzKind::ExtAuthzHttp {
                self.http.check(addr, provider, parts, body).await
            } else {
                self.grpc.check(addr, provider, parts, body, peers).await
            }
        };
        tokio::time::timeout(timeout, asked)
            .await
            .map_err(|_| ExtAuthzError::Timeout {
                provider: provider.provider.clone(),
                addr,
                timeout,
            })?
            .map_err(|reason| ExtAuthzError::Call {
                provider: provider.provider.clone(),
                addr,
                reason,
            })
    }
}

/// Whether a (lower-case) header name matches one of Istio's header
/// patterns: `name` (exact), `x-*` (prefix) or `*-id` (suffix), all
/// case-insensitive.
pub fn header_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        if let Some(suffix) = pattern.strip_prefix('*') {
            name.ends_with(suffix)
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            name.starts_with(prefix)
        } else {
            name == pattern
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_patterns_are_exact_prefix_or_suffix_and_ignore_case() {
        let patterns = ["X-User".to_string(), "x-ext-*".into(), "*-ID".into()];
        for (name, matched) in [
            ("x-user", true),
            ("x-user2", false),
            ("x-ext-a", true),
            ("x-ext", false),
            ("request-id", true),
            ("idx", false),
        ] {
            assert_eq!(header_matches(&patterns, name), matched, "{name}");
        }
        assert!(!header_matches(&[], "x-user"));
    }
}
