//! AuthorizationPolicy → `istio.security.Authorization`, as istiod
//! compiles it for ztunnel:
//!
//! - scope: no selector → `NAMESPACE` (`GLOBAL` in the root namespace); a
//!   selector → `WORKLOAD_SELECTOR`, and each selected workload lists
//!   `<namespace>/<name>` in its `authorization_policies`;
//! - each rule → one group: its `to` operations as one OR-ed rule, its
//!   `from` sources as another, each `when` condition as one more;
//! - principals keep Istio's form (no `spiffe://`); `*` at either end is a
//!   prefix/suffix match, `*` alone means "any authenticated peer";
//! - HTTP attributes (methods, paths, hosts, request principals, headers,
//!   JWT claims) cannot be seen by an L4 proxy: in `groups`, in an ALLOW
//!   policy the rule that uses them is dropped (it can never match), in
//!   DENY and AUDIT it is kept without them (more restrictive), and a
//!   finding says so. The same rules with their HTTP attributes go in
//!   weft's `http_groups`, which weft's agent enforces per request on the
//!   ports a Service declares HTTP.
//!
//! weft differs from istiod in two places, both in fields every Workload
//! API client understands, so that a stock ztunnel never rejects a
//! response nor enforces less than written:
//!
//! - `remoteIpBlocks` / `remote.ip` compile into `source_ips` (istiod
//!   treats them as HTTP attributes): at L4, with no PROXY protocol in
//!   front, the remote IP is the source IP. A source with both `ipBlocks`
//!   and `remoteIpBlocks` gets their intersection; one whose intersection
//!   is empty never matches, and a rule that cannot match is dropped.
//! - AUDIT (istiod sends ztunnel nothing) becomes `action: DENY`,
//!   `dry_run: true` (evaluated and logged, never enforced, by any client)
//!   plus weft's `audit` flag, which weft's agent logs as an audit.

use std::{collections::BTreeSet, net::IpAddr};

use weft_proto::security::{
    Action, Address, AttributeMatch, Authorization, ExtAuthz, ExtAuthzBody, ExtAuthzHeader,
    ExtAuthzKind, Group, Match, Rules, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};

use crate::{
    analysis::{Finding, Severity, codes},
    kinds::{
        AuthorizationPolicy,
        authorization_policy::{self as ap, Condition, Operation, Source},
        selector::WorkloadSelector,
    },
    mesh::MeshConfig,
};

/// `when` keys a node proxy can evaluate.
pub const L4_CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "destination.ip",
    "destination.port",
];

/// A compiled policy and where it applies.
#[derive(Debug, Clone)]
pub struct CompiledAuthorization {
    pub authorization: Authorization,
    /// For AuthorizationPolicies with a selector: the selector, applied in
    /// `namespace` (in every namespace when the policy is in the root
    /// namespace). `None` for PeerAuthentication-derived policies, which
    /// workloads list by their effective mTLS mode instead.
    pub selector: Option<WorkloadSelector>,
}

impl CompiledAuthorization {
    /// The xDS resource name and the key in workloads'
    /// `authorization_policies`: `<namespace>/<name>`.
    pub fn resource_name(&self) -> String {
        format!(
            "{}/{}",
            self.authorization.namespace, self.authorization.name
        )
    }
}

/// Compiles one policy without a mesh config (no extension providers, so
/// a CUSTOM policy is left out).
pub fn compile(
    policy: &AuthorizationPolicy,
    root_namespace: &str,
    findings: &mut Vec<Finding>,
) -> Option<CompiledAuthorization> {
    compile_with(policy, root_namespace, &MeshConfig::default(), findings)
}

