//! ServiceEntry → `istio.workload.Service`s and the `istio.workload.Workload`s
//! of its endpoints, as istiod builds them for ztunnel (istio/istio
//! `pilot/pkg/serviceregistry/ambient/services.go`
//! `constructServiceEntries` and `workloads.go`
//! `serviceEntryWorkloadBuilder`, `constructServicesFromWorkloadEntry`,
//! `constructServices`):
//!
//! - **Services**: one per host that this entry owns (the L7 registry's
//!   rule: a Kubernetes Service's hostname before any ServiceEntry's, then
//!   the oldest entry; see [`super::l7`]), keyed `<namespace>/<host>` as
//!   the RouteConfig and DestinationPolicy of that host are; `addresses`
//!   the entry's addresses, `ports` its ports with `target_port`
//!   (`targetPort`, else the number) and `app_protocol` from the port's
//!   `protocol` ([`crate::kinds::Protocol::parse`]); resolution NONE
//!   (the default) is PASSTHROUGH load balancing, as in istiod.
//! - **Endpoint workloads**: each of `endpoints` with an IP address is a
//!   workload `<cluster>/networking.istio.io/ServiceEntry/<ns>/<name>/<ip>`
//!   named after the entry, whose `services` lists the entry's services,
//!   each port's target being the endpoint's `ports[<port name>]`, else
//!   the service's; its `locality` and `weight` (as capacity) carried.
//!   Outside the mesh: tunnel protocol NONE.
//! - **Selected pods**: an entry with a (non-empty) `workloadSelector`
//!   adds its services to the `services` of the pods it selects in its
//!   namespace; a port's target is the pod's container port of the same
//!   name, else the service's.
//!
//! Left out, compared with istiod:
//!
//! - hosts without `addresses` (istiod sends them with no address or with
//!   addresses it auto-allocates; weft has no DNS proxy to hand those
//!   out), and addresses that are CIDR ranges rather than single IPs (the
//!   node agent matches single addresses); an entry left with no service
//!   sends no endpoint workloads either;
//! - endpoints with a hostname (DNS resolution), and DNS entries without
//!   endpoints (istiod makes one workload per host, by hostname);
//! - WorkloadEntries: weft makes no workloads of them, so neither can an
//!   entry's selector add to them;
//! - an endpoint workload's tunnel protocol from labels or annotations
//!   (`networking.istio.io/tunnel`, `ambient.istio.io/redirection`), its
//!   authorization policies and network; an endpoint whose IP is
//!   a mesh pod's is still its own workload (as in istiod);
//! - visibility: every service is PUBLIC. istiod's ambient index does not
//!   read `exportTo` either, but newer istiods set NAMESPACE from a mesh
//!   config setting (`serviceEntryVisibility`) that weft does not have.

use std::{collections::BTreeMap, net::IpAddr};

use weft_proto::workload::{
    LoadBalancing, Locality, NetworkAddress, Port, PortList, Service, TunnelProtocol, Workload,
    WorkloadStatus, WorkloadType, load_balancing,
};

use super::{
    ModelConfig,
    service::app_protocol,
    service_key,
    workload::{canonical_name, canonical_revision, ip_bytes},
};
use crate::kinds::{
    Pod, ServiceEntry,
    service_entry::{Resolution, WorkloadEntrySpec},
};

/// The entry's addresses that are single IPs (`1.2.3.4`, `1.2.3.4/32`,
/// `fd00::1/128`).
fn single_ips(se: &ServiceEntry) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for a in &se.spec.addresses {
        let ip = match a.split_once('/') {
            None => a.parse().ok(),
            Some((ip, len)) => ip.parse::<IpAddr>().ok().filter(|ip| {
                let full = if ip.is_ipv4() { "32" } else { "128" };
                len == full
            }),
        };
        match ip {
            Some(ip) if !ips.contains(&ip) => ips.push(ip),
            Some(_) => {}
            None => tracing::debug!(
                entry = %se.metadata.name,
                namespace = se.metadata.namespace(),
                address = a,
                "ServiceEntry address is not a single IP; not sent to node agents"
            ),
        }
    }
    ips
}

