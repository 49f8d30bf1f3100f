//! The admin API's view of the L7 clusters (Envoy's word: a destination
//! service, subset and port): every cluster a client on this node may
//! use, the DestinationRule policy it gets, its endpoints and, for the
//! clusters traffic has used, their live state (outlier ejections, the
//! circuit breakers in use).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::Instant,
};

use serde_json::{Value, json};

use super::{
    L7,
    cluster::{Cluster, EffectivePolicy},
    route::EndpointSet,
};
use crate::state::{Service, Workload, WorkloadStore};

impl L7 {
    /// One entry per (service, subset, port): each service port, with
    /// the subsets its DestinationRule defines (for clients in the
    /// service's namespace) and those its routes send to; plus clusters
    /// traffic created for other ports. Policies are the ones traffic
    /// uses when the cluster is live (that of clients in the service's
    /// namespace when clients in several namespaces get different ones),
    /// else what a client in the service's namespace would get.
    pub fn dump_clusters(&self, store: &WorkloadStore) -> Value {
        let now = Instant::now();
        let live: BTreeMap<(String, String, u16), Arc<Cluster>> = {
            let map = self.clusters.map.lock().expect("clusters lock");
            // Clients in several namespaces may have a state each: the
            // one a client in the service's namespace uses, else the
            // newest.
            map.iter()
                .filter_map(|(k, states)| {
                    let namespace = k.service.split_once('/').map_or("", |(ns, _)| ns);
                    let own = self
                        .config
                        .policies(&k.service)
                        .map(|p| p.effective(namespace, &k.subset, k.port));
                    let (_, c) = states
                        .iter()
                        .find(|(_, c)| own.as_deref().is_some_and(|p| **c.policy() == *p))
                        .or(states.last())?;
                    Some(((k.service.clone(), k.subset.clone(), k.port), c.clone()))
                })
                .collect()
        };
        // Subset endpoints as the routes carry them, by (service, subset).
        let mut subset_endpoints: BTreeMap<(String, String), Arc<EndpointSet>> = BTreeMap::new();
        for table in self.config.all_routes() {
            for route in table.routes() {
                let super::route::Action::Route(dests) = &route.action else {
                    continue;
                };
                for d in dests.iter().map(|d| &d.destination) {
                    if let Some(set) = &d.endpoints {
                        subset_endpoints
                            .entry((d.service.clone(), d.subset.clone()))
                            .or_insert_with(|| set.clone());
                    }
                }
            }
        }
        let mut keys: BTreeSet<(String, String, u16)> = live.keys().cloned().collect();
        let services = store.services();
        for service in &services {
            let key = service.key();
            let mut subsets: BTreeSet<String> = BTreeSet::from([String::new()]);
            if let Some(p) = self.config.policies(&key) {
                subsets.extend(p.rules_for(&service.namespace).1);
            }
            subsets.extend(
                subset_endpoints
                    .keys()
                    .filter(|(s, _)| *s == key)
                    .map(|(_, subset)| subset.clone()),
            );
            for port in service.ports.keys() {
                for subset in &subsets {
                    keys.insert((key.clone(), subset.clone(), *port));
                }
            }
        }
        let by_key: BTreeMap<String, &Arc<Service>> =
            services.iter().map(|s| (s.key(), s)).collect();
        let clusters: Vec<Value> = keys
            .into_iter()
            .map(|(key, subset, port)| {
                let service = by_key.get(&key).copied();
                let hostname = service.map_or_else(
                    || {
                        key.split_once('/')
                            .map_or(key.as_str(), |(_, h)| h)
                            .to_string()
                    },
                    |s| s.hostname.clone(),
                );
                let namespace = key.split_once('/').map_or("", |(ns, _)| ns);
                let policies = self.config.policies(&key);
                let rules = policies
                    .as_ref()
                    .map(|p| p.rules_for(namespace).0)
                    .unwrap_or_default();
                let cluster = live.get(&(key.clone(), subset.clone(), port));
                let policy: Arc<EffectivePolicy> = match (cluster, &policies) {
                    (Some(c), _) => c.policy().clone(),
                    (None, Some(p)) => p.effective(namespace, &subset, port),
                    (None, None) => Arc::new(EffectivePolicy::defaults()),
                };
                let endpoints = if subset.is_empty() {
                    Some(service_endpoints(store, &key, service, port))
                } else {
                    subset_endpoints
                        .get(&(key.clone(), subset.clone()))
                        .map(|set| set_endpoints(store, set, &key, service, port))
                };
                let ejected: Vec<SocketAddr> = cluster.map(|c| c.ejected(now)).unwrap_or_default();
                let endpoints = endpoints.map(|list| {
                    list.into_iter()
                        .map(|(addr, workload, healthy)| {
                            json!({
                                "address": addr.map(|a| a.to_string()),
                                "workload": workload,
                                "health": if healthy { "HEALTHY" } else { "UNHEALTHY" },
                                "outlier_ejected": addr.is_some_and(|a| ejected.contains(&a)),
                                "active_requests": match (cluster, addr) {
                                    (Some(c), Some(a)) => c.active_requests(a),
                                    _ => 0,
                                },
                            })
                        })
                        .collect::<Vec<_>>()
                });
                json!({
                    "name": format!("outbound|{port}|{subset}|{hostname}"),
                    "service": key,
                    "hostname": hostname,
                    "port": port,
                    "subset": subset,
                    "direction": "outbound",
                    "destination_rules": rules,
                    "policy": policy.dump(),
                    "live": cluster.map(|c| {
                        let usage = c.limit_usage();
                        json!({
                            "ejected": ejected.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            "requests": usage.requests,
                            "pending": usage.pending,
                            "retries": usage.retries,
                            "connections": usage.connections,
                        })
                    }),
                    "endpoints": endpoints,
                })
            })
            .collect();
        Value::Array(clusters)
    }
}

