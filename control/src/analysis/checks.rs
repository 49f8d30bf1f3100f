//! The checks. Each looks at the whole configuration and reports findings
//! against one object and field; none changes what is served.

use std::collections::{BTreeMap, BTreeSet};

use super::{Finding, Severity, codes};
use crate::{
    kinds::{
        DestinationRule, Object, ObjectMeta, Pod, Service, VirtualService, istio::Destination,
        selector::WorkloadSelector,
    },
    model::l7::delegate::{self, Dropped},
};

/// What the checks need to know about the configuration.
pub struct Context<'a> {
    pub domain_suffix: &'a str,
    pub root_namespace: &'a str,
    /// Pods by namespace.
    pods: BTreeMap<&'a str, Vec<&'a Pod>>,
    services: Vec<&'a Service>,
    /// FQDN → (namespace, Service or ServiceEntry).
    hosts: BTreeMap<String, &'a str>,
    /// ServiceEntry wildcard hosts (`*.example.com`).
    wildcard_hosts: Vec<String>,
    /// FQDN → subset names defined by DestinationRules.
    subsets: BTreeMap<String, BTreeSet<String>>,
    gateways: BTreeSet<(String, String)>,
    service_accounts: BTreeSet<(String, String)>,
    /// (namespace, name) → VirtualService, for delegation.
    virtual_services: BTreeMap<(String, String), &'a VirtualService>,
}

impl<'a> Context<'a> {
    pub fn new(objects: &'a [Object], domain_suffix: &'a str, root_namespace: &'a str) -> Self {
        let mut cx = Context {
            domain_suffix,
            root_namespace,
            pods: BTreeMap::new(),
            services: Vec::new(),
            hosts: BTreeMap::new(),
            wildcard_hosts: Vec::new(),
            subsets: BTreeMap::new(),
            gateways: BTreeSet::new(),
            service_accounts: BTreeSet::new(),
            virtual_services: BTreeMap::new(),
        };
        for o in objects {
            match o {
                Object::Pod(p) => cx.pods.entry(p.namespace()).or_default().push(p),
                Object::Service(s) => {
                    let fqdn = format!("{}.{}.svc.{domain_suffix}", s.metadata.name, s.namespace());
                    cx.hosts.insert(fqdn, "Service");
                    cx.services.push(s);
                }
                Object::ServiceEntry(se) => {
                    for h in &se.spec.hosts {
                        if h.starts_with('*') {
                            cx.wildcard_hosts.push(h.clone());
                        } else {
                            cx.hosts.insert(h.clone(), "ServiceEntry");
                        }
                    }
                }
                Object::VirtualService(vs) => {
                    let key = (
                        vs.metadata.namespace().to_string(),
                        vs.metadata.name.clone(),
                    );
                    cx.virtual_services.insert(key, vs);
                }
                Object::Gateway(g) => {
                    cx.gateways
                        .insert((g.metadata.namespace().to_string(), g.metadata.name.clone()));
                }
                Object::ServiceAccount(sa) => {
                    cx.service_accounts.insert((
                        sa.metadata.namespace().to_string(),
                        sa.metadata.name.clone(),
                    ));
                }
                _ => {}
            }
        }
        for o in objects {
            if let Object::DestinationRule(dr) = o {
                let host = cx.fqdn(&dr.spec.host, dr.metadata.namespace());
                let set = cx.subsets.entry(host).or_default();
                set.extend(dr.spec.subsets.iter().map(|s| s.name.clone()));
            }
        }
        cx
    }

    /// A short name resolves in the referring object's namespace, as
    /// Istio does: `reviews` → `reviews.<ns>.svc.<suffix>`.
    pub fn fqdn(&self, host: &str, namespace: &str) -> String {
        if host.contains('.') || host.starts_with('*') {
            host.to_string()
        } else {
            format!("{host}.{namespace}.svc.{}", self.domain_suffix)
        }
    }

    fn host_exists(&self, fqdn: &str) -> bool {
        if self.hosts.contains_key(fqdn) {
            return true;
        }
        // `name.ns` and `name.ns.svc` are common partial forms.
        let partial = self
            .hosts
            .keys()
            .any(|h| h.starts_with(&format!("{fqdn}.")) && h.ends_with(self.domain_suffix));
        partial || self.wildcard_hosts.iter().any(|w| fqdn.ends_with(&w[1..]))
    }

