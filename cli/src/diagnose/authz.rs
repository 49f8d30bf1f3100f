//! Which AuthorizationPolicies apply to the destination, and how they
//! decide this client: the destination's agent order (CUSTOM, DENY, then
//! ALLOW), each rule matched against what is known of the connection
//! (the client's principal, namespace and address, the port). Fields only
//! a request carries (methods, paths, hosts, headers, JWT claims) make a
//! rule depend on the request on an HTTP port; on a TCP port they never
//! match in an ALLOW rule and match everything in a DENY rule, as weft
//! (and ztunnel) enforce them.

use std::{collections::BTreeMap, net::IpAddr};

use super::{
    Cause, Check, Fix,
    checks::{destination_pods, in_mesh, service_port, target_port},
    inputs::{AuthorizationPolicySpec, Inputs, Item, PodSpec, Rule},
    target::{Destination, Resolved},
};

/// Whether a rule (or a part of one) matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tri {
    Yes,
    No,
    /// Depends on these request fields.
    Depends(Vec<String>),
}

impl Tri {
    fn all(parts: impl IntoIterator<Item = Tri>) -> Tri {
        let mut depends = Vec::new();
        for p in parts {
            match p {
                Tri::No => return Tri::No,
                Tri::Depends(f) => depends.extend(f),
                Tri::Yes => {}
            }
        }
        if depends.is_empty() {
            Tri::Yes
        } else {
            Tri::Depends(depends)
        }
    }

    /// OR; an empty list matches.
    fn any(parts: Vec<Tri>) -> Tri {
        if parts.is_empty() || parts.contains(&Tri::Yes) {
            return Tri::Yes;
        }
        let depends: Vec<String> = parts
            .into_iter()
            .flat_map(|p| match p {
                Tri::Depends(f) => f,
                _ => Vec::new(),
            })
            .collect();
        if depends.is_empty() {
            Tri::No
        } else {
            Tri::Depends(depends)
        }
    }
}

/// What the destination's agent knows of the connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Istio's form: `<td>/ns/<ns>/sa/<sa>`; none for plaintext.
    pub principal: Option<String>,
    pub namespace: Option<String>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub destination_ip: Option<IpAddr>,
}

/// Istio's string match: exact, `*` (anything present), `prefix*`, `*suffix`.
fn pattern(p: &str, value: &str) -> bool {
    let p = p.strip_prefix("spiffe://").unwrap_or(p);
    if p == "*" {
        !value.is_empty()
    } else if let Some(prefix) = p.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = p.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        p == value
    }
}

fn in_cidr(cidr: &str, ip: Option<IpAddr>) -> bool {
    let Some(ip) = ip else { return false };
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, ""));
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let bits: u32 = bits.parse().unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits: u32 = bits.parse().unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// One field of a `from.source`, `to.operation` or `when`: its values
/// against what is known.
fn field(name: &str, values: &[String], peer: &Peer) -> Tri {
    if values.is_empty() {
        return Tri::Yes;
    }
    let (negated, base) = match name.strip_prefix("not") {
        Some(rest) if !rest.is_empty() => (true, lowercase_first(rest)),
        _ => (false, name.to_string()),
    };
    let account = peer
        .principal
        .as_deref()
        .and_then(|p| p.split_once("/ns/"))
        .map(|(_, rest)| rest.replace("/sa/", "/"));
    let port = peer.port.map(|p| p.to_string());
    let text = |v: Option<&str>| v.is_some_and(|v| values.iter().any(|p| pattern(p, v)));
    let hit = match base.as_str() {
        "principals" | "source.principal" => text(peer.principal.as_deref()),
        "namespaces" | "source.namespace" => text(peer.namespace.as_deref()),
        "serviceAccounts" | "source.serviceAccount" => text(account.as_deref()),
        "ipBlocks" | "remoteIpBlocks" | "source.ip" | "remote.ip" => {
            values.iter().any(|c| in_cidr(c, peer.ip))
        }
        "destination.ip" => values.iter().any(|c| in_cidr(c, peer.destination_ip)),
        "ports" | "destination.port" => text(port.as_deref()),
        _ => return Tri::Depends(vec![name.to_string()]),
    };
    if hit != negated { Tri::Yes } else { Tri::No }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn map(m: &BTreeMap<String, Vec<String>>, peer: &Peer) -> Tri {
    Tri::all(m.iter().map(|(k, v)| field(k, v, peer)))
}

/// A rule against the peer, before the port's protocol is considered.
pub fn rule(r: &Rule, peer: &Peer) -> Tri {
    let from = Tri::any(r.from.iter().map(|m| map(m, peer)).collect());
    let to = Tri::any(r.to.iter().map(|m| map(m, peer)).collect());
    let when = Tri::all(r.when.iter().map(|c| {
        let pos = field(&c.key, &c.values, peer);
        let neg = match field(&c.key, &c.not_values, peer) {
            _ if c.not_values.is_empty() => Tri::Yes,
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            d => d,
        };
        Tri::all([pos, neg])
    }));
    Tri::all([from, to, when])
}

/// The policies that apply to `pod` (root namespace and its own, wide or
/// selecting it), without those bound by `targetRef`.
pub fn applying<'a>(
    inputs: &'a Inputs,
    pod: &Item<PodSpec>,
) -> Vec<&'a Item<AuthorizationPolicySpec>> {
    inputs
        .objects
        .authorization_policies
        .iter()
        .filter(|p| !p.spec.target_ref)
        .filter(|p| p.namespace == pod.namespace || p.namespace == inputs.root_namespace)
        .filter(|p| match &p.spec.selector {
            None => true,
            Some(s) if s.is_empty() => true,
            Some(s) => s.iter().all(|(k, v)| pod.labels.get(k) == Some(v)),
        })
        .collect()
}

