//! Incremental model building: apply changed objects, recompute only the
//! resources they affect, record which names changed.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use prost::Message;
use weft_proto::{
    ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
    workload::{Address, address::Type},
};

use super::{
    Changes, CompiledAuthorization, HISTORY, Model, ModelConfig, PeerAuthIndex, XdsResource,
    authorization, canonical_bytes, identity_key,
    l7::{self, L7, PodInfo},
    service, service_hostname, service_key, workload, workload_policies,
};
use crate::kinds::{Object, ObjectKey, PeerAuthentication, Pod};

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
    l7: L7,
}

impl Builder {
    pub fn new(config: ModelConfig) -> Self {
        Builder {
            config,
            model: Model::default(),
            objects: HashMap::new(),
            pods_by_ns: HashMap::new(),
            services_by_ns: HashMap::new(),
            policies: BTreeSet::new(),
            compiled: Vec::new(),
            pod_outputs: HashMap::new(),
            service_outputs: HashMap::new(),
            l7: L7::default(),
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
        for (key, object) in changes {
            match key.kind {
                "Pod" => {
                    dirty_pods.insert(key.clone());
                }
                "Service" => {
                    dirty_ns.insert(key.namespace.clone());
                    dirty_services.push(key.clone());
                }
                "Namespace" => {
                    dirty_ns.insert(key.name.clone());
                }
                "AuthorizationPolicy" | "PeerAuthentication" => {
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
            match object {
                Some(o) => self.objects.insert(key, o),
                None => self.objects.remove(&key),
            };
        }

        let mut names: Vec<(&'static str, String)> = Vec::new();
        if policies_dirty {
            self.compile_policies(&mut names);
        }
        for key in dirty_services {
            self.build_service(&key, &mut names);
        }
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
        };
        self.l7.rebuild(
            &cx,
            &mut self.model.routes,
            &mut self.model.destinations,
            &mut names,
        );
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
            "AuthorizationPolicy" | "PeerAuthentication" => {
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
                    authorization::compile(p, &root, &mut findings)
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

    fn build_service(&mut self, key: &ObjectKey, names: &mut Vec<(&'static str, String)>) {
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
            && self.model.resources.remove(&old)
        {
            names.push((ADDRESS_TYPE_URL, old));
        }
        if let Some(r) = new {
            let name = r.name.clone();
            self.service_outputs.insert(key.clone(), name.clone());
            if self.model.resources.put(r) {
                names.push((ADDRESS_TYPE_URL, name));
            }
        }
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
        let workload = workload::build(pod, namespace, &services, &self.config).map(|mut w| {
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

fn address_resource(name: String, body: Type) -> Arc<XdsResource> {
    let address = Address { r#type: Some(body) };
    XdsResource::new(
        name,
        ADDRESS_TYPE_URL,
        address.encode_to_vec(),
        &canonical_bytes(&address),
    )
}
