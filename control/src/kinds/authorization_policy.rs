//! security.istio.io AuthorizationPolicy (v1, v1beta1): who may connect
//! to which workloads. Field names and meanings follow istio/api
//! `security/v1beta1/authorization.proto`.

use serde::Deserialize;

use super::{
    ObjectMeta,
    selector::{PolicyTargetReference, WorkloadSelector},
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicy {
    #[serde(default, rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
    #[serde(default)]
    status: super::Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// No selector: every workload in the namespace (every workload in the
    /// mesh in the root namespace).
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    /// OR-ed. No rules: an ALLOW policy allows nothing, a DENY policy
    /// denies nothing.
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub action: Action,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default)]
    pub provider: Option<Provider>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
}

/// `from`, `to` and `when` are AND-ed; within each, entries are OR-ed.
/// A rule with none of them matches everything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<From>,
    #[serde(default)]
    pub to: Vec<To>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct From {
    #[serde(default)]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct To {
    #[serde(default)]
    pub operation: Option<Operation>,
}

/// Where a connection comes from. Values with `*` at the start or end
/// match by suffix or prefix; `*` alone matches any non-empty value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities without `spiffe://`: `<td>/ns/<ns>/sa/<sa>`.
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// JWT `iss/sub` (L7).
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// `<ns>/<sa>`, or `<sa>` in the policy's namespace.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    /// Source IPs or CIDRs.
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// The original client's IPs or CIDRs (through proxies).
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// What a connection goes to. Only `ports` / `notPorts` are L4.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `key` matches one of `values` and none of `notValues`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// `istio.io/dry-run: "true"`: evaluate and log, never enforce.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

impl AuthorizationPolicy {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    pub fn dry_run(&self) -> bool {
        self.metadata
            .annotations
            .get(DRY_RUN_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Bound to a waypoint or gateway (`targetRef(s)`), not to workloads.
    pub fn targets_refs(&self) -> bool {
        self.spec.target_ref.is_some() || !self.spec.target_refs.is_empty()
    }
}

// === validation ===

pub(crate) use super::{Invalid, invalid};

/// `when` keys Istio accepts (`[...]` ones by prefix).
const CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];
const CONDITION_KEY_PREFIXES: &[&str] = &[
    "request.headers[",
    "request.auth.claims[",
    "experimental.envoy.filters.",
];

impl super::Validate for AuthorizationPolicy {
    fn validate(&self) -> Vec<Invalid> {
        self.check().err().into_iter().collect()
    }
}

impl AuthorizationPolicy {
    /// Istio's value rules for AuthorizationPolicy (the first broken one).
    fn check(&self) -> Result<(), Invalid> {
        let spec = &self.spec;
        if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
            return Err(invalid(
                "spec.selector",
                "only one of `selector` and `targetRef`/`targetRefs` may be set",
            ));
        }
        if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
            return Err(invalid(
                "spec.targetRef",
                "only one of `targetRef` and `targetRefs` may be set",
            ));
        }
        match (spec.action, &spec.provider) {
            (Action::Custom, None) => {
                return Err(invalid(
                    "spec.provider",
                    "a CUSTOM policy must name its `provider`",
                ));
            }
            (Action::Custom, Some(p)) if p.name.is_empty() => {
                return Err(invalid("spec.provider.name", "must not be empty"));
            }
            (action, Some(_)) if action != Action::Custom => {
                return Err(invalid(
                    "spec.provider",
                    "`provider` is only allowed with action CUSTOM",
                ));
            }
            _ => {}
        }
        for (i, rule) in spec.rules.iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            for (j, from) in rule.from.iter().enumerate() {
                let at = format!("{at}.from[{j}].source");
                let Some(source) = &from.source else {
                    return Err(invalid(at, "`source` must be set in each `from` entry"));
                };
                source.validate(&at)?;
            }
            for (j, to) in rule.to.iter().enumerate() {
                let at = format!("{at}.to[{j}].operation");
                let Some(op) = &to.operation else {
                    return Err(invalid(at, "`operation` must be set in each `to` entry"));
                };
                op.validate(&at)?;
            }
            for (j, c) in rule.when.iter().enumerate() {
                c.validate(&format!("{at}.when[{j}]"))?;
            }
        }
        Ok(())
    }
}

impl Source {
    fn validate(&self, at: &str) -> Result<(), Invalid> {
        let lists: [(&str, &Vec<String>); 12] = [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ];
        if lists.iter().all(|(_, v)| v.is_empty()) {
            return Err(invalid(at, "`source` must set at least one field"));
        }
        let sa = !self.service_accounts.is_empty() || !self.not_service_accounts.is_empty();
        let principals = !self.principals.is_empty() || !self.not_principals.is_empty();
        if sa && principals {
            return Err(invalid(
                format!("{at}.serviceAccounts"),
                "`serviceAccounts` cannot be combined with `principals` in one source",
            ));
        }
        for (name, values) in lists {
            let path = |k: usize| format!("{at}.{name}[{k}]");
            for (k, v) in values.iter().enumerate() {
                match name {
                    "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                        check_cidr(v).map_err(|m| invalid(path(k), m))?
                    }
                    "serviceAccounts" | "notServiceAccounts" => {
                        check_service_account(v).map_err(|m| invalid(path(k), m))?
                    }
                    _ => check_wildcard(v).map_err(|m| invalid(path(k), m))?,
                }
            }
        }
        Ok(())
    }
}

