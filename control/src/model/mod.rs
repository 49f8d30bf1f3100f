//! The model: configuration objects turned into the resources agents
//! receive, each with a name and a version — Istio Workload API
//! `istio.workload.Address` (workloads and services, from Pods, Services
//! and ServiceEntries),
//! `istio.security.Authorization` (AuthorizationPolicy, PeerAuthentication
//! and, with weft's `jwt_rules`, RequestAuthentication), and weft's L7 `weft.route.v1.RouteConfig`
//! (VirtualService) and `weft.route.v1.DestinationPolicy`
//! (DestinationRule), `weft.telemetry.v1.AccessLogPolicy` (MeshConfig's
//! access log and Telemetry `accessLogging`, see [`access_log`]),
//! `weft.telemetry.v1.TracingPolicy` (MeshConfig's tracing and Telemetry
//! `tracing`, see [`trace_policy`]) and `weft.telemetry.v1.MetricsPolicy`
//! (MeshConfig's default metrics providers and Telemetry `metrics`, see
//! [`metrics_policy`]) — plus
//! the indexes the CA needs. The [`Builder`]
//! recomputes only what a change touches (a pod; the pods of a namespace
//! whose services or policies changed; a ServiceEntry's own resources, and
//! the pods its selector picks; the hosts whose routes or rules changed,
//! see [`l7`]) and records the names that changed, so that xDS
//! streams send differences without comparing everything.

pub mod access_log;
pub mod authorization;
mod builder;
pub mod full;
pub mod l7;
pub mod metrics_policy;
pub mod peer_authentication;
pub mod request_authentication;
mod service;
mod service_entry;
pub mod sharded;
pub mod telemetries;
#[cfg(test)]
mod telemetry_test_support;
pub mod trace_policy;
mod workload;

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use weft_proto::{
    ACCESS_LOG_POLICY_TYPE_URL, ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
    DESTINATION_POLICY_TYPE_URL, METRICS_POLICY_TYPE_URL, ROUTE_CONFIG_TYPE_URL,
    TRACING_POLICY_TYPE_URL,
    route::{DestinationPolicy, RouteConfig},
    security::Authorization,
    workload::{Address, address::Type},
};

pub use self::builder::{Builder, Delta};
use self::{
    authorization::CompiledAuthorization,
    full::{FullState, FullStates},
    peer_authentication::PeerAuthIndex,
    sharded::{SetHash, ShardedMap},
};
use crate::{
    analysis::Finding,
    kinds::{Object, Pod, Service},
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
    /// MeshConfig (`--mesh-config`): the extension providers CUSTOM
    /// policies name.
    pub mesh: Arc<crate::mesh::MeshConfig>,
}

/// One xDS resource, encoded once.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsResource {
    pub name: String,
    /// Hash of the canonical encoding: equal content, equal version.
    pub version: String,
    /// The `envoy.service.discovery.v3.Resource` (name, version, body) as
    /// an entry of `DeltaDiscoveryResponse.resources` (field 2: tag,
    /// length, message), encoded once and shared by every response that
    /// carries it.
    pub framed: Bytes,
}

/// `DeltaDiscoveryResponse` with only its `resources` field, to read a
/// framed resource back.
#[derive(Clone, PartialEq, prost::Message)]
struct FramedResource {
    #[prost(message, optional, tag = "2")]
    resource: Option<weft_proto::discovery::Resource>,
}

impl XdsResource {
    fn new(name: String, type_url: &str, value: Vec<u8>, canonical: &[u8]) -> Arc<Self> {
        let version = short_hex(ring::digest::digest(&ring::digest::SHA256, canonical).as_ref());
        let framed = FramedResource {
            resource: Some(weft_proto::discovery::Resource {
                name: name.clone(),
                version: version.clone(),
                resource: Some(prost_types::Any {
                    type_url: type_url.to_string(),
                    value,
                }),
                ..Default::default()
            }),
        }
        .encode_to_vec()
        .into();
        Arc::new(XdsResource {
            name,
            version,
            framed,
        })
    }

