//! Who may call the xDS and CA services: a tower layer in front of both.
//! It refuses every call (`UNAVAILABLE`) until the config source is
//! synced, then reads `authorization: Bearer <token>` and proves a node:
//! from a bootstrap token (directory mode, and Kubernetes mode for agents
//! set up that way), or in Kubernetes mode from a service-account token
//! reviewed by the API server ([`TokenReviewer`]). The node goes into the
//! request's extensions as [`AuthenticatedNode`]; the services read it
//! there.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tonic::{
    Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use super::{AuthenticatedNode, BootstrapSecret, token_review::TokenReviewer};

/// Everything that decides whether a call is let in.
pub struct Authenticator {
    pub bootstrap: BootstrapSecret,
    /// Kubernetes mode: service-account tokens.
    pub token_review: Option<TokenReviewer>,
    /// The source is synced and the model built.
    pub ready: Arc<AtomicBool>,
}

impl Authenticator {
    /// The node the call's token proves, or why the call is refused.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<String, Status> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(Status::unavailable(
                "weft-control has not finished listing its config source (see /debug/syncz); retry",
            ));
        }
        let Some(header) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            tracing::warn!(peer = ?peer, "rejected a call without a token");
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>`: a bootstrap token (`weft-control bootstrap-token --node <node>`) or, in Kubernetes mode, the agent's service-account token (audience istio-ca)",
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or("")
            .trim();
        if let Some(node) = self.bootstrap.verify(token) {
            return Ok(node);
        }
        match &self.token_review {
            Some(reviewer) if looks_like_jwt(token) => reviewer.node_of(token, peer).await,
            _ => {
                tracing::warn!(peer = ?peer, "rejected a call with an invalid bootstrap token");
                Err(Status::unauthenticated(
                    "invalid bootstrap token; was the control plane's state directory (bootstrap-secret) replaced? Print a fresh token with `weft-control bootstrap-token --node <node>`",
                ))
            }
        }
    }
}

/// Three base64url parts: a JWT (a service-account token), not a
/// bootstrap token (`<node>.<hex>`).
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// The tower layer that runs an [`Authenticator`] before each call.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        AuthLayer { authenticator }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            authenticator: Arc::clone(&self.authenticator),
        }
    }
}

/// A service behind an [`AuthLayer`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Authenticated<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready clone serves this call; a fresh clone waits for the next.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let authenticator = Arc::clone(&self.authenticator);
        Box::pin(async move {
            let peer = peer_of(request.extensions());
            match authenticator.authenticate(request.headers(), peer).await {
                Ok(node) => {
                    request.extensions_mut().insert(AuthenticatedNode(node));
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

fn peer_of(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_tokens_are_told_from_bootstrap_tokens() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrIn0.c2ln"));
        assert!(!looks_like_jwt("node-1.0123abcd"));
        assert!(!looks_like_jwt("node.with.dots.0123abcd"));
    }
}
