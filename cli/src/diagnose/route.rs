//! The VirtualService routes and DestinationRule subsets that apply to the
//! destination Service, and the port's protocol (which decides whether
//! `http` or `tcp` routes are used at all).

use super::{
    Cause, Check, Fix,
    checks::{endpoints_of, fqdn, service_port},
    inputs::{
        DestinationRuleSpec, Inputs, Item, RouteDestination, ServiceSpec, VirtualServiceSpec,
    },
    target::{Destination, Resolved},
};

/// A host as written in `namespace`, resolved as Istio and the control
/// plane resolve it: a short name (no dot) in that namespace, any other
/// name as written.
fn expand(inputs: &Inputs, host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{}", inputs.domain_suffix)
    }
}

/// Whether `pattern` (expanded) names `fqdn`; `*` and `*.suffix` too.
fn host_matches(pattern: &str, fqdn: &str) -> bool {
    specificity(pattern, fqdn).is_some()
}

/// How closely `pattern` names `fqdn`: the exact name most, then the
/// longest wildcard suffix (Istio's most specific host match); `None`:
/// it does not.
fn specificity(pattern: &str, fqdn: &str) -> Option<usize> {
    if pattern == fqdn {
        return Some(usize::MAX);
    }
    let suffix = pattern.strip_prefix('*')?;
    fqdn.ends_with(suffix).then_some(suffix.len())
}

/// What a route's destination host is.
enum Target<'a> {
    Service(&'a Item<ServiceSpec>),
    Entry,
}

fn resolve_host<'a>(inputs: &'a Inputs, host: &str, namespace: &str) -> Option<Target<'a>> {
    let full = expand(inputs, host, namespace);
    if let Some(s) = inputs
        .objects
        .services
        .iter()
        .find(|s| fqdn(inputs, s) == full)
    {
        return Some(Target::Service(s));
    }
    inputs
        .objects
        .service_entries
        .iter()
        .any(|e| e.spec.hosts.iter().any(|h| h == host || *h == full))
        .then_some(Target::Entry)
}

/// Whether an object in `namespace` with `export_to` is seen by clients
/// in `client_ns` (empty or `*`: everywhere; `.`: its own namespace).
fn exported_to(namespace: &str, export_to: &[String], client_ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|to| to == "*" || to == client_ns || (to == "." && namespace == client_ns))
}

/// The VirtualServices bound to the mesh, seen by clients in
/// `client_ns`, that name the Service's host.
fn applying<'a>(
    inputs: &'a Inputs,
    service: &Item<ServiceSpec>,
    client_ns: &str,
) -> Vec<&'a Item<VirtualServiceSpec>> {
    let name = fqdn(inputs, service);
    inputs
        .objects
        .virtual_services
        .iter()
        .filter(|v| v.spec.gateways.is_empty() || v.spec.gateways.iter().any(|g| g == "mesh"))
        .filter(|v| exported_to(&v.namespace, &v.spec.export_to, client_ns))
        .filter(|v| {
            v.spec
                .hosts
                .iter()
                .any(|h| host_matches(&expand(inputs, h, &v.namespace), &name))
        })
        .collect()
}

/// The DestinationRules for the Service that a client in `client_ns`
/// gets, as istiod looks them up: those of the client's own namespace,
/// else those of the Service's namespace, else those of the root
/// namespace, each exported to the client (a rule's own namespace sees it
/// unless its `exportTo` leaves that out) and, within a namespace, those
/// of the most specific host. Rules with a `workloadSelector` are for
/// sidecars: no client of weft's gets them.
fn destination_rules<'a>(
    inputs: &'a Inputs,
    service: &Item<ServiceSpec>,
    client_ns: &str,
) -> Vec<&'a Item<DestinationRuleSpec>> {
    let name = fqdn(inputs, service);
    let candidates: Vec<(usize, &Item<DestinationRuleSpec>)> = inputs
        .objects
        .destination_rules
        .iter()
        .filter(|d| !d.spec.workload_selector)
        .filter(|d| exported_to(&d.namespace, &d.spec.export_to, client_ns))
        .filter_map(|d| {
            specificity(&expand(inputs, &d.spec.host, &d.namespace), &name).map(|s| (s, d))
        })
        .collect();
    for namespace in [client_ns, &service.namespace, &inputs.root_namespace] {
        let here = candidates.iter().filter(|(_, d)| d.namespace == namespace);
        let Some(best) = here.clone().map(|(s, _)| *s).max() else {
            continue;
        };
        return here.filter(|(s, _)| *s == best).map(|(_, d)| *d).collect();
    }
    Vec::new()
}

