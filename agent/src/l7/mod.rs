//! L7: HTTP in the node proxy.
//!
//! A pod's connection to a Service port declared HTTP (Istio's protocol
//! selection: `appProtocol` or the port's name, decided by the control
//! plane) is terminated here instead of being relayed as bytes
//! ([`outbound`]). Each request then goes through [`forward`]:
//!
//! 1. the service's VirtualService routes ([`route`]) pick a route, or
//!    answer themselves (redirect, direct response, fault, CORS);
//! 2. a weighted destination (service, subset, port) is chosen, and the
//!    request rewritten as the route says;
//! 3. [`send`] applies the destination's DestinationRule ([`cluster`]):
//!    endpoints minus outlier-ejected ones, the load balancer, the
//!    connection-pool limits; then sends over a pooled upstream connection
//!    ([`upstream`], HBONE to mesh workloads) with the route's timeout and
//!    retries;
//! 4. the response is edited (headers, CORS) and logged ([`log`]).
//!
//! Answers the proxy gives itself are Envoy's ([`reply`]).
//!
//! The destination side ([`inbound`]): a connection to an HTTP port of a
//! local pod (an HBONE CONNECT stream, or steered plaintext) is served as
//! HTTP too, so that authorization decides per request with the HTTP
//! attributes, before the request reaches the app. A weft client still
//! works with any HBONE server, and any HBONE client with a weft server.

pub mod body;
pub mod cluster;
mod config;
mod drain;
mod dump;
mod envoy_headers;
pub mod ext_authz;
pub mod forward;
mod framing;
mod idle;
pub mod inbound;
pub mod l4;
pub mod log;
pub mod outbound;
pub mod reply;
pub mod route;
pub mod send;
pub mod sni;
pub mod tls;
pub mod upstream;
mod wire;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub use config::L7Config;

use self::cluster::{Cluster, EffectivePolicy, Policies};

/// What the L7 proxy keeps between requests: configuration, per-cluster
/// state (balancers, outlier detection, limits) and upstream connections.
#[derive(Default)]
pub struct L7 {
    pub config: Arc<L7Config>,
    clusters: Arc<Clusters>,
    pub upstreams: Arc<upstream::Upstreams>,
}

impl L7 {
    pub fn new(config: Arc<L7Config>) -> L7 {
        L7 {
            config,
            ..Default::default()
        }
    }
}

/// A cluster, in Envoy's sense: a destination service, subset and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClusterKey {
    service: String,
    subset: String,
    port: u16,
}

/// Cluster state, created on first use for each effective policy of the
/// cluster: clients in namespaces that get different DestinationRules
/// (Istio's lookup starts in the client's namespace) each have their own,
/// and those that get the same policy share one. A policy that changes is
/// a new state (which resets outlier and balancer state, as an Envoy
/// cluster update does). Each state has its own upstream connections,
/// counted against its own limits: when a state is found stale (no client
/// gets its policy any more), its idle connections are closed.
#[derive(Default)]
struct Clusters {
    map: Mutex<HashMap<ClusterKey, Vec<ClusterState>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Clusters {
    /// Drops, for every key, the states whose policy `config` no longer
    /// gives any client ([`drop_stale`]).
    fn sweep(&self, config: &L7Config, upstreams: &upstream::Upstreams) {
        let mut map = self.map.lock().expect("clusters lock");
        map.retain(|key, states| {
            let policies = config.policies(&key.service);
            drop_stale(states, key, policies.as_deref(), upstreams);
            !states.is_empty()
        });
    }
}

/// A cluster state and the id its upstream connections are keyed by.
type ClusterState = (u64, Arc<Cluster>);

/// A cluster's state and the id its upstream connections are keyed by.
#[derive(Clone)]
pub struct ClusterRef {
    pub id: u64,
    pub cluster: Arc<Cluster>,
}

impl L7 {
    /// Every few seconds until the process ends: drops the cluster states
    /// no client gets the policy of any more (a rule deleted or changed
    /// while its clients went back to a state that already existed), and
    /// idle upstream connections past their timeout.
    pub fn run_sweeper(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (config, clusters, upstreams) = (
            self.config.clone(),
            self.clusters.clone(),
            self.upstreams.clone(),
        );
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                clusters.sweep(&config, &upstreams);
                upstreams.sweep();
            }
        }
    }

    /// The state of a cluster for `policy`, made on first use. `policies`
    /// are the service's now (`None`: no DestinationRule): when a new
    /// state is made, the key's states whose policy they no longer give
    /// any client are dropped and their connections retired.
    fn cluster(
        &self,
        key: ClusterKey,
        policy: Arc<EffectivePolicy>,
        policies: Option<&Policies>,
    ) -> ClusterRef {
        let mut map = self.clusters.map.lock().expect("clusters lock");
        let found = map.get(&key).and_then(|states| {
            states.iter().find(|(_, cluster)| {
                Arc::ptr_eq(cluster.policy(), &policy) || **cluster.policy() == *policy
            })
        });
        if let Some((id, cluster)) = found {
            return ClusterRef {
                id: *id,
                cluster: cluster.clone(),
            };
        }
        // A new state: the first for this key, or for this policy.
        let name = format!("{}|{}|{}", key.port, key.subset, key.service);
        if let Some(states) = map.get_mut(&key) {
            drop_stale(states, &key, policies, &self.upstreams);
        }
        let id = self
            .clusters
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cluster = Arc::new(Cluster::new(name, policy));
        map.entry(key).or_default().push((id, cluster.clone()));
        ClusterRef { id, cluster }
    }
}

