//! The checks on hand-written control-plane objects (no agents: their
//! checks are skipped), for the decisions that need no cluster.

use serde_json::{Value, json};

use super::{
    Cause, Status, diagnose,
    inputs::{Inputs, Objects},
    target,
};

fn object(kind: &str, ns: &str, name: &str, labels: Value, spec: Value) -> Value {
    json!({ "kind": kind, "namespace": ns, "name": name, "labels": labels, "spec": spec })
}

/// `shop/api` (two pods, v1 and v2; port 8080 named `http`, 9090 `tcp`)
/// and the clients `frontend/web` (mesh) and `legacy/old` (not), plus
/// `extra` objects.
fn inputs(extra: Vec<Value>) -> Inputs {
    let pod = |ns: &str, name: &str, labels: Value, node: &str, ip: &str| {
        object(
            "Pod",
            ns,
            name,
            labels,
            json!({ "node": node, "serviceAccount": name, "hostNetwork": false, "ips": [ip] }),
        )
    };
    let mut objects = vec![
        object(
            "Namespace",
            "",
            "shop",
            json!({"istio.io/dataplane-mode": "ambient"}),
            json!({}),
        ),
        object(
            "Namespace",
            "",
            "frontend",
            json!({"istio.io/dataplane-mode": "ambient"}),
            json!({}),
        ),
        object("Namespace", "", "legacy", json!({}), json!({})),
        pod(
            "shop",
            "api-1",
            json!({"app": "api", "version": "v1"}),
            "node-2",
            "10.0.2.2",
        ),
        pod(
            "shop",
            "api-2",
            json!({"app": "api", "version": "v2"}),
            "node-2",
            "10.0.2.3",
        ),
        pod("frontend", "web", json!({}), "node-1", "10.0.1.2"),
        pod("legacy", "old", json!({}), "node-1", "10.0.1.3"),
        object(
            "Service",
            "shop",
            "api",
            json!({}),
            json!({
                "selector": {"app": "api"},
                "vips": ["10.96.0.10"],
                "ports": [
                    {"name": "http", "port": 8080, "targetPort": 8080, "selectedProtocol": "HTTP"},
                    {"name": "tcp", "port": 9090, "targetPort": 9090, "selectedProtocol": "TCP"},
                ],
            }),
        ),
    ];
    objects.extend(extra);
    let body = serde_json::to_vec(&json!({ "objects": objects })).unwrap();
    let synced = json!({
        "resources": 1, "responses_sent": 1, "last_sent_version": "v", "last_sent_nonce": "n",
        "last_acked_version": "v", "last_acked_nonce": "n", "nacks": 0, "last_nack": null,
    });
    let stream = |node: &str| {
        json!({
            "connection": 1, "node": node, "node_id": node, "peer": null, "connected_at_unix": 0,
            "types": { "type.googleapis.com/istio.workload.Address": synced },
        })
    };
    let syncz = json!({
        "source": {"mode": "directory", "synced": true},
        "agents": [stream("node-1"), stream("node-2")],
    });
    Inputs {
        root_namespace: "istio-system".into(),
        trust_domain: "cluster.local".into(),
        domain_suffix: "cluster.local".into(),
        objects: Objects::parse(&body).unwrap(),
        syncz: Some(serde_json::from_value(syncz).unwrap()),
        agents: Default::default(),
        now_unix: 0,
    }
}

fn run(inputs: &Inputs, src: &str, dst: &str) -> super::Report {
    let resolved = target::resolve(&inputs.objects, src, dst, "cluster.local").unwrap();
    diagnose(inputs, &resolved)
}

#[test]
fn healthy_without_agents_skips_what_it_cannot_read() {
    let report = run(&inputs(vec![]), "frontend/web", "api.shop:8080");
    assert_eq!(
        report.verdict.status,
        Status::Ok,
        "{}",
        super::render(&report)
    );
    assert!(report.checks.iter().all(|c| c.status != Status::Fail));
    assert!(report.checks.iter().any(|c| c.status == Status::Skip));
}

#[test]
fn a_subset_without_endpoints_names_its_labels() {
    let dr = object(
        "DestinationRule",
        "shop",
        "api",
        json!({}),
        json!({"host": "api", "subsets": [{"name": "v3", "labels": {"version": "v3"}}]}),
    );
    let vs = object(
        "VirtualService",
        "shop",
        "api",
        json!({}),
        json!({"hosts": ["api.shop.svc.cluster.local"], "http": [{"route": [{"host": "api", "subset": "v3"}]}]}),
    );
    let report = run(&inputs(vec![dr, vs]), "frontend/web", "api.shop:8080");
    assert_eq!(
        report.verdict.cause,
        Some(Cause::Route),
        "{}",
        super::render(&report)
    );
    let fix = report.verdict.fix.unwrap();
    assert_eq!(
        (fix.object.as_str(), fix.field.as_str()),
        ("DestinationRule shop/api", "spec.subsets[0].labels")
    );
}

/// A DestinationRule `ns/name` for `host` with one subset, `subset`
/// (pods labelled `version: <subset>`), and `extra` spec fields.
fn rule(ns: &str, name: &str, host: &str, subset: &str, extra: Value) -> Value {
    let mut spec =
        json!({"host": host, "subsets": [{"name": subset, "labels": {"version": subset}}]});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    object("DestinationRule", ns, name, json!({}), spec)
}

