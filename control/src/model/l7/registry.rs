//! Service hosts: which Service or ServiceEntry defines each host, and how
//! the hosts that VirtualServices and DestinationRules name resolve to
//! them.

use std::collections::HashMap;

use crate::kinds::{ObjectKey, ObjectMeta};

/// What defines a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSource {
    pub namespace: String,
    /// A `Service` or a `ServiceEntry`.
    pub object: ObjectKey,
    /// Creation order, for picking among ServiceEntries.
    pub order: CreationOrder,
}

impl HostSource {
    pub fn is_service(&self) -> bool {
        self.object.kind == "Service"
    }
}

/// Sorts objects as Istio orders conflicting config: creation time
/// (absent first), then namespace, then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CreationOrder {
    created: Option<String>,
    namespace: String,
    name: String,
}

impl CreationOrder {
    pub fn of(meta: &ObjectMeta) -> Self {
        CreationOrder {
            created: meta.creation_timestamp.clone(),
            namespace: meta.namespace().to_string(),
            name: meta.name.clone(),
        }
    }
}

/// Every host a Service or ServiceEntry defines.
#[derive(Debug, Default)]
pub struct Registry {
    hosts: HashMap<String, Vec<HostSource>>,
}

impl Registry {
    pub fn add(&mut self, host: String, source: HostSource) {
        let sources = self.hosts.entry(host).or_default();
        sources.retain(|s| s.object != source.object);
        sources.push(source);
        // A Kubernetes Service owns its host; ServiceEntries oldest first.
        sources.sort_by(|a, b| (!a.is_service(), &a.order).cmp(&(!b.is_service(), &b.order)));
    }

    pub fn remove(&mut self, host: &str, object: &ObjectKey) {
        if let Some(sources) = self.hosts.get_mut(host) {
            sources.retain(|s| &s.object != object);
            if sources.is_empty() {
                self.hosts.remove(host);
            }
        }
    }

    /// What defines `host`, if anything.
    pub fn owner(&self, host: &str) -> Option<&HostSource> {
        self.hosts.get(host).and_then(|s| s.first())
    }

    /// Everything that defines `host`, its owner first.
    pub fn sources(&self, host: &str) -> &[HostSource] {
        self.hosts.get(host).map_or(&[], Vec::as_slice)
    }

    pub fn contains(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        self.hosts.keys()
    }

    /// The FQDN a host written in `namespace` stands for: the first of
    /// [`candidates`] that is a known host, else the first.
    pub fn resolve(&self, host: &str, namespace: &str, suffix: &str) -> String {
        let candidates = candidates(host, namespace, suffix);
        candidates
            .iter()
            .find(|c| self.contains(c))
            .unwrap_or(&candidates[0])
            .clone()
    }
}

/// The FQDNs a host written in `namespace` may stand for, most likely
/// first: a short name (`reviews`) is `reviews.<namespace>.svc.<suffix>`
/// (as in Istio); the partial forms `reviews.ns` and `reviews.ns.svc`,
/// which Kubernetes DNS resolves, may also be the service's; anything else
/// (and a wildcard) is taken as written.
pub fn candidates(host: &str, namespace: &str, suffix: &str) -> Vec<String> {
    if host.starts_with('*') {
        return vec![host.to_string()];
    }
    if !host.contains('.') {
        return vec![format!("{host}.{namespace}.svc.{suffix}")];
    }
    let mut out = vec![host.to_string()];
    if host.ends_with(".svc") {
        out.push(format!("{host}.{suffix}"));
    } else if host.matches('.').count() == 1 {
        out.push(format!("{host}.svc.{suffix}"));
    }
    out
}

/// How specifically `pattern` (a host as resolved, possibly `*` or
/// `*.suffix`) matches `fqdn`: `None` when it does not; higher is more
/// specific, an exact match highest.
pub fn specificity(pattern: &str, fqdn: &str) -> Option<usize> {
    if pattern == fqdn {
        return Some(usize::MAX);
    }
    if pattern == "*" {
        return Some(0);
    }
    let suffix = pattern.strip_prefix('*')?;
    // `*.example.com` matches `a.example.com` and `a.b.example.com`, and
    // (as a wildcard ServiceEntry host) `*.x.example.com`.
    (fqdn.len() > suffix.len() && fqdn.ends_with(suffix)).then_some(suffix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms_and_wildcards() {
        let s = "cluster.local";
        assert_eq!(
            candidates("reviews", "default", s),
            ["reviews.default.svc.cluster.local"]
        );
        assert_eq!(
            candidates("reviews.prod", "default", s),
            ["reviews.prod", "reviews.prod.svc.cluster.local"]
        );
        assert_eq!(
            candidates("reviews.prod.svc", "default", s),
            ["reviews.prod.svc", "reviews.prod.svc.cluster.local"]
        );
        assert_eq!(candidates("api.example.com", "x", s), ["api.example.com"]);
        assert_eq!(specificity("a.b", "a.b"), Some(usize::MAX));
        assert_eq!(specificity("*.b", "a.b"), Some(2));
        assert_eq!(specificity("*.b", "b"), None);
        assert_eq!(specificity("*", "b"), Some(0));
        assert!(
            specificity("*.ns.svc.cluster.local", "r.ns.svc.cluster.local")
                > specificity("*.cluster.local", "r.ns.svc.cluster.local")
        );
    }
}
