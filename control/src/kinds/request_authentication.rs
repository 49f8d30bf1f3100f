//! security.istio.io RequestAuthentication: JWT validation (L7). Fields
//! follow istio/api `security/v1beta1/request_authentication.proto`.

use serde::Deserialize;

use super::{
    Ignored, Invalid, ObjectMeta, Validate, invalid,
    istio::Duration,
    selector::{PolicyTargetReference, WorkloadSelector},
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RequestAuthenticationSpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: String,
    #[serde(default)]
    pub jwks: String,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: String,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

impl Validate for RequestAuthentication {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        let spec = &self.spec;
        if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
            e.push(invalid(
                "spec.selector",
                "only one of `selector` and `targetRef`/`targetRefs` may be set",
            ));
        }
        for (i, r) in spec.jwt_rules.iter().enumerate() {
            let at = format!("spec.jwtRules[{i}]");
            if r.issuer.is_empty() {
                e.push(invalid(format!("{at}.issuer"), "must be set"));
            }
            if !r.jwks.is_empty() && !r.jwks_uri.is_empty() {
                e.push(invalid(
                    format!("{at}.jwks"),
                    "`jwks` and `jwksUri` are mutually exclusive",
                ));
            }
            let url = r.jwks_uri.starts_with("https://") || r.jwks_uri.starts_with("http://");
            if !r.jwks_uri.is_empty() && !url {
                e.push(invalid(
                    format!("{at}.jwksUri"),
                    format!("`{}` is not an http(s) URL", r.jwks_uri),
                ));
            }
            if !r.jwks.is_empty() && serde_json::from_str::<serde_json::Value>(&r.jwks).is_err() {
                e.push(invalid(
                    format!("{at}.jwks"),
                    "is not a JSON Web Key Set (not JSON)",
                ));
            }
            for (j, h) in r.from_headers.iter().enumerate() {
                if h.name.is_empty() {
                    e.push(invalid(
                        format!("{at}.fromHeaders[{j}].name"),
                        "must be set",
                    ));
                }
            }
            for (j, c) in r.output_claim_to_headers.iter().enumerate() {
                if c.header.is_empty() || c.claim.is_empty() {
                    e.push(invalid(
                        format!("{at}.outputClaimToHeaders[{j}]"),
                        "`header` and `claim` must be set",
                    ));
                }
            }
        }
        e
    }
}
