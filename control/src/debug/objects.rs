//! `/debug/objects`: the objects the control plane holds, in the fields
//! that decide where a request goes and whether it is let in (namespaces'
//! and pods' labels, Services' ports and their selected protocol,
//! VirtualService destinations, DestinationRule subsets,
//! PeerAuthentication modes, AuthorizationPolicy rules). `weftctl
//! diagnose` reads it; it is a projection, not the objects as written.

use serde_json::{Value, json};

use crate::{
    kinds::{
        AuthorizationPolicy, DestinationRule, Object, ObjectMeta, PeerAuthentication, Pod, Service,
        VirtualService,
        authorization_policy::{Action, Rule},
        istio::Destination,
        peer_authentication::MtlsMode,
        service::TargetPort,
    },
    source::Snapshot,
};

/// `{"objects": [{kind, namespace, name, labels, spec}]}`, for the kinds
/// that matter to one request; other kinds are left out.
pub fn objects(snapshot: &Snapshot) -> Value {
    let list: Vec<Value> = snapshot.objects.iter().filter_map(object).collect();
    json!({ "objects": list })
}

fn object(object: &Object) -> Option<Value> {
    let spec = match object {
        Object::Namespace(_) => json!({}),
        Object::Pod(p) => pod(p),
        Object::Service(s) => service(s),
        Object::ServiceEntry(e) => json!({ "hosts": e.spec.hosts }),
        Object::VirtualService(v) => virtual_service(v),
        Object::DestinationRule(d) => destination_rule(d),
        Object::PeerAuthentication(p) => peer_authentication(p),
        Object::AuthorizationPolicy(a) => authorization_policy(a),
        _ => return None,
    };
    let meta: &ObjectMeta = object.meta();
    Some(json!({
        "kind": object.kind(),
        "namespace": meta.namespace.clone().unwrap_or_default(),
        "name": meta.name,
        "labels": meta.labels,
        "spec": spec,
    }))
}

fn pod(p: &Pod) -> Value {
    json!({
        "node": p.node_name(),
        "serviceAccount": p.service_account(),
        "hostNetwork": p.spec.host_network,
        "ips": p.ips(),
    })
}

fn service(s: &Service) -> Value {
    let ports: Vec<Value> = s
        .spec
        .ports
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "port": p.port,
                "targetPort": match &p.target_port {
                    Some(TargetPort::Number(n)) => json!(n),
                    Some(TargetPort::Name(n)) => json!(n),
                    None => Value::Null,
                },
                "appProtocol": p.app_protocol,
                "selectedProtocol": p.app_protocol().to_string(),
            })
        })
        .collect();
    json!({ "selector": s.spec.selector, "vips": s.vips(), "ports": ports })
}

fn destination(d: Option<&Destination>, weight: Option<i32>) -> Value {
    match d {
        Some(d) => json!({
            "host": d.host,
            "subset": d.subset,
            "port": d.port.as_ref().map(|p| p.number),
            "weight": weight,
        }),
        None => Value::Null,
    }
}

fn virtual_service(v: &VirtualService) -> Value {
    let http: Vec<Value> = v
        .spec
        .http
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "matches": r.matches.len(),
                "route": r.route.iter().map(|d| destination(d.destination.as_ref(), d.weight)).collect::<Vec<_>>(),
                "redirect": r.redirect.is_some(),
                "directResponse": r.direct_response.is_some(),
                "delegate": r.delegate.is_some(),
            })
        })
        .collect();
    let l4 = |routes: Vec<&Vec<crate::kinds::virtual_service::RouteDestination>>| -> Vec<Value> {
        routes
            .into_iter()
            .map(|route| {
                json!({ "route": route.iter().map(|d| destination(d.destination.as_ref(), d.weight)).collect::<Vec<_>>() })
            })
            .collect()
    };
    json!({
        "hosts": v.spec.hosts,
        "gateways": v.spec.gateways,
        "exportTo": v.spec.export_to,
        "http": http,
        "tcp": l4(v.spec.tcp.iter().map(|r| &r.route).collect()),
        "tls": l4(v.spec.tls.iter().map(|r| &r.route).collect()),
    })
}

fn destination_rule(d: &DestinationRule) -> Value {
    let subsets: Vec<Value> = d
        .spec
        .subsets
        .iter()
        .map(|s| json!({ "name": s.name, "labels": s.labels }))
        .collect();
    json!({
        "host": d.spec.host,
        "subsets": subsets,
        "exportTo": d.spec.export_to,
        "workloadSelector": d.spec.workload_selector.is_some(),
    })
}

fn mode(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Unset => "UNSET",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Strict => "STRICT",
    }
}

fn peer_authentication(p: &PeerAuthentication) -> Value {
    let ports: serde_json::Map<String, Value> = p
        .spec
        .port_level_mtls
        .iter()
        .map(|(port, m)| (port.to_string(), json!(mode(m.mode))))
        .collect();
    json!({
        "selector": p.spec.selector.as_ref().map(|s| &s.match_labels),
        "mode": mode(p.mode()),
        "portLevelMtls": ports,
    })
}

fn rule(r: &Rule) -> Value {
    let from: Vec<Value> = r
        .from
        .iter()
        .filter_map(|f| f.source.as_ref())
        .map(|s| {
            json!({
                "principals": s.principals, "notPrincipals": s.not_principals,
                "requestPrincipals": s.request_principals, "notRequestPrincipals": s.not_request_principals,
                "namespaces": s.namespaces, "notNamespaces": s.not_namespaces,
                "serviceAccounts": s.service_accounts, "notServiceAccounts": s.not_service_accounts,
                "ipBlocks": s.ip_blocks, "notIpBlocks": s.not_ip_blocks,
                "remoteIpBlocks": s.remote_ip_blocks, "notRemoteIpBlocks": s.not_remote_ip_blocks,
            })
        })
        .collect();
    let to: Vec<Value> =
        r.to.iter()
            .filter_map(|t| t.operation.as_ref())
            .map(|o| {
                json!({
                    "hosts": o.hosts, "notHosts": o.not_hosts,
                    "ports": o.ports, "notPorts": o.not_ports,
                    "methods": o.methods, "notMethods": o.not_methods,
                    "paths": o.paths, "notPaths": o.not_paths,
                })
            })
            .collect();
    let when: Vec<Value> = r
        .when
        .iter()
        .map(|c| json!({ "key": c.key, "values": c.values, "notValues": c.not_values }))
        .collect();
    json!({ "from": from, "to": to, "when": when })
}

fn authorization_policy(a: &AuthorizationPolicy) -> Value {
    let action = match a.spec.action {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
        Action::Custom => "CUSTOM",
    };
    json!({
        "selector": a.spec.selector.as_ref().map(|s| &s.match_labels),
        "targetRef": a.targets_refs(),
        "action": action,
        "dryRun": a.dry_run(),
        "rules": a.spec.rules.iter().map(rule).collect::<Vec<_>>(),
    })
}
