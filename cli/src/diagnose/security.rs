//! PeerAuthentication at the destination (can the client satisfy it?) and
//! the certificates both ends need.

use super::{
    Cause, Check, Fix,
    checks::{destination_pods, in_mesh, target_port},
    inputs::{Inputs, Item, PeerAuthenticationSpec, PodSpec},
    target::Resolved,
};

/// The mode in force for `pod` on `port` and the object that set it
/// (`None`: Istio's default, PERMISSIVE), with the field to change.
pub fn effective_mode<'a>(
    inputs: &'a Inputs,
    pod: &Item<PodSpec>,
    port: Option<u16>,
) -> (String, Option<(&'a Item<PeerAuthenticationSpec>, String)>) {
    let pas = &inputs.objects.peer_authentications;
    let selects = |p: &&Item<PeerAuthenticationSpec>| {
        p.spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| pod.labels.get(k) == Some(v)))
    };
    let wide =
        |p: &&Item<PeerAuthenticationSpec>| p.spec.selector.as_ref().is_none_or(|s| s.is_empty());
    // Workload level (port level first), then namespace, then mesh.
    for pa in pas
        .iter()
        .filter(|p| p.namespace == pod.namespace)
        .filter(selects)
    {
        if let Some(mode) = port.and_then(|p| pa.spec.port_level_mtls.get(&p.to_string()))
            && mode != "UNSET"
        {
            let field = format!("spec.portLevelMtls[{}].mode", port.unwrap_or_default());
            return (mode.clone(), Some((pa, field)));
        }
        if pa.spec.mode != "UNSET" {
            return (pa.spec.mode.clone(), Some((pa, "spec.mtls.mode".into())));
        }
    }
    let levels = [pod.namespace.as_str(), inputs.root_namespace.as_str()];
    for ns in levels {
        if let Some(pa) = pas
            .iter()
            .filter(|p| p.namespace == ns)
            .filter(wide)
            .find(|p| p.spec.mode != "UNSET")
        {
            return (pa.spec.mode.clone(), Some((pa, "spec.mtls.mode".into())));
        }
    }
    ("PERMISSIVE".into(), None)
}

/// STRICT at the destination refuses a client outside the mesh.
pub fn mtls(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    let source = &resolved.source;
    let client_in_mesh = in_mesh(inputs, source);
    let mut out = Vec::new();
    for pod in destination_pods(inputs, resolved) {
        if in_mesh(inputs, pod).is_err() {
            out.push(Check::ok(
                Cause::Mtls,
                format!(
                    "Pod {} is not in the mesh: PeerAuthentication does not apply to it",
                    pod.key()
                ),
            ));
            continue;
        }
        let port = target_port(inputs, resolved, pod);
        let (mode, by) = effective_mode(inputs, pod, port);
        let by_text = match &by {
            Some((pa, _)) => format!("PeerAuthentication {}", pa.key()),
            None => "the default".into(),
        };
        let port_text = port.map(|p| format!(" port {p}")).unwrap_or_default();
        match (mode.as_str(), &client_in_mesh) {
            ("STRICT", Err((why, _))) => out.push(Check::fail(
                Cause::Mtls,
                format!(
                    "{by_text} sets STRICT mTLS for Pod {}{port_text}, and the client Pod {} is not in the mesh ({why}): its plaintext connections are refused",
                    pod.key(),
                    source.key()
                ),
                by.map(|(pa, field)| Fix::new("PeerAuthentication", &pa.namespace, &pa.name, field)),
            )),
            _ => out.push(Check::ok(
                Cause::Mtls,
                format!(
                    "mTLS for Pod {}{port_text} is {mode} ({by_text}); the client {}",
                    pod.key(),
                    if client_in_mesh.is_ok() { "sends mTLS (HBONE)" } else { "sends plaintext, which is accepted" }
                ),
            )),
        }
    }
    out
}

/// Each end in the mesh has a valid certificate on its node's agent.
pub fn certificates(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    let mut out = Vec::new();
    let ends = std::iter::once(&resolved.source).chain(destination_pods(inputs, resolved));
    for pod in ends {
        if in_mesh(inputs, pod).is_err() {
            continue;
        }
        let node = pod.spec.node.clone().unwrap_or_default();
        let Some(dump) = inputs.agents.get(&node).and_then(|a| a.dump.as_ref().ok()) else {
            out.push(Check::skip(
                Cause::Certificate,
                format!("the certificates on {node} could not be read"),
            ));
            continue;
        };
        let account = if pod.spec.service_account.is_empty() {
            "default"
        } else {
            &pod.spec.service_account
        };
        let wanted = format!("/ns/{}/sa/{account}", pod.namespace);
        let fix = Some(Fix {
            object: format!("weft-agent on {node}"),
            field: "certificates".into(),
        });
        match dump.certificates.iter().find(|c| c.identity.ends_with(&wanted)) {
            None => out.push(Check::fail(
                Cause::Certificate,
                format!(
                    "the agent on {node} holds no certificate for {wanted} (Pod {}): it cannot take part in mTLS",
                    pod.key()
                ),
                fix,
            )),
            Some(c) if c.not_after <= inputs.now_unix => out.push(Check::fail(
                Cause::Certificate,
                format!(
                    "the certificate of {} on {node} expired {} ago",
                    c.identity,
                    crate::age(inputs.now_unix, c.not_after)
                ),
                fix,
            )),
            Some(c) => out.push(Check::ok(
                Cause::Certificate,
                format!(
                    "{} on {node} has a valid certificate (expires in {})",
                    c.identity,
                    crate::age(c.not_after, inputs.now_unix)
                ),
            )),
        }
    }
    out
}
