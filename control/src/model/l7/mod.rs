//! L7: `weft.route.v1.RouteConfig` (a host's VirtualService routes) and
//! `weft.route.v1.DestinationPolicy` (its DestinationRules), one of each
//! per service host that has any, kept up to date incrementally.
//!
//! Changes mark hosts dirty and only those are compiled again:
//!
//! - a VirtualService: the hosts it names (old and new version; a
//!   wildcard, every known host it matches), and every host whose routes
//!   delegate to it (a reverse index by delegate, whether it existed
//!   then or not);
//! - a Service or ServiceEntry: its hosts, and every route that has a
//!   destination at one of them;
//! - a DestinationRule: the hosts it matches (their policies), and every
//!   route with a destination at one of them (subsets);
//! - a pod whose labels, services or address presence changed: routes
//!   with a destination at one of its services (subsets), routes that
//!   select sources by labels, ServiceEntries that select it;
//! - MeshConfig's `defaultHttpRetryPolicy`: every host's routes (their
//!   routes without `retries` carry it), and the RouteConfig
//!   [`MESH_DEFAULT_ROUTE`] that carries it for hosts without routes;
//! - MeshConfig's `defaultInboundHttpRetryPolicy`: the RouteConfig
//!   [`MESH_INBOUND_ROUTE`] that carries it, alone.
//!
//! Simplifications, compared with istiod (documented in `proto/README.md`
//! too): routes are compiled once for every client, with each route's
//! `exportTo` carried for the proxy to apply; a subset resolves with the
//! DestinationRule of the VirtualService's namespace, else the service's,
//! else the root namespace's, whatever the client; DestinationRules with
//! a `workloadSelector` are not compiled; partial host names
//! (`reviews.ns`) resolve when such a service exists.
//!
//! A route that delegates (VirtualService chaining) is replaced by the
//! delegate VirtualService's routes merged with it, as istiod merges them
//! ([`delegate`]).

pub mod delegate;
mod destination;
mod registry;
mod resolve;
mod route;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use prost::Message;
use weft_proto::{
    DESTINATION_POLICY_TYPE_URL, MESH_DEFAULT_ROUTE, MESH_INBOUND_ROUTE, ROUTE_CONFIG_TYPE_URL,
    route::DestinationPolicy,
};

use self::{
    registry::{CreationOrder, HostSource, Registry, candidates, specificity},
    resolve::Resolver,
};
use super::{ModelConfig, Resources, XdsResource, service_hostname};
use crate::kinds::{
    DestinationRule, Object, ObjectKey, Pod, ServiceEntry, VirtualService,
    virtual_service::HttpRetry,
};

/// What L7 compilation needs to know about a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    /// Whether it has a workload (an IP).
    pub has_workload: bool,
    /// The Kubernetes Services that select it, by key (`<ns>/<hostname>`).
    pub services: Vec<Arc<str>>,
}

impl PodInfo {
    /// What changes L7 output: labels, services, having a workload.
    fn same_for_routes(&self, other: &PodInfo) -> bool {
        self.has_workload == other.has_workload
            && self.services == other.services
            && self.pod.metadata.labels == other.pod.metadata.labels
    }
}

/// The objects and indexes L7 compilation reads, owned by the builder.
pub struct Context<'a> {
    pub config: &'a ModelConfig,
    pub objects: &'a HashMap<ObjectKey, Object>,
    pub pods_by_ns: &'a HashMap<String, BTreeSet<ObjectKey>>,
    /// MeshConfig's `defaultHttpRetryPolicy`.
    pub default_retries: Option<&'a HttpRetry>,
    /// MeshConfig's `defaultInboundHttpRetryPolicy`.
    pub inbound_retries: Option<&'a HttpRetry>,
}

