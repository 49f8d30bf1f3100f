//! The indexed store of workloads and services, updated by the xDS client
//! and read by enrolment and the proxy.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::watch;

use super::{AppProtocol, Service, Workload, convert::Converted};
use crate::policy::{Policy, Scope};

/// Where an outbound connection goes.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// A workload the control plane knows, reached directly or through one
    /// of its services. `addr` is the workload's IP and target port.
    Workload {
        workload: Arc<Workload>,
        service: Option<Arc<Service>>,
        addr: SocketAddr,
    },
    /// A service VIP with no endpoint behind it, or one whose addresses
    /// are the destinations ([`Service::original_dst`]), which the
    /// outbound proxy places (its routes and rule, else the address
    /// dialed).
    NoEndpoints(Arc<Service>),
    /// A service port declared HTTP: the L7 proxy picks an endpoint per
    /// request.
    Http {
        service: Arc<Service>,
        protocol: AppProtocol,
    },
    /// Not a mesh destination: forwarded unchanged, in plaintext. `service`:
    /// the service it was addressed to, when one sends its connections
    /// to the address dialed (a ServiceEntry with `resolution: NONE`, a
    /// DestinationRule's `PASSTHROUGH`); it names the destination in the
    /// metrics and the access log's cluster.
    Passthrough {
        addr: SocketAddr,
        service: Option<Arc<Service>>,
    },
}

/// Looked up on every connection and request, by keys the control plane
/// sent: a fast hash rather than SipHash's flood resistance.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Inner {
    workloads: Map<String, Arc<Workload>>,
    /// Pod IP → uid. Host-network pods are left out, as ztunnel leaves
    /// them out: they share their node's IP, so an address names none of
    /// them (traffic from it is `unknown`, traffic to it passes through).
    by_ip: Map<IpAddr, String>,
    /// namespace → pod name → uid: looked up by `&str`s, so a lookup
    /// (one per request, see `PodContext::current`) allocates nothing.
    by_pod: Map<String, Map<String, String>>,
    /// node name → uids of the workloads scheduled there.
    by_node: HashMap<String, BTreeSet<String>>,
    services: Map<String, Arc<Service>>,
    by_vip: Map<IpAddr, String>,
    /// service key → uids of the workloads backing it.
    endpoints: HashMap<String, BTreeSet<String>>,
    /// xDS resource name → version.
    versions: HashMap<String, String>,
    /// Authorization policies by `ns/name`, in order (a namespace's are a
    /// range).
    policies: std::collections::BTreeMap<String, Arc<Policy>>,
    /// The names of the mesh-wide (GLOBAL) policies.
    global_policies: BTreeSet<String>,
    policy_versions: HashMap<String, String>,
}

impl Inner {
    fn remove(&mut self, name: &str) {
        self.versions.remove(name);
        if let Some(w) = self.workloads.remove(name) {
            for ip in &w.ips {
                if self.by_ip.get(ip).is_some_and(|uid| uid == name) {
                    self.by_ip.remove(ip);
                }
            }
            if let Some(pods) = self.by_pod.get_mut(&w.namespace)
                && pods.get(&w.name).is_some_and(|uid| uid == name)
            {
                pods.remove(&w.name);
                if pods.is_empty() {
                    self.by_pod.remove(&w.namespace);
                }
            }
            if let Some(set) = self.by_node.get_mut(&w.node) {
                set.remove(name);
                if set.is_empty() {
                    self.by_node.remove(&w.node);
                }
            }
            for key in w.services.keys() {
                if let Some(set) = self.endpoints.get_mut(key) {
                    set.remove(name);
                }
            }
        }
        if let Some(s) = self.services.remove(name) {
            for vip in &s.vips {
                if self.by_vip.get(vip).is_some_and(|key| key == name) {
                    self.by_vip.remove(vip);
                }
            }
        }
    }

    fn insert(&mut self, name: String, version: String, resource: Converted) {
        self.remove(&name);
        match resource {
            Converted::Workload(w) => {
                if !w.host_network {
                    for ip in &w.ips {
                        self.by_ip.insert(*ip, name.clone());
                    }
                }
                self.by_pod
                    .entry(w.namespace.clone())
                    .or_default()
                    .insert(w.name.clone(), name.clone());
                if !w.node.is_empty() {
                    self.by_node
                        .entry(w.node.clone())
                        .or_default()
                        .insert(name.clone());
                }
                for key in w.services.keys() {
                    self.endpoints
                        .entry(key.clone())
                        .or_default()
                        .insert(name.clone());
                }
                self.workloads.insert(name.clone(), Arc::new(w));
            }
            Converted::Service(s) => {
                for vip in &s.vips {
                    self.by_vip.insert(*vip, name.clone());
                }
                self.services.insert(name.clone(), Arc::new(s));
            }
        }
        self.versions.insert(name, version);
    }
}