/// Compiles one policy. `None` when node proxies do not enforce it (bound
/// by targetRef, or CUSTOM naming a provider `mesh` does not have or that
/// weft does not support); `findings` says why, and what was dropped.
pub fn compile_with(
    policy: &AuthorizationPolicy,
    root_namespace: &str,
    mesh: &MeshConfig,
    findings: &mut Vec<Finding>,
) -> Option<CompiledAuthorization> {
    let namespace = policy.namespace();
    let object = format!("AuthorizationPolicy {namespace}/{}", policy.metadata.name);
    let finding = |code, severity, path: &str, message: String| Finding {
        code,
        severity,
        object: object.clone(),
        path: path.to_string(),
        message,
    };
    if policy.targets_refs() {
        findings.push(finding(
            codes::AUTHZ_TARGET_REF,
            Severity::Info,
            "spec.targetRefs",
            "the policy is bound to a waypoint or gateway (targetRef); node proxies do not enforce it".into(),
        ));
        return None;
    }
    let (action, audit, ext_authz) = match policy.spec.action {
        ap::Action::Allow => (Action::Allow, false, None),
        ap::Action::Deny => (Action::Deny, false, None),
        ap::Action::Audit => (Action::Deny, true, None),
        ap::Action::Custom => {
            let name = policy
                .spec
                .provider
                .as_ref()
                .map_or("", |p| p.name.as_str());
            match ext_authz(name, mesh) {
                Ok(provider) => (Action::Deny, false, Some(provider)),
                Err(why) => {
                    findings.push(finding(
                        codes::AUTHZ_UNSUPPORTED_ACTION,
                        Severity::Warning,
                        "spec.provider.name",
                        format!("{why}; the CUSTOM policy is not enforced"),
                    ));
                    return None;
                }
            }
        }
    };
    let scope = match (&policy.spec.selector, namespace == root_namespace) {
        (Some(_), _) => Scope::WorkloadSelector,
        (None, true) => Scope::Global,
        (None, false) => Scope::Namespace,
    };

    let mut l7 = BTreeSet::new();
    let mut groups = Vec::new();
    let mut http_groups = Vec::new();
    for (index, rule) in policy.spec.rules.iter().enumerate() {
        let mut rule_l7 = BTreeSet::new();
        // Can never match whatever the action (disjoint IP blocks).
        let Some(rules) = compile_rule(rule, namespace, Some(&mut rule_l7)) else {
            continue;
        };
        let http = compile_rule(rule, namespace, None).expect("same rule, same IP blocks");
        // Each group says which rule it is: the ones skipped above shift
        // the positions.
        let index = u32::try_from(index).ok();
        http_groups.push(Group {
            rules: http,
            rule: index,
        });
        // At L4, an ALLOW rule that needs HTTP attributes can never match.
        if rule_l7.is_empty() || action != Action::Allow || audit {
            groups.push(Group { rules, rule: index });
        }
        l7.extend(rule_l7);
    }
    if ext_authz.is_some() {
        // Requests only: the rules say which go to the provider.
        groups.clear();
        l7.insert("CUSTOM".to_string());
    } else if l7.is_empty() {
        http_groups.clear();
    } else {
        let found = l7.iter().cloned().collect::<Vec<_>>().join(", ");
        let consequence = if action == Action::Allow {
            "rules that use them never match there, so less is allowed than written"
        } else {
            "rules that use them are enforced without them there: every connection that matches the rest is denied/audited, more than written"
        };
        findings.push(finding(
            codes::AUTHZ_L7_ATTRIBUTES,
            Severity::Info,
            "spec.rules",
            format!(
                "HTTP attributes (found: {found}) are enforced per request on ports a Service declares HTTP; on other ports (opaque TCP) {consequence}"
            ),
        ));
    }

    Some(CompiledAuthorization {
        authorization: Authorization {
            name: policy.metadata.name.clone(),
            namespace: namespace.to_string(),
            scope: scope as i32,
            action: action as i32,
            groups,
            dry_run: policy.dry_run() || audit || ext_authz.is_some(),
            audit,
            extensions: Vec::new(),
            l7_attributes_ignored: l7.into_iter().collect(),
            http_groups,
            jwt_rules: Vec::new(),
            ext_authz,
        },
        selector: policy.spec.selector.clone(),
    })
}