/// (address, workload uid, healthy) of one endpoint; no address while
/// the workload has none.
type Listed = (Option<SocketAddr>, Option<String>, bool);

/// The port a workload serves `port` of `key` on (as `send` resolves it).
fn target_port(workload: &Workload, key: &str, service: Option<&Arc<Service>>, port: u16) -> u16 {
    workload
        .services
        .get(key)
        .and_then(|ports| ports.get(&port))
        .copied()
        .filter(|&p| p != 0)
        .or_else(|| {
            service
                .and_then(|s| s.ports.get(&port).copied())
                .filter(|&p| p != 0)
        })
        .unwrap_or(port)
}

fn service_endpoints(
    store: &WorkloadStore,
    key: &str,
    service: Option<&Arc<Service>>,
    port: u16,
) -> Vec<Listed> {
    store
        .endpoints(key)
        .iter()
        .map(|w| {
            let addr = SocketAddr::new(w.ips[0], target_port(w, key, service, port));
            (Some(addr), Some(w.uid.clone()), true)
        })
        .collect()
}

/// A subset's endpoints: its workloads (unhealthy while they have no
/// address) and its addresses (ServiceEntry endpoints).
fn set_endpoints(
    store: &WorkloadStore,
    set: &EndpointSet,
    key: &str,
    service: Option<&Arc<Service>>,
    port: u16,
) -> Vec<Listed> {
    let mut out = Vec::new();
    for uid in &set.workload_uids {
        let workload = store.workload(uid);
        let addr = workload.as_ref().and_then(|w| {
            let ip = w.ips.first()?;
            Some(SocketAddr::new(*ip, target_port(w, key, service, port)))
        });
        out.push((addr, Some(uid.clone()), addr.is_some()));
    }
    for a in &set.addresses {
        if let Ok(ip) = a.address.parse() {
            let p = if a.port != 0 { a.port } else { port };
            out.push((Some(SocketAddr::new(ip, p)), None, true));
        }
    }
    out
}