/// Whether the port is HTTP at the destination.
fn http_port(inputs: &Inputs, resolved: &Resolved, pod: &Item<PodSpec>) -> bool {
    if let Destination::Service(s) = &resolved.destination {
        return service_port(s, resolved.port).is_some_and(|(_, p)| p.is_http());
    }
    let port = target_port(inputs, resolved, pod);
    inputs.objects.services.iter().any(|s| {
        s.namespace == pod.namespace
            && !s.spec.selector.is_empty()
            && s.spec
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
            && s.spec.ports.iter().any(|p| {
                p.is_http()
                    && port.is_some_and(|t| {
                        p.target_port.as_u64().unwrap_or(u64::from(p.port)) == u64::from(t)
                    })
            })
    })
}

/// The decision for one destination pod.
pub fn decide(inputs: &Inputs, resolved: &Resolved, pod: &Item<PodSpec>) -> Check {
    let source = &resolved.source;
    let client_mesh = in_mesh(inputs, source).is_ok();
    let peer = Peer {
        principal: client_mesh.then(|| {
            let sa = if source.spec.service_account.is_empty() {
                "default"
            } else {
                &source.spec.service_account
            };
            format!("{}/ns/{}/sa/{sa}", inputs.trust_domain, source.namespace)
        }),
        namespace: client_mesh.then(|| source.namespace.clone()),
        ip: source.spec.ips.first().and_then(|i| i.parse().ok()),
        port: target_port(inputs, resolved, pod),
        destination_ip: pod.spec.ips.first().and_then(|i| i.parse().ok()),
    };
    let http = http_port(inputs, resolved, pod);
    let pair = format!("{} -> Pod {}", source.key(), pod.key());
    let policies: Vec<&Item<AuthorizationPolicySpec>> = applying(inputs, pod)
        .into_iter()
        .filter(|p| !p.spec.dry_run)
        .collect();
    // On a TCP port, request fields cannot be checked: ALLOW never
    // matches them, DENY matches everything.
    let outcome = |p: &Item<AuthorizationPolicySpec>, r: &Rule| match rule(r, &peer) {
        Tri::Depends(_) if !http => {
            if p.spec.action == "DENY" {
                Tri::Yes
            } else {
                Tri::No
            }
        }
        t => t,
    };
    let fix = |p: &Item<AuthorizationPolicySpec>, at: String| {
        Some(Fix::new("AuthorizationPolicy", &p.namespace, &p.name, at))
    };
    let mut warnings = Vec::new();
    for p in policies
        .iter()
        .copied()
        .filter(|p| p.spec.action == "CUSTOM")
    {
        if p.spec.rules.iter().any(|r| outcome(p, r) != Tri::No) {
            warnings.push(format!(
                "CUSTOM AuthorizationPolicy {} sends these requests to its provider, which decides",
                p.key()
            ));
        }
    }
    for p in policies.iter().copied().filter(|p| p.spec.action == "DENY") {
        for (i, r) in p.spec.rules.iter().enumerate() {
            match outcome(p, r) {
                Tri::Yes => {
                    return Check::fail(
                        Cause::Authorization,
                        format!(
                            "AuthorizationPolicy {} (DENY) denies {pair}: rule {i} matches{}",
                            p.key(),
                            if http {
                                " (403 RBAC: access denied)"
                            } else {
                                " (connection reset)"
                            }
                        ),
                        fix(p, format!("spec.rules[{i}]")),
                    );
                }
                Tri::Depends(f) => warnings.push(format!(
                    "AuthorizationPolicy {} (DENY) rule {i} denies requests that match its {}",
                    p.key(),
                    f.join(", ")
                )),
                Tri::No => {}
            }
        }
    }
    let allows: Vec<&Item<AuthorizationPolicySpec>> = policies
        .iter()
        .copied()
        .filter(|p| p.spec.action == "ALLOW")
        .collect();
    let mut partial = None;
    for p in allows.iter().copied() {
        for (i, r) in p.spec.rules.iter().enumerate() {
            match outcome(p, r) {
                Tri::Yes => {
                    let text = format!(
                        "AuthorizationPolicy {} (ALLOW) allows {pair}: rule {i} matches",
                        p.key()
                    );
                    return with_warnings(text, warnings);
                }
                Tri::Depends(f) if partial.is_none() => {
                    partial = Some(format!(
                        "AuthorizationPolicy {} (ALLOW) allows {pair} only for requests that match the {} of rule {i}; others get 403",
                        p.key(),
                        f.join(", ")
                    ));
                }
                _ => {}
            }
        }
    }
    if let Some(text) = partial {
        warnings.insert(0, text);
        return Check::warn(Cause::Authorization, warnings.join("; "), None);
    }
    if let Some(first) = allows.first().copied() {
        let names: Vec<String> = allows.iter().map(|p| p.key()).collect();
        return Check::fail(
            Cause::Authorization,
            format!(
                "no ALLOW rule matches {pair}: AuthorizationPolicy {} applies and none of its rules allows this client{}, so it is denied{}",
                names.join(", "),
                match (&peer.principal, &peer.namespace) {
                    (Some(p), _) => format!(" (principal {p})"),
                    _ => " (plaintext: no principal or namespace)".into(),
                },
                if http {
                    " (403 RBAC: access denied)"
                } else {
                    " (connection reset)"
                }
            ),
            fix(first, "spec.rules".into()),
        );
    }
    with_warnings(
        format!("no AuthorizationPolicy denies {pair}: it is allowed"),
        warnings,
    )
}