impl Operation {
    fn validate(&self, at: &str) -> Result<(), Invalid> {
        let lists: [(&str, &Vec<String>); 8] = [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ];
        if lists.iter().all(|(_, v)| v.is_empty()) {
            return Err(invalid(at, "`operation` must set at least one field"));
        }
        for (name, values) in lists {
            for (k, v) in values.iter().enumerate() {
                let checked = match name {
                    "ports" | "notPorts" => check_port(v),
                    "paths" | "notPaths" if v.contains('{') => check_path_template(v),
                    _ => check_wildcard(v),
                };
                checked.map_err(|m| invalid(format!("{at}.{name}[{k}]"), m))?;
            }
        }
        Ok(())
    }
}

impl Condition {
    fn validate(&self, at: &str) -> Result<(), Invalid> {
        let key = self.key.as_str();
        if key.is_empty() {
            return Err(invalid(format!("{at}.key"), "`key` must be set"));
        }
        let known = CONDITION_KEYS.contains(&key)
            || CONDITION_KEY_PREFIXES
                .iter()
                .any(|p| key.starts_with(p) && (!p.ends_with('[') || key.ends_with(']')));
        if !known {
            return Err(invalid(
                format!("{at}.key"),
                format!(
                    "unknown condition key `{key}`; see https://istio.io/latest/docs/reference/config/security/conditions/"
                ),
            ));
        }
        if self.values.is_empty() && self.not_values.is_empty() {
            return Err(invalid(at, "a condition must set `values` or `notValues`"));
        }
        for (name, values) in [("values", &self.values), ("notValues", &self.not_values)] {
            for (k, v) in values.iter().enumerate() {
                let checked = match key {
                    "source.ip" | "remote.ip" | "destination.ip" => check_cidr(v),
                    "destination.port" => check_port(v),
                    _ => Ok(()),
                };
                checked.map_err(|m| invalid(format!("{at}.{name}[{k}]"), m))?;
            }
        }
        Ok(())
    }
}

/// Istio's path templates: starts with `/`; each `{*}` (one segment) or
/// `{**}` (any number) is a whole segment; at most one `{**}`, and only
/// literal segments after it; no other `*`, `{` or `}`.
pub fn check_path_template(value: &str) -> Result<(), String> {
    let Some(rest) = value.strip_prefix('/') else {
        return Err(format!("`{value}`: a path template must start with `/`"));
    };
    let mut seen_glob = false;
    for segment in rest.split('/') {
        match segment {
            "{**}" if seen_glob => {
                return Err(format!("`{value}`: `{{**}}` may appear only once"));
            }
            "{**}" => seen_glob = true,
            "{*}" if seen_glob => {
                return Err(format!("`{value}`: `{{*}}` may not follow `{{**}}`"));
            }
            "{*}" => {}
            literal if literal.contains(['*', '{', '}']) => {
                return Err(format!(
                    "`{value}`: `{{*}}` and `{{**}}` must be whole path segments, and no other `*`, `{{` or `}}` is allowed"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// An IP address or CIDR.
pub fn check_cidr(value: &str) -> Result<(), String> {
    let (ip, len) = match value.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (value, None),
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return Err(format!("`{value}` is not an IP address or CIDR"));
    };
    if let Some(len) = len {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("`{value}`: the prefix length must be 0-{max}")),
        }
    }
    Ok(())
}

/// A port number 0-65535 given as a string.
pub fn check_port(value: &str) -> Result<(), String> {
    match value.parse::<u16>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("`{value}` is not a port number (0-65535)")),
    }
}

/// `*` is allowed alone, or at the start or (exclusive) the end.
fn check_wildcard(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    let stars = value.matches('*').count();
    let ok = value == "*"
        || stars == 0
        || (stars == 1 && (value.starts_with('*') || value.ends_with('*')));
    if !ok {
        return Err(format!(
            "`{value}`: `*` is only allowed alone, or once at the start or the end"
        ));
    }
    Ok(())
}

/// `<ns>/<sa>` or `<sa>`, no wildcards.
fn check_service_account(value: &str) -> Result<(), String> {
    let parts: Vec<&str> = value.split('/').collect();
    let ok = match parts.as_slice() {
        [sa] => !sa.is_empty(),
        [ns, sa] => !ns.is_empty() && !sa.is_empty(),
        _ => false,
    };
    if !ok || value.contains('*') {
        return Err(format!(
            "`{value}` is not `<namespace>/<service account>` or `<service account>` (no wildcards)"
        ));
    }
    Ok(())
}