#[test]
fn destination_rules_are_those_the_client_namespace_gets() {
    let vs = object(
        "VirtualService",
        "shop",
        "api",
        json!({}),
        json!({"hosts": ["api.shop.svc.cluster.local"], "http": [{"route": [{"host": "api", "subset": "v3"}]}]}),
    );
    // The Service's rule, kept to its own namespace: not the client's.
    let private = rule("shop", "api", "api", "v3", json!({"exportTo": ["."]}));
    let report = run(
        &inputs(vec![vs.clone(), private.clone()]),
        "frontend/web",
        "api.shop:8080",
    );
    let text = super::render(&report);
    assert_eq!(report.verdict.cause, Some(Cause::Route), "{text}");
    assert!(
        text.contains("no DestinationRule for that host applies to clients in namespace frontend"),
        "{text}"
    );
    let fix = report.verdict.fix.unwrap();
    assert_eq!(fix.object, "VirtualService shop/api", "{text}");

    // A rule in the client's own namespace comes first, whatever the
    // Service's namespace has.
    let own = rule(
        "frontend",
        "api",
        "api.shop.svc.cluster.local",
        "v1",
        json!({}),
    );
    let public = rule("shop", "api", "api", "v3", json!({}));
    let report = run(
        &inputs(vec![vs.clone(), own, public]),
        "frontend/web",
        "api.shop:8080",
    );
    let text = super::render(&report);
    assert!(
        text.contains("DestinationRule frontend/api has no such subset (it has v1)"),
        "{text}"
    );

    // The client's own rule counts only when its exportTo keeps its own
    // namespace, and a rule for sidecars (workloadSelector) never: the
    // Service's namespace's rule, of the most specific host, decides.
    let elsewhere = rule(
        "frontend",
        "api",
        "api.shop.svc.cluster.local",
        "v1",
        json!({"exportTo": ["other"]}),
    );
    let sidecars = rule(
        "frontend",
        "api-sidecars",
        "api.shop.svc.cluster.local",
        "v1",
        json!({"workloadSelector": true}),
    );
    let wildcard = rule("shop", "all", "*.shop.svc.cluster.local", "v3", json!({}));
    let exact = rule("shop", "api", "api", "v2", json!({}));
    let report = run(
        &inputs(vec![vs.clone(), elsewhere, sidecars, wildcard, exact]),
        "frontend/web",
        "api.shop:8080",
    );
    let text = super::render(&report);
    assert!(
        text.contains("DestinationRule shop/api has no such subset (it has v2)"),
        "{text}"
    );

    // A VirtualService kept to its own namespace does not route the
    // client's requests: the Service's default route does.
    let own_vs = object(
        "VirtualService",
        "shop",
        "api",
        json!({}),
        json!({"hosts": ["api.shop.svc.cluster.local"], "exportTo": ["."], "http": [{"route": [{"host": "api", "subset": "v3"}]}]}),
    );
    let report = run(
        &inputs(vec![own_vs, private]),
        "frontend/web",
        "api.shop:8080",
    );
    let text = super::render(&report);
    assert!(
        text.contains("no VirtualService applies to api.shop.svc.cluster.local for clients in namespace frontend"),
        "{text}"
    );
}

#[test]
fn strict_with_a_port_level_exception() {
    let strict = object(
        "PeerAuthentication",
        "istio-system",
        "mesh",
        json!({}),
        json!({"mode": "STRICT"}),
    );
    let report = run(
        &inputs(vec![strict.clone()]),
        "legacy/old",
        "shop/api-1:8080",
    );
    assert_eq!(
        report.verdict.cause,
        Some(Cause::Mtls),
        "{}",
        super::render(&report)
    );
    let fix = report.verdict.fix.unwrap();
    assert_eq!(fix.object, "PeerAuthentication istio-system/mesh");
    let exception = object(
        "PeerAuthentication",
        "shop",
        "api",
        json!({}),
        json!({"selector": {"app": "api"}, "mode": "UNSET", "portLevelMtls": {"8080": "PERMISSIVE"}}),
    );
    let report = run(
        &inputs(vec![strict, exception]),
        "legacy/old",
        "shop/api-1:8080",
    );
    let mtls = report
        .checks
        .iter()
        .find(|c| c.check == Cause::Mtls)
        .unwrap();
    assert_eq!(mtls.status, Status::Ok, "{}", mtls.message);
    assert!(
        mtls.message
            .contains("PERMISSIVE (PeerAuthentication shop/api)"),
        "{}",
        mtls.message
    );
}

#[test]
fn allow_rules_on_request_fields_depend_on_the_port() {
    let allow = object(
        "AuthorizationPolicy",
        "shop",
        "get-only",
        json!({}),
        json!({
            "selector": {"app": "api"}, "action": "ALLOW",
            "rules": [{"from": [{"namespaces": ["frontend"]}], "to": [{"methods": ["GET"]}]}],
        }),
    );
    let inputs = inputs(vec![allow]);
    // HTTP port: allowed for some requests (a warning naming the field).
    let report = run(&inputs, "frontend/web", "api.shop:8080");
    let authz = report
        .checks
        .iter()
        .find(|c| c.check == Cause::Authorization)
        .unwrap();
    assert_eq!(authz.status, Status::Warn, "{}", authz.message);
    assert!(
        authz.message.contains("match the methods of rule 0"),
        "{}",
        authz.message
    );
    // TCP port: the rule can never match, so the client is denied.
    let report = run(&inputs, "frontend/web", "api.shop:9090");
    assert_eq!(
        report.verdict.cause,
        Some(Cause::Authorization),
        "{}",
        super::render(&report)
    );
    assert_eq!(
        report.verdict.fix.unwrap().object,
        "AuthorizationPolicy shop/get-only"
    );
}