/// The VirtualServices and subsets between the client and the endpoints.
pub fn route(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    let Destination::Service(service) = &resolved.destination else {
        return vec![Check::ok(
            Cause::Route,
            "to a pod's own address: no VirtualService applies (L4, as in ztunnel)",
        )];
    };
    let http = service_port(service, resolved.port).is_some_and(|(_, p)| p.is_http());
    let vss = applying(inputs, service, &resolved.source.namespace);
    if vss.is_empty() {
        return vec![Check::ok(
            Cause::Route,
            format!(
                "no VirtualService applies to {} for clients in namespace {}: requests go to Service {}",
                fqdn(inputs, service),
                resolved.source.namespace,
                service.key()
            ),
        )];
    }
    let mut out = Vec::new();
    for vs in vss {
        let mut routes: Vec<(String, &Vec<Option<RouteDestination>>)> = Vec::new();
        if http {
            for (i, r) in vs.spec.http.iter().enumerate() {
                routes.push((format!("spec.http[{i}]"), &r.route));
            }
        } else {
            for (i, r) in vs.spec.tcp.iter().enumerate() {
                routes.push((format!("spec.tcp[{i}]"), &r.route));
            }
            for (i, r) in vs.spec.tls.iter().enumerate() {
                routes.push((format!("spec.tls[{i}]"), &r.route));
            }
        }
        let before = out.len();
        let mut seen = Vec::new();
        for (at, destinations) in routes {
            for (j, d) in destinations.iter().enumerate() {
                let Some(d) = d else { continue };
                let field = format!("{at}.route[{j}].destination");
                match check_destination(inputs, vs, d, &field, &resolved.source.namespace) {
                    Ok(text) => seen.push(text),
                    Err(check) => out.push(check),
                }
            }
        }
        if out.len() == before {
            out.push(Check::ok(
                Cause::Route,
                format!(
                    "VirtualService {} applies; it routes to {}",
                    vs.key(),
                    if seen.is_empty() {
                        "no destination on this port".into()
                    } else {
                        seen.join("; ")
                    }
                ),
            ));
        }
    }
    out
}

/// One route destination: host, port, subset and the subset's endpoints.
fn check_destination(
    inputs: &Inputs,
    vs: &Item<VirtualServiceSpec>,
    d: &RouteDestination,
    field: &str,
    client_ns: &str,
) -> Result<String, Check> {
    let vs_fix = |f: &str| {
        Some(Fix::new(
            "VirtualService",
            &vs.namespace,
            &vs.name,
            format!("{field}.{f}"),
        ))
    };
    let target = match resolve_host(inputs, &d.host, &vs.namespace) {
        Some(Target::Service(s)) => s,
        Some(Target::Entry) => return Ok(format!("{} (a ServiceEntry)", d.host)),
        None => {
            return Err(Check::fail(
                Cause::Route,
                format!(
                    "VirtualService {} routes to host {}, which is no Service or ServiceEntry: requests get 503 (NC)",
                    vs.key(),
                    d.host
                ),
                vs_fix("host"),
            ));
        }
    };
    if let Some(port) = d.port
        && !target.spec.ports.iter().any(|p| u32::from(p.port) == port)
    {
        let ports: Vec<String> = target
            .spec
            .ports
            .iter()
            .map(|p| p.port.to_string())
            .collect();
        return Err(Check::fail(
            Cause::Route,
            format!(
                "VirtualService {} routes to {} port {port}, which Service {} does not have (it has {})",
                vs.key(),
                d.host,
                target.key(),
                ports.join(", ")
            ),
            vs_fix("port.number"),
        ));
    }
    let mut text = d.host.clone();
    if let Some(port) = d.port {
        text.push_str(&format!(":{port}"));
    }
    if d.subset.is_empty() {
        let n = endpoints_of(inputs, target, &Default::default()).len();
        return Ok(format!("{text} ({n} endpoint(s))"));
    }
    let rules = destination_rules(inputs, target, client_ns);
    let Some((dr, k, subset)) = rules.iter().find_map(|dr| {
        dr.spec
            .subsets
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == d.subset)
            .map(|(k, s)| (*dr, k, s))
    }) else {
        return Err(match rules.first() {
            None => Check::fail(
                Cause::Route,
                format!(
                    "VirtualService {} names subset {} of {}, but no DestinationRule for that host applies to clients in namespace {client_ns}: requests get 503 (NC)",
                    vs.key(),
                    d.subset,
                    d.host
                ),
                vs_fix("subset"),
            ),
            Some(dr) => {
                let names: Vec<&str> = dr.spec.subsets.iter().map(|s| s.name.as_str()).collect();
                Check::fail(
                    Cause::Route,
                    format!(
                        "VirtualService {} names subset {} of {}, but DestinationRule {} has no such subset (it has {}): requests get 503 (NC)",
                        vs.key(),
                        d.subset,
                        d.host,
                        dr.key(),
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                    Some(Fix::new(
                        "DestinationRule",
                        &dr.namespace,
                        &dr.name,
                        "spec.subsets",
                    )),
                )
            }
        });
    };
    let n = endpoints_of(inputs, target, &subset.labels).len();
    if n == 0 {
        return Err(Check::fail(
            Cause::Route,
            format!(
                "subset {} of DestinationRule {} selects no endpoint of Service {} (labels {}): requests routed there get 503",
                subset.name,
                dr.key(),
                target.key(),
                super::checks::labels(&subset.labels)
            ),
            Some(Fix::new(
                "DestinationRule",
                &dr.namespace,
                &dr.name,
                format!("spec.subsets[{k}].labels"),
            )),
        ));
    }
    Ok(format!("{text} subset {} ({n} endpoint(s))", subset.name))
}

