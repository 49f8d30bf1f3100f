//! VirtualService `tcp` and `tls` routes on a service's L4 ports: before
//! the outbound proxy relays a connection to a service, the service's
//! routes may send it elsewhere (a subset, another service, weighted),
//! balanced with the destination's DestinationRule like an HTTP request.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{cluster::Picked, route::ConnectionView, send::resolve_for};
use crate::{
    proxy::{PodContext, ProxyContext},
    state::{AppProtocol, Resolved, Service},
};

/// Where a `tcp`/`tls` route sends a connection to `service`, if one
/// applies; the guard counts the connection on its endpoint (for
/// least-request balancing) while it lives.
pub async fn reroute(
    ctx: &ProxyContext,
    pod: &PodContext,
    stream: &TcpStream,
    original: SocketAddr,
    service: &Service,
) -> Option<(Resolved, Option<Picked>)> {
    let table = ctx.l7.config.routes(&service.key())?;
    if !table.routes_l4() {
        return None;
    }
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
    let destination = route.pick(fastrand::u32(..))?;
    let resolved = match resolve_for(
        ctx,
        pod,
        original.port(),
        AppProtocol::Http1,
        destination,
        false,
    ) {
        Ok(resolved) => resolved,
        Err(_) => return Some((no_endpoints(ctx, destination, service), None)),
    };
    let picked = resolved.cluster.pick(
        &resolved.endpoints,
        None,
        fastrand::u64(..),
        std::time::Instant::now(),
    );
    let Some(picked) = picked else {
        return Some((no_endpoints(ctx, destination, service), None));
    };
    let endpoint = picked.endpoint.clone();
    let target_service = ctx.store.service(&destination.service);
    let resolved = match endpoint.workload {
        Some(workload) => Resolved::Workload {
            workload,
            service: target_service,
            addr: endpoint.addr,
        },
        None => Resolved::Passthrough(endpoint.addr),
    };
    tracing::debug!(vs = %route.virtual_service, dst = %endpoint.addr, "L4 route applied");
    Some((resolved, Some(picked)))
}

fn no_endpoints(
    ctx: &ProxyContext,
    destination: &super::route::Destination,
    service: &Service,
) -> Resolved {
    let target = ctx
        .store
        .service(&destination.service)
        .unwrap_or_else(|| std::sync::Arc::new(service.clone()));
    Resolved::NoEndpoints(target)
}