/// Workloads and services, indexed by what the proxy looks up.
pub struct WorkloadStore {
    inner: RwLock<Inner>,
    changes: watch::Sender<u64>,
    round_robin: AtomicUsize,
}

impl Default for WorkloadStore {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            changes: watch::Sender::new(0),
            round_robin: AtomicUsize::new(0),
        }
    }
}

impl WorkloadStore {
    /// Applies one xDS update: upserts (`name`, `version`, resource) and
    /// removals by name. Wakes everyone waiting on [`Self::subscribe`].
    pub fn apply(&self, upserts: Vec<(String, String, Converted)>, removals: &[String]) {
        {
            let mut inner = self.inner.write().expect("store lock");
            for name in removals {
                inner.remove(name);
            }
            for (name, version, resource) in upserts {
                inner.insert(name, version, resource);
            }
        }
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Applies one update of authorization policies.
    pub fn apply_policies(&self, upserts: Vec<(String, String, Policy)>, removals: &[String]) {
        {
            let mut inner = self.inner.write().expect("store lock");
            for name in removals {
                inner.policies.remove(name);
                inner.global_policies.remove(name);
                inner.policy_versions.remove(name);
            }
            for (name, version, policy) in upserts {
                if policy.scope == Scope::Global {
                    inner.global_policies.insert(name.clone());
                } else {
                    inner.global_policies.remove(&name);
                }
                inner.policies.insert(name.clone(), Arc::new(policy));
                inner.policy_versions.insert(name, version);
            }
        }
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Policy name → version, for `initial_resource_versions`.
    pub fn policy_versions(&self) -> HashMap<String, String> {
        self.inner
            .read()
            .expect("store lock")
            .policy_versions
            .clone()
    }

    /// The policies that apply to a workload, in name order: mesh-wide
    /// ones, its namespace's, and the selector policies it names. Looked
    /// up per request on HTTP ports, so it reads only those (the
    /// namespace's policies are one range of the ordered map).
    pub fn policies_for(&self, workload: &Workload) -> Vec<Arc<Policy>> {
        let inner = self.inner.read().expect("store lock");
        let prefix = format!("{}/", workload.namespace);
        let namespace = inner
            .policies
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(&prefix))
            .map(|(_, p)| p)
            .filter(|p| p.scope == Scope::Namespace);
        let named = inner
            .global_policies
            .iter()
            .chain(&workload.policies)
            .filter_map(|name| inner.policies.get(name));
        let mut applicable: Vec<Arc<Policy>> = namespace.chain(named).cloned().collect();
        applicable.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        applicable.dedup_by(|a, b| Arc::ptr_eq(a, b));
        applicable
    }

    /// What `port` of `workload` speaks when one of its services declares
    /// it HTTP (the service port that targets it is an HTTP port).
    pub fn http_target_port(&self, workload: &Workload, port: u16) -> Option<AppProtocol> {
        let inner = self.inner.read().expect("store lock");
        workload.services.iter().find_map(|(key, ports)| {
            let service = inner.services.get(key)?;
            ports.iter().find_map(|(service_port, target)| {
                let target = if *target == 0 { *service_port } else { *target };
                (target == port)
                    .then(|| service.http_ports.get(service_port).copied())
                    .flatten()
            })
        })
    }

    /// The service through which `port` of `workload` is reached (the
    /// first by key when several target it): what a destination reports
    /// as `destination_service`, not knowing the address the client used.
    pub fn service_for_target(&self, workload: &Workload, port: u16) -> Option<Arc<Service>> {
        let inner = self.inner.read().expect("store lock");
        workload
            .services
            .iter()
            .filter(|(_, ports)| {
                ports.iter().any(|(service_port, target)| {
                    port == if *target == 0 { *service_port } else { *target }
                })
            })
            .map(|(key, _)| key)
            .min()
            .and_then(|key| inner.services.get(key).cloned())
    }

    /// A receiver that changes whenever the store does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Resource name → version of everything held: what a reconnecting
    /// xDS client sends as `initial_resource_versions`.
    pub fn versions(&self) -> HashMap<String, String> {
        self.inner.read().expect("store lock").versions.clone()
    }

    /// How many workloads and services the store holds.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.read().expect("store lock");
        (inner.workloads.len(), inner.services.len())
    }

