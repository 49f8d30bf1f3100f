//! gateway.networking.k8s.io v1 Gateway and HTTPRoute. Fields follow
//! kubernetes-sigs/gateway-api `apis/v1`.

use serde::Deserialize;

use super::{Ignored, Invalid, ObjectMeta, Validate, invalid, istio::check_host};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeGateway {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: KubeGatewaySpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeGatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
    #[serde(default)]
    pub infrastructure: Ignored,
    /// Spelt `backendTLS` upstream, not `backendTls`.
    #[serde(default, rename = "backendTLS")]
    pub backend_tls: Ignored,
    #[serde(default)]
    pub allowed_listeners: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub tls: Ignored,
    #[serde(default)]
    pub allowed_routes: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAddress {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HttpRouteSpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub section_name: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default)]
    pub timeouts: Option<HttpRouteTimeouts>,
    #[serde(default)]
    pub retry: Ignored,
    #[serde(default)]
    pub session_persistence: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default)]
    pub path: Option<PathMatch>,
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    #[serde(default)]
    pub query_params: Vec<ValueMatch>,
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default)]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default)]
    pub request_mirror: Option<RequestMirror>,
    #[serde(default)]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default)]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default)]
    pub extension_ref: Ignored,
    #[serde(default)]
    pub cors: Ignored,
    #[serde(default)]
    pub external_auth: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default)]
    pub set: Vec<NameValue>,
    #[serde(default)]
    pub add: Vec<NameValue>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    #[serde(default)]
    pub backend_ref: BackendRef,
    #[serde(default)]
    pub percent: Option<u32>,
    #[serde(default)]
    pub fraction: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub status_code: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathModifier {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub replace_full_path: Option<String>,
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBackendRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub backend_request: Option<String>,
}

const LISTENER_PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "TLS", "TCP", "UDP"];
const FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
    "CORS",
    "ExternalAuth",
];

impl Validate for KubeGateway {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        if self.spec.gateway_class_name.is_empty() {
            e.push(invalid("spec.gatewayClassName", "must be set"));
        }
        if self.spec.listeners.is_empty() {
            e.push(invalid(
                "spec.listeners",
                "at least one listener is required",
            ));
        }
        let mut names = Vec::new();
        for (i, l) in self.spec.listeners.iter().enumerate() {
            let at = format!("spec.listeners[{i}]");
            if l.name.is_empty() {
                e.push(invalid(format!("{at}.name"), "must be set"));
            } else if names.contains(&&l.name) {
                e.push(invalid(
                    format!("{at}.name"),
                    format!("listener name `{}` is used twice", l.name),
                ));
            }
            names.push(&l.name);
            super::istio::check_port(l.port, &format!("{at}.port"), &mut e);
            if !LISTENER_PROTOCOLS.contains(&l.protocol.as_str()) && !l.protocol.contains('/') {
                e.push(invalid(
                    format!("{at}.protocol"),
                    format!(
                        "`{}` is not one of {}",
                        l.protocol,
                        LISTENER_PROTOCOLS.join(", ")
                    ),
                ));
            }
            if let Some(h) = &l.hostname {
                check_host(h, false, &format!("{at}.hostname"), &mut e);
            }
        }
        e
    }
}

impl Validate for HttpRoute {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        for (i, p) in self.spec.parent_refs.iter().enumerate() {
            if p.name.is_empty() {
                e.push(invalid(format!("spec.parentRefs[{i}].name"), "must be set"));
            }
        }
        for (i, h) in self.spec.hostnames.iter().enumerate() {
            check_host(h, false, &format!("spec.hostnames[{i}]"), &mut e);
        }
        for (i, rule) in self.spec.rules.iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            for (j, m) in rule.matches.iter().enumerate() {
                if let Some(p) = &m.path {
                    let kind = p.kind.as_deref().unwrap_or("PathPrefix");
                    let value = p.value.as_deref().unwrap_or("/");
                    match kind {
                        "Exact" | "PathPrefix" if !value.starts_with('/') => {
                            e.push(invalid(
                                format!("{at}.matches[{j}].path.value"),
                                "must start with `/`",
                            ));
                        }
                        "Exact" | "PathPrefix" => {}
                        "RegularExpression" => super::istio::check_regex(
                            value,
                            &format!("{at}.matches[{j}].path.value"),
                            &mut e,
                        ),
                        other => e.push(invalid(
                            format!("{at}.matches[{j}].path.type"),
                            format!(
                                "`{other}` is not one of `Exact`, `PathPrefix`, `RegularExpression`"
                            ),
                        )),
                    }
                }
                for (field, list) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
                    for (k, h) in list.iter().enumerate() {
                        if h.name.is_empty() {
                            e.push(invalid(
                                format!("{at}.matches[{j}].{field}[{k}].name"),
                                "must be set",
                            ));
                        }
                        if h.kind.as_deref() == Some("RegularExpression") {
                            super::istio::check_regex(
                                &h.value,
                                &format!("{at}.matches[{j}].{field}[{k}].value"),
                                &mut e,
                            );
                        }
                    }
                }
            }
            for (j, f) in rule.filters.iter().enumerate() {
                if !FILTERS.contains(&f.kind.as_str()) {
                    e.push(invalid(
                        format!("{at}.filters[{j}].type"),
                        format!("`{}` is not one of {}", f.kind, FILTERS.join(", ")),
                    ));
                }
                if let Some(r) = &f.request_redirect
                    && let Some(code) = r.status_code
                    && code != 301
                    && code != 302
                {
                    e.push(invalid(
                        format!("{at}.filters[{j}].requestRedirect.statusCode"),
                        "must be 301 or 302",
                    ));
                }
            }
            for (j, b) in rule.backend_refs.iter().enumerate() {
                if b.name.is_empty() {
                    e.push(invalid(
                        format!("{at}.backendRefs[{j}].name"),
                        "must be set",
                    ));
                }
                if b.weight.is_some_and(|w| w > 1_000_000) {
                    e.push(invalid(
                        format!("{at}.backendRefs[{j}].weight"),
                        "must be 0-1000000",
                    ));
                }
                let is_service = b.kind.as_deref().is_none_or(|k| k == "Service");
                if is_service && b.port.is_none() {
                    e.push(invalid(
                        format!("{at}.backendRefs[{j}].port"),
                        "a Service backend needs a `port`",
                    ));
                }
            }
            if let Some(t) = &rule.timeouts {
                for (field, v) in [
                    ("request", &t.request),
                    ("backendRequest", &t.backend_request),
                ] {
                    if let Some(v) = v
                        && super::istio::parse_duration(v).is_err()
                    {
                        e.push(invalid(
                            format!("{at}.timeouts.{field}"),
                            format!("`{v}` is not a duration"),
                        ));
                    }
                }
            }
        }
        e
    }
}