/// Puts (or, with no `retries`, removes) MeshConfig's RouteConfig `name`
/// ([`route::mesh_retries`]), naming it in `names` when it changed.
fn publish_mesh_retries(
    cx: &Context<'_>,
    name: &str,
    retries: Option<&HttpRetry>,
    routes: &mut Resources,
    names: &mut Vec<(&'static str, String)>,
) {
    let changed = match retries {
        Some(retries) => {
            let bytes =
                route::mesh_retries(name, retries, &cx.config.root_namespace).encode_to_vec();
            routes.put(XdsResource::new(
                name.to_string(),
                ROUTE_CONFIG_TYPE_URL,
                bytes.clone(),
                &bytes,
            ))
        }
        None => routes.remove(name),
    };
    if changed {
        names.push((ROUTE_CONFIG_TYPE_URL, name.to_string()));
    }
}

/// The L7 state between updates.
#[derive(Default)]
pub struct L7 {
    registry: Registry,
    /// Exact VirtualService hosts (every candidate FQDN) → VirtualServices.
    vs_exact: HashMap<String, BTreeSet<ObjectKey>>,
    /// VirtualServices with wildcard hosts → those hosts.
    vs_wild: BTreeMap<ObjectKey, Vec<String>>,
    dr_exact: HashMap<String, BTreeSet<ObjectKey>>,
    dr_wild: BTreeMap<ObjectKey, String>,
    entries: BTreeMap<ObjectKey, EntryInfo>,
    workload_entries: BTreeSet<ObjectKey>,
    pods: HashMap<ObjectKey, PodInfo>,
    /// Service key → the pods it selects.
    members: HashMap<Arc<str>, BTreeSet<ObjectKey>>,
    /// Destination FQDN → the hosts whose routes go there.
    dependents: HashMap<String, BTreeSet<String>>,
    route_deps: HashMap<String, Vec<String>>,
    /// Delegate VirtualService → the hosts whose routes delegate to it
    /// (found or not).
    delegate_users: HashMap<ObjectKey, BTreeSet<String>>,
    /// Host → the delegates its routes named (to forget them).
    route_delegates: HashMap<String, Vec<ObjectKey>>,
    /// Hosts whose routes select sources by labels.
    source_routes: BTreeSet<String>,
    route_names: HashMap<String, String>,
    policy_names: HashMap<String, String>,
    dirty_routes: BTreeSet<String>,
    dirty_policies: BTreeSet<String>,
    /// Wildcard hosts whose matches are dirty, expanded on rebuild:
    /// (pattern, their routes, their policies and their users' routes).
    dirty_patterns: Vec<(String, bool, bool)>,
    /// The `defaultHttpRetryPolicy` the routes were compiled with.
    default_retries: Option<HttpRetry>,
    /// The `defaultInboundHttpRetryPolicy` published as
    /// [`MESH_INBOUND_ROUTE`].
    inbound_retries: Option<HttpRetry>,
}

impl L7 {
    /// Records a change of a VirtualService, DestinationRule, Service,
    /// ServiceEntry or WorkloadEntry (other kinds are ignored), before the
    /// builder stores it.
    pub fn object_changed(
        &mut self,
        key: &ObjectKey,
        old: Option<&Object>,
        new: Option<&Object>,
        config: &ModelConfig,
    ) {
        let suffix = &config.domain_suffix;
        for (object, present) in [(old, false), (new, true)] {
            let Some(object) = object else { continue };
            match object {
                Object::VirtualService(v) => {
                    // The roots that delegate to it (a delegate names no
                    // hosts; one that gains hosts stops being one).
                    if let Some(users) = self.delegate_users.get(key) {
                        self.dirty_routes.extend(users.iter().cloned());
                    }
                    let ns = v.metadata.namespace();
                    let mut wild = Vec::new();
                    for h in &v.spec.hosts {
                        for form in candidates(h, ns, suffix) {
                            if form.starts_with('*') {
                                wild.push(form.clone());
                                self.dirty_patterns.push((form, true, false));
                            } else {
                                self.dirty_routes.insert(form.clone());
                                set_member(&mut self.vs_exact, form, key, present);
                            }
                        }
                    }
                    if present && !wild.is_empty() {
                        self.vs_wild.insert(key.clone(), wild);
                    } else if !present {
                        self.vs_wild.remove(key);
                    }
                }
                Object::DestinationRule(d) => {
                    let ns = d.metadata.namespace();
                    for form in candidates(&d.spec.host, ns, suffix) {
                        if form.starts_with('*') {
                            if present {
                                self.dr_wild.insert(key.clone(), form.clone());
                            } else {
                                self.dr_wild.remove(key);
                            }
                            self.dirty_patterns.push((form, false, true));
                        } else {
                            self.dirty_policies.insert(form.clone());
                            self.mark_dependents(&form);
                            set_member(&mut self.dr_exact, form, key, present);
                        }
                    }
                }
                Object::Service(svc) => {
                    let host = service_hostname(svc, config);
                    if present {
                        let source = HostSource {
                            namespace: svc.namespace().to_string(),
                            object: key.clone(),
                            order: CreationOrder::of(&svc.metadata),
                        };
                        self.registry.add(host.clone(), source);
                    } else {
                        self.registry.remove(&host, key);
                    }
                    self.host_changed(host);
                }
                Object::ServiceEntry(se) => {
                    let ns = se.metadata.namespace();
                    let hosts = entry_hosts(se, suffix);
                    for host in hosts.iter().cloned() {
                        if present {
                            let source = HostSource {
                                namespace: ns.to_string(),
                                object: key.clone(),
                                order: CreationOrder::of(&se.metadata),
                            };
                            self.registry.add(host.clone(), source);
                        } else {
                            self.registry.remove(&host, key);
                        }
                        self.host_changed(host);
                    }
                    if present {
                        let selector = se.spec.workload_selector.as_ref().map(|s| s.labels.clone());
                        self.entries
                            .insert(key.clone(), EntryInfo { selector, hosts });
                    } else {
                        self.entries.remove(key);
                    }
                }
                Object::WorkloadEntry(_) => {
                    if present {
                        self.workload_entries.insert(key.clone());
                    } else {
                        self.workload_entries.remove(key);
                    }
                    // ServiceEntries of the namespace may select it.
                    self.entries_changed(&key.namespace, None);
                }
                _ => {}
            }
        }
    }

    /// The Service or ServiceEntry that owns `host` (a Service before
    /// ServiceEntries, then the oldest), as of the changes recorded so
    /// far: its RouteConfig and DestinationPolicy, and its Workload API
    /// service, are the owner's.
    pub fn host_owner(&self, host: &str) -> Option<&ObjectKey> {
        self.registry.owner(host).map(|s| &s.object)
    }

    /// The ServiceEntries that define `host`, owner or not.
    pub fn host_entries(&self, host: &str) -> impl Iterator<Item = &ObjectKey> {
        self.registry
            .sources(host)
            .iter()
            .filter(|s| !s.is_service())
            .map(|s| &s.object)
    }

    /// Records a pod's new state (`None`: gone).
    pub fn pod_changed(&mut self, key: &ObjectKey, info: Option<PodInfo>) {
        let old = self.pods.get(key);
        match (old, &info) {
            (None, None) => return,
            (Some(o), Some(n)) if o.same_for_routes(n) => {
                self.pods.insert(key.clone(), info.expect("matched Some"));
                return;
            }
            _ => {}
        }
        let old = match info {
            Some(info) => self.pods.insert(key.clone(), info),
            None => self.pods.remove(key),
        };
        let new = self.pods.get(key).cloned();
        let mut services: BTreeSet<Arc<str>> = BTreeSet::new();
        for (info, present) in [(old.as_ref(), false), (new.as_ref(), true)] {
            let Some(info) = info else { continue };
            for s in &info.services {
                services.insert(Arc::clone(s));
                set_member(&mut self.members, Arc::clone(s), key, present);
            }
            self.entries_changed(&key.namespace, Some(&info.pod.metadata.labels));
        }
        for s in services {
            let host = s.split_once('/').map_or(&*s, |(_, h)| h);
            self.mark_dependents(host);
        }
        let sources: Vec<String> = self.source_routes.iter().cloned().collect();
        self.dirty_routes.extend(sources);
    }

    /// Compiles the dirty hosts into `routes` and `policies`, recording
    /// the changed names.
    pub fn rebuild(
        &mut self,
        cx: &Context<'_>,
        routes: &mut Resources,
        policies: &mut Resources,
        names: &mut Vec<(&'static str, String)>,
    ) {
        for (pattern, for_routes, for_policies) in std::mem::take(&mut self.dirty_patterns) {
            let hosts: Vec<String> = self
                .registry
                .hosts()
                .filter(|h| specificity(&pattern, h).is_some())
                .cloned()
                .collect();
            if for_policies {
                let destinations: Vec<String> = self
                    .dependents
                    .keys()
                    .filter(|h| specificity(&pattern, h).is_some())
                    .cloned()
                    .collect();
                for h in destinations {
                    self.mark_dependents(&h);
                }
                self.dirty_policies.extend(hosts.iter().cloned());
            }
            if for_routes {
                self.dirty_routes.extend(hosts);
            }
        }
        if cx.default_retries != self.default_retries.as_ref() {
            self.default_retries = cx.default_retries.cloned();
            // Every compiled route may carry it.
            self.dirty_routes.extend(self.route_names.keys().cloned());
            publish_mesh_retries(cx, MESH_DEFAULT_ROUTE, cx.default_retries, routes, names);
        }
        if cx.inbound_retries != self.inbound_retries.as_ref() {
            self.inbound_retries = cx.inbound_retries.cloned();
            publish_mesh_retries(cx, MESH_INBOUND_ROUTE, cx.inbound_retries, routes, names);
        }
        for host in std::mem::take(&mut self.dirty_routes) {
            self.rebuild_route(cx, &host, routes, names);
        }
        for host in std::mem::take(&mut self.dirty_policies) {
            self.rebuild_policy(cx, &host, policies, names);
        }
    }

    fn rebuild_route(
        &mut self,
        cx: &Context<'_>,
        host: &str,
        routes: &mut Resources,
        names: &mut Vec<(&'static str, String)>,
    ) {
        let owner = self.registry.owner(host).cloned();
        let virtual_services = owner
            .as_ref()
            .map(|_| self.virtual_services_for(cx, host))
            .unwrap_or_default();
        let compiled = match (&owner, virtual_services.is_empty()) {
            (Some(owner), false) => {
                let name = format!("{}/{host}", owner.namespace);
                let mut resolver = Resolver {
                    l7: self,
                    cx,
                    deps: Vec::new(),
                    uses_sources: false,
                    delegates: Vec::new(),
                };
                let config = route::compile(
                    name,
                    host,
                    &owner.namespace,
                    &virtual_services,
                    cx.default_retries,
                    &mut resolver,
                );
                let (deps, uses_sources) = (resolver.deps, resolver.uses_sources);
                Some((config, deps, uses_sources, resolver.delegates))
            }
            _ => None,
        };
        // Forget the old dependencies.
        for dep in self.route_deps.remove(host).unwrap_or_default() {
            if let Some(set) = self.dependents.get_mut(&dep) {
                set.remove(host);
                if set.is_empty() {
                    self.dependents.remove(&dep);
                }
            }
        }
        for key in self.route_delegates.remove(host).unwrap_or_default() {
            set_member(&mut self.delegate_users, key, &host.to_string(), false);
        }
        self.source_routes.remove(host);
        let new_name = compiled.as_ref().map(|(c, ..)| c.name.clone());
        if let Some(old) = self.route_names.remove(host)
            && new_name.as_ref() != Some(&old)
            && routes.remove(&old)
        {
            names.push((ROUTE_CONFIG_TYPE_URL, old));
        }
        let Some((config, mut deps, uses_sources, mut delegates)) = compiled else {
            return;
        };
        delegates.sort();
        delegates.dedup();
        for key in &delegates {
            set_member(
                &mut self.delegate_users,
                key.clone(),
                &host.to_string(),
                true,
            );
        }
        if !delegates.is_empty() {
            self.route_delegates.insert(host.to_string(), delegates);
        }
        deps.sort();
        deps.dedup();
        for dep in &deps {
            self.dependents
                .entry(dep.clone())
                .or_default()
                .insert(host.to_string());
        }
        self.route_deps.insert(host.to_string(), deps);
        if uses_sources {
            self.source_routes.insert(host.to_string());
        }
        let name = config.name.clone();
        self.route_names.insert(host.to_string(), name.clone());
        let bytes = config.encode_to_vec();
        if routes.put(XdsResource::new(
            name.clone(),
            ROUTE_CONFIG_TYPE_URL,
            bytes.clone(),
            &bytes,
        )) {
            names.push((ROUTE_CONFIG_TYPE_URL, name));
        }
    }

    fn rebuild_policy(
        &mut self,
        cx: &Context<'_>,
        host: &str,
        policies: &mut Resources,
        names: &mut Vec<(&'static str, String)>,
    ) {
        let owner = self.registry.owner(host).cloned();
        let compiled = owner.and_then(|owner| {
            let groups = self.rule_groups(cx, host);
            if groups.is_empty() {
                return None;
            }
            let root = &cx.config.root_namespace;
            let mut ordered: Vec<(&String, &(String, Vec<&DestinationRule>))> =
                groups.iter().collect();
            ordered.sort_by_key(|(ns, _)| (**ns != owner.namespace, *ns != root, (*ns).clone()));
            Some(DestinationPolicy {
                name: format!("{}/{host}", owner.namespace),
                hostname: host.to_string(),
                namespace: owner.namespace.clone(),
                policies: ordered
                    .into_iter()
                    .map(|(ns, (pattern, rules))| {
                        let mut scoped = destination::scoped(ns, pattern, rules);
                        // istiod looks in the client's namespace, then only
                        // in the service's and the root namespace: rules
                        // of any other namespace serve its own clients,
                        // whatever their `exportTo` says.
                        if *ns != owner.namespace && ns != root {
                            scoped.export_to = vec![ns.clone()];
                        }
                        scoped
                    })
                    .collect(),
            })
        });
        let new_name = compiled.as_ref().map(|c| c.name.clone());
        if let Some(old) = self.policy_names.remove(host)
            && new_name.as_ref() != Some(&old)
            && policies.remove(&old)
        {
            names.push((DESTINATION_POLICY_TYPE_URL, old));
        }
        let Some(policy) = compiled else { return };
        let name = policy.name.clone();
        self.policy_names.insert(host.to_string(), name.clone());
        let bytes = policy.encode_to_vec();
        if policies.put(XdsResource::new(
            name.clone(),
            DESTINATION_POLICY_TYPE_URL,
            bytes.clone(),
            &bytes,
        )) {
            names.push((DESTINATION_POLICY_TYPE_URL, name));
        }
    }

    /// The mesh VirtualServices for `host`, in precedence order: those
    /// naming it exactly; if none, those with the most specific wildcard
    /// that matches it. Each group in creation order.
    fn virtual_services_for<'a>(&self, cx: &Context<'a>, host: &str) -> Vec<&'a VirtualService> {
        let mut keys: Vec<&ObjectKey> = self
            .vs_exact
            .get(host)
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        if keys.is_empty() {
            let mut best = None;
            for (key, patterns) in &self.vs_wild {
                let Some(s) = patterns.iter().filter_map(|p| specificity(p, host)).max() else {
                    continue;
                };
                match best {
                    Some(b) if s < b => continue,
                    Some(b) if s > b => keys.clear(),
                    _ => {}
                }
                best = Some(s);
                keys.push(key);
            }
        }
        let mut out: Vec<&VirtualService> = keys
            .into_iter()
            .filter_map(|k| match cx.objects.get(k) {
                Some(Object::VirtualService(v)) if route::applies_to_mesh(v) => Some(v.as_ref()),
                _ => None,
            })
            .collect();
        out.sort_by_key(|v| CreationOrder::of(&v.metadata));
        out
    }

    /// Per namespace: the most specific host of its DestinationRules that
    /// matches `host`, and those rules, oldest first.
    fn rule_groups<'a>(
        &self,
        cx: &Context<'a>,
        host: &str,
    ) -> BTreeMap<String, (String, Vec<&'a DestinationRule>)> {
        let mut best: BTreeMap<String, (usize, String, Vec<&'a DestinationRule>)> = BTreeMap::new();
        let exact = self.dr_exact.get(host).into_iter().flatten();
        let wild = self
            .dr_wild
            .iter()
            .filter(|(_, p)| specificity(p, host).is_some())
            .map(|(k, _)| k);
        for key in exact.chain(wild) {
            let Some(Object::DestinationRule(rule)) = cx.objects.get(key) else {
                continue;
            };
            if rule.spec.workload_selector.is_some() || !destination::visible(rule) {
                continue;
            }
            let pattern = match self.dr_wild.get(key) {
                Some(p) => p.clone(),
                None => host.to_string(),
            };
            let s = specificity(&pattern, host).unwrap_or(0);
            let entry = best
                .entry(key.namespace.clone())
                .or_insert_with(|| (s, pattern.clone(), Vec::new()));
            if s > entry.0 {
                *entry = (s, pattern, Vec::new());
            } else if s < entry.0 {
                continue;
            }
            entry.2.push(rule.as_ref());
        }
        best.into_iter()
            .map(|(ns, (_, pattern, mut rules))| {
                rules.sort_by_key(|r| CreationOrder::of(&r.metadata));
                (ns, (pattern, rules))
            })
            .collect()
    }

    fn host_changed(&mut self, host: String) {
        self.mark_dependents(&host);
        self.dirty_policies.insert(host.clone());
        self.dirty_routes.insert(host);
    }

    /// The routes with a destination at `host` must be compiled again.
    fn mark_dependents(&mut self, host: &str) {
        if let Some(hosts) = self.dependents.get(host) {
            self.dirty_routes.extend(hosts.iter().cloned());
        }
    }

    /// ServiceEntries in `namespace` whose workload selector matches
    /// `labels` (any selector when `None`) have new endpoints: their
    /// users must be compiled again.
    fn entries_changed(&mut self, namespace: &str, labels: Option<&BTreeMap<String, String>>) {
        let hosts: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, e)| {
                k.namespace == namespace
                    && e.selector.as_ref().is_some_and(|s| {
                        labels.is_none_or(|l| s.iter().all(|(k, v)| l.get(k) == Some(v)))
                    })
            })
            .flat_map(|(_, e)| e.hosts.iter().cloned())
            .collect();
        for host in hosts {
            self.mark_dependents(&host);
        }
    }
}

/// The hosts a ServiceEntry defines, as FQDNs: a short name is a name in
/// the entry's namespace (`<host>.<ns>.svc.<suffix>`), as in Istio.
pub fn entry_hosts(se: &ServiceEntry, suffix: &str) -> Vec<String> {
    let ns = se.metadata.namespace();
    let mut hosts: Vec<String> = Vec::new();
    for h in &se.spec.hosts {
        let host = candidates(h, ns, suffix).swap_remove(0);
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// A ServiceEntry, as far as changes to other objects concern it.
struct EntryInfo {
    selector: Option<BTreeMap<String, String>>,
    hosts: Vec<String>,
}

/// Adds `member` to the set at `key` (or removes it, dropping an empty
/// set).
fn set_member<K: std::hash::Hash + Eq, V: Ord + Clone>(
    map: &mut HashMap<K, BTreeSet<V>>,
    key: K,
    member: &V,
    present: bool,
) {
    if present {
        map.entry(key).or_default().insert(member.clone());
    } else if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(key) {
        e.get_mut().remove(member);
        if e.get().is_empty() {
            e.remove();
        }
    }
}
