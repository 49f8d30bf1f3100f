//! Kubernetes mode: agents authenticate with their pod's projected
//! service-account token (audience `istio-ca`, as ztunnel's), which the
//! API server checks for us (TokenReview). The token must belong to one of
//! the agents' service accounts; the node it proves comes from the bound
//! token's `authentication.kubernetes.io/node-name` claim, else from the
//! pod it is bound to (`.../pod-name`) and that pod's `spec.nodeName`, as
//! istiod authorizes ztunnel. The CA then signs only for pods on that
//! node.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, api::PostParams};
use tokio::sync::watch;
use tonic::Status;

use crate::{kinds::Object, source::Snapshot};

/// The audience agents' tokens are minted for (Istio's CA audience).
pub const AUDIENCE: &str = "istio-ca";
const NODE_CLAIM: &str = "authentication.kubernetes.io/node-name";
const POD_CLAIM: &str = "authentication.kubernetes.io/pod-name";

/// A reviewed token is trusted this long without asking again.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Reviews remembered at most (a few per node).
const CACHE_MAX: usize = 10_000;

/// Reviews service-account tokens with the API server.
pub struct TokenReviewer {
    client: kube::Client,
    /// `system:serviceaccount:<ns>:<name>` of every account agents run as.
    agents: Vec<String>,
    /// The config source's objects: pods, for the pod a token is bound to.
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// SHA-256 of a token → when reviewed, and the outcome.
    cache: Mutex<HashMap<[u8; 32], Review>>,
}

/// When a token was reviewed, and the node it proved or why not.
type Review = (Instant, Result<String, Status>);

impl TokenReviewer {
    /// `agents` as `namespace/name`.
    pub fn new(
        client: kube::Client,
        agents: &[String],
        snapshots: watch::Receiver<Arc<Snapshot>>,
    ) -> Self {
        let agents = agents
            .iter()
            .map(|a| {
                let (ns, name) = a.split_once('/').unwrap_or(("", a));
                format!("system:serviceaccount:{ns}:{name}")
            })
            .collect();
        TokenReviewer {
            client,
            agents,
            snapshots,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The node `token` proves, or why not.
    pub async fn node_of(&self, token: &str, peer: Option<SocketAddr>) -> Result<String, Status> {
        let key = digest(token);
        if let Some((at, outcome)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return outcome.clone();
        }
        let outcome = self.review(token).await;
        match &outcome {
            Ok(node) => tracing::debug!(peer = ?peer, node, "service-account token accepted"),
            Err(status) => {
                tracing::warn!(peer = ?peer, reason = status.message(), "rejected a call: service-account token refused")
            }
        }
        // The API server being unreachable is no verdict on the token.
        if outcome
            .as_ref()
            .err()
            .is_none_or(|s| s.code() != tonic::Code::Unavailable)
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            }
            cache.insert(key, (Instant::now(), outcome.clone()));
        }
        outcome
    }

    async fn review(&self, token: &str) -> Result<String, Status> {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let reviewed = reviews
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "cannot review the token with the Kubernetes API server: {e}"
                ))
            })?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(Status::unauthenticated(format!(
                "the Kubernetes API server refused the service-account token: {}",
                status.error.unwrap_or_else(|| "not authenticated".into())
            )));
        }
        if let Some(audiences) = &status.audiences
            && !audiences.iter().any(|a| a == AUDIENCE)
        {
            return Err(Status::unauthenticated(format!(
                "the token is not for audience `{AUDIENCE}` (it is for {audiences:?})"
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if !self.agents.contains(&username) {
            return Err(Status::permission_denied(format!(
                "`{username}` is not an agent's service account (allowed: {}; see --agent-service-account)",
                self.agents.join(", ")
            )));
        }
        let extra = user.extra.unwrap_or_default();
        let claim = |name: &str| extra.get(name).and_then(|v| v.first()).cloned();
        if let Some(node) = claim(NODE_CLAIM) {
            return Ok(node);
        }
        let Some(pod) = claim(POD_CLAIM) else {
            return Err(Status::permission_denied(
                "the token is not bound to a pod: agents must use a projected service-account token (audience istio-ca)",
            ));
        };
        let namespace = username.split(':').nth(2).unwrap_or_default();
        self.node_of_pod(namespace, &pod).ok_or_else(|| {
            Status::permission_denied(format!(
                "the token's pod {namespace}/{pod} is unknown or not scheduled on a node"
            ))
        })
    }

    fn node_of_pod(&self, namespace: &str, name: &str) -> Option<String> {
        let snapshot = self.snapshots.borrow().clone();
        snapshot.objects.iter().find_map(|o| match o {
            Object::Pod(p) if p.metadata.name == name && p.metadata.namespace() == namespace => {
                p.node_name().map(str::to_string)
            }
            _ => None,
        })
    }
}

fn digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
