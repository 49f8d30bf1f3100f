//! The model: configuration objects turned into the resources agents
//! receive, each with a name and a version — Istio Workload API
//! `istio.workload.Address` (workloads and services) and
//! `istio.security.Authorization` (AuthorizationPolicy and
//! PeerAuthentication) — plus the indexes the CA needs. Rebuilt from
//! scratch on every config change; xDS streams diff successive models.

pub mod authorization;
pub mod peer_authentication;
mod service;
mod workload;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use prost::Message;
use weft_proto::{
    ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
    security::Authorization,
    workload::{Address, address::Type},
};

use self::{authorization::CompiledAuthorization, peer_authentication::PeerAuthIndex};
use crate::{
    analysis::Finding,
    kinds::{AuthorizationPolicy, Namespace, Object, ObjectKey, PeerAuthentication, Pod, Service},
};

/// What the model needs from the control plane's config.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Cluster id in workload uids (`<cluster>//Pod/<ns>/<name>`).
    pub cluster_id: String,
    /// SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// DNS suffix of service hostnames (`<svc>.<ns>.svc.<suffix>`).
    pub domain_suffix: String,
    /// Istio's root namespace: policies there without a selector apply
    /// to the whole mesh (`istio-system`).
    pub root_namespace: String,
}

/// One xDS resource, encoded once.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsResource {
    pub name: String,
    /// Hash of the canonical encoding: equal content, equal version.
    pub version: String,
    pub any: prost_types::Any,
}

impl XdsResource {
    fn new(name: String, type_url: &str, value: Vec<u8>, canonical: &[u8]) -> Arc<Self> {
        Arc::new(XdsResource {
            name,
            version: short_hex(ring::digest::digest(&ring::digest::SHA256, canonical).as_ref()),
            any: prost_types::Any {
                type_url: type_url.to_string(),
                value,
            },
        })
    }

    /// The body, if this is an `istio.workload.Address`.
    pub fn address(&self) -> Option<Address> {
        (self.any.type_url == ADDRESS_TYPE_URL)
            .then(|| Address::decode(self.any.value.as_slice()).ok())
            .flatten()
    }

    /// The body, if this is an `istio.security.Authorization`.
    pub fn authorization(&self) -> Option<Authorization> {
        (self.any.type_url == AUTHORIZATION_TYPE_URL)
            .then(|| Authorization::decode(self.any.value.as_slice()).ok())
            .flatten()
    }
}

/// Resources of one type by name.
pub type Resources = BTreeMap<String, Arc<XdsResource>>;

/// The state served to agents, and what the CA authorizes against.
#[derive(Debug, Default)]
pub struct Model {
    /// `istio.workload.Address` by resource name: workload uid, or
    /// `namespace/hostname`.
    pub resources: Resources,
    /// `istio.security.Authorization` by `namespace/name`.
    pub authorizations: Resources,
    /// Hash over all resource versions.
    pub version: String,
    /// Per type URL, a hash over that type's resource versions (each
    /// response's `system_version_info`).
    pub type_versions: BTreeMap<&'static str, String>,
    /// Node name → (namespace, service account) of the pods scheduled
    /// there, with or without an IP yet.
    pub identities_by_node: HashMap<String, BTreeSet<(String, String)>>,
    /// What compiling the config found (policies a node proxy can only
    /// partly enforce); the full analysis is `analysis::analyze`.
    pub findings: Vec<Finding>,
}

impl Model {
    /// The version of one type's resources ("" for a type weft does not
    /// serve).
    pub fn type_version(&self, type_url: &str) -> &str {
        self.type_versions.get(type_url).map_or("", String::as_str)
    }

    /// The resources of an xDS type, if weft serves it.
    pub fn of_type(&self, type_url: &str) -> Option<&Resources> {
        match type_url {
            ADDRESS_TYPE_URL => Some(&self.resources),
            AUTHORIZATION_TYPE_URL => Some(&self.authorizations),
            _ => None,
        }
    }

    /// Whether a pod running as `namespace`/`service_account` is scheduled
    /// on `node`.
    pub fn node_runs(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.identities_by_node
            .get(node)
            .is_some_and(|ids| ids.contains(&(namespace.to_string(), service_account.to_string())))
    }
}

