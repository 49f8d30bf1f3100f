//! Service → `istio.workload.Service`.

use weft_proto::workload::{AppProtocol, NetworkAddress, Port, Service};

use super::{ModelConfig, service_hostname, workload::ip_bytes};
use crate::kinds::{self, Protocol, service::TargetPort};

/// A service with its virtual IPs (none for a headless service) and TCP
/// ports, each with its application protocol. A named targetPort is sent
/// as 0: each workload carries its own resolution in its `services` map.
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
                app_protocol: app_protocol(p.app_protocol()) as i32,
            })
            .collect(),
        ..Default::default()
    }
}

/// What a port's protocol tells a node proxy, as istiod fills
/// `Port.app_protocol` for ztunnel (istio/istio
/// `pilot/pkg/serviceregistry/ambient/workloads.go`
/// `toAppProtocolFromProtocol`): HTTP is HTTP11, HTTP2 is HTTP2, GRPC is
/// GRPC; the rest UNKNOWN (opaque TCP).
///
/// Two differences, on purpose:
///
/// - GRPC-Web is HTTP11 (istiod: UNKNOWN). Istio counts it as HTTP
///   (`IsHTTP`), and it is what browsers send over HTTP/1.1; UNKNOWN
///   would take routing and L7 policy away from it.
/// - TCP, TLS and HTTPS are UNKNOWN. istiod has sent TCP (4) and TLS (5)
///   since istio/istio#59259 (March 2026; HTTPS as TLS); clients built on
///   the proto before it know only 0-3, and to a node proxy both mean
///   what UNKNOWN does: no HTTP. weft sends neither.
pub fn app_protocol(protocol: Protocol) -> AppProtocol {
    match protocol {
        Protocol::Http | Protocol::GrpcWeb => AppProtocol::Http11,
        Protocol::Http2 => AppProtocol::Http2,
        Protocol::Grpc => AppProtocol::Grpc,
        Protocol::HttpProxy
        | Protocol::Https
        | Protocol::Tcp
        | Protocol::Tls
        | Protocol::Mongo
        | Protocol::Mysql
        | Protocol::Redis
        | Protocol::Udp
        | Protocol::Unsupported => AppProtocol::Unknown,
    }
}
