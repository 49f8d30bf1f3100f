//! Incremental model building: apply changed objects, recompute only the
//! resources they affect, record which names changed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use prost::Message;
use weft_proto::{
    ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
    workload::{Address, address::Type},
};

use super::{
    Changes, CompiledAuthorization, HISTORY, Model, ModelConfig, PeerAuthIndex, XdsResource,
    access_log::{self, AccessLogs},
    authorization, canonical_bytes, identity_key,
    l7::{self, L7, PodInfo},
    metrics_policy::MetricsPolicies,
    request_authentication, service, service_entry, service_hostname, service_key,
    trace_policy::TracingPolicies,
    workload, workload_policies,
};
use crate::{
    kinds::{Object, ObjectKey, PeerAuthentication, Pod, ServiceEntry, config_map},
    mesh::MeshConfig,
};

/// What changed in the configuration.
pub enum Delta<'a> {
    /// Everything there is now (the builder works out what changed).
    Full(&'a [Object]),
    /// Only these objects: a new version, or `None` for deleted.
    Changes(&'a [(ObjectKey, Option<Object>)]),
}

/// Keeps the current objects, their indexes and the model built from
/// them.
pub struct Builder {
    config: ModelConfig,
    model: Model,
    objects: HashMap<ObjectKey, Object>,
    pods_by_ns: HashMap<String, BTreeSet<ObjectKey>>,
    services_by_ns: HashMap<String, BTreeSet<ObjectKey>>,
    policies: BTreeSet<ObjectKey>,
    compiled: Vec<CompiledAuthorization>,
    /// Per pod: its workload's resource name and its identity key.
    pod_outputs: HashMap<ObjectKey, (Option<String>, Option<String>)>,
    service_outputs: HashMap<ObjectKey, String>,
    /// ServiceEntries by namespace (their selectors pick pods there).
    entries_by_ns: HashMap<String, BTreeSet<ObjectKey>>,
    /// Per ServiceEntry: what it put in the model.
    entry_outputs: HashMap<ObjectKey, EntryOutput>,
    l7: L7,
    /// Telemetry `accessLogging` by namespace.
    access_logs: AccessLogs,
    /// Telemetry `tracing` by namespace.
    tracing: TracingPolicies,
    /// Telemetry `metrics` by namespace.
    metrics: MetricsPolicies,
    /// The MeshConfig in force: the root namespace's `istio` ConfigMap
    /// when there is one, else the `--mesh-config` file's.
    mesh: Arc<MeshConfig>,
}

/// What a ServiceEntry contributes to the Workload API.
#[derive(Debug, Default)]
struct EntryOutput {
    /// Its services' resource names (keys in workloads' `services`).
    services: Vec<String>,
    /// Its endpoints' workload uids.
    workloads: Vec<String>,
    /// Its workload selector, whose pods list its services.
    selector: Option<BTreeMap<String, String>>,
}

impl Builder {
    pub fn new(config: ModelConfig) -> Self {
        Builder {
            mesh: Arc::clone(&config.mesh),
            config,
            model: Model::default(),
            objects: HashMap::new(),
            pods_by_ns: HashMap::new(),
            services_by_ns: HashMap::new(),
            policies: BTreeSet::new(),
            compiled: Vec::new(),
            pod_outputs: HashMap::new(),
            service_outputs: HashMap::new(),
            entries_by_ns: HashMap::new(),
            entry_outputs: HashMap::new(),
            l7: L7::default(),
            access_logs: AccessLogs::default(),
            tracing: TracingPolicies::default(),
            metrics: MetricsPolicies::default(),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Applies a change; whether the served model changed.
    pub fn update(&mut self, delta: Delta<'_>) -> bool {
        let changes: Vec<(ObjectKey, Option<Object>)> = match delta {
            Delta::Changes(c) => c.to_vec(),
            Delta::Full(objects) => self.diff(objects),
        };
        if changes.is_empty() && !self.model.version.is_empty() {
            return false;
        }
        let from = self.model.version.clone();
        let mut dirty_pods: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut dirty_ns: BTreeSet<String> = BTreeSet::new();
        let mut all_pods = false;
        let mut policies_dirty = self.model.version.is_empty();
        let mut dirty_services: Vec<ObjectKey> = Vec::new();
        let mut dirty_entries: BTreeSet<ObjectKey> = BTreeSet::new();
        // Hosts whose owner may have changed: the ServiceEntries that
        // name them are built again.
        let mut contested_hosts: BTreeSet<String> = BTreeSet::new();
        // Namespaces whose AccessLogPolicy is compiled again (the root's
        // carries the mesh config's access log).
        let mut dirty_access_logs: BTreeSet<String> = BTreeSet::new();
        // The same for TracingPolicy (the root's carries the mesh
        // config's tracing).
        let mut dirty_tracing: BTreeSet<String> = BTreeSet::new();
        // And for MetricsPolicy (the root's carries the mesh config's
        // default metrics providers).
        let mut dirty_metrics: BTreeSet<String> = BTreeSet::new();
        if self.model.version.is_empty() {
            dirty_access_logs.insert(self.config.root_namespace.clone());
            dirty_tracing.insert(self.config.root_namespace.clone());
            dirty_metrics.insert(self.config.root_namespace.clone());
        }
        for (key, object) in changes {
            match key.kind {
                "Pod" => {
                    if self.access_logs.telemetries.has_telemetry(&key.namespace) {
                        dirty_access_logs.insert(key.namespace.clone());
                    }
                    if self.tracing.telemetries.has_telemetry(&key.namespace) {
                        dirty_tracing.insert(key.namespace.clone());
                    }
                    if self.metrics.telemetries.has_telemetry(&key.namespace) {
                        dirty_metrics.insert(key.namespace.clone());
                    }
                    dirty_pods.insert(key.clone());
                }
                "Telemetry" => {
                    dirty_access_logs.insert(key.namespace.clone());
                    dirty_tracing.insert(key.namespace.clone());
                    dirty_metrics.insert(key.namespace.clone());
                }
                "Service" => {
                    // A Telemetry's targetRef may name it.
                    dirty_access_logs.insert(key.namespace.clone());
                    dirty_tracing.insert(key.namespace.clone());
                    dirty_metrics.insert(key.namespace.clone());
                    dirty_ns.insert(key.namespace.clone());
                    dirty_services.push(key.clone());
                    contested_hosts.insert(format!(
                        "{}.{}.svc.{}",
                        key.name, key.namespace, self.config.domain_suffix
                    ));
                }
                "ServiceEntry" => {
                    dirty_entries.insert(key.clone());
                    for se in [self.objects.get(&key), object.as_ref()] {
                        if let Some(Object::ServiceEntry(se)) = se {
                            contested_hosts.extend(l7::entry_hosts(se, &self.config.domain_suffix));
                        }
                    }
                }
                "Namespace" => {
                    dirty_ns.insert(key.name.clone());
                }
                "ConfigMap" if self.is_mesh_config(&key) => {
                    let mesh = match &object {
                        Some(Object::ConfigMap(cm)) => match cm.mesh_config() {
                            Some(Ok(mesh)) => Arc::new(mesh),
                            // Sources only hand over objects that passed
                            // validation.
                            _ => Arc::clone(&self.mesh),
                        },
                        _ => Arc::clone(&self.config.mesh),
                    };
                    if mesh != self.mesh {
                        tracing::info!(
                            from = %key,
                            providers = mesh.extension_providers.len(),
                            "mesh config changed"
                        );
                        self.mesh = mesh;
                        policies_dirty = true;
                        // Provider names are resolved or checked
                        // against it.
                        dirty_access_logs.insert(self.config.root_namespace.clone());
                        dirty_access_logs
                            .extend(self.access_logs.telemetries.namespaces().cloned());
                        dirty_tracing.insert(self.config.root_namespace.clone());
                        dirty_tracing.extend(self.tracing.telemetries.namespaces().cloned());
                        // Its default metrics providers.
                        dirty_metrics.insert(self.config.root_namespace.clone());
                        dirty_metrics.extend(self.metrics.telemetries.namespaces().cloned());
                    }
                }
                "AuthorizationPolicy" | "PeerAuthentication" | "RequestAuthentication" => {
                    policies_dirty = true;
                    if key.namespace == self.config.root_namespace {
                        all_pods = true;
                    } else {
                        dirty_ns.insert(key.namespace.clone());
                    }
                }
                _ => {}
            }
            if matches!(
                key.kind,
                "VirtualService" | "DestinationRule" | "Service" | "ServiceEntry" | "WorkloadEntry"
            ) {
                self.l7
                    .object_changed(&key, self.objects.get(&key), object.as_ref(), &self.config);
            }
            self.index(&key, object.is_some());
            self.access_logs.telemetries.index(&key, object.is_some());
            self.tracing.telemetries.index(&key, object.is_some());
            self.metrics.telemetries.index(&key, object.is_some());
            match object {
                Some(o) => self.objects.insert(key, o),
                None => self.objects.remove(&key),
            };
        }

        let mut names: Vec<(&'static str, String)> = Vec::new();
        if policies_dirty {
            self.compile_policies(&mut names);
        }
        // A host's service changes hands between a Service and a
        // ServiceEntry under one name: every removal applies before any
        // new version.
        let mut pending = Pending::default();
        for key in dirty_services {
            self.build_service(&key, &mut pending);
        }
        for host in &contested_hosts {
            dirty_entries.extend(self.l7.host_entries(host).cloned());
        }
        for key in &dirty_entries {
            self.build_entry(key, &mut pending, &mut dirty_pods);
        }
        pending.apply(&mut self.model.resources, &mut names);
        if all_pods {
            dirty_pods.extend(self.pods_by_ns.values().flatten().cloned());
        } else {
            for ns in &dirty_ns {
                if let Some(pods) = self.pods_by_ns.get(ns) {
                    dirty_pods.extend(pods.iter().cloned());
                }
            }
        }
        let peer_auths: Vec<&PeerAuthentication> = self
            .policies
            .iter()
            .filter_map(|k| match self.objects.get(k) {
                Some(Object::PeerAuthentication(p)) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        let peer_index = PeerAuthIndex::new(&peer_auths, &self.config.root_namespace);
        let selecting: Vec<(String, &CompiledAuthorization)> = self
            .compiled
            .iter()
            .filter(|p| p.selector.is_some())
            .map(|p| (p.resource_name(), p))
            .collect();
        let mut pod_updates = Vec::new();
        for key in &dirty_pods {
            let pod = match self.objects.get(key) {
                Some(Object::Pod(p)) => Some(p),
                _ => None,
            };
            pod_updates.push((key.clone(), self.build_pod(pod, &selecting, &peer_index)));
        }
        drop(peer_index);
        for (key, (workload, identity, info)) in pod_updates {
            self.l7.pod_changed(&key, info);
            let (old_name, old_identity) = self.pod_outputs.remove(&key).unwrap_or_default();
            if let Some(id) = old_identity {
                let left = self.model.identities.get(&id).copied().unwrap_or(1) - 1;
                if left == 0 {
                    self.model.identities.remove(&id);
                } else {
                    self.model.identities.insert(id, left);
                }
            }
            if let Some(id) = &identity {
                let n = self.model.identities.get(id).copied().unwrap_or(0);
                self.model.identities.insert(id.clone(), n + 1);
            }
            let new_name = workload.as_ref().map(|r| r.name.clone());
            if let Some(old) = &old_name
                && new_name.as_ref() != Some(old)
                && self.model.resources.remove(old)
            {
                names.push((ADDRESS_TYPE_URL, old.clone()));
            }
            if let Some(r) = workload {
                let name = r.name.clone();
                if self.model.resources.put(r) {
                    names.push((ADDRESS_TYPE_URL, name));
                }
            }
            if new_name.is_some() || identity.is_some() {
                self.pod_outputs.insert(key, (new_name, identity));
            }
        }
        let cx = l7::Context {
            config: &self.config,
            objects: &self.objects,
            pods_by_ns: &self.pods_by_ns,
            default_retries: self.mesh.default_http_retry_policy.as_ref(),
            inbound_retries: self.mesh.default_inbound_http_retry_policy.as_ref(),
        };
        self.l7.rebuild(
            &cx,
            &mut self.model.routes,
            &mut self.model.destinations,
            &mut names,
        );
        let cx = access_log::Context {
            config: &self.config,
            mesh: &self.mesh,
            objects: &self.objects,
            pods_by_ns: &self.pods_by_ns,
        };
        self.access_logs.rebuild(
            &dirty_access_logs,
            &cx,
            &mut self.model.access_logs,
            &mut names,
        );
        self.tracing
            .rebuild(&dirty_tracing, &cx, &mut self.model.tracing, &mut names);
        self.metrics
            .rebuild(&dirty_metrics, &cx, &mut self.model.metrics, &mut names);
        self.model.seal();
        if self.model.version != from || !names.is_empty() {
            self.model
                .history
                .push_back(Arc::new(Changes { from, names }));
            while self.model.history.len() > HISTORY {
                self.model.history.pop_front();
            }
        }
        // Identities may change without any resource (a pod without an IP).
        true
    }

    /// The root namespace's `istio` ConfigMap, the mesh config's home.
    fn is_mesh_config(&self, key: &ObjectKey) -> bool {
        key.namespace == self.config.root_namespace && key.name == config_map::MESH_CONFIG_MAP
    }

    /// Changes between the current objects and `objects`.
    fn diff(&self, objects: &[Object]) -> Vec<(ObjectKey, Option<Object>)> {
        let mut seen: HashMap<ObjectKey, &Object> = HashMap::with_capacity(objects.len());
        for o in objects {
            let key = o.key();
            if seen.insert(key.clone(), o).is_some() {
                tracing::warn!(object = %key, "object defined more than once; the last file wins");
            }
        }
        let mut changes: Vec<(ObjectKey, Option<Object>)> = seen
            .iter()
            .filter(|(k, o)| self.objects.get(*k) != Some(**o))
            .map(|(k, o)| (k.clone(), Some((*o).clone())))
            .collect();
        changes.extend(
            self.objects
                .keys()
                .filter(|k| !seen.contains_key(*k))
                .map(|k| (k.clone(), None)),
        );
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes
    }

    fn index(&mut self, key: &ObjectKey, present: bool) {
        let by_ns = match key.kind {
            "Pod" => &mut self.pods_by_ns,
            "Service" => &mut self.services_by_ns,
            "ServiceEntry" => &mut self.entries_by_ns,
            "AuthorizationPolicy" | "PeerAuthentication" | "RequestAuthentication" => {
                if present {
                    self.policies.insert(key.clone());
                } else {
                    self.policies.remove(key);
                }
                return;
            }
            _ => return,
        };
        let set = by_ns.entry(key.namespace.clone()).or_default();
        if present {
            set.insert(key.clone());
        } else {
            set.remove(key);
        }
    }

    fn compile_policies(&mut self, names: &mut Vec<(&'static str, String)>) {
        let root = self.config.root_namespace.clone();
        let mut findings = Vec::new();
        let mut compiled: Vec<CompiledAuthorization> = self
            .policies
            .iter()
            .filter_map(|k| match self.objects.get(k) {
                Some(Object::AuthorizationPolicy(p)) => {
                    authorization::compile_with(p, &root, &self.mesh, &mut findings)
                }
                Some(Object::RequestAuthentication(p)) => {
                    request_authentication::compile(p, &root, &mut findings)
                }
                _ => None,
            })
            .collect();
        let peer_auths: Vec<&PeerAuthentication> = self
            .policies
            .iter()
            .filter_map(|k| match self.objects.get(k) {
                Some(Object::PeerAuthentication(p)) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        compiled.extend(PeerAuthIndex::new(&peer_auths, &root).compile());
        let mut now = BTreeSet::new();
        for policy in &compiled {
            let name = policy.resource_name();
            let bytes = policy.authorization.encode_to_vec();
            let resource =
                XdsResource::new(name.clone(), AUTHORIZATION_TYPE_URL, bytes.clone(), &bytes);
            if self.model.authorizations.put(resource) {
                names.push((AUTHORIZATION_TYPE_URL, name.clone()));
            }
            now.insert(name);
        }
        let gone: Vec<String> = self
            .model
            .authorizations
            .keys()
            .into_iter()
            .filter(|n| !now.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.model.authorizations.remove(&name);
            names.push((AUTHORIZATION_TYPE_URL, name));
        }
        self.compiled = compiled;
        self.model.findings = findings;
    }

    fn build_service(&mut self, key: &ObjectKey, pending: &mut Pending) {
        let old = self.service_outputs.remove(key);
        let new = match self.objects.get(key) {
            Some(Object::Service(svc)) => {
                let s = service::build(svc, &self.config);
                let name = format!("{}/{}", s.namespace, s.hostname);
                Some(address_resource(name, Type::Service(s)))
            }
            _ => None,
        };
        if let Some(old) = old
            && new.as_ref().is_none_or(|n| n.name != old)
        {
            pending.remove.push(old);
        }
        if let Some(r) = new {
            self.service_outputs.insert(key.clone(), r.name.clone());
            pending.put.push(r);
        }
    }

    /// A ServiceEntry's services (for the hosts it owns) and endpoint
    /// workloads; the pods its selector picks, before and after, are
    /// marked for building again.
    fn build_entry(
        &mut self,
        key: &ObjectKey,
        pending: &mut Pending,
        dirty_pods: &mut BTreeSet<ObjectKey>,
    ) {
        let old = self.entry_outputs.remove(key).unwrap_or_default();
        let mut new = EntryOutput::default();
        if let Some(Object::ServiceEntry(se)) = self.objects.get(key) {
            let owned: Vec<String> = l7::entry_hosts(se, &self.config.domain_suffix)
                .into_iter()
                .filter(|h| self.l7.host_owner(h) == Some(key))
                .collect();
            for (name, svc) in service_entry::services(se, &owned) {
                new.services.push(name.clone());
                pending.put.push(address_resource(name, Type::Service(svc)));
            }
            for w in service_entry::endpoint_workloads(se, &new.services, &self.config) {
                new.workloads.push(w.uid.clone());
                pending
                    .put
                    .push(address_resource(w.uid.clone(), Type::Workload(w)));
            }
            new.selector = se.spec.workload_selector.as_ref().map(|s| s.labels.clone());
        }
        for name in old.services.iter().chain(&old.workloads) {
            if !new.services.contains(name) && !new.workloads.contains(name) {
                pending.remove.push(name.clone());
            }
        }
        if old.selector.is_some() || new.selector.is_some() {
            let pods = self.pods_by_ns.get(&key.namespace).into_iter().flatten();
            for pod_key in pods {
                if let Some(Object::Pod(pod)) = self.objects.get(pod_key) {
                    let labels = &pod.metadata.labels;
                    if service_entry::selects(old.selector.as_ref(), labels)
                        || service_entry::selects(new.selector.as_ref(), labels)
                    {
                        dirty_pods.insert(pod_key.clone());
                    }
                }
            }
        }
        if !new.services.is_empty() || new.selector.is_some() {
            self.entry_outputs.insert(key.clone(), new);
        }
    }

    /// The ServiceEntries of the pod's namespace that select it, with
    /// their services.
    fn selecting_entries(&self, pod: &Pod) -> Vec<(&ServiceEntry, &[String])> {
        self.entries_by_ns
            .get(pod.namespace())
            .into_iter()
            .flatten()
            .filter_map(|k| {
                let out = self.entry_outputs.get(k)?;
                if out.services.is_empty()
                    || !service_entry::selects(out.selector.as_ref(), &pod.metadata.labels)
                {
                    return None;
                }
                match self.objects.get(k) {
                    Some(Object::ServiceEntry(se)) => Some((se.as_ref(), out.services.as_slice())),
                    _ => None,
                }
            })
            .collect()
    }

    /// A pod's workload resource (if it has an IP), identity key (if it
    /// is scheduled) and what L7 compilation needs of it.
    fn build_pod(
        &self,
        pod: Option<&Arc<Pod>>,
        selecting: &[(String, &CompiledAuthorization)],
        peer_index: &PeerAuthIndex<'_>,
    ) -> (Option<Arc<XdsResource>>, Option<String>, Option<PodInfo>) {
        let Some(pod) = pod else {
            return (None, None, None);
        };
        let identity = pod
            .node_name()
            .map(|node| identity_key(node, pod.namespace(), pod.service_account()));
        let namespace = self
            .objects
            .get(&ObjectKey {
                kind: "Namespace",
                namespace: String::new(),
                name: pod.namespace().to_string(),
            })
            .and_then(|o| match o {
                Object::Namespace(ns) => Some(ns.as_ref()),
                _ => None,
            });
        let services: Vec<&crate::kinds::Service> = self
            .services_by_ns
            .get(pod.namespace())
            .into_iter()
            .flatten()
            .filter_map(|k| match self.objects.get(k) {
                Some(Object::Service(s)) if s.selects(&pod.metadata.labels) => Some(s.as_ref()),
                _ => None,
            })
            .collect();
        let entries = self.selecting_entries(pod);
        let workload = workload::build(pod, namespace, &services, &self.config).map(|mut w| {
            for (se, keys) in &entries {
                let ports = service_entry::pod_ports(se, pod);
                for key in *keys {
                    w.services.insert(key.clone(), ports.clone());
                }
            }
            w.authorization_policies =
                workload_policies(pod, selecting, peer_index, &self.config.root_namespace);
            address_resource(w.uid.clone(), Type::Workload(w))
        });
        let info = PodInfo {
            pod: Arc::clone(pod),
            has_workload: workload.is_some(),
            services: services
                .iter()
                .map(|s| service_key(s.namespace(), &service_hostname(s, &self.config)).into())
                .collect(),
        };
        (workload, identity, Some(info))
    }
}

/// Address resources to remove and to put, applied together.
#[derive(Default)]
struct Pending {
    remove: Vec<String>,
    put: Vec<Arc<XdsResource>>,
}

impl Pending {
    /// Removals first (but not of a name put again), then the new
    /// versions; records the names that changed.
    fn apply(self, resources: &mut super::Resources, names: &mut Vec<(&'static str, String)>) {
        let put: BTreeSet<&str> = self.put.iter().map(|r| r.name.as_str()).collect();
        for name in self.remove {
            if !put.contains(name.as_str()) && resources.remove(&name) {
                names.push((ADDRESS_TYPE_URL, name));
            }
        }
        for r in self.put {
            let name = r.name.clone();
            if resources.put(r) {
                names.push((ADDRESS_TYPE_URL, name));
            }
        }
    }
}

fn address_resource(name: String, body: Type) -> Arc<XdsResource> {
    let address = Address { r#type: Some(body) };
    XdsResource::new(
        name,
        ADDRESS_TYPE_URL,
        address.encode_to_vec(),
        &canonical_bytes(&address),
    )
}
