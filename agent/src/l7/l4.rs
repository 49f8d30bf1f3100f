//! A service's L4 ports under its VirtualService `tcp`/`tls` routes and
//! its DestinationRule: before the outbound proxy relays a connection to
//! a service, the routes may send it elsewhere (a subset, another
//! service, weighted), and the destination's cluster picks the endpoint
//! as Envoy's TCP proxy does: its balancer (`useSourceIp` the only hash
//! key a connection has), its outlier ejections, and `maxConnections`;
//! the relay's idle timeout and longest duration are the rule's top
//! level's, as istiod sets them on the TCP proxy.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

use super::{
    cluster::{AttemptResult, Cluster, LbPolicy, LimitGuard, Picked, ip_hash},
    route::{ConnectionView, Destination},
    send::resolve_for,
};
use crate::{
    proxy::{PodContext, ProxyContext, limits::RelayLimits},
    state::{AppProtocol, Resolved, Service},
};

/// Where a connection to a service goes, when its routes or its
/// DestinationRule decide it.
pub enum Steered {
    /// To `resolved`, the connection counted at its cluster while `hold`
    /// lives (`None`: no endpoint was picked).
    To(Resolved, Option<Box<Hold>>),
    /// The cluster's `maxConnections` are all open: Envoy refuses the
    /// connection (`UO`).
    Overflow,
}

/// A connection's place at its cluster: one of `maxConnections`, one
/// active connection on its endpoint (what least request compares), and
/// where its connect's outcome goes for outlier detection.
pub struct Hold {
    /// Reports the connect's outcome.
    pub outcome: ConnectOutcome,
    /// The cluster's `connectTimeout` (`None`: the agent's).
    pub connect_timeout: Option<Duration>,
    /// Its `tcp.idleTimeout` and `tcp.maxConnectionDuration`.
    pub relay: RelayLimits,
    /// When it originates TLS (`tls.mode` SIMPLE or MUTUAL): the cluster,
    /// whose policy has the settings, and the host the TLS is for (taken
    /// by the connect, `Waited::steered_by`).
    pub tls: Option<(Arc<Cluster>, String)>,
    _picked: Picked,
    _connection: LimitGuard,
}

/// Tells the cluster whether the connection to its endpoint was made (a
/// success for outlier detection) or not (a local-origin failure, which
/// Istio's outlier settings count as a 5xx: Envoy does when it does not
/// split local and external errors, as Istio configures it).
#[derive(Clone)]
pub struct ConnectOutcome {
    cluster: Arc<Cluster>,
    endpoint: SocketAddr,
}

impl ConnectOutcome {
    pub fn report(&self, connected: bool) {
        let result = match connected {
            true => AttemptResult::Success,
            false => AttemptResult::LocalOriginFailure,
        };
        self.cluster.report(self.endpoint, result, Instant::now());
    }
}

