//! The checks that read config and agents' state (authorization and
//! telemetry have modules of their own). Each returns sentences; a failed
//! one names the object and field to fix.

use super::{
    Cause, Check, Fix,
    inputs::{AgentError, Inputs, Item, Labels, PodSpec, ServicePort, ServiceSpec},
    target::{Destination, Resolved},
};
use crate::proxy_status::Sync;

const MODE_LABEL: &str = "istio.io/dataplane-mode";

/// `name.ns.svc.<suffix>`.
pub fn fqdn(inputs: &Inputs, service: &Item<ServiceSpec>) -> String {
    format!(
        "{}.{}.svc.{}",
        service.name, service.namespace, inputs.domain_suffix
    )
}

/// Whether the control plane puts the pod in the mesh, and if not why
/// (the label to change), as `control`'s workload builder decides.
pub fn in_mesh(inputs: &Inputs, pod: &Item<PodSpec>) -> Result<(), (String, Fix)> {
    if pod.labels.get(MODE_LABEL).map(String::as_str) == Some("none") {
        return Err((
            format!("Pod {} opts out ({MODE_LABEL}=none)", pod.key()),
            Fix::new(
                "Pod",
                &pod.namespace,
                &pod.name,
                format!("metadata.labels[{MODE_LABEL}]"),
            ),
        ));
    }
    if pod.spec.host_network {
        return Err((
            format!("Pod {} uses the host's network", pod.key()),
            Fix::new("Pod", &pod.namespace, &pod.name, "spec.hostNetwork"),
        ));
    }
    let ns_mode = inputs
        .objects
        .namespace_labels(&pod.namespace)
        .and_then(|l| l.get(MODE_LABEL));
    if ns_mode.map(String::as_str) != Some("ambient") {
        return Err((
            format!(
                "namespace {} is not labelled {MODE_LABEL}=ambient",
                pod.namespace
            ),
            Fix::new(
                "Namespace",
                "",
                &pod.namespace,
                format!("metadata.labels[{MODE_LABEL}]"),
            ),
        ));
    }
    Ok(())
}

/// The pods the request may reach: a Service's endpoints, or the pod.
pub fn destination_pods<'a>(inputs: &'a Inputs, resolved: &'a Resolved) -> Vec<&'a Item<PodSpec>> {
    match &resolved.destination {
        Destination::Service(s) => endpoints_of(inputs, s, &Labels::new()),
        Destination::Pod(p) => vec![p],
    }
}

/// Pods of `service` (and carrying `extra` labels, for a subset) that have
/// an address.
pub fn endpoints_of<'a>(
    inputs: &'a Inputs,
    service: &Item<ServiceSpec>,
    extra: &Labels,
) -> Vec<&'a Item<PodSpec>> {
    if service.spec.selector.is_empty() {
        return Vec::new();
    }
    inputs
        .objects
        .pods
        .iter()
        .filter(|p| p.namespace == service.namespace && !p.spec.ips.is_empty())
        .filter(|p| {
            service
                .spec
                .selector
                .iter()
                .chain(extra)
                .all(|(k, v)| p.labels.get(k) == Some(v))
        })
        .collect()
}

