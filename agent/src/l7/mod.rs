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

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub use config::L7Config;

use self::cluster::{Cluster, EffectivePolicy};

/// What the L7 proxy keeps between requests: configuration, per-cluster
/// state (balancers, outlier detection, limits) and upstream connections.
#[derive(Default)]
pub struct L7 {
    pub config: Arc<L7Config>,
    clusters: Clusters,
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

/// Cluster state, created on first use and replaced when the cluster's
/// effective policy changes (which resets its outlier and balancer state,
/// as an Envoy cluster update does). Each cluster state has its own
/// upstream connections, counted against its own limits: when a cluster is
/// replaced, its idle connections are closed.
#[derive(Default)]
struct Clusters {
    map: Mutex<HashMap<ClusterKey, (u64, Arc<Cluster>)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A cluster's state and the id its upstream connections are keyed by.
#[derive(Clone)]
pub struct ClusterRef {
    pub id: u64,
    pub cluster: Arc<Cluster>,
}

impl L7 {
    /// The state of a cluster for `policy`; a cluster whose policy changed
    /// starts afresh.
    fn cluster(&self, key: ClusterKey, policy: Arc<EffectivePolicy>) -> ClusterRef {
        let mut map = self.clusters.map.lock().expect("clusters lock");
        if let Some((id, cluster)) = map.get(&key)
            && (Arc::ptr_eq(cluster.policy(), &policy) || **cluster.policy() == *policy)
        {
            return ClusterRef {
                id: *id,
                cluster: cluster.clone(),
            };
        }
        let id = self
            .clusters
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}|{}|{}", key.port, key.subset, key.service);
        let cluster = Arc::new(Cluster::new(name, policy));
        if let Some((old, _)) = map.insert(key, (id, cluster.clone())) {
            self.upstreams.retire(old);
        }
        ClusterRef { id, cluster }
    }
}