    /// The `Any` this resource carries.
    pub fn any(&self) -> prost_types::Any {
        FramedResource::decode(self.framed.clone())
            .ok()
            .and_then(|f| f.resource)
            .and_then(|r| r.resource)
            .unwrap_or_default()
    }

    fn body<M: Message + Default>(&self, type_url: &str) -> Option<M> {
        let any = self.any();
        (any.type_url == type_url)
            .then(|| M::decode(any.value.as_slice()).ok())
            .flatten()
    }

    /// The body, if this is an `istio.workload.Address`.
    pub fn address(&self) -> Option<Address> {
        self.body(ADDRESS_TYPE_URL)
    }

    /// The body, if this is an `istio.security.Authorization`.
    pub fn authorization(&self) -> Option<Authorization> {
        self.body(AUTHORIZATION_TYPE_URL)
    }

    /// The body, if this is a `weft.route.v1.RouteConfig`.
    pub fn route_config(&self) -> Option<RouteConfig> {
        self.body(ROUTE_CONFIG_TYPE_URL)
    }

    /// The body, if this is a `weft.route.v1.DestinationPolicy`.
    pub fn destination_policy(&self) -> Option<DestinationPolicy> {
        self.body(DESTINATION_POLICY_TYPE_URL)
    }

    /// The body, if this is a `weft.telemetry.v1.AccessLogPolicy`.
    pub fn access_log_policy(&self) -> Option<weft_proto::telemetry::AccessLogPolicy> {
        self.body(ACCESS_LOG_POLICY_TYPE_URL)
    }

    /// The body, if this is a `weft.telemetry.v1.TracingPolicy`.
    pub fn tracing_policy(&self) -> Option<weft_proto::telemetry::TracingPolicy> {
        self.body(TRACING_POLICY_TYPE_URL)
    }

    /// The body, if this is a `weft.telemetry.v1.MetricsPolicy`.
    pub fn metrics_policy(&self) -> Option<weft_proto::telemetry::MetricsPolicy> {
        self.body(METRICS_POLICY_TYPE_URL)
    }
}

/// Resources of one type by name, with an order-independent hash of
/// their versions.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    map: ShardedMap<Arc<XdsResource>>,
    hash: SetHash,
}

impl Resources {
    pub fn get(&self, name: &str) -> Option<&Arc<XdsResource>> {
        self.map.get(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<XdsResource>)> {
        self.map.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<XdsResource>> {
        self.map.values()
    }

    /// Names, sorted.
    pub fn keys(&self) -> Vec<&String> {
        self.map.sorted_keys()
    }

    /// Inserts or replaces; whether anything changed.
    pub fn put(&mut self, resource: Arc<XdsResource>) -> bool {
        if let Some(old) = self.map.get(&resource.name) {
            if old.version == resource.version {
                return false;
            }
            self.hash.toggle(&old.name, &old.version);
        }
        self.hash.toggle(&resource.name, &resource.version);
        self.map.insert(resource.name.clone(), resource);
        true
    }

    /// Removes; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.map.remove(name) {
            Some(old) => {
                self.hash.toggle(&old.name, &old.version);
                true
            }
            None => false,
        }
    }

    /// The type's version: a digest of every (name, version).
    pub fn version(&self) -> String {
        self.hash.hex()
    }
}

impl std::ops::Index<&str> for Resources {
    type Output = Arc<XdsResource>;

    fn index(&self, name: &str) -> &Arc<XdsResource> {
        &self.map[name]
    }
}

impl std::ops::Index<&String> for Resources {
    type Output = Arc<XdsResource>;

    fn index(&self, name: &String) -> &Arc<XdsResource> {
        &self.map[name.as_str()]
    }
}

