//! From Istio's Workload API messages to the agent's own types.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use weft_proto::workload::{self as wl, address::Type};

use super::{AppProtocol, Identity, Service, Workload, WorkloadNames};
use crate::metrics::traffic::ServiceLabels;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("Address has neither a workload nor a service")]
    Empty,
    #[error("{what} has an address of {len} bytes; expected 4 (IPv4) or 16 (IPv6)")]
    BadAddress { what: String, len: usize },
    #[error("{what} has port {port}, which is out of range")]
    BadPort { what: String, port: u32 },
}

pub enum Converted {
    Workload(Workload),
    Service(Service),
}

fn ip(bytes: &[u8], what: impl FnOnce() -> String) -> Result<IpAddr, ConvertError> {
    match bytes.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let octets: [u8; 16] = bytes.try_into().expect("length checked");
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        len => Err(ConvertError::BadAddress { what: what(), len }),
    }
}

fn port(value: u32, what: impl FnOnce() -> String) -> Result<u16, ConvertError> {
    u16::try_from(value).map_err(|_| ConvertError::BadPort {
        what: what(),
        port: value,
    })
}

/// Converts one `istio.workload.Address`.
pub fn from_address(address: wl::Address) -> Result<Converted, ConvertError> {
    match address.r#type.ok_or(ConvertError::Empty)? {
        Type::Workload(w) => {
            let what = || format!("workload {}", w.uid);
            let ips = w
                .addresses
                .iter()
                .map(|bytes| ip(bytes, what))
                .collect::<Result<Vec<_>, _>>()?;
            let mut services = std::collections::HashMap::new();
            for (key, list) in &w.services {
                let mut ports = std::collections::HashMap::new();
                for p in &list.ports {
                    ports.insert(port(p.service_port, what)?, port(p.target_port, what)?);
                }
                services.insert(key.clone(), ports);
            }
            let trust_domain = if w.trust_domain.is_empty() {
                "cluster.local".to_string()
            } else {
                w.trust_domain.clone()
            };
            let service_account = if w.service_account.is_empty() {
                "default".to_string()
            } else {
                w.service_account.clone()
            };
            // As Istio's peer metadata names the workload's kind.
            let workload_type = match w.workload_type() {
                wl::WorkloadType::Deployment => "deployment",
                wl::WorkloadType::Cronjob => "cronjob",
                wl::WorkloadType::Pod => "pod",
                wl::WorkloadType::Job => "job",
            };
            Ok(Converted::Workload(
                Workload {
                    identity: Identity {
                        trust_domain,
                        namespace: w.namespace.clone(),
                        service_account,
                    },
                    hbone: w.tunnel_protocol == wl::TunnelProtocol::Hbone as i32,
                    host_network: w.network_mode() == wl::NetworkMode::HostNetwork,
                    policies: w.authorization_policies,
                    names: WorkloadNames {
                        workload: if w.workload_name.is_empty() {
                            w.name.clone()
                        } else {
                            w.workload_name
                        },
                        canonical_service: w.canonical_name,
                        canonical_revision: w.canonical_revision,
                        cluster: w.cluster_id,
                        workload_type,
                    },
                    uid: w.uid,
                    name: w.name,
                    namespace: w.namespace,
                    ips,
                    node: w.node,
                    services,
                    telemetry: Default::default(),
                }
                .labelled(),
            ))
        }
        Type::Service(s) => {
            let what = || format!("service {}/{}", s.namespace, s.hostname);
            let vips = s
                .addresses
                .iter()
                .map(|a| ip(&a.address, what))
                .collect::<Result<Vec<_>, _>>()?;
            let mut ports = std::collections::HashMap::new();
            let mut http_ports = std::collections::HashMap::new();
            for p in &s.ports {
                let service_port = port(p.service_port, what)?;
                ports.insert(service_port, port(p.target_port, what)?);
                let protocol = match wl::AppProtocol::try_from(p.app_protocol) {
                    Ok(wl::AppProtocol::Http11) => Some(AppProtocol::Http1),
                    Ok(wl::AppProtocol::Http2) => Some(AppProtocol::Http2),
                    Ok(wl::AppProtocol::Grpc) => Some(AppProtocol::Grpc),
                    // Unknown, TCP, TLS, or a value newer than this agent:
                    // opaque TCP.
                    _ => None,
                };
                if let Some(protocol) = protocol {
                    http_ports.insert(service_port, protocol);
                }
            }
            Ok(Converted::Service(Service {
                telemetry: Arc::new(ServiceLabels::of(&s.hostname, &s.namespace, &s.name)),
                name: s.name,
                namespace: s.namespace,
                hostname: s.hostname,
                vips,
                ports,
                http_ports,
                original_dst: s
                    .load_balancing
                    .as_ref()
                    .is_some_and(|lb| lb.mode == wl::load_balancing::Mode::Passthrough as i32),
            }))
        }
    }
}