fn with_warnings(text: String, warnings: Vec<String>) -> Check {
    if warnings.is_empty() {
        Check::ok(Cause::Authorization, text)
    } else {
        Check::warn(
            Cause::Authorization,
            format!("{text}; but {}", warnings.join("; ")),
            None,
        )
    }
}

/// The decision for each destination pod in the mesh.
pub fn check(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    destination_pods(inputs, resolved)
        .into_iter()
        .map(|pod| {
            if in_mesh(inputs, pod).is_err() {
                Check::ok(
                    Cause::Authorization,
                    format!(
                        "Pod {} is not in the mesh: no AuthorizationPolicy is enforced for it",
                        pod.key()
                    ),
                )
            } else {
                decide(inputs, resolved, pod)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            principal: Some("cluster.local/ns/frontend/sa/web".into()),
            namespace: Some("frontend".into()),
            ip: "10.1.1.5".parse().ok(),
            port: Some(8080),
            destination_ip: None,
        }
    }

    fn from(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn rules_against_a_peer() {
        let r = Rule {
            from: vec![from(&[("namespaces", &["frontend"])])],
            ..Default::default()
        };
        assert_eq!(rule(&r, &peer()), Tri::Yes);
        let r = Rule {
            from: vec![from(&[("notNamespaces", &["frontend"])])],
            ..Default::default()
        };
        assert_eq!(rule(&r, &peer()), Tri::No);
        let r = Rule {
            from: vec![from(&[(
                "principals",
                &["spiffe://cluster.local/ns/frontend/*"],
            )])],
            to: vec![from(&[("methods", &["GET"]), ("ports", &["8080"])])],
            ..Default::default()
        };
        assert_eq!(rule(&r, &peer()), Tri::Depends(vec!["methods".into()]));
        let r = Rule {
            from: vec![from(&[("ipBlocks", &["10.1.0.0/16"])])],
            to: vec![from(&[("ports", &["9090"])])],
            ..Default::default()
        };
        assert_eq!(rule(&r, &peer()), Tri::No);
        let plaintext = Peer {
            principal: None,
            namespace: None,
            ..peer()
        };
        let r = Rule {
            from: vec![from(&[("serviceAccounts", &["frontend/web"])])],
            ..Default::default()
        };
        assert_eq!(rule(&r, &peer()), Tri::Yes);
        assert_eq!(rule(&r, &plaintext), Tri::No);
        assert_eq!(rule(&Rule::default(), &plaintext), Tri::Yes);
    }
}