/// What changed from one model version to the next.
#[derive(Debug, Default)]
pub struct Changes {
    /// The version these changes lead from.
    pub from: String,
    /// (type URL, resource name) added, changed or removed.
    pub names: Vec<(&'static str, String)>,
}

/// How many model versions of changes streams can catch up through.
pub const HISTORY: usize = 64;

/// The state served to agents, and what the CA authorizes against. Cheap
/// to clone (a snapshot).
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// `istio.workload.Address` by resource name: workload uid, or
    /// `namespace/hostname`.
    pub resources: Resources,
    /// `istio.security.Authorization` by `namespace/name`.
    pub authorizations: Resources,
    /// `weft.route.v1.RouteConfig` by `namespace/hostname`.
    pub routes: Resources,
    /// `weft.route.v1.DestinationPolicy` by `namespace/hostname`.
    pub destinations: Resources,
    /// `weft.telemetry.v1.AccessLogPolicy` by namespace.
    pub access_logs: Resources,
    /// `weft.telemetry.v1.TracingPolicy` by namespace.
    pub tracing: Resources,
    /// `weft.telemetry.v1.MetricsPolicy` by namespace.
    pub metrics: Resources,
    /// Over all types.
    pub version: String,
    /// `<node>/<namespace>/<service account>` → how many pods (with or
    /// without an IP) run as that identity on that node.
    pub identities: ShardedMap<u32>,
    /// What compiling the config found (policies a node proxy can only
    /// partly enforce); the full analysis is `analysis::analyze`.
    pub findings: Vec<Finding>,
    /// The changes that led to this version, newest last, up to
    /// [`HISTORY`]: a stream at an older version sends only these names.
    pub history: std::collections::VecDeque<Arc<Changes>>,
    /// Each type's whole state as response bodies, built on demand.
    full: FullStates,
}

impl Model {
    /// Whether a pod running as `namespace`/`service_account` is scheduled
    /// on `node`.
    pub fn node_runs(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.identities
            .contains_key(&identity_key(node, namespace, service_account))
    }

    /// The version of one type's resources ("" for a type weft does not
    /// serve).
    pub fn type_version(&self, type_url: &str) -> String {
        self.of_type(type_url)
            .map(Resources::version)
            .unwrap_or_default()
    }

    /// The resources of an xDS type, if weft serves it.
    pub fn of_type(&self, type_url: &str) -> Option<&Resources> {
        match type_url {
            ADDRESS_TYPE_URL => Some(&self.resources),
            AUTHORIZATION_TYPE_URL => Some(&self.authorizations),
            ROUTE_CONFIG_TYPE_URL => Some(&self.routes),
            DESTINATION_POLICY_TYPE_URL => Some(&self.destinations),
            ACCESS_LOG_POLICY_TYPE_URL => Some(&self.access_logs),
            TRACING_POLICY_TYPE_URL => Some(&self.tracing),
            METRICS_POLICY_TYPE_URL => Some(&self.metrics),
            _ => None,
        }
    }

    /// Every resource of `type_url` as response bodies, encoded once for
    /// this version (see [`full`]).
    pub fn full_state(&self, type_url: &str) -> Option<Arc<FullState>> {
        let i = weft_proto::TYPE_URLS.iter().position(|t| *t == type_url)?;
        Some(self.full.get(i, self.of_type(type_url)?))
    }

    /// The names changed since `version`, if it is recent enough; `None`
    /// means "compare everything".
    pub fn changed_since(&self, version: &str) -> Option<Vec<(&'static str, &str)>> {
        if version == self.version {
            return Some(Vec::new());
        }
        let start = self.history.iter().position(|c| c.from == version)?;
        Some(
            self.history
                .iter()
                .skip(start)
                .flat_map(|c| c.names.iter().map(|(t, n)| (*t, n.as_str())))
                .collect(),
        )
    }

    fn seal(&mut self) {
        let mut hash = 0u64;
        for (i, r) in [
            &self.resources,
            &self.authorizations,
            &self.routes,
            &self.destinations,
            &self.access_logs,
            &self.tracing,
            &self.metrics,
        ]
        .into_iter()
        .enumerate()
        {
            hash ^= r.hash.0.rotate_left(17 * i as u32);
        }
        self.version = SetHash(hash).hex();
    }
}

pub fn identity_key(node: &str, namespace: &str, service_account: &str) -> String {
    format!("{node}/{namespace}/{service_account}")
}

/// Builds the model from a snapshot's objects, from scratch. When two
/// files define the same object, the later file (in path order) wins.
pub fn build(objects: &[Object], config: &ModelConfig) -> Model {
    let mut builder = Builder::new(config.clone());
    builder.update(Delta::Full(objects));
    builder.model().clone()
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