    pub fn workload_by_pod(&self, namespace: &str, name: &str) -> Option<Arc<Workload>> {
        let inner = self.inner.read().expect("store lock");
        let uid = inner.by_pod.get(namespace)?.get(name)?;
        inner.workloads.get(uid).cloned()
    }

    /// The workloads scheduled on `node`, in a stable order (by uid).
    pub fn workloads_on_node(&self, node: &str) -> Vec<Arc<Workload>> {
        let inner = self.inner.read().expect("store lock");
        inner
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|uid| inner.workloads.get(uid).cloned())
            .collect()
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        let inner = self.inner.read().expect("store lock");
        let uid = inner.by_ip.get(&ip)?;
        inner.workloads.get(uid).cloned()
    }

    /// A service by key (`<namespace>/<hostname>`).
    pub fn service(&self, key: &str) -> Option<Arc<Service>> {
        self.inner
            .read()
            .expect("store lock")
            .services
            .get(key)
            .cloned()
    }

    /// Every service, by hostname (for the admin API).
    pub fn services(&self) -> Vec<Arc<Service>> {
        let inner = self.inner.read().expect("store lock");
        let mut services: Vec<Arc<Service>> = inner.services.values().cloned().collect();
        services.sort_by(|a, b| {
            a.hostname
                .cmp(&b.hostname)
                .then(a.namespace.cmp(&b.namespace))
        });
        services
    }

    /// A workload by uid.
    pub fn workload(&self, uid: &str) -> Option<Arc<Workload>> {
        self.inner
            .read()
            .expect("store lock")
            .workloads
            .get(uid)
            .cloned()
    }

    /// The workloads behind a service that have an address, in a stable
    /// order (by uid).
    pub fn endpoints(&self, service: &str) -> Vec<Arc<Workload>> {
        let inner = self.inner.read().expect("store lock");
        inner
            .endpoints
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|uid| inner.workloads.get(uid))
            .filter(|w| !w.ips.is_empty())
            .cloned()
            .collect()
    }

    /// The address of a provider named in the mesh config (an external
    /// authorizer, a trace collector): an IP, or an endpoint of its
    /// service (`<name>.<namespace>.svc...` or `<namespace>/<hostname>`)
    /// that has an address, with the port its service port targets.
    pub fn service_address(&self, service: &str, port: u16) -> Option<SocketAddr> {
        if let Ok(ip) = service.parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
        let key = match service.split_once('/') {
            Some(_) => service.to_string(),
            None => {
                let namespace = service.split('.').nth(1)?;
                format!("{namespace}/{service}")
            }
        };
        let endpoint = self.endpoints(&key).into_iter().next()?;
        let target = endpoint
            .services
            .get(&key)
            .and_then(|ports| ports.get(&port))
            .copied()
            .filter(|t| *t != 0)
            .unwrap_or(port);
        Some(SocketAddr::new(*endpoint.ips.first()?, target))
    }

    /// Decides where a connection to `dst` goes: a service VIP's HTTP port
    /// goes to the L7 proxy, another port picks one of its endpoints (round
    /// robin), a workload IP is that workload, anything
    /// else passes through.
    pub fn resolve(&self, dst: SocketAddr) -> Resolved {
        let inner = self.inner.read().expect("store lock");
        let service = inner
            .by_vip
            .get(&dst.ip())
            .and_then(|key| inner.services.get(key));
        if let Some(service) = service
            && let Some(&service_target) = service.ports.get(&dst.port())
        {
            if let Some(&protocol) = service.http_ports.get(&dst.port()) {
                return Resolved::Http {
                    service: service.clone(),
                    protocol,
                };
            }
            // Its addresses are the destinations: the outbound proxy sends
            // the connection to the one dialed, under the host's rule
            // (`l7::l4::steer`), endpoints or not, as Envoy's
            // `ORIGINAL_DST` cluster does.
            if service.original_dst {
                return Resolved::NoEndpoints(service.clone());
            }
            let key = service.key();
            let endpoints: Vec<&Arc<Workload>> = inner
                .endpoints
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(|uid| inner.workloads.get(uid))
                .filter(|w| !w.ips.is_empty())
                .collect();
            if endpoints.is_empty() {
                return Resolved::NoEndpoints(service.clone());
            }
            let pick = self.round_robin.fetch_add(1, Ordering::Relaxed) % endpoints.len();
            let workload = endpoints[pick];
            let target = workload
                .services
                .get(&key)
                .and_then(|ports| ports.get(&dst.port()))
                .copied()
                .filter(|&p| p != 0)
                .or(Some(service_target).filter(|&p| p != 0))
                .unwrap_or(dst.port());
            return Resolved::Workload {
                workload: workload.clone(),
                service: Some(service.clone()),
                addr: SocketAddr::new(workload.ips[0], target),
            };
        }
        match inner
            .by_ip
            .get(&dst.ip())
            .and_then(|uid| inner.workloads.get(uid))
        {
            Some(workload) => Resolved::Workload {
                workload: workload.clone(),
                service: None,
                addr: dst,
            },
            None => Resolved::Passthrough {
                addr: dst,
                service: None,
            },
        }
    }

    /// Everything held, for the admin API's config dump.
    pub fn dump(&self) -> serde_json::Value {
        let inner = self.inner.read().expect("store lock");
        let mut workloads: Vec<&Arc<Workload>> = inner.workloads.values().collect();
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut services: Vec<&Arc<Service>> = inner.services.values().collect();
        services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        let mut policies: Vec<&Arc<Policy>> = inner.policies.values().collect();
        policies.sort_by_key(|p| p.key());
        serde_json::json!({ "workloads": workloads, "services": services, "policies": policies })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::state::Identity;

    fn workload(uid: &str, ip: [u8; 4], services: &[(&str, u16, u16)]) -> Converted {
        let mut map: HashMap<String, HashMap<u16, u16>> = HashMap::new();
        for (key, sp, tp) in services {
            map.entry(key.to_string()).or_default().insert(*sp, *tp);
        }
        Converted::Workload(Workload {
            uid: uid.into(),
            name: uid.into(),
            namespace: "default".into(),
            ips: vec![IpAddr::V4(Ipv4Addr::from(ip))],
            node: "node-1".into(),
            identity: Identity {
                trust_domain: "cluster.local".into(),
                namespace: "default".into(),
                service_account: "default".into(),
            },
            hbone: true,
            host_network: false,
            services: map,
            policies: vec![],
            names: Default::default(),
            telemetry: Default::default(),
        })
    }

    #[test]
    fn policies_for_a_workload_are_global_namespace_and_named_ones_in_order() {
        let store = WorkloadStore::default();
        let policy = |ns: &str, name: &str, scope: Scope| {
            (
                format!("{ns}/{name}"),
                "v1".to_string(),
                Policy {
                    name: name.into(),
                    namespace: ns.into(),
                    scope,
                    action: crate::policy::Action::Deny,
                    groups: vec![],
                    http_groups: None,
                    dry_run: false,
                    l7_ignored: vec![],
                    jwt_rules: vec![],
                    ext_authz: None,
                },
            )
        };
        store.apply_policies(
            vec![
                policy("istio-system", "mesh", Scope::Global),
                policy("default", "ns-wide", Scope::Namespace),
                policy("default", "picked", Scope::WorkloadSelector),
                policy("default", "not-picked", Scope::WorkloadSelector),
                policy("default-2", "other-ns", Scope::Namespace),
                policy("a", "gone", Scope::Global),
            ],
            &[],
        );
        store.apply_policies(vec![], &["a/gone".to_string()]);
        let Converted::Workload(mut w) = workload("w", [10, 0, 0, 1], &[]) else {
            unreachable!()
        };
        w.policies = vec!["default/picked".into(), "default/ns-wide".into()];
        let keys: Vec<String> = store.policies_for(&w).iter().map(|p| p.key()).collect();
        assert_eq!(
            keys,
            ["default/ns-wide", "default/picked", "istio-system/mesh"]
        );
    }

    fn service(vip: [u8; 4], port: u16, target: u16) -> Converted {
        Converted::Service(Service {
            name: "web".into(),
            namespace: "default".into(),
            hostname: "web.default.svc.cluster.local".into(),
            vips: vec![IpAddr::V4(Ipv4Addr::from(vip))],
            ports: HashMap::from([(port, target)]),
            http_ports: HashMap::new(),
            original_dst: false,
            telemetry: Default::default(),
        })
    }

    const SVC: &str = "default/web.default.svc.cluster.local";

    #[test]
    fn resolves_vip_to_endpoints_round_robin_with_target_port() {
        let store = WorkloadStore::default();
        store.apply(
            vec![
                (
                    "a".into(),
                    "1".into(),
                    workload("a", [10, 0, 1, 2], &[(SVC, 80, 8080)]),
                ),
                (
                    "b".into(),
                    "1".into(),
                    workload("b", [10, 0, 2, 2], &[(SVC, 80, 8080)]),
                ),
                (SVC.into(), "1".into(), service([10, 96, 0, 10], 80, 8080)),
            ],
            &[],
        );
        let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            match store.resolve(vip) {
                Resolved::Workload { addr, service, .. } => {
                    assert_eq!(addr.port(), 8080);
                    assert!(service.is_some());
                    seen.insert(addr.ip());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen.len(), 2, "both endpoints used");
        // A port the service doesn't expose is not the service.
        assert!(matches!(
            store.resolve("10.96.0.10:81".parse().unwrap()),
            Resolved::Passthrough { .. }
        ));
    }

    #[test]
    fn removal_drops_indexes() {
        let store = WorkloadStore::default();
        store.apply(
            vec![
                (
                    "a".into(),
                    "1".into(),
                    workload("a", [10, 0, 1, 2], &[(SVC, 80, 8080)]),
                ),
                (SVC.into(), "1".into(), service([10, 96, 0, 10], 80, 8080)),
            ],
            &[],
        );
        assert_eq!(store.workloads_on_node("node-1").len(), 1);
        store.apply(vec![], &["a".to_string()]);
        assert!(store.workloads_on_node("node-1").is_empty());
        assert!(store.workload_by_ip("10.0.1.2".parse().unwrap()).is_none());
        assert!(store.workload_by_pod("default", "a").is_none());
        assert!(matches!(
            store.resolve("10.96.0.10:80".parse().unwrap()),
            Resolved::NoEndpoints(_)
        ));
        assert_eq!(store.versions().len(), 1);
    }

    /// A ServiceEntry with `resolution: NONE`: its addresses are the
    /// destinations, endpoints or not, at the port's target.
    #[test]
    fn an_original_dst_service_is_left_to_the_proxy_whatever_its_endpoints() {
        let store = WorkloadStore::default();
        let Converted::Service(service) = service([10, 0, 9, 9], 9443, 8443) else {
            unreachable!()
        };
        let entry = Service {
            original_dst: true,
            ..service
        };
        store.apply(
            vec![
                (
                    "a".into(),
                    "1".into(),
                    workload("a", [10, 0, 1, 2], &[(SVC, 9443, 8443)]),
                ),
                (SVC.into(), "1".into(), Converted::Service(entry)),
            ],
            &[],
        );
        let dialed: SocketAddr = "10.0.9.9:9443".parse().unwrap();
        match store.resolve(dialed) {
            Resolved::NoEndpoints(service) => {
                assert!(service.original_dst);
                assert_eq!(
                    service.original_dst_addr(dialed),
                    "10.0.9.9:8443".parse().unwrap()
                );
                // A port without a target keeps the port dialed.
                let other: SocketAddr = "10.0.9.9:7000".parse().unwrap();
                assert_eq!(service.original_dst_addr(other), other);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn workload_ip_resolves_directly() {
        let store = WorkloadStore::default();
        store.apply(
            vec![("a".into(), "1".into(), workload("a", [10, 0, 1, 2], &[]))],
            &[],
        );
        match store.resolve("10.0.1.2:9000".parse().unwrap()) {
            Resolved::Workload { addr, service, .. } => {
                assert_eq!(addr, "10.0.1.2:9000".parse().unwrap());
                assert!(service.is_none());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            store.resolve("192.0.2.1:80".parse().unwrap()),
            Resolved::Passthrough { .. }
        ));
    }
    /// Host-network pods share their node's IP: a service still reaches
    /// the one it selects, but the address alone names none of them
    /// (connections from it are unattributed, connections to it pass
    /// through), whichever of them came last.
    #[test]
    fn host_network_pods_are_not_found_by_their_shared_address() {
        let store = WorkloadStore::default();
        let host_network =
            |uid: &str, services: &[(&str, u16, u16)]| match workload(uid, [10, 0, 0, 1], services)
            {
                Converted::Workload(w) => Converted::Workload(Workload {
                    host_network: true,
                    hbone: false,
                    ..w
                }),
                other => other,
            };
        store.apply(
            vec![
                (
                    "exporter".into(),
                    "1".into(),
                    host_network("exporter", &[(SVC, 80, 9100)]),
                ),
                ("proxy".into(), "1".into(), host_network("proxy", &[])),
                (SVC.into(), "1".into(), service([10, 96, 0, 10], 80, 9100)),
            ],
            &[],
        );
        let node_ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(store.workload_by_ip(node_ip).is_none());
        assert!(matches!(
            store.resolve(SocketAddr::new(node_ip, 9100)),
            Resolved::Passthrough { .. }
        ));
        match store.resolve("10.96.0.10:80".parse().unwrap()) {
            Resolved::Workload { workload, addr, .. } => {
                assert_eq!(workload.uid, "exporter");
                assert_eq!(addr, SocketAddr::new(node_ip, 9100));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(store.workloads_on_node("node-1").len(), 2);
    }
}