/// The Workload API services of `se` for the hosts it owns (`hosts`, as
/// the L7 registry resolved them), by resource name. None when the entry
/// has no single-IP address.
pub fn services(se: &ServiceEntry, hosts: &[String]) -> Vec<(String, Service)> {
    let ips = single_ips(se);
    if ips.is_empty() {
        return Vec::new();
    }
    let ns = se.metadata.namespace();
    let ports: Vec<Port> = se
        .spec
        .ports
        .iter()
        .map(|p| Port {
            service_port: p.number,
            target_port: p.target(),
            app_protocol: app_protocol(p.app_protocol()) as i32,
        })
        .collect();
    let load_balancing =
        (se.spec.resolution.unwrap_or(Resolution::None) == Resolution::None).then(|| {
            LoadBalancing {
                mode: load_balancing::Mode::Passthrough as i32,
                health_policy: load_balancing::HealthPolicy::AllowAll as i32,
                ..Default::default()
            }
        });
    hosts
        .iter()
        .map(|host| {
            let service = Service {
                name: se.metadata.name.clone(),
                namespace: ns.to_string(),
                hostname: host.clone(),
                addresses: ips
                    .iter()
                    .map(|ip| NetworkAddress {
                        network: String::new(),
                        address: ip_bytes(ip),
                        length: None,
                    })
                    .collect(),
                ports: ports.clone(),
                subject_alt_names: se.spec.subject_alt_names.clone(),
                load_balancing: load_balancing.clone(),
                ..Default::default()
            };
            (service_key(ns, host), service)
        })
        .collect()
}

/// The workloads of the entry's endpoints that have an IP address, each
/// listing the entry's services (`service_keys`, the names [`services`]
/// gave). The first endpoint of an address wins.
pub fn endpoint_workloads(
    se: &ServiceEntry,
    service_keys: &[String],
    config: &ModelConfig,
) -> Vec<Workload> {
    if service_keys.is_empty() {
        return Vec::new();
    }
    let meta = &se.metadata;
    let ns = meta.namespace();
    let mut seen: Vec<IpAddr> = Vec::new();
    let mut out = Vec::new();
    for endpoint in &se.spec.endpoints {
        let Ok(ip) = endpoint.address.parse::<IpAddr>() else {
            continue;
        };
        if seen.contains(&ip) {
            continue;
        }
        seen.push(ip);
        let ports = endpoint_ports(se, endpoint);
        out.push(Workload {
            uid: format!(
                "{}/networking.istio.io/ServiceEntry/{ns}/{}/{}",
                config.cluster_id, meta.name, endpoint.address
            ),
            name: meta.name.clone(),
            namespace: ns.to_string(),
            addresses: vec![ip_bytes(&ip)],
            network: String::new(),
            tunnel_protocol: TunnelProtocol::None as i32,
            trust_domain: config.trust_domain.clone(),
            service_account: endpoint.service_account.clone(),
            canonical_name: canonical_name(&meta.labels, &meta.name).to_string(),
            canonical_revision: canonical_revision(&meta.labels).to_string(),
            // As istiod: an entry's endpoint passes for a pod.
            workload_type: WorkloadType::Pod as i32,
            workload_name: meta.name.clone(),
            services: service_keys
                .iter()
                .map(|k| (k.clone(), ports.clone()))
                .collect(),
            status: WorkloadStatus::Healthy as i32,
            cluster_id: config.cluster_id.clone(),
            locality: locality(&endpoint.locality),
            capacity: endpoint.weight.filter(|w| *w > 0),
            ..Default::default()
        });
    }
    out
}

/// `region/zone/subzone`, any part possibly missing; none when empty.
fn locality(text: &str) -> Option<Locality> {
    let mut parts = text.splitn(3, '/').map(str::to_string);
    let locality = Locality {
        region: parts.next().unwrap_or_default(),
        zone: parts.next().unwrap_or_default(),
        subzone: parts.next().unwrap_or_default(),
    };
    (locality != Locality::default()).then_some(locality)
}

/// An endpoint's ports: `ports[<port name>]`, else the port's target.
fn endpoint_ports(se: &ServiceEntry, endpoint: &WorkloadEntrySpec) -> PortList {
    PortList {
        ports: se
            .spec
            .ports
            .iter()
            .map(|p| Port {
                service_port: p.number,
                target_port: endpoint.ports.get(&p.name).copied().unwrap_or(p.target()),
                ..Default::default()
            })
            .collect(),
    }
}

/// Whether the entry's workload selector picks pods with `labels`: only a
/// selector with labels selects, as in istiod's ambient index.
pub fn selects(
    selector: Option<&BTreeMap<String, String>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A selected pod's ports for the entry: its container port named as the
/// entry's port, else the port's target.
pub fn pod_ports(se: &ServiceEntry, pod: &Pod) -> PortList {
    PortList {
        ports: se
            .spec
            .ports
            .iter()
            .map(|p| Port {
                service_port: p.number,
                target_port: pod.named_port(&p.name).map_or(p.target(), u32::from),
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "service_entry_tests.rs"]
mod tests;