    fn pods_selected(&self, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> usize {
        let matches = |p: &&&Pod| {
            labels
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        };
        match namespace {
            Some(ns) => self
                .pods
                .get(ns)
                .map_or(0, |ps| ps.iter().filter(matches).count()),
            None => self.pods.values().flatten().filter(matches).count(),
        }
    }
}

fn object_name(kind: &str, meta: &ObjectMeta) -> String {
    format!("{kind} {}/{}", meta.namespace(), meta.name)
}

fn finding(
    code: &'static str,
    severity: Severity,
    object: &str,
    path: String,
    message: String,
) -> Finding {
    Finding {
        code,
        severity,
        object: object.to_string(),
        path,
        message,
    }
}

/// Runs every check.
pub fn run(objects: &[Object], cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut vs_hosts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut dr_hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut wide_peer_auth: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in objects {
        match o {
            Object::VirtualService(vs) => {
                virtual_service(vs, cx, out);
                let gateways = if vs.spec.gateways.is_empty() {
                    "mesh".to_string()
                } else {
                    vs.spec.gateways.join(",")
                };
                for h in &vs.spec.hosts {
                    vs_hosts
                        .entry((cx.fqdn(h, vs.metadata.namespace()), gateways.clone()))
                        .or_default()
                        .push(object_name("VirtualService", &vs.metadata));
                }
            }
            Object::DestinationRule(dr) => {
                destination_rule(dr, cx, out);
                if dr.spec.workload_selector.is_none() {
                    dr_hosts
                        .entry(cx.fqdn(&dr.spec.host, dr.metadata.namespace()))
                        .or_default()
                        .push(object_name("DestinationRule", &dr.metadata));
                }
            }
            Object::Service(svc) => service_ports(svc, out),
            Object::Pod(pod) => {
                let sa = pod.service_account();
                if sa != "default"
                    && !cx.service_accounts.is_empty()
                    && !cx
                        .service_accounts
                        .contains(&(pod.namespace().to_string(), sa.to_string()))
                {
                    out.push(finding(
                        codes::SERVICE_ACCOUNT_NOT_FOUND,
                        Severity::Warning,
                        &object_name("Pod", &pod.metadata),
                        "spec.serviceAccountName".into(),
                        format!(
                            "service account `{sa}` does not exist in namespace `{}`",
                            pod.namespace()
                        ),
                    ));
                }
            }
            Object::AuthorizationPolicy(p) => {
                selector(
                    "AuthorizationPolicy",
                    &p.metadata,
                    p.spec.selector.as_ref(),
                    cx,
                    out,
                );
                http_fields_on_tcp_ports(p, cx, out);
            }
            Object::PeerAuthentication(p) => {
                selector(
                    "PeerAuthentication",
                    &p.metadata,
                    p.spec.selector.as_ref(),
                    cx,
                    out,
                );
                if p.is_wide() {
                    wide_peer_auth
                        .entry(p.namespace().to_string())
                        .or_default()
                        .push(p.metadata.name.clone());
                }
            }
            Object::RequestAuthentication(p) => selector(
                "RequestAuthentication",
                &p.metadata,
                p.spec.selector.as_ref(),
                cx,
                out,
            ),
            Object::Telemetry(p) => {
                selector("Telemetry", &p.metadata, p.spec.selector.as_ref(), cx, out)
            }
            Object::HttpRoute(r) => {
                for (i, rule) in r.spec.rules.iter().enumerate() {
                    for (j, b) in rule.backend_refs.iter().enumerate() {
                        if b.kind.as_deref().is_some_and(|k| k != "Service") {
                            continue;
                        }
                        let ns = b.namespace.as_deref().unwrap_or(r.metadata.namespace());
                        let fqdn = format!("{}.{ns}.svc.{}", b.name, cx.domain_suffix);
                        if !cx.hosts.contains_key(&fqdn) {
                            out.push(finding(
                                codes::HOST_NOT_FOUND,
                                Severity::Error,
                                &object_name("HTTPRoute", &r.metadata),
                                format!("spec.rules[{i}].backendRefs[{j}].name"),
                                format!("Service `{ns}/{}` does not exist", b.name),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for ((host, gateways), owners) in vs_hosts {
        if owners.len() > 1 {
            out.push(finding(
                codes::CONFLICTING_VIRTUAL_SERVICES,
                Severity::Warning,
                &owners[1],
                "spec.hosts".into(),
                format!(
                    "host `{host}` (gateways: {gateways}) is also routed by {}; Istio merges them in an order you do not control",
                    owners[0]
                ),
            ));
        }
    }
    for (host, owners) in dr_hosts {
        if owners.len() > 1 {
            out.push(finding(
                codes::CONFLICTING_DESTINATION_RULES,
                Severity::Warning,
                &owners[1],
                "spec.host".into(),
                format!(
                    "host `{host}` also has {}; only one DestinationRule per host takes effect",
                    owners[0]
                ),
            ));
        }
    }
    for (ns, names) in wide_peer_auth {
        if names.len() > 1 {
            out.push(finding(
                codes::CONFLICTING_PEER_AUTHENTICATIONS,
                Severity::Warning,
                &format!("PeerAuthentication {ns}/{}", names[1]),
                "spec".into(),
                format!("namespace `{ns}` has {} namespace-wide PeerAuthentications ({}); only the oldest applies", names.len(), names.join(", ")),
            ));
        }
    }
}

fn virtual_service(vs: &VirtualService, cx: &Context<'_>, out: &mut Vec<Finding>) {
    let name = object_name("VirtualService", &vs.metadata);
    let ns = vs.metadata.namespace();
    let check_destination = |d: &Destination, path: String, out: &mut Vec<Finding>| {
        let fqdn = cx.fqdn(&d.host, ns);
        if !cx.host_exists(&fqdn) {
            out.push(finding(
                codes::HOST_NOT_FOUND,
                Severity::Error,
                &name,
                format!("{path}.host"),
                format!(
                    "host `{}` is not a Service or ServiceEntry host (looked for `{fqdn}`)",
                    d.host
                ),
            ));
        } else if !d.subset.is_empty()
            && !cx.subsets.get(&fqdn).is_some_and(|s| s.contains(&d.subset))
        {
            out.push(finding(
                codes::SUBSET_NOT_FOUND,
                Severity::Error,
                &name,
                format!("{path}.subset"),
                format!(
                    "subset `{}` is not defined by any DestinationRule for host `{}`",
                    d.subset, d.host
                ),
            ));
        }
    };
    for (i, r) in vs.spec.http.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            if let Some(d) = &d.destination {
                check_destination(d, format!("spec.http[{i}].route[{j}].destination"), out);
            }
        }
        if let Some(m) = &r.mirror {
            check_destination(m, format!("spec.http[{i}].mirror"), out);
        }
    }
    for (kind, routes) in [
        (
            "tcp",
            vs.spec.tcp.iter().map(|r| &r.route).collect::<Vec<_>>(),
        ),
        ("tls", vs.spec.tls.iter().map(|r| &r.route).collect()),
    ] {
        for (i, route) in routes.iter().enumerate() {
            for (j, d) in route.iter().enumerate() {
                if let Some(d) = &d.destination {
                    check_destination(d, format!("spec.{kind}[{i}].route[{j}].destination"), out);
                }
            }
        }
    }
    for (i, g) in vs.spec.gateways.iter().enumerate() {
        if g == "mesh" {
            continue;
        }
        let (gns, gname) = g.split_once('/').unwrap_or((ns, g));
        if !cx.gateways.contains(&(gns.to_string(), gname.to_string())) {
            out.push(finding(
                codes::GATEWAY_NOT_FOUND,
                Severity::Error,
                &name,
                format!("spec.gateways[{i}]"),
                format!("Gateway `{gns}/{gname}` does not exist"),
            ));
        }
    }
    delegation(vs, cx, out);
    // Shadowing: a rule after one that matches everything, or after an
    // identical match list (a rule that delegates takes only what its
    // delegate's rules match).
    for (i, r) in vs.spec.http.iter().enumerate() {
        for (k, earlier) in vs.spec.http[..i].iter().enumerate() {
            if earlier.delegate.is_some() {
                continue;
            }
            let catch_all = earlier.matches.is_empty();
            let same = !earlier.matches.is_empty() && earlier.matches == r.matches;
            if catch_all || same {
                out.push(finding(
                    codes::ROUTE_SHADOWED,
                    Severity::Warning,
                    &name,
                    format!("spec.http[{i}]"),
                    if catch_all {
                        format!("never used: rule {k} before it has no `match`, so it takes every request")
                    } else {
                        format!("never used: rule {k} before it has the same `match`")
                    },
                ));
                break;
            }
        }
    }
}

/// VirtualService chaining, as the L7 compilation follows it
/// ([`delegate`]): a root's delegates must exist, be delegates and be
/// exported to it, and their routes must fit its routes; a delegate's
/// routes cannot delegate again.
fn delegation(vs: &VirtualService, cx: &Context<'_>, out: &mut Vec<Finding>) {
    let name = object_name("VirtualService", &vs.metadata);
    let ns = vs.metadata.namespace();
    let is_delegate = vs.spec.hosts.is_empty();
    for (i, r) in vs.spec.http.iter().enumerate() {
        let Some(d) = &r.delegate else { continue };
        let path = format!("spec.http[{i}].delegate");
        if is_delegate {
            out.push(finding(
                codes::DELEGATE_ROUTE_DROPPED,
                Severity::Warning,
                &name,
                path,
                "never used: a delegate VirtualService's route cannot delegate again (one level only)".into(),
            ));
            continue;
        }
        let target_ns = delegate::delegate_namespace(d, ns);
        let target_name = format!("{target_ns}/{}", d.name);
        let target = cx
            .virtual_services
            .get(&(target_ns.to_string(), d.name.clone()));
        let target = match target {
            None => Err((
                codes::DELEGATE_NOT_FOUND,
                format!("VirtualService `{target_name}` does not exist"),
            )),
            Some(t) if !t.spec.hosts.is_empty() => Err((
                codes::DELEGATE_NOT_FOUND,
                format!("VirtualService `{target_name}` has `hosts`, so it is not a delegate"),
            )),
            Some(t) if !delegate::exported_to(t, ns) => Err((
                codes::DELEGATE_NOT_EXPORTED,
                format!(
                    "VirtualService `{target_name}` is not exported to namespace `{ns}` (exportTo: [{}])",
                    t.spec.export_to.join(", ")
                ),
            )),
            Some(t) => Ok(t),
        };
        let target = match target {
            Ok(t) => t,
            Err((code, why)) => {
                out.push(finding(
                    code,
                    Severity::Error,
                    &name,
                    path,
                    format!("{why}; the route has no effect"),
                ));
                continue;
            }
        };
        for (j, merged) in delegate::merge_routes(r, &target.spec.http)
            .into_iter()
            .enumerate()
        {
            if matches!(merged, Err(Dropped::Conflict)) {
                out.push(finding(
                    codes::DELEGATE_ROUTE_DROPPED,
                    Severity::Warning,
                    &object_name("VirtualService", &target.metadata),
                    format!("spec.http[{j}].match"),
                    format!(
                        "left out of {name} spec.http[{i}]: a match here is within none of that route's matches (it must narrow one: a prefix or exact uri under its prefix, the same exact value, no regex)"
                    ),
                ));
            }
        }
    }
}

fn destination_rule(dr: &DestinationRule, cx: &Context<'_>, out: &mut Vec<Finding>) {
    let name = object_name("DestinationRule", &dr.metadata);
    let fqdn = cx.fqdn(&dr.spec.host, dr.metadata.namespace());
    if !cx.host_exists(&fqdn) {
        out.push(finding(
            codes::HOST_NOT_FOUND,
            Severity::Warning,
            &name,
            "spec.host".into(),
            format!(
                "host `{}` is not a Service or ServiceEntry host (looked for `{fqdn}`)",
                dr.spec.host
            ),
        ));
        return;
    }
    let service = cx.services.iter().find(|s| {
        format!(
            "{}.{}.svc.{}",
            s.metadata.name,
            s.namespace(),
            cx.domain_suffix
        ) == fqdn
    });
    let Some(service) = service else { return };
    if service.spec.selector.is_empty() {
        return;
    }
    for (i, subset) in dr.spec.subsets.iter().enumerate() {
        let mut labels = service.spec.selector.clone();
        labels.extend(subset.labels.clone());
        if cx.pods_selected(Some(service.namespace()), &labels) == 0 {
            out.push(finding(
                codes::SUBSET_SELECTS_NOTHING,
                Severity::Warning,
                &name,
                format!("spec.subsets[{i}].labels"),
                format!(
                    "subset `{}` selects no pod of Service `{}/{}` (labels {:?})",
                    subset.name,
                    service.namespace(),
                    service.metadata.name,
                    labels
                ),
            ));
        }
    }
}

fn selector(
    kind: &str,
    meta: &ObjectMeta,
    selector: Option<&WorkloadSelector>,
    cx: &Context<'_>,
    out: &mut Vec<Finding>,
) {
    let Some(selector) = selector else { return };
    if selector.match_labels.is_empty() {
        return;
    }
    let ns = meta.namespace();
    let scope = (ns != cx.root_namespace).then_some(ns);
    if cx.pods_selected(scope, &selector.match_labels) == 0 {
        out.push(finding(
            codes::SELECTOR_MATCHES_NOTHING,
            Severity::Warning,
            &object_name(kind, meta),
            "spec.selector.matchLabels".into(),
            format!(
                "the selector matches no pod{}; the policy has no effect",
                scope
                    .map(|n| format!(" in namespace `{n}`"))
                    .unwrap_or_default()
            ),
        ));
    }
}

/// An AuthorizationPolicy with HTTP fields that applies to a workload
/// behind a Service port that is not HTTP: there the node proxy sees
/// connections, not requests, so those rules cannot do what they say
/// (ztunnel's rule: an ALLOW rule never matches, a DENY rule denies the
/// whole connection). One finding per Service port.
fn http_fields_on_tcp_ports(
    policy: &crate::kinds::AuthorizationPolicy,
    cx: &Context<'_>,
    out: &mut Vec<Finding>,
) {
    let Some(compiled) =
        crate::model::authorization::compile(policy, cx.root_namespace, &mut Vec::new())
    else {
        return;
    };
    let fields = &compiled.authorization.l7_attributes_ignored;
    if fields.is_empty() {
        return;
    }
    let ns = policy.namespace();
    let mesh_wide = ns == cx.root_namespace;
    let selects = |pod: &Pod| {
        (mesh_wide || pod.namespace() == ns)
            && policy
                .spec
                .selector
                .as_ref()
                .is_none_or(|s| s.selects(&pod.metadata.labels))
    };
    // Ports the policy's operations name: only those can be at issue.
    let named: BTreeSet<u16> = policy
        .spec
        .rules
        .iter()
        .flat_map(|r| &r.to)
        .filter_map(|to| to.operation.as_ref())
        .flat_map(|op| &op.ports)
        .filter_map(|p| p.parse().ok())
        .collect();
    let mut reported = BTreeSet::new();
    for svc in &cx.services {
        let backs_a_selected_pod = cx.pods.get(svc.namespace()).is_some_and(|pods| {
            pods.iter()
                .any(|p| svc.selects(&p.metadata.labels) && selects(p))
        });
        if !backs_a_selected_pod {
            continue;
        }
        for port in &svc.spec.ports {
            let target = match &port.target_port {
                Some(crate::kinds::service::TargetPort::Number(n)) => *n,
                Some(crate::kinds::service::TargetPort::Name(_)) => port.port,
                None => port.port,
            };
            let at_issue =
                named.is_empty() || named.contains(&target) || named.contains(&port.port);
            if !port.is_tcp() || port.app_protocol().is_http() || !at_issue {
                continue;
            }
            if !reported.insert((
                svc.namespace().to_string(),
                svc.metadata.name.clone(),
                port.port,
            )) {
                continue;
            }
            out.push(finding(
                codes::AUTHZ_HTTP_ON_TCP_PORT,
                Severity::Warning,
                &object_name("AuthorizationPolicy", &policy.metadata),
                "spec.rules".into(),
                format!(
                    "its HTTP fields ({}) meet Service {}/{} port {} ({}), which is not declared HTTP: there the node proxy sees connections, not requests, so ALLOW rules that use them never match and DENY rules deny the whole connection; name the port `http-...` or set `appProtocol: http` to enforce them per request",
                    fields.join(", "),
                    svc.namespace(),
                    svc.metadata.name,
                    port.port,
                    port.name.as_deref().unwrap_or("unnamed"),
                ),
            ));
        }
    }
}

/// A TCP port whose protocol Istio's selection leaves unknown
/// ([`crate::kinds::Protocol::of_service_port`]).
fn service_ports(svc: &Service, out: &mut Vec<Finding>) {
    for (i, p) in svc.spec.ports.iter().enumerate() {
        if !p.is_tcp() || !p.app_protocol().is_unsupported() {
            continue;
        }
        let name = p.name.as_deref().unwrap_or("");
        let why = match p.app_protocol.as_deref().filter(|a| !a.is_empty()) {
            Some(app) => format!("`appProtocol: {app}` is not a protocol Istio knows"),
            None => format!("name `{name}` has no protocol prefix and there is no `appProtocol`"),
        };
        out.push(finding(
            codes::PROTOCOL_UNKNOWN,
            Severity::Info,
            &object_name("Service", &svc.metadata),
            format!("spec.ports[{i}]"),
            format!(
                "the protocol of port {} is unknown ({why}); it is treated as opaque TCP, so HTTP routing and policies do not apply",
                p.port
            ),
        ));
    }
}
