//! The proxy's authentication state: the RequestAuthentications that
//! apply to a workload (they arrive with its authorization policies, see
//! [`crate::policy::Policy::is_request_authentication`]) compiled once
//! into [`JwtRule`]s, the key fetchers they share, and the verified-token
//! cache.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::HeaderName;
use weft_proto::security as pb;

use super::{
    Authenticator, ClaimToHeader, FetchConfig, HeaderLocation, Jwks, JwksRegistry, JwtRule,
    KeySource,
};
use crate::policy::Policy;

/// A policy's compiled rules, and the policy they were compiled from.
type Compiled = (Arc<Policy>, Arc<[Arc<JwtRule>]>);

/// One per proxy. Needs a tokio runtime (key fetchers are tasks).
pub struct Authn {
    pub authenticator: Authenticator,
    registry: JwksRegistry,
    /// Compiled rules by policy key, with the policy they came from: a
    /// policy that changed (another `Arc`) is compiled again.
    compiled: Mutex<HashMap<String, Compiled>>,
}

impl Authn {
    pub fn new(fetch: FetchConfig) -> Authn {
        Authn {
            authenticator: Authenticator::default(),
            registry: JwksRegistry::new(fetch),
            compiled: Mutex::default(),
        }
    }

    /// The JWT rules of the RequestAuthentications among `policies` (those
    /// that apply to one workload), in policy order.
    pub fn rules(&self, policies: &[Arc<Policy>]) -> Vec<Arc<JwtRule>> {
        let mut compiled = self.compiled.lock().expect("authn lock");
        let mut rules = Vec::new();
        for policy in policies.iter().filter(|p| p.is_request_authentication()) {
            let key = policy.key();
            let fresh = compiled
                .get(&key)
                .is_some_and(|(seen, _)| Arc::ptr_eq(seen, policy));
            if !fresh {
                let built: Arc<[Arc<JwtRule>]> = policy
                    .jwt_rules
                    .iter()
                    .map(|rule| Arc::new(self.compile(&key, rule)))
                    .collect();
                compiled.insert(key.clone(), (policy.clone(), built));
            }
            rules.extend(compiled[&key].1.iter().cloned());
        }
        rules
    }

    /// One rule. What cannot be used is logged and left out: keys that do
    /// not parse or cannot be fetched make an empty key set, so every token
    /// of that issuer fails, as in Envoy.
    fn compile(&self, policy: &str, rule: &pb::JwtRule) -> JwtRule {
        let keys = if !rule.jwks.is_empty() {
            match Jwks::parse(&rule.jwks) {
                Ok(jwks) => KeySource::Inline(Arc::new(jwks)),
                Err(err) => {
                    tracing::warn!(policy, issuer = %rule.issuer, error = %err, "RequestAuthentication: unusable inline jwks; tokens of this issuer will be refused");
                    KeySource::Inline(Arc::new(Jwks::default()))
                }
            }
        } else if !rule.jwks_uri.is_empty() {
            let timeout =
                (rule.timeout_ms > 0).then(|| Duration::from_millis(rule.timeout_ms.into()));
            match self.registry.get(&rule.jwks_uri, timeout) {
                Ok(remote) => KeySource::Remote(remote),
                Err(err) => {
                    tracing::warn!(policy, issuer = %rule.issuer, uri = %rule.jwks_uri, error = %err, "RequestAuthentication: cannot fetch jwksUri; tokens of this issuer will be refused");
                    KeySource::Inline(Arc::new(Jwks::default()))
                }
            }
        } else {
            tracing::warn!(policy, issuer = %rule.issuer, "RequestAuthentication: neither jwks nor jwksUri; tokens of this issuer will be refused");
            KeySource::Inline(Arc::new(Jwks::default()))
        };
        let header = |name: &str, what: &str| match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                tracing::warn!(
                    policy,
                    header = name,
                    "RequestAuthentication: {what} is not a valid header name; ignored"
                );
                None
            }
        };
        let mut compiled = JwtRule::new(rule.issuer.clone(), keys);
        compiled.audiences = rule.audiences.clone();
        compiled.from_headers = rule
            .from_headers
            .iter()
            .filter_map(|h| {
                Some(HeaderLocation {
                    name: header(&h.name, "fromHeaders")?,
                    prefix: h.prefix.clone(),
                })
            })
            .collect();
        compiled.from_params = rule.from_params.clone();
        compiled.from_cookies = rule.from_cookies.clone();
        compiled.forward_original_token = rule.forward_original_token;
        compiled.output_payload_to_header = (!rule.output_payload_to_header.is_empty())
            .then(|| header(&rule.output_payload_to_header, "outputPayloadToHeader"))
            .flatten();
        compiled.output_claim_to_headers = rule
            .output_claim_to_headers
            .iter()
            .filter_map(|c| {
                Some(ClaimToHeader {
                    header: header(&c.header, "outputClaimToHeaders")?,
                    claim: c.claim.clone(),
                })
            })
            .collect();
        compiled
    }
}
