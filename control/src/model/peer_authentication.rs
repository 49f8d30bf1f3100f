//! PeerAuthentication → `istio.security.Authorization`, as istiod does for
//! ambient mode. A node proxy always speaks mTLS (HBONE) between meshed
//! workloads, so the only thing PeerAuthentication changes is whether a
//! workload also accepts plaintext:
//!
//! - STRICT is a DENY of connections without a peer identity. One static
//!   policy, `<root>/istio_converted_static_strict` (scope
//!   `WORKLOAD_SELECTOR`, `not_principals: [presence]`), is served as soon
//!   as any PeerAuthentication exists, and every workload whose effective
//!   mode is STRICT lists it in `authorization_policies`.
//! - The effective mode is the workload policy's, else the namespace's,
//!   else the mesh's (root namespace), UNSET inheriting; the oldest policy
//!   wins a tie at one level. PERMISSIVE and DISABLE both accept plaintext
//!   (DISABLE cannot turn HBONE off).
//! - A workload policy with `portLevelMtls` that makes some ports differ
//!   from the rest compiles to its own DENY policy,
//!   `<ns>/converted_peer_authentication_<name>`, which the workloads it
//!   selects list instead of (not besides) the static one: a STRICT policy
//!   with permissive ports denies "no principal" and "not one of those
//!   ports" as two rules of one group; a permissive policy with STRICT
//!   ports has one group per strict port.

use std::collections::BTreeMap;

use weft_proto::security::{
    Action, Authorization, Group, Match, Rules, Scope, StringMatch, string_match::MatchType,
};

use super::authorization::CompiledAuthorization;
use crate::kinds::{
    PeerAuthentication,
    peer_authentication::{MtlsMode, MutualTls},
};

/// The name of the static STRICT policy (underscores: not a valid
/// Kubernetes name, so it cannot collide with a user's).
pub const STATIC_STRICT_NAME: &str = "istio_converted_static_strict";
/// Prefix of converted port-level policies.
pub const CONVERTED_PREFIX: &str = "converted_peer_authentication_";

/// The PeerAuthentications of a snapshot, indexed for per-workload lookups.
#[derive(Debug, Default)]
pub struct PeerAuthIndex<'a> {
    root_namespace: String,
    /// The oldest wide (selector-less) policy per namespace; the root
    /// namespace's is the mesh's.
    wide: BTreeMap<&'a str, &'a PeerAuthentication>,
    /// Selector policies per namespace (never the root namespace's, which
    /// Istio ignores for ambient), oldest first.
    selecting: BTreeMap<&'a str, Vec<&'a PeerAuthentication>>,
    any: bool,
}

impl<'a> PeerAuthIndex<'a> {
    pub fn new(policies: &[&'a PeerAuthentication], root_namespace: &str) -> Self {
        let mut sorted: Vec<&'a PeerAuthentication> = policies.to_vec();
        sorted.sort_by(|a, b| age_key(a).cmp(&age_key(b)));
        let mut index = PeerAuthIndex {
            root_namespace: root_namespace.to_string(),
            any: !sorted.is_empty(),
            ..Default::default()
        };
        for pa in sorted {
            if pa.is_wide() {
                index.wide.entry(pa.namespace()).or_insert(pa);
            } else if pa.namespace() != root_namespace {
                index.selecting.entry(pa.namespace()).or_default().push(pa);
            }
        }
        index
    }

    /// The Authorizations to serve: the static STRICT policy (when any
    /// PeerAuthentication exists) and the converted port-level ones.
    pub fn compile(&self) -> Vec<CompiledAuthorization> {
        if !self.any {
            return Vec::new();
        }
        let mut out = vec![CompiledAuthorization {
            authorization: static_strict(&self.root_namespace),
            selector: None,
        }];
        for (namespace, policies) in &self.selecting {
            let ns = self.wide.get(namespace).copied();
            let root = self.wide.get(self.root_namespace.as_str()).copied();
            for pa in policies {
                if let Some(a) = convert(pa, ns, root) {
                    out.push(CompiledAuthorization {
                        authorization: a,
                        selector: None,
                    });
                }
            }
        }
        out
    }

    /// What a workload in `namespace` with `labels` lists in its
    /// `authorization_policies` because of PeerAuthentication (sorted).
    pub fn workload_keys(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<String> {
        let mesh = self.wide.get(self.root_namespace.as_str()).copied();
        let ns = if namespace == self.root_namespace {
            None
        } else {
            self.wide.get(namespace).copied()
        };
        let workload = self.selecting.get(namespace).and_then(|ps| {
            ps.iter()
                .copied()
                .find(|pa| pa.spec.selector.as_ref().is_some_and(|s| s.selects(labels)))
        });

        let mut strict = mesh.is_some_and(|m| m.mode() == MtlsMode::Strict);
        if let Some(ns) = ns
            && ns.mode() != MtlsMode::Unset
        {
            strict = ns.mode() == MtlsMode::Strict;
        }
        let mut port_policy = None;
        if let Some(w) = workload {
            let mode = w.mode();
            match mode {
                MtlsMode::Strict => strict = true,
                MtlsMode::Permissive | MtlsMode::Disable => strict = false,
                MtlsMode::Unset => {}
            }
            let ports = &w.spec.port_level_mtls;
            let any_port = |f: fn(MtlsMode) -> bool| ports.values().any(|m| f(m.mode));
            if !ports.is_empty() {
                match mode {
                    MtlsMode::Strict => {
                        if any_port(|m| matches!(m, MtlsMode::Permissive | MtlsMode::Disable)) {
                            port_policy = Some(w);
                            strict = false;
                        }
                    }
                    MtlsMode::Permissive | MtlsMode::Disable => {
                        if any_port(|m| m == MtlsMode::Strict) {
                            port_policy = Some(w);
                        }
                    }
                    MtlsMode::Unset if strict => {
                        // istiod looks for PERMISSIVE ports only here,
                        // although `convert` exempts DISABLE ports too;
                        // weft treats both alike (in ambient, DISABLE is
                        // PERMISSIVE).
                        if any_port(|m| matches!(m, MtlsMode::Permissive | MtlsMode::Disable)) {
                            port_policy = Some(w);
                            strict = false;
                        }
                    }
                    MtlsMode::Unset => {
                        if any_port(|m| m == MtlsMode::Strict) {
                            port_policy = Some(w);
                        }
                    }
                }
            }
        }
        let mut keys = Vec::new();
        if strict {
            keys.push(format!("{}/{STATIC_STRICT_NAME}", self.root_namespace));
        }
        if let Some(w) = port_policy {
            keys.push(format!(
                "{}/{CONVERTED_PREFIX}{}",
                w.namespace(),
                w.metadata.name
            ));
        }
        keys.sort();
        keys
    }
}

/// Oldest first: creation time (absent first), then name.
fn age_key(pa: &PeerAuthentication) -> (Option<&str>, &str, &str) {
    (
        pa.metadata.creation_timestamp.as_deref(),
        pa.namespace(),
        &pa.metadata.name,
    )
}

fn presence() -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Presence(())),
    }
}