/// How HTTP attributes are compiled: for an L4 proxy, left out and named
/// in the set; for an HTTP proxy, kept.
type L7Sink<'a> = Option<&'a mut BTreeSet<String>>;

/// The `envoyExtAuthzGrpc` or `envoyExtAuthzHttp` provider `name`, or
/// why there is none.
fn ext_authz(name: &str, mesh: &MeshConfig) -> Result<ExtAuthz, String> {
    let provider = mesh
        .provider(name)
        .ok_or_else(|| format!("no extension provider `{name}` in the mesh config"))?;
    let timeout_ms = |t: Option<crate::kinds::istio::Duration>| {
        t.map_or(0, |t| u32::try_from(t.0.as_millis()).unwrap_or(u32::MAX))
    };
    let status = |s: Option<&str>| s.and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = |b: Option<&crate::mesh::RequestBody>| {
        b.map(|b| ExtAuthzBody {
            max_request_bytes: b.max_request_bytes,
            allow_partial_message: b.allow_partial_message,
            pack_as_bytes: b.pack_as_bytes,
        })
    };
    if let Some(grpc) = &provider.envoy_ext_authz_grpc {
        return Ok(ExtAuthz {
            provider: name.to_string(),
            service: grpc.service.clone(),
            port: grpc.port.into(),
            timeout_ms: timeout_ms(grpc.timeout),
            fail_open: grpc.fail_open,
            status_on_error: status(grpc.status_on_error.as_deref()),
            kind: ExtAuthzKind::ExtAuthzGrpc as i32,
            request_body: body(grpc.include_request_body_in_check.as_ref()),
            ..Default::default()
        });
    }
    let http = provider.envoy_ext_authz_http.as_ref().ok_or_else(|| {
        format!(
            "extension provider `{name}` is neither `envoyExtAuthzGrpc` nor `envoyExtAuthzHttp`, the kinds weft supports"
        )
    })?;
    // The deprecated field counts only when the new one is empty (Istio).
    let include = if http.include_request_headers_in_check.is_empty() {
        &http.include_headers_in_check
    } else {
        &http.include_request_headers_in_check
    };
    Ok(ExtAuthz {
        provider: name.to_string(),
        service: http.service.clone(),
        port: http.port.into(),
        timeout_ms: timeout_ms(http.timeout),
        fail_open: http.fail_open,
        status_on_error: status(http.status_on_error.as_deref()),
        kind: ExtAuthzKind::ExtAuthzHttp as i32,
        request_body: body(http.include_request_body_in_check.as_ref()),
        path_prefix: http.path_prefix.clone().unwrap_or_default(),
        include_request_headers: include.clone(),
        // Sorted by name (a BTreeMap), as istiod sorts them.
        include_additional_headers: http
            .include_additional_headers_in_check
            .iter()
            .map(|(name, value)| ExtAuthzHeader {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        headers_to_upstream_on_allow: http.headers_to_upstream_on_allow.clone(),
        headers_to_downstream_on_deny: http.headers_to_downstream_on_deny.clone(),
        headers_to_downstream_on_allow: http.headers_to_downstream_on_allow.clone(),
    })
}

/// One AuthorizationPolicy rule → the rules of one group (AND-ed); `None`
/// when it can never match.
fn compile_rule(rule: &ap::Rule, namespace: &str, mut l7: L7Sink) -> Option<Vec<Rules>> {
    let mut rules = Vec::new();
    let to: Vec<Match> = rule
        .to
        .iter()
        .map(|to| operation_match(to.operation.as_ref(), l7.as_deref_mut()))
        .collect();
    if !to.is_empty() {
        rules.push(Rules { matches: to });
    }
    // Sources that can never match drop out; if all do, so does the rule.
    let from: Vec<Match> = rule
        .from
        .iter()
        .filter_map(|from| source_match(from.source.as_ref(), namespace, l7.as_deref_mut()))
        .collect();
    if from.is_empty() && !rule.from.is_empty() {
        return None;
    }
    if !from.is_empty() {
        rules.push(Rules { matches: from });
    }
    for condition in &rule.when {
        rules.push(Rules {
            matches: vec![condition_match(condition, namespace, l7.as_deref_mut())],
        });
    }
    Some(rules)
}

fn operation_match(operation: Option<&Operation>, l7: L7Sink) -> Match {
    let Some(op) = operation else {
        return Match::default();
    };
    let l4 = Match {
        destination_ports: ports(&op.ports),
        not_destination_ports: ports(&op.not_ports),
        ..Default::default()
    };
    let Some(l7) = l7 else {
        let hosts = |values: &[String]| {
            let lower: Vec<String> = values.iter().map(|h| h.to_ascii_lowercase()).collect();
            strings(&lower)
        };
        return Match {
            hosts: hosts(&op.hosts),
            not_hosts: hosts(&op.not_hosts),
            methods: strings(&op.methods),
            not_methods: strings(&op.not_methods),
            paths: op.paths.iter().map(|p| path_match(p)).collect(),
            not_paths: op.not_paths.iter().map(|p| path_match(p)).collect(),
            ..l4
        };
    };
    for (name, values) in [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ] {
        if !values.is_empty() {
            l7.insert(name.to_string());
        }
    }
    l4
}

/// A path: Istio's string forms, or a template when it has `{*}`/`{**}`.
fn path_match(value: &str) -> StringMatch {
    if value.contains("{*}") || value.contains("{**}") {
        StringMatch {
            match_type: Some(MatchType::PathTemplate(value.to_string())),
        }
    } else {
        string_match(value)
    }
}

/// One `from.source`; `None` when it can never match (its `ipBlocks` and
/// `remoteIpBlocks` do not overlap).
fn source_match(source: Option<&Source>, namespace: &str, l7: L7Sink) -> Option<Match> {
    let Some(s) = source else {
        return Some(Match::default());
    };
    let (request_principals, not_request_principals) = match l7 {
        None => (
            strings(&s.request_principals),
            strings(&s.not_request_principals),
        ),
        Some(l7) => {
            for (name, values) in [
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
            ] {
                if !values.is_empty() {
                    l7.insert(name.to_string());
                }
            }
            (Vec::new(), Vec::new())
        }
    };
    // At L4 the remote IP is the source IP: both lists constrain it.
    let (blocks, remote) = (addresses(&s.ip_blocks), addresses(&s.remote_ip_blocks));
    let source_ips = match (blocks.is_empty(), remote.is_empty()) {
        (_, true) => blocks,
        (true, false) => remote,
        (false, false) => {
            let both = intersection(&blocks, &remote);
            if both.is_empty() {
                return None;
            }
            both
        }
    };
    let mut not_source_ips = addresses(&s.not_ip_blocks);
    not_source_ips.extend(addresses(&s.not_remote_ip_blocks));
    Some(Match {
        namespaces: strings(&s.namespaces),
        not_namespaces: strings(&s.not_namespaces),
        service_accounts: service_accounts(&s.service_accounts, namespace),
        not_service_accounts: service_accounts(&s.not_service_accounts, namespace),
        principals: strings(&s.principals),
        not_principals: strings(&s.not_principals),
        source_ips,
        not_source_ips,
        request_principals,
        not_request_principals,
        ..Default::default()
    })
}

/// The addresses in both lists, as CIDRs: two CIDRs are either nested (the
/// narrower one is in both) or disjoint.
fn intersection(a: &[Address], b: &[Address]) -> Vec<Address> {
    let mut both = Vec::new();
    for x in a {
        for y in b {
            let narrower = if contains(x, y) {
                y
            } else if contains(y, x) {
                x
            } else {
                continue;
            };
            if !both.contains(narrower) {
                both.push(narrower.clone());
            }
        }
    }
    both
}

/// Whether CIDR `outer` contains CIDR `inner` (same family).
fn contains(outer: &Address, inner: &Address) -> bool {
    if outer.address.len() != inner.address.len() || outer.length > inner.length {
        return false;
    }
    let bits = outer.length as usize;
    let (whole, rest) = (bits / 8, bits % 8);
    if outer.address[..whole] != inner.address[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        outer.address[whole] & mask == inner.address[whole] & mask
    }
}

fn condition_match(c: &Condition, namespace: &str, l7: L7Sink) -> Match {
    let (values, not) = (&c.values, &c.not_values);
    let mut m = Match::default();
    match c.key.as_str() {
        "source.ip" => (m.source_ips, m.not_source_ips) = (addresses(values), addresses(not)),
        // At L4 the remote IP is the source IP.
        "remote.ip" => (m.source_ips, m.not_source_ips) = (addresses(values), addresses(not)),
        "source.namespace" => (m.namespaces, m.not_namespaces) = (strings(values), strings(not)),
        "source.principal" => (m.principals, m.not_principals) = (strings(values), strings(not)),
        "source.serviceAccount" => {
            (m.service_accounts, m.not_service_accounts) = (
                service_accounts(values, namespace),
                service_accounts(not, namespace),
            )
        }
        "destination.ip" => {
            (m.destination_ips, m.not_destination_ips) = (addresses(values), addresses(not))
        }
        "destination.port" => {
            (m.destination_ports, m.not_destination_ports) = (ports(values), ports(not))
        }
        key => match l7 {
            Some(l7) => {
                l7.insert(key.to_string());
            }
            None => m.attributes.push(AttributeMatch {
                key: key.to_string(),
                values: strings(values),
                not_values: strings(not),
            }),
        },
    }
    m
}

/// Istio's string forms: `*` any (presence), `*x` suffix, `x*` prefix,
/// else exact.
pub fn string_match(value: &str) -> StringMatch {
    let match_type = if value == "*" {
        MatchType::Presence(())
    } else if let Some(suffix) = value.strip_prefix('*') {
        MatchType::Suffix(suffix.to_string())
    } else if let Some(prefix) = value.strip_suffix('*') {
        MatchType::Prefix(prefix.to_string())
    } else {
        MatchType::Exact(value.to_string())
    };
    StringMatch {
        match_type: Some(match_type),
    }
}

fn strings(values: &[String]) -> Vec<StringMatch> {
    values.iter().map(|v| string_match(v)).collect()
}

/// `ns/sa`, or `sa` in the policy's namespace.
fn service_accounts(values: &[String], namespace: &str) -> Vec<ServiceAccountMatch> {
    values
        .iter()
        .map(|v| match v.split_once('/') {
            Some((ns, sa)) => ServiceAccountMatch {
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            },
            None => ServiceAccountMatch {
                namespace: namespace.to_string(),
                service_account: v.clone(),
            },
        })
        .collect()
}

/// Port strings; validation has rejected anything but 0-65535.
fn ports(values: &[String]) -> Vec<u32> {
    values
        .iter()
        .filter_map(|p| p.parse::<u16>().ok().map(u32::from))
        .collect()
}

/// IPs and CIDRs; validation has rejected anything else.
pub fn addresses(values: &[String]) -> Vec<Address> {
    values.iter().filter_map(|v| cidr(v)).collect()
}

/// `10.0.0.0/8` or `10.0.0.1` (a /32 or /128).
pub fn cidr(value: &str) -> Option<Address> {
    let (ip, length) = match value.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u32>().ok()?)),
        None => (value.parse::<IpAddr>().ok()?, None),
    };
    let (bytes, max) = match ip {
        IpAddr::V4(v4) => (v4.octets().to_vec(), 32),
        IpAddr::V6(v6) => (v6.octets().to_vec(), 128),
    };
    let length = length.unwrap_or(max);
    (length <= max).then_some(Address {
        address: bytes,
        length,
    })
}

#[cfg(test)]
#[path = "authorization_tests.rs"]
mod tests;