/// Builds the model from a snapshot's objects. When two files define the
/// same object, the later file (in path order) wins.
pub fn build(objects: &[Object], config: &ModelConfig) -> Model {
    let mut namespaces: HashMap<&str, &Namespace> = HashMap::new();
    let mut pods: BTreeMap<ObjectKey, &Pod> = BTreeMap::new();
    let mut services: BTreeMap<ObjectKey, &Service> = BTreeMap::new();
    let mut authz: BTreeMap<ObjectKey, &AuthorizationPolicy> = BTreeMap::new();
    let mut peer_auths: BTreeMap<ObjectKey, &PeerAuthentication> = BTreeMap::new();
    for object in objects {
        let key = object.key();
        let replaced = match object {
            Object::Namespace(ns) => namespaces.insert(&ns.metadata.name, ns).is_some(),
            Object::Pod(pod) => pods.insert(key.clone(), pod).is_some(),
            Object::Service(svc) => services.insert(key.clone(), svc).is_some(),
            Object::AuthorizationPolicy(p) => authz.insert(key.clone(), p).is_some(),
            Object::PeerAuthentication(p) => peer_auths.insert(key.clone(), p).is_some(),
            _ => false,
        };
        if replaced {
            tracing::warn!(object = %key, "object defined more than once; the last file wins");
        }
    }

    let mut model = Model::default();
    let root = config.root_namespace.as_str();
    let mut policies: Vec<CompiledAuthorization> = authz
        .values()
        .filter_map(|p| authorization::compile(p, root, &mut model.findings))
        .collect();
    let peer_auths: Vec<&PeerAuthentication> = peer_auths.into_values().collect();
    let peer_index = PeerAuthIndex::new(&peer_auths, root);
    policies.extend(peer_index.compile());
    let selecting: Vec<(String, &CompiledAuthorization)> = policies
        .iter()
        .filter(|p| p.selector.is_some())
        .map(|p| (p.resource_name(), p))
        .collect();

    for pod in pods.values() {
        if let Some(node) = pod.node_name() {
            model
                .identities_by_node
                .entry(node.to_string())
                .or_default()
                .insert((
                    pod.namespace().to_string(),
                    pod.service_account().to_string(),
                ));
        }
        let namespace = namespaces.get(pod.namespace()).copied();
        let selecting_services: Vec<&Service> = services
            .values()
            .copied()
            .filter(|s| s.namespace() == pod.namespace() && s.selects(&pod.metadata.labels))
            .collect();
        if let Some(mut w) = workload::build(pod, namespace, &selecting_services, config) {
            w.authorization_policies = workload_policies(pod, &selecting, &peer_index, root);
            model.insert(w.uid.clone(), Type::Workload(w));
        }
    }
    for svc in services.values() {
        let s = service::build(svc, config);
        model.insert(format!("{}/{}", s.namespace, s.hostname), Type::Service(s));
    }
    for policy in policies {
        let name = policy.resource_name();
        let bytes = policy.authorization.encode_to_vec();
        let resource =
            XdsResource::new(name.clone(), AUTHORIZATION_TYPE_URL, bytes.clone(), &bytes);
        model.authorizations.insert(name, resource);
    }

    model.type_versions = [
        (ADDRESS_TYPE_URL, version_of(&model.resources)),
        (AUTHORIZATION_TYPE_URL, version_of(&model.authorizations)),
    ]
    .into();
    let mut all = ring::digest::Context::new(&ring::digest::SHA256);
    for version in model.type_versions.values() {
        all.update(version.as_bytes());
    }
    model.version = short_hex(all.finish().as_ref());
    model
}

fn version_of(resources: &Resources) -> String {
    let mut all = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, resource) in resources {
        all.update(name.as_bytes());
        all.update(resource.version.as_bytes());
    }
    short_hex(all.finish().as_ref())
}

/// The policies a pod's workload lists in `authorization_policies`:
/// AuthorizationPolicies whose selector picks it (from its namespace, or
/// from the root namespace for any namespace), then PeerAuthentication's.
fn workload_policies(
    pod: &Pod,
    selecting: &[(String, &CompiledAuthorization)],
    peer_index: &PeerAuthIndex<'_>,
    root: &str,
) -> Vec<String> {
    let labels = &pod.metadata.labels;
    let mut keys: Vec<String> = selecting
        .iter()
        .filter(|(_, p)| {
            let ns = p.authorization.namespace.as_str();
            (ns == pod.namespace() || ns == root)
                && p.selector.as_ref().is_some_and(|s| s.selects(labels))
        })
        .map(|(name, _)| name.clone())
        .collect();
    keys.sort();
    keys.extend(peer_index.workload_keys(pod.namespace(), labels));
    keys
}

impl Model {
    fn insert(&mut self, name: String, resource: Type) {
        let address = Address {
            r#type: Some(resource),
        };
        let resource = XdsResource::new(
            name.clone(),
            ADDRESS_TYPE_URL,
            address.encode_to_vec(),
            &canonical_bytes(&address),
        );
        self.resources.insert(name, resource);
    }
}

/// The encoding of `address` with map entries in key order (prost encodes
/// a `HashMap` in iteration order, which differs between builds).
fn canonical_bytes(address: &Address) -> Vec<u8> {
    let Some(Type::Workload(w)) = &address.r#type else {
        return address.encode_to_vec();
    };
    let mut without_map = w.clone();
    without_map.services.clear();
    let mut bytes = without_map.encode_to_vec();
    let mut entries: Vec<_> = w.services.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (key, ports) in entries {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend(ports.encode_to_vec());
    }
    bytes
}

fn short_hex(digest: &[u8]) -> String {
    hex::encode(&digest[..8])
}

/// The key of a service in workloads' `services` map and its resource
/// name: `namespace/hostname`.
pub fn service_key(namespace: &str, hostname: &str) -> String {
    format!("{namespace}/{hostname}")
}

/// `<name>.<namespace>.svc.<suffix>`.
pub fn service_hostname(svc: &Service, config: &ModelConfig) -> String {
    format!(
        "{}.{}.svc.{}",
        svc.metadata.name,
        svc.namespace(),
        config.domain_suffix
    )
}

#[cfg(test)]
mod tests;