/// Drops `key`'s states whose policy `policies` (the service's now;
/// `None`: no DestinationRule) no longer gives any client, and retires
/// their connections.
fn drop_stale(
    states: &mut Vec<ClusterState>,
    key: &ClusterKey,
    policies: Option<&Policies>,
    upstreams: &upstream::Upstreams,
) {
    states.retain(|(id, cluster)| {
        let current = match policies {
            Some(p) => p.produces(&key.subset, key.port, cluster.policy()),
            None => cluster.policy().is_default(),
        };
        if !current {
            upstreams.retire(*id);
        }
        current
    });
}

#[cfg(test)]
mod tests {
    use weft_proto::route::{
        self as pb,
        load_balancer_settings::{LbPolicy as PbLb, SimpleLb},
    };

    use super::*;

    fn entry(ns: &str, export_to: &[&str], lb: SimpleLb) -> pb::ScopedPolicy {
        pb::ScopedPolicy {
            namespace: ns.into(),
            export_to: export_to.iter().map(|s| s.to_string()).collect(),
            host: "svc.shop.svc.cluster.local".into(),
            traffic_policy: Some(pb::TrafficPolicy {
                load_balancer: Some(pb::LoadBalancerSettings {
                    lb_policy: Some(PbLb::Simple(lb as i32)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn compile(entries: Vec<pb::ScopedPolicy>) -> Policies {
        Policies::compile(&pb::DestinationPolicy {
            name: "shop/svc".into(),
            hostname: "svc.shop.svc.cluster.local".into(),
            namespace: "shop".into(),
            policies: entries,
        })
        .expect("compiles")
    }

    /// Policies where namespace `a` has a rule of its own (ROUND_ROBIN)
    /// and the service's namespace one for everyone else (`lb`).
    fn policies(lb: SimpleLb) -> Policies {
        compile(vec![
            entry("a", &["a"], SimpleLb::RoundRobin),
            entry("shop", &[], lb),
        ])
    }

    fn key() -> ClusterKey {
        ClusterKey {
            service: "shop/svc.shop.svc.cluster.local".into(),
            subset: String::new(),
            port: 80,
        }
    }

    #[test]
    fn clients_with_different_policies_keep_their_own_cluster_state() {
        let l7 = L7::default();
        let p = policies(SimpleLb::Random);
        let of = |ns: &str, p: &Policies| l7.cluster(key(), p.effective(ns, "", 80), Some(p));
        let (a, b) = (of("a", &p), of("b", &p));
        assert_ne!(a.id, b.id, "two policies, two states");
        for _ in 0..3 {
            assert_eq!(
                of("a", &p).id,
                a.id,
                "a's state is not replaced by b's requests"
            );
            assert_eq!(of("b", &p).id, b.id);
        }
        assert_eq!(of("c", &p).id, b.id, "the same policy shares a state");

        // The shared rule changes: b gets a new state, a keeps its own and
        // the stale one is dropped.
        let changed = policies(SimpleLb::LeastRequest);
        let b2 = of("b", &changed);
        assert_ne!(b2.id, b.id);
        assert_eq!(of("a", &changed).id, a.id);
        let states = l7.clusters.map.lock().unwrap()[&key()].len();
        assert_eq!(states, 2, "the stale state is gone");
    }

    #[test]
    fn the_sweeper_drops_states_no_client_gets() {
        let l7 = L7::default();
        let p = policies(SimpleLb::Random);
        let a = l7.cluster(key(), p.effective("a", "", 80), Some(&p));
        let b = l7.cluster(key(), p.effective("b", "", 80), Some(&p));
        // a's own rule is deleted: its clients go back to the state b's
        // already use, and nothing makes a new one.
        let shared_only = compile(vec![entry("shop", &[], SimpleLb::Random)]);
        l7.config
            .apply_policies(vec![(key().service, "2".into(), shared_only)], &[]);
        l7.clusters.sweep(&l7.config, &l7.upstreams);
        let ids: Vec<u64> = l7.clusters.map.lock().unwrap()[&key()]
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, [b.id], "a's state ({}) is dropped", a.id);
    }
}