/// The nodes whose agents matter: the source's and the destination pods'.
pub fn involved_nodes(inputs: &Inputs, resolved: &Resolved) -> Vec<String> {
    let mut nodes: Vec<String> = std::iter::once(&resolved.source)
        .chain(destination_pods(inputs, resolved))
        .filter_map(|p| p.spec.node.clone())
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// The Service port the request uses, with its index in `spec.ports`.
pub fn service_port(
    service: &Item<ServiceSpec>,
    port: Option<u16>,
) -> Option<(usize, &ServicePort)> {
    let port = port?;
    service
        .spec
        .ports
        .iter()
        .enumerate()
        .find(|(_, p)| p.port == port)
}

/// The port on the destination pod: the Service port's target (as the
/// agents resolved it, else as written), or the port given for a pod.
pub fn target_port(inputs: &Inputs, resolved: &Resolved, pod: &Item<PodSpec>) -> Option<u16> {
    let port = resolved.port?;
    let Destination::Service(service) = &resolved.destination else {
        return Some(port);
    };
    let key = format!("{}/{}", service.namespace, fqdn(inputs, service));
    if let Some(target) = inputs
        .agent_workload(&pod.namespace, &pod.name)
        .and_then(|w| w.services.get(&key))
        .and_then(|ports| ports.get(&port.to_string()))
        .filter(|t| **t != 0)
    {
        return Some(*target);
    }
    let (_, sp) = service_port(service, Some(port))?;
    Some(sp.target_port.as_u64().map_or(port, |t| t as u16))
}

/// Can the agents be read, are they connected, and have they
/// acknowledged what the control plane sent last?
pub fn agents(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    let mut out = Vec::new();
    let any_readable = inputs.agents.values().any(|a| a.dump.is_ok());
    for node in involved_nodes(inputs, resolved) {
        let agent = Fix {
            object: format!("weft-agent on {node}"),
            field: "xDS stream".into(),
        };
        let streams: Vec<_> = inputs
            .syncz
            .iter()
            .flat_map(|s| &s.agents)
            .filter(|s| s.node == node)
            .collect();
        match streams.last() {
            None => out.push(Check::fail(
                Cause::Sync,
                format!("no agent on {node} is connected to the control plane: its pods get no config updates"),
                Some(agent.clone()),
            )),
            Some(stream) => {
                let behind: Vec<String> = stream
                    .types
                    .iter()
                    .filter_map(|(t, s)| {
                        let name = t.rsplit(['/', '.']).next().unwrap_or(t);
                        match s.sync() {
                            Sync::Stale => Some(format!(
                                "{name} (sent {}, acknowledged {})",
                                short(&s.last_sent_version),
                                if s.last_acked_version.is_empty() { "nothing".to_string() } else { short(&s.last_acked_version) }
                            )),
                            Sync::Nacked => Some(format!(
                                "{name} (rejected: {})",
                                s.last_nack.as_ref().map_or("", |n| n.message.as_str())
                            )),
                            Sync::Synced | Sync::NotSent => None,
                        }
                    })
                    .collect();
                if behind.is_empty() {
                    out.push(Check::ok(
                        Cause::Sync,
                        format!("the agent on {node} has acknowledged the latest config"),
                    ));
                } else {
                    out.push(Check::fail(
                        Cause::Sync,
                        format!(
                            "the agent on {node} has not acknowledged the latest config: {}; it still runs on older config",
                            behind.join(", ")
                        ),
                        Some(agent.clone()),
                    ));
                }
            }
        }
        let Some(view) = inputs.agents.get(&node) else {
            continue;
        };
        match &view.dump {
            Ok(_) => {}
            // No agent answered at all: more likely the wrong address (an
            // admin API on localhost) than every node down.
            Err(AgentError::Unreachable(e)) if !any_readable => out.push(Check::skip(
                Cause::Sync,
                format!("the agent on {node} could not be reached ({e}) and no other agent could either; its checks are skipped (pass --agent {node}=ADDR)"),
            )),
            Err(AgentError::Unreachable(e)) => out.push(Check::fail(
                Cause::Network,
                format!("cannot reach {node}: its agent at {e}; the node, or the network path to it, is down"),
                Some(Fix {
                    object: format!("Node {node}"),
                    field: "network".into(),
                }),
            )),
            Err(AgentError::NoAnswer(e)) => out.push(Check::fail(
                Cause::Sync,
                format!("the agent on {node} accepts connections but does not answer ({e}): it is stopped or hung"),
                Some(agent.clone()),
            )),
            Err(AgentError::NotReadable(e) | AgentError::Other(e)) => out.push(Check::skip(
                Cause::Sync,
                format!("the agent on {node} could not be read ({e}); its checks are skipped (pass --agent {node}=ADDR)"),
            )),
        }
    }
    out
}

fn short(version: &str) -> String {
    version.get(..8).unwrap_or(version).to_string()
}

/// Both ends in the mesh, and enrolled by their node's agent.
pub fn mesh(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    let mut out = Vec::new();
    let ends = std::iter::once(("source", &resolved.source)).chain(
        destination_pods(inputs, resolved)
            .into_iter()
            .map(|p| ("destination", p)),
    );
    for (role, pod) in ends {
        let node = pod.spec.node.as_deref().unwrap_or("?");
        if let Err((why, fix)) = in_mesh(inputs, pod) {
            out.push(Check::warn(
                Cause::Mesh,
                format!(
                    "the {role} Pod {} is not in the mesh: {why}; its traffic is plaintext",
                    pod.key()
                ),
                Some(fix),
            ));
            continue;
        }
        let enrolled = inputs
            .agents
            .get(node)
            .and_then(|a| a.dump.as_ref().ok())
            .and_then(|d| d.pods.as_ref())
            .map(|pods| {
                pods.iter()
                    .any(|p| p.namespace == pod.namespace && p.name == pod.name && p.enrolled)
            });
        match enrolled {
            Some(true) => out.push(Check::ok(
                Cause::Mesh,
                format!("the {role} Pod {} is in the mesh and enrolled by the agent on {node}", pod.key()),
            )),
            Some(false) => out.push(Check::fail(
                Cause::Mesh,
                format!(
                    "the {role} Pod {} should be in the mesh but the agent on {node} has not enrolled it (no CNI ADD reached it, or enrolment failed: see the agent's log; restart the pod)",
                    pod.key()
                ),
                Some(Fix::new("Pod", &pod.namespace, &pod.name, "(restart the pod)")),
            )),
            None => out.push(Check::skip(
                Cause::Mesh,
                format!("the {role} Pod {} is in the mesh; its enrolment on {node} could not be read", pod.key()),
            )),
        }
    }
    out
}

/// The Service exists with the port, and has endpoints.
pub fn endpoints(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    let service = match &resolved.destination {
        Destination::Service(s) => s,
        Destination::Pod(p) => {
            return vec![if p.spec.ips.is_empty() {
                Check::fail(
                    Cause::Endpoints,
                    format!("Pod {} has no IP address (not running)", p.key()),
                    Some(Fix::new("Pod", &p.namespace, &p.name, "status.podIP")),
                )
            } else {
                Check::ok(
                    Cause::Endpoints,
                    format!("Pod {} has address {}", p.key(), p.spec.ips.join(", ")),
                )
            }];
        }
    };
    let mut out = Vec::new();
    let fix = |field: &str| {
        Some(Fix::new(
            "Service",
            &service.namespace,
            &service.name,
            field,
        ))
    };
    if service_port(service, resolved.port).is_none() {
        let ports: Vec<String> = service
            .spec
            .ports
            .iter()
            .map(|p| p.port.to_string())
            .collect();
        out.push(Check::fail(
            Cause::Endpoints,
            format!(
                "Service {} has no port {}; it has {}",
                service.key(),
                resolved.port.map_or("-".into(), |p| p.to_string()),
                if ports.is_empty() {
                    "none".into()
                } else {
                    ports.join(", ")
                }
            ),
            fix("spec.ports"),
        ));
    }
    let found = endpoints_of(inputs, service, &Labels::new());
    let vip = if service.spec.vips.is_empty() {
        "no VIP".to_string()
    } else {
        format!("VIP {}", service.spec.vips.join(", "))
    };
    if service.spec.selector.is_empty() {
        out.push(Check::fail(
            Cause::Endpoints,
            format!(
                "Service {} ({vip}) has no selector: it has no endpoints",
                service.key()
            ),
            fix("spec.selector"),
        ));
    } else if found.is_empty() {
        out.push(Check::fail(
            Cause::Endpoints,
            format!(
                "Service {} ({vip}) has no endpoints: no running pod in {} has labels {}",
                service.key(),
                service.namespace,
                labels(&service.spec.selector)
            ),
            fix("spec.selector"),
        ));
    } else {
        let names: Vec<String> = found.iter().map(|p| p.name.clone()).collect();
        out.push(Check::ok(
            Cause::Endpoints,
            format!(
                "Service {} ({vip}) resolves to {} endpoint(s): {}",
                service.key(),
                found.len(),
                names.join(", ")
            ),
        ));
    }
    out
}

/// `{k=v, ...}`.
pub fn labels(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}
