//! RequestAuthentication → an `istio.security.Authorization` resource
//! that carries weft's `jwt_rules`, named
//! `<namespace>/request_authentication_<name>` (as istiod carries a
//! PeerAuthentication as `converted_peer_authentication_<name>`), with
//! an AuthorizationPolicy's scope rules: no selector → the namespace (the
//! mesh in the root namespace), a selector → the workloads that list it.
//!
//! On the wire it is a dry-run DENY without groups: it matches nothing and
//! no client enforces it, so a stock ztunnel is unaffected. weft's agent
//! reads the rules and validates the JWTs of requests to HTTP ports.

use weft_proto::security::{Action, Authorization, ClaimToHeader, JwtHeader, JwtRule, Scope};

use super::authorization::CompiledAuthorization;
use crate::{
    analysis::{Finding, Severity, codes},
    kinds::{RequestAuthentication, request_authentication as ra},
};

/// The resource name's prefix after the namespace.
pub const NAME_PREFIX: &str = "request_authentication_";

/// Compiles one RequestAuthentication; `None` when it is bound to a
/// waypoint or gateway (`targetRef`), which node proxies do not serve.
pub fn compile(
    policy: &RequestAuthentication,
    root_namespace: &str,
    findings: &mut Vec<Finding>,
) -> Option<CompiledAuthorization> {
    let namespace = policy.metadata.namespace();
    let spec = &policy.spec;
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        findings.push(Finding {
            code: codes::AUTHZ_TARGET_REF,
            severity: Severity::Info,
            object: format!("RequestAuthentication {namespace}/{}", policy.metadata.name),
            path: "spec.targetRef".into(),
            message: "the policy is bound to a waypoint or gateway (targetRef); node proxies do not enforce it".into(),
        });
        return None;
    }
    let scope = match (&spec.selector, namespace == root_namespace) {
        (Some(_), _) => Scope::WorkloadSelector,
        (None, true) => Scope::Global,
        (None, false) => Scope::Namespace,
    };
    Some(CompiledAuthorization {
        authorization: Authorization {
            name: format!("{NAME_PREFIX}{}", policy.metadata.name),
            namespace: namespace.to_string(),
            scope: scope as i32,
            action: Action::Deny as i32,
            dry_run: true,
            jwt_rules: spec.jwt_rules.iter().map(jwt_rule).collect(),
            ..Default::default()
        },
        selector: spec.selector.clone(),
    })
}

fn jwt_rule(rule: &ra::JwtRule) -> JwtRule {
    JwtRule {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        jwks_uri: rule.jwks_uri.clone(),
        jwks: rule.jwks.clone(),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        forward_original_token: rule.forward_original_token,
        output_payload_to_header: rule.output_payload_to_header.clone(),
        output_claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| ClaimToHeader {
                header: c.header.clone(),
                claim: c.claim.clone(),
            })
            .collect(),
        timeout_ms: rule
            .timeout
            .as_ref()
            .map(|t| u32::try_from(t.0.as_millis()).unwrap_or(u32::MAX))
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{kinds::Object, source::parse::parse_file};

    #[test]
    fn jwt_rules_travel_as_a_policy_that_matches_nothing() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {app: api}\n  jwtRules:\n  - issuer: https://issuer.example\n    audiences: [shop]\n    jwksUri: https://keys.example/jwks.json\n    fromHeaders: [{name: x-jwt, prefix: 'Token '}]\n    fromParams: [token]\n    forwardOriginalToken: true\n    outputClaimToHeaders: [{header: x-sub, claim: sub}]\n    timeout: 3s\n";
        let objects = parse_file(Path::new("ra.yaml"), yaml).expect("valid");
        let Some(Object::RequestAuthentication(ra)) = objects.first() else {
            panic!("not a RequestAuthentication")
        };
        let mut findings = Vec::new();
        let compiled = compile(ra, "istio-system", &mut findings).expect("compiled");
        assert_eq!(compiled.resource_name(), "shop/request_authentication_jwt");
        let a = &compiled.authorization;
        assert_eq!(a.scope, Scope::WorkloadSelector as i32);
        assert!(a.dry_run && a.groups.is_empty() && a.action == Action::Deny as i32);
        let rule = &a.jwt_rules[0];
        assert_eq!(rule.issuer, "https://issuer.example");
        assert_eq!(rule.audiences, ["shop"]);
        assert_eq!(rule.jwks_uri, "https://keys.example/jwks.json");
        assert_eq!(rule.from_headers[0].prefix, "Token ");
        assert_eq!(rule.from_params, ["token"]);
        assert!(rule.forward_original_token);
        assert_eq!(rule.output_claim_to_headers[0].claim, "sub");
        assert_eq!(rule.timeout_ms, 3000);
        assert!(findings.is_empty());
    }
}
