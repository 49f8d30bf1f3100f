//! Service → `istio.workload.Service`.

use weft_proto::workload::{NetworkAddress, Port, Service};

use super::{ModelConfig, service_hostname, workload::ip_bytes};
use crate::kinds::{self, service::TargetPort};

/// A service with its virtual IPs (none for a headless service) and TCP
/// ports. A named targetPort is sent as 0: each workload carries its own
/// resolution in its `services` map.
pub fn build(svc: &kinds::Service, config: &ModelConfig) -> Service {
    Service {
        name: svc.metadata.name.clone(),
        namespace: svc.namespace().to_string(),
        hostname: service_hostname(svc, config),
        addresses: svc
            .vips()
            .iter()
            .map(|ip| NetworkAddress {
                network: String::new(),
                address: ip_bytes(ip),
                length: None,
            })
            .collect(),
        ports: svc
            .spec
            .ports
            .iter()
            .filter(|p| p.is_tcp())
            .map(|p| Port {
                service_port: u32::from(p.port),
                target_port: match &p.target_port {
                    None => u32::from(p.port),
                    Some(TargetPort::Number(n)) => u32::from(*n),
                    Some(TargetPort::Name(_)) => 0,
                },
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
