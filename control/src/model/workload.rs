//! Pod → `istio.workload.Workload`, including enrolment: whether the pod's
//! traffic goes through the mesh (HBONE) or not.

use std::{collections::BTreeMap, net::IpAddr};

use weft_proto::workload::{
    NetworkMode, Port, PortList, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use super::{ModelConfig, service_hostname, service_key};
use crate::kinds::{
    Namespace, Pod, Service,
    service::{ServicePort, TargetPort},
};

/// The label that puts a namespace in the mesh (`ambient`) or takes a pod
/// out (`none`).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";

/// Whether the pod is in the mesh: its namespace is labelled
/// `istio.io/dataplane-mode=ambient`, the pod is not labelled
/// `istio.io/dataplane-mode=none`, and it does not use the host network.
pub fn enrolled(pod: &Pod, namespace: Option<&Namespace>) -> bool {
    let namespace_ambient =
        namespace.is_some_and(|ns| ns.metadata.label(DATAPLANE_MODE_LABEL) == Some("ambient"));
    let pod_opted_out = pod.metadata.label(DATAPLANE_MODE_LABEL) == Some("none");
    namespace_ambient && !pod_opted_out && !pod.spec.host_network
}

/// Builds the workload of a pod that has an IP or is scheduled on a node;
/// `None` otherwise. `services` are the services of the pod's namespace
/// that select it.
///
/// A scheduled pod without an IP is what the API server holds while the
/// pod's sandbox is being set up: its IP reaches the API only after the
/// CNI ADD has returned, and that ADD waits for the node's agent, which
/// needs the pod's identity and enrolment from this workload (it takes
/// the IP from the CNI result). So the workload goes out without
/// addresses, marked unhealthy (no endpoint), and again with them once
/// kubelet has written the pod's status.
pub fn build(
    pod: &Pod,
    namespace: Option<&Namespace>,
    services: &[&Service],
    config: &ModelConfig,
) -> Option<Workload> {
    let ips = pod.ips();
    if ips.is_empty() && pod.node_name().is_none() {
        return None;
    }
    let meta = &pod.metadata;
    let tunnel_protocol = if enrolled(pod, namespace) {
        TunnelProtocol::Hbone
    } else {
        TunnelProtocol::None
    };
    let services = services
        .iter()
        .map(|svc| {
            let ports = svc
                .spec
                .ports
                .iter()
                .filter(|p| p.is_tcp())
                .filter_map(|p| endpoint_port(pod, p))
                .collect();
            (
                service_key(svc.namespace(), &service_hostname(svc, config)),
                PortList { ports },
            )
        })
        .collect();
    Some(Workload {
        uid: format!(
            "{}//Pod/{}/{}",
            config.cluster_id,
            pod.namespace(),
            meta.name
        ),
        name: meta.name.clone(),
        namespace: pod.namespace().to_string(),
        addresses: ips.iter().map(ip_bytes).collect(),
        network: String::new(),
        tunnel_protocol: tunnel_protocol as i32,
        trust_domain: config.trust_domain.clone(),
        service_account: pod.service_account().to_string(),
        node: pod.node_name().unwrap_or_default().to_string(),
        canonical_name: canonical_name(&meta.labels, workload_name(pod)).to_string(),
        canonical_revision: canonical_revision(&meta.labels).to_string(),
        workload_type: WorkloadType::Pod as i32,
        workload_name: workload_name(pod).to_string(),
        services,
        status: if ips.is_empty() {
            WorkloadStatus::Unhealthy
        } else {
            WorkloadStatus::Healthy
        } as i32,
        cluster_id: config.cluster_id.clone(),
        network_mode: if pod.spec.host_network {
            NetworkMode::HostNetwork
        } else {
            NetworkMode::Standard
        } as i32,
        ..Default::default()
    })
}

/// The service port as this pod serves it: a named targetPort resolves
/// through the pod's container ports; a pod without that name is not an
/// endpoint for the port (as in Kubernetes).
fn endpoint_port(pod: &Pod, port: &ServicePort) -> Option<Port> {
    let target = match &port.target_port {
        None => port.port,
        Some(TargetPort::Number(n)) => *n,
        Some(TargetPort::Name(name)) => match pod.named_port(name) {
            Some(n) => n,
            None => {
                tracing::debug!(
                    pod = %pod.metadata.name,
                    namespace = pod.namespace(),
                    target_port = name,
                    "pod has no container port of that name; not an endpoint for it"
                );
                return None;
            }
        },
    };
    Some(Port {
        service_port: u32::from(port.port),
        target_port: u32::from(target),
        ..Default::default()
    })
}

/// The workload a pod belongs to, as Istio names it (the
/// `source_workload` / `destination_workload` of metrics): its
/// Deployment's name for a ReplicaSet's pod, its CronJob's for a Job's
/// pod, else its controller's name, else its own.
pub fn workload_name(pod: &Pod) -> &str {
    let meta = &pod.metadata;
    let Some(owner) = meta.owner_references.iter().find(|o| o.controller) else {
        return &meta.name;
    };
    let name = owner.name.as_str();
    match owner.kind.as_str() {
        "ReplicaSet" => meta
            .label("pod-template-hash")
            .and_then(|hash| name.strip_suffix(hash)?.strip_suffix('-'))
            .unwrap_or(name),
        // A CronJob's Jobs are `<cronjob>-<scheduled time in minutes>`.
        "Job" => match name.rsplit_once('-') {
            Some((cron, stamp))
                if (8..=10).contains(&stamp.len()) && stamp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                cron
            }
            _ => name,
        },
        _ => name,
    }
}

/// As Istio: `service.istio.io/canonical-name`, `app.kubernetes.io/name`,
/// `app`, else `default` (the pod's or entry's name).
pub fn canonical_name<'a>(labels: &'a BTreeMap<String, String>, default: &'a str) -> &'a str {
    [
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ]
    .iter()
    .find_map(|l| labels.get(*l).map(String::as_str))
    .unwrap_or(default)
}

/// As Istio: `service.istio.io/canonical-revision`,
/// `app.kubernetes.io/version`, `version`, else `latest`.
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> &str {
    [
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ]
    .iter()
    .find_map(|l| labels.get(*l).map(String::as_str))
    .unwrap_or("latest")
}

pub fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