/// "Deny connections without a peer identity".
fn deny_plaintext(ports: Vec<u32>) -> Rules {
    Rules {
        matches: vec![Match {
            not_principals: vec![presence()],
            destination_ports: ports,
            ..Default::default()
        }],
    }
}

/// `<root>/istio_converted_static_strict`.
pub fn static_strict(root_namespace: &str) -> Authorization {
    Authorization {
        name: STATIC_STRICT_NAME.to_string(),
        namespace: root_namespace.to_string(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        groups: vec![Group {
            rules: vec![deny_plaintext(Vec::new())],
            rule: None,
        }],
        ..Default::default()
    }
}

fn is(m: Option<&PeerAuthentication>, mode: MtlsMode) -> bool {
    m.is_some_and(|p| p.mode() == mode)
}

fn unset(m: Option<&PeerAuthentication>) -> bool {
    m.is_none_or(|p| p.mode() == MtlsMode::Unset)
}

/// The port-level policy of a workload PeerAuthentication, if it needs
/// one. `ns` and `root` are the namespace's and the mesh's wide policies.
///
/// One deliberate difference from istiod: a STRICT port under a workload
/// policy that is PERMISSIVE is always compiled. istiod's condition for
/// "a parent already enforces this port" lets a STRICT mesh policy count
/// even when the workload policy overrides it, which leaves the port open.
fn convert(
    pa: &PeerAuthentication,
    ns: Option<&PeerAuthentication>,
    root: Option<&PeerAuthentication>,
) -> Option<Authorization> {
    if pa.is_wide() || pa.spec.port_level_mtls.is_empty() {
        return None;
    }
    let mode = pa.mode();
    let mut rules = Vec::new();
    let mut groups = Vec::new();
    if mode == MtlsMode::Strict {
        rules.push(deny_plaintext(Vec::new()));
    }
    let parent_strict = is(ns, MtlsMode::Strict) || (unset(ns) && is(root, MtlsMode::Strict));
    let mut found_non_strict = false;
    for (&port, MutualTls { mode: port_mode }) in &pa.spec.port_level_mtls {
        match port_mode {
            MtlsMode::Strict => {
                if mode == MtlsMode::Strict || (mode == MtlsMode::Unset && parent_strict) {
                    continue; // the workload's own mode already covers it
                }
                groups.push(Group {
                    rules: vec![deny_plaintext(vec![port])],
                    rule: None,
                });
            }
            MtlsMode::Permissive | MtlsMode::Disable => {
                if matches!(mode, MtlsMode::Permissive | MtlsMode::Disable) {
                    continue;
                }
                if mode == MtlsMode::Unset && !parent_strict {
                    continue;
                }
                found_non_strict = true;
                rules.push(Rules {
                    matches: vec![Match {
                        not_destination_ports: vec![port],
                        ..Default::default()
                    }],
                });
            }
            MtlsMode::Unset => {}
        }
    }
    if mode == MtlsMode::Strict && !found_non_strict {
        return None; // plain STRICT: the static policy covers it
    }
    if rules.is_empty() && groups.is_empty() {
        return None;
    }
    // The workload lists this policy instead of the static one, so an
    // inherited STRICT must be merged in.
    let merge_strict = (is(root, MtlsMode::Strict)
        && (ns.is_none() || is(ns, MtlsMode::Unset) || is(ns, MtlsMode::Strict)))
        || is(ns, MtlsMode::Strict);
    if merge_strict && found_non_strict && mode != MtlsMode::Strict {
        rules.push(deny_plaintext(Vec::new()));
    }
    if !rules.is_empty() {
        groups.push(Group { rules, rule: None });
    }
    Some(Authorization {
        name: format!("{CONVERTED_PREFIX}{}", pa.metadata.name),
        namespace: pa.namespace().to_string(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        groups,
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "peer_authentication_tests.rs"]
mod tests;