/// HTTP or TCP, as Istio's protocol selection decides for the port.
pub fn protocol(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    let Some(port) = resolved.port else {
        return vec![Check::skip(
            Cause::Protocol,
            "no port given: the protocol was not checked",
        )];
    };
    let service = match &resolved.destination {
        Destination::Service(s) => s,
        // To a pod: HTTP at the destination when a Service declares it.
        Destination::Pod(pod) => {
            let http = inputs.objects.services.iter().any(|s| {
                s.namespace == pod.namespace
                    && !s.spec.selector.is_empty()
                    && s.spec
                        .selector
                        .iter()
                        .all(|(k, v)| pod.labels.get(k) == Some(v))
                    && s.spec.ports.iter().any(|p| {
                        p.is_http()
                            && p.target_port.as_u64().unwrap_or(u64::from(p.port))
                                == u64::from(port)
                    })
            });
            return vec![Check::ok(
                Cause::Protocol,
                format!(
                    "port {port} of Pod {} is {}",
                    pod.key(),
                    if http {
                        "HTTP at the destination (authorized per request)"
                    } else {
                        "opaque TCP (authorized per connection)"
                    }
                ),
            )];
        }
    };
    let Some((i, sp)) = service_port(service, Some(port)) else {
        return vec![Check::skip(
            Cause::Protocol,
            format!("Service {} has no port {port}", service.key()),
        )];
    };
    let named = sp.name.as_deref().unwrap_or("unnamed");
    let by = match &sp.app_protocol {
        Some(a) => format!("appProtocol {a}"),
        None => format!("name {named}"),
    };
    if sp.is_http() {
        return vec![Check::ok(
            Cause::Protocol,
            format!(
                "port {port} of Service {} is {} ({by}): routed per request by the client's agent, authorized per request by the destination's",
                service.key(),
                sp.selected_protocol
            ),
        )];
    }
    let http_routes = applying(inputs, service, &resolved.source.namespace)
        .into_iter()
        .find(|v| !v.spec.http.is_empty() && v.spec.tcp.is_empty() && v.spec.tls.is_empty());
    match http_routes {
        Some(vs) => vec![Check::warn(
            Cause::Protocol,
            format!(
                "port {port} of Service {} is opaque TCP ({by}), so the http routes of VirtualService {} do not apply to it; name the port http-… or set appProtocol: http",
                service.key(),
                vs.key()
            ),
            Some(Fix::new(
                "Service",
                &service.namespace,
                &service.name,
                format!("spec.ports[{i}].name"),
            )),
        )],
        None => vec![Check::ok(
            Cause::Protocol,
            format!(
                "port {port} of Service {} is opaque TCP ({by}): tcp routes apply, authorized per connection",
                service.key()
            ),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_expand_and_match() {
        let inputs = Inputs {
            domain_suffix: "cluster.local".into(),
            ..Default::default()
        };
        assert_eq!(expand(&inputs, "api", "shop"), "api.shop.svc.cluster.local");
        // A name with a dot is taken as written (Istio's
        // ResolveShortnameToFQDN).
        assert_eq!(expand(&inputs, "api.shop", "x"), "api.shop");
        assert_eq!(expand(&inputs, "api.shop.svc", "x"), "api.shop.svc");
        assert_eq!(expand(&inputs, "example.com.x", "x"), "example.com.x");
        assert!(host_matches(
            "*.shop.svc.cluster.local",
            "api.shop.svc.cluster.local"
        ));
        assert!(host_matches("*", "api.shop.svc.cluster.local"));
        assert!(!host_matches(
            "web.shop.svc.cluster.local",
            "api.shop.svc.cluster.local"
        ));
    }
}
