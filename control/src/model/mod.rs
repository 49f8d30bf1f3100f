//! The model: configuration objects turned into Istio Workload API
//! resources (`istio.workload.Address`), each with a name and a version,
//! plus the indexes the CA needs. Rebuilt from scratch on every config
//! change; xDS streams diff successive models.

mod service;
mod workload;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use prost::Message;
use weft_proto::{
    ADDRESS_TYPE_URL,
    workload::{Address, address::Type},
};

use crate::kinds::{Namespace, Object, ObjectKey, Pod, Service};

/// What the model needs from the control plane's config.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Cluster id in workload uids (`<cluster>//Pod/<ns>/<name>`).
    pub cluster_id: String,
    /// SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// DNS suffix of service hostnames (`<svc>.<ns>.svc.<suffix>`).
    pub domain_suffix: String,
}

/// One xDS resource, encoded once.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsResource {
    pub name: String,
    /// Hash of the canonical encoding: equal content, equal version.
    pub version: String,
    pub address: Address,
    pub any: prost_types::Any,
}

/// The state served to agents, and what the CA authorizes against.
#[derive(Debug, Default)]
pub struct Model {
    /// By resource name: workload uid, or `namespace/hostname`.
    pub resources: BTreeMap<String, Arc<XdsResource>>,
    /// Hash over all resource versions (`system_version_info`).
    pub version: String,
    /// Node name → (namespace, service account) of the pods scheduled
    /// there, with or without an IP yet.
    pub identities_by_node: HashMap<String, BTreeSet<(String, String)>>,
}

impl Model {
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
    for object in objects {
        let key = object.key();
        let replaced = match object {
            Object::Namespace(ns) => namespaces.insert(&ns.metadata.name, ns).is_some(),
            Object::Pod(pod) => pods.insert(key.clone(), pod).is_some(),
            Object::Service(svc) => services.insert(key.clone(), svc).is_some(),
            Object::Node(_) | Object::ServiceAccount(_) => false,
        };
        if replaced {
            tracing::warn!(object = %key, "object defined more than once; the last file wins");
        }
    }

    let mut model = Model::default();
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
        let selecting: Vec<&Service> = services
            .values()
            .copied()
            .filter(|s| s.namespace() == pod.namespace() && s.selects(&pod.metadata.labels))
            .collect();
        if let Some(w) = workload::build(pod, namespace, &selecting, config) {
            model.insert(w.uid.clone(), Type::Workload(w));
        }
    }
    for svc in services.values() {
        let s = service::build(svc, config);
        model.insert(format!("{}/{}", s.namespace, s.hostname), Type::Service(s));
    }

    let mut all = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, resource) in &model.resources {
        all.update(name.as_bytes());
        all.update(resource.version.as_bytes());
    }
    model.version = short_hex(all.finish().as_ref());
    model
}

impl Model {
    fn insert(&mut self, name: String, resource: Type) {
        let address = Address {
            r#type: Some(resource),
        };
        let version = short_hex(
            ring::digest::digest(&ring::digest::SHA256, &canonical_bytes(&address)).as_ref(),
        );
        let any = prost_types::Any {
            type_url: ADDRESS_TYPE_URL.to_string(),
            value: address.encode_to_vec(),
        };
        self.resources.insert(
            name.clone(),
            Arc::new(XdsResource {
                name,
                version,
                address,
                any,
            }),
        );
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