/// How a connection to `service` is steered when a `tcp`/`tls` route
/// applies or a DestinationRule exists for it; `None`: neither, the
/// connection goes where the store resolved it.
pub async fn steer(
    ctx: &ProxyContext,
    pod: &PodContext,
    stream: &TcpStream,
    original: SocketAddr,
    service: &Service,
) -> Option<Steered> {
    let key = service.key();
    let table = ctx.l7.config.routes(&key).filter(|t| t.routes_l4());
    let routed;
    // Whose rule, for which subset, sets the TCP proxy's own settings.
    let mut settings_of: Option<(&str, &str)> = None;
    let destination = match &table {
        Some(table) => {
            let sni = match table.wants_sni() {
                true => super::sni::peek_sni(stream).await,
                false => None,
            };
            let view = ConnectionView {
                destination: original,
                source_ip: pod.workload.ips.first().copied()?,
                source_namespace: &pod.workload.namespace,
                source_workload: &pod.workload.uid,
                sni: sni.as_deref(),
            };
            let route = table.select_l4(&view)?;
            tracing::debug!(vs = %route.virtual_service, "L4 route applied");
            settings_of = route.proxy_settings_of();
            route.pick(fastrand::u32(..))?
        }
        None => {
            // No route: the service itself, if a DestinationRule applies.
            ctx.l7.config.policies(&key)?;
            routed = Destination {
                host: service.hostname.clone(),
                subset: String::new(),
                port: original.port(),
                service: key,
                endpoints: None,
            };
            &routed
        }
    };
    // Without a route, a cluster with nothing to pick leaves the
    // connection where the store resolved it (a ServiceEntry's DNS hosts,
    // for one, are not endpoints here).
    let none_left = || {
        table
            .as_ref()
            .map(|_| Steered::To(no_endpoints(ctx, destination, service), None))
    };
    let Ok(resolved) = resolve_for(
        ctx,
        pod,
        original.port(),
        AppProtocol::Http1,
        destination,
        false,
    ) else {
        return none_left();
    };
    let cluster = resolved.cluster.clone();
    let Some(connection) = cluster.try_connection() else {
        tracing::debug!(cluster = %cluster.name(), "maxConnections reached; refusing");
        return Some(Steered::Overflow);
    };
    // The TCP proxy's own settings come from one rule's top level (and
    // the hash from the subset's, for a single destination), not from
    // the port-level settings that shaped the cluster.
    let (settings_service, settings_subset) =
        settings_of.unwrap_or((destination.service.as_str(), destination.subset.as_str()));
    let proxy = ctx
        .l7
        .config
        .policies(settings_service)
        .map(|p| p.tcp_proxy(&pod.workload.namespace, settings_subset))
        .unwrap_or_default();
    let source_ip = pod.workload.ips.first().copied().unwrap_or(original.ip());
    let picked = match &cluster.policy().lb {
        // The original destination, as the client asked (Envoy's
        // `ORIGINAL_DST` cluster: its breakers still count).
        _ if let Some(addr) = resolved.original_dst(original) => {
            Some(Picked::passthrough(super::cluster::Endpoint {
                addr,
                workload: None,
                weight: 1,
            }))
        }
        LbPolicy::ConsistentHash { .. } => cluster.pick(
            &resolved.endpoints,
            // Envoy's TCP proxy hashes only on the source address
            // (`useSourceIp`); without it a hashing balancer has nothing
            // to hash, and picks at random.
            proxy.hash_source_ip.then(|| ip_hash(source_ip)),
            fastrand::u64(..),
            Instant::now(),
        ),
        _ => cluster.pick(&resolved.endpoints, None, fastrand::u64(..), Instant::now()),
    };
    // Every endpoint ejected (and no panic): refused, as Envoy's TCP
    // proxy does (`UH`), not sent to an ejected one.
    let Some(picked) = picked else {
        return match resolved.endpoints.is_empty() {
            true => none_left(),
            false => Some(Steered::To(no_endpoints(ctx, destination, service), None)),
        };
    };
    let endpoint = picked.endpoint.clone();
    let target_service = ctx.store.service(&destination.service);
    let resolved = match endpoint.workload {
        Some(workload) => Resolved::Workload {
            workload,
            service: target_service,
            addr: endpoint.addr,
        },
        None => Resolved::Passthrough {
            addr: endpoint.addr,
            service: target_service,
        },
    };
    let hold = Box::new(Hold {
        outcome: ConnectOutcome {
            endpoint: endpoint.addr,
            cluster: cluster.clone(),
        },
        connect_timeout: cluster.policy().limits.connect_timeout,
        relay: RelayLimits {
            idle: proxy.idle,
            max_duration: proxy.max_duration,
        },
        tls: cluster
            .policy()
            .tls
            .is_some()
            .then(|| (cluster.clone(), destination.host.clone())),
        _picked: picked,
        _connection: connection,
    });
    Some(Steered::To(resolved, Some(hold)))
}

fn no_endpoints(ctx: &ProxyContext, destination: &Destination, service: &Service) -> Resolved {
    let target = ctx
        .store
        .service(&destination.service)
        .unwrap_or_else(|| Arc::new(service.clone()));
    Resolved::NoEndpoints(target)
}
