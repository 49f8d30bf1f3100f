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
//!   JWT claims) cannot be seen by a node proxy: in an ALLOW policy the rule
//!   that uses them is dropped (it can never match), in DENY and AUDIT it
//!   is kept without them (more restrictive). Either way a finding says so.
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
    Action, Address, Authorization, Group, Match, Rules, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};

use crate::{
    analysis::{Finding, Severity, codes},
    kinds::{
        AuthorizationPolicy,
        authorization_policy::{self as ap, Condition, Operation, Source},
        selector::WorkloadSelector,
    },
};

/// `when` keys a node proxy can evaluate.
pub const L4_CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
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

/// Compiles one policy. `None` when it does not apply to node proxies
/// (bound by targetRef, or CUSTOM); `findings` says why, and what was
/// dropped.
pub fn compile(
    policy: &AuthorizationPolicy,
    root_namespace: &str,
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
    let (action, audit) = match policy.spec.action {
        ap::Action::Allow => (Action::Allow, false),
        ap::Action::Deny => (Action::Deny, false),
        ap::Action::Audit => (Action::Deny, true),
        ap::Action::Custom => {
            findings.push(finding(
                codes::AUTHZ_UNSUPPORTED_ACTION,
                Severity::Warning,
                "spec.action",
                "CUSTOM (external authorization) needs an L7 proxy; node proxies ignore this policy".into(),
            ));
            return None;
        }
    };
    let scope = match (&policy.spec.selector, namespace == root_namespace) {
        (Some(_), _) => Scope::WorkloadSelector,
        (None, true) => Scope::Global,
        (None, false) => Scope::Namespace,
    };

    let mut l7 = BTreeSet::new();
    let mut groups = Vec::new();
    for rule in &policy.spec.rules {
        let mut rule_l7 = BTreeSet::new();
        let rules = compile_rule(rule, namespace, &mut rule_l7);
        match rules {
            // Can never match: an ALLOW rule that needs HTTP attributes.
            Some(_) if !rule_l7.is_empty() && action == Action::Allow && !audit => {}
            Some(rules) => groups.push(Group { rules }),
            // Can never match whatever the action (disjoint IP blocks).
            None => {}
        }
        l7.extend(rule_l7);
    }
    if !l7.is_empty() {
        let found = l7.iter().cloned().collect::<Vec<_>>().join(", ");
        let consequence = if action == Action::Allow {
            "in an ALLOW policy, rules that use them are dropped: they never match, so less is allowed than written"
        } else {
            "the rules are enforced without them: every connection that matches the rest is denied/audited, more than written"
        };
        findings.push(finding(
            codes::AUTHZ_L7_ATTRIBUTES,
            Severity::Warning,
            "spec.rules",
            format!(
                "node proxies cannot see HTTP attributes (found: {found}); {consequence}. Enforce HTTP rules at a waypoint proxy"
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
            dry_run: policy.dry_run() || audit,
            audit,
            extensions: Vec::new(),
            l7_attributes_ignored: l7.into_iter().collect(),
        },
        selector: policy.spec.selector.clone(),
    })
}

/// One AuthorizationPolicy rule → the rules of one group (AND-ed); `None`
/// when it can never match.
fn compile_rule(rule: &ap::Rule, namespace: &str, l7: &mut BTreeSet<String>) -> Option<Vec<Rules>> {
    let mut rules = Vec::new();
    let to: Vec<Match> = rule
        .to
        .iter()
        .map(|to| operation_match(to.operation.as_ref(), l7))
        .collect();
    if !to.is_empty() {
        rules.push(Rules { matches: to });
    }
    // Sources that can never match drop out; if all do, so does the rule.
    let from: Vec<Match> = rule
        .from
        .iter()
        .filter_map(|from| source_match(from.source.as_ref(), namespace, l7))
        .collect();
    if from.is_empty() && !rule.from.is_empty() {
        return None;
    }
    if !from.is_empty() {
        rules.push(Rules { matches: from });
    }
    for condition in &rule.when {
        rules.push(Rules {
            matches: vec![condition_match(condition, l7)],
        });
    }
    Some(rules)
}

fn operation_match(operation: Option<&Operation>, l7: &mut BTreeSet<String>) -> Match {
    let Some(op) = operation else {
        return Match::default();
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
    Match {
        destination_ports: ports(&op.ports),
        not_destination_ports: ports(&op.not_ports),
        ..Default::default()
    }
}

/// One `from.source`; `None` when it can never match (its `ipBlocks` and
/// `remoteIpBlocks` do not overlap).
fn source_match(
    source: Option<&Source>,
    namespace: &str,
    l7: &mut BTreeSet<String>,
) -> Option<Match> {
    let Some(s) = source else {
        return Some(Match::default());
    };
    for (name, values) in [
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
    ] {
        if !values.is_empty() {
            l7.insert(name.to_string());
        }
    }
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

fn condition_match(c: &Condition, l7: &mut BTreeSet<String>) -> Match {
    let (values, not) = (&c.values, &c.not_values);
    let mut m = Match::default();
    match c.key.as_str() {
        "source.ip" => (m.source_ips, m.not_source_ips) = (addresses(values), addresses(not)),
        // At L4 the remote IP is the source IP.
        "remote.ip" => (m.source_ips, m.not_source_ips) = (addresses(values), addresses(not)),
        "source.namespace" => (m.namespaces, m.not_namespaces) = (strings(values), strings(not)),
        "source.principal" => (m.principals, m.not_principals) = (strings(values), strings(not)),
        "destination.ip" => {
            (m.destination_ips, m.not_destination_ips) = (addresses(values), addresses(not))
        }
        "destination.port" => {
            (m.destination_ports, m.not_destination_ports) = (ports(values), ports(not))
        }
        key => {
            l7.insert(key.to_string());
        }
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
