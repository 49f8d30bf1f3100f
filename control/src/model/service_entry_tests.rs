//! ServiceEntry → Workload API services and workloads, built from scratch
//! and incrementally.

use std::path::Path;

use weft_proto::workload::{
    Address, AppProtocol, Port, PortList, Service, TunnelProtocol, Workload, address::Type,
    load_balancing,
};

use crate::{
    kinds::{Object, ObjectKey},
    model::{Builder, Delta, Model, ModelConfig, build},
    source::parse::parse_file,
};

fn config() -> ModelConfig {
    ModelConfig {
        cluster_id: "Kubernetes".into(),
        trust_domain: "cluster.local".into(),
        domain_suffix: "cluster.local".into(),
        root_namespace: "istio-system".into(),
        mesh: Default::default(),
    }
}

fn objects(yaml: &str) -> Vec<Object> {
    parse_file(Path::new("t.yaml"), yaml).expect("valid yaml")
}

fn model(yaml: &str) -> Model {
    build(&objects(yaml), &config())
}

fn service(m: &Model, key: &str) -> Service {
    match m.resources.get(key).and_then(|r| r.address()) {
        Some(Address {
            r#type: Some(Type::Service(s)),
        }) => s,
        other => panic!("{key} is {other:?}; have {:?}", m.resources.keys()),
    }
}

fn workload(m: &Model, uid: &str) -> Workload {
    match m.resources.get(uid).and_then(|r| r.address()) {
        Some(Address {
            r#type: Some(Type::Workload(w)),
        }) => w,
        other => panic!("{uid} is {other:?}; have {:?}", m.resources.keys()),
    }
}

fn port(service_port: u32, target_port: u32) -> Port {
    Port {
        service_port,
        target_port,
        ..Default::default()
    }
}

fn app(p: Port, protocol: AppProtocol) -> Port {
    Port {
        app_protocol: protocol as i32,
        ..p
    }
}

const STATIC: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy
  namespace: apps
  labels: {app: legacy-db, version: v7}
spec:
  hosts: [legacy.example.com, alias]
  addresses: [240.0.0.10, 240.0.0.11/32, 10.9.0.0/16]
  location: MESH_INTERNAL
  resolution: STATIC
  subjectAltNames: [spiffe://legacy]
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 9000, name: rpc, protocol: grpc}
  - {number: 5432, name: db, protocol: TCP}
  - {number: 443, name: tls, protocol: TLS}
  endpoints:
  - {address: 10.20.0.1, serviceAccount: legacy}
  - {address: 10.20.0.2, ports: {http: 18080, db: 15432}, locality: eu/eu-1, weight: 3}
"#;

const LEGACY_UID_1: &str = "Kubernetes/networking.istio.io/ServiceEntry/apps/legacy/10.20.0.1";
const LEGACY_UID_2: &str = "Kubernetes/networking.istio.io/ServiceEntry/apps/legacy/10.20.0.2";

#[test]
fn static_entry_is_services_and_endpoint_workloads() {
    let m = model(STATIC);
    let key = "apps/legacy.example.com";
    let svc = service(&m, key);
    assert_eq!(svc.name, "legacy");
    assert_eq!(svc.namespace, "apps");
    assert_eq!(svc.hostname, "legacy.example.com");
    // Single IPs only; the /16 range is not sent.
    let addresses: Vec<&[u8]> = svc.addresses.iter().map(|a| a.address.as_slice()).collect();
    assert_eq!(addresses, [&[240, 0, 0, 10][..], &[240, 0, 0, 11][..]]);
    assert_eq!(
        svc.ports,
        vec![
            app(port(80, 8080), AppProtocol::Http11),
            app(port(9000, 9000), AppProtocol::Grpc),
            port(5432, 5432),
            port(443, 443),
        ]
    );
    assert_eq!(svc.subject_alt_names, ["spiffe://legacy"]);
    assert!(svc.load_balancing.is_none(), "STATIC: load balanced");
    // A short host is a name in the entry's namespace, as for routes.
    let alias = "apps/alias.apps.svc.cluster.local";
    assert_eq!(service(&m, alias).hostname, "alias.apps.svc.cluster.local");

    let w1 = workload(&m, LEGACY_UID_1);
    assert_eq!(w1.name, "legacy");
    assert_eq!(w1.namespace, "apps");
    assert_eq!(w1.addresses, vec![vec![10, 20, 0, 1]]);
    assert_eq!(w1.tunnel_protocol, TunnelProtocol::None as i32);
    assert_eq!(w1.service_account, "legacy");
    assert_eq!(w1.canonical_name, "legacy-db");
    assert_eq!(w1.canonical_revision, "v7");
    assert_eq!(w1.workload_name, "legacy");
    let default_ports = vec![
        port(80, 8080),
        port(9000, 9000),
        port(5432, 5432),
        port(443, 443),
    ];
    assert_eq!(w1.services.len(), 2);
    assert_eq!(w1.services[key].ports, default_ports);
    assert_eq!(w1.services[alias].ports, default_ports);
    assert!(w1.locality.is_none() && w1.capacity.is_none());
    // The endpoint's named ports override the target.
    let w2 = workload(&m, LEGACY_UID_2);
    let locality = w2.locality.as_ref().unwrap();
    assert_eq!(
        (&*locality.region, &*locality.zone, &*locality.subzone),
        ("eu", "eu-1", "")
    );
    assert_eq!(w2.capacity, Some(3));
    assert_eq!(
        w2.services[key].ports,
        vec![
            port(80, 18080),
            port(9000, 9000),
            port(5432, 15432),
            port(443, 443)
        ]
    );
    // The first sync's full state carries them.
    let full = m.full_state(weft_proto::ADDRESS_TYPE_URL).unwrap();
    assert_eq!(
        full.chunks.iter().map(|(_, n)| n).sum::<usize>(),
        m.resources.len()
    );
}

#[test]
fn entries_without_single_ips_send_nothing_and_none_resolution_passes_through() {
    let m = model(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: apps}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
  endpoints: [{address: 203.0.113.7}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: range, namespace: apps}
spec:
  hosts: [range.example.com]
  addresses: [10.8.0.0/24]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: apps}
spec:
  hosts: [dns.example.com]
  addresses: [240.0.0.40]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  endpoints: [{address: dns-1.example.com}, {address: 203.0.113.8}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vip, namespace: apps}
spec:
  hosts: [vip.example.com]
  addresses: ["fd00::10"]
  ports: [{number: 80, name: h, protocol: HTTP2}]
"#,
    );
    // A hostname endpoint (DNS) is not a workload; an IP one is.
    assert_eq!(
        m.resources.keys(),
        [
            "Kubernetes/networking.istio.io/ServiceEntry/apps/dns/203.0.113.8",
            "apps/dns.example.com",
            "apps/vip.example.com"
        ]
    );
    assert!(service(&m, "apps/dns.example.com").load_balancing.is_none());
    let svc = service(&m, "apps/vip.example.com");
    let lb = svc.load_balancing.expect("resolution NONE");
    assert_eq!(lb.mode, load_balancing::Mode::Passthrough as i32);
    assert_eq!(
        lb.health_policy,
        load_balancing::HealthPolicy::AllowAll as i32
    );
    assert_eq!(svc.ports, vec![app(port(80, 80), AppProtocol::Http2)]);
    assert_eq!(svc.addresses[0].address.len(), 16);
}

const SELECTOR: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: apps
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: apps, labels: {app: db}}
spec:
  nodeName: node-a
  containers:
  - name: db
    ports: [{name: sql, containerPort: 15432}]
status: {podIP: 10.1.0.20}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: apps, labels: {app: web}}
spec: {nodeName: node-a}
status: {podIP: 10.1.0.21}
---
apiVersion: v1
kind: Pod
metadata: {name: db-2, namespace: other, labels: {app: db}}
spec: {nodeName: node-a}
status: {podIP: 10.1.0.22}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: apps}
spec:
  hosts: [db.internal]
  addresses: [240.0.0.20]
  resolution: STATIC
  workloadSelector: {labels: {app: db}}
  ports:
  - {number: 5432, name: sql, protocol: TCP}
  - {number: 8080, name: admin, protocol: HTTP, targetPort: 9090}
"#;

const ENTRY_KEY: &str = "apps/db.internal";

fn pod_uid(ns: &str, name: &str) -> String {
    format!("Kubernetes//Pod/{ns}/{name}")
}

#[test]
fn selector_adds_the_entry_to_selected_pods() {
    let m = model(SELECTOR);
    let db = workload(&m, &pod_uid("apps", "db-1"));
    assert_eq!(
        db.tunnel_protocol,
        TunnelProtocol::Hbone as i32,
        "still a mesh pod"
    );
    // `sql` resolves through the pod's container port of that name.
    assert_eq!(
        db.services[ENTRY_KEY],
        PortList {
            ports: vec![port(5432, 15432), port(8080, 9090)]
        }
    );
    assert!(workload(&m, &pod_uid("apps", "web-1")).services.is_empty());
    assert!(
        workload(&m, &pod_uid("other", "db-2")).services.is_empty(),
        "selectors stay in the entry's namespace"
    );
    let svc = service(&m, ENTRY_KEY);
    assert_eq!(
        svc.ports,
        vec![port(5432, 5432), app(port(8080, 9090), AppProtocol::Http11)]
    );
    // No endpoint workloads: the pods are the endpoints.
    assert!(
        !m.resources
            .keys()
            .iter()
            .any(|k| k.contains("ServiceEntry"))
    );
}

/// Applies `yaml` as changes computed against `builder`'s objects (the
/// way the directory source reports them) and checks that the result is
/// what a full build gives; returns the names that changed.
fn apply(builder: &mut Builder, old: &[Object], yaml: &str) -> Vec<String> {
    let new = objects(yaml);
    let before = builder.model().version.clone();
    let mut changes: Vec<(ObjectKey, Option<Object>)> = Vec::new();
    for o in &new {
        if !old.contains(o) {
            changes.push((o.key(), Some(o.clone())));
        }
    }
    for o in old {
        if !new.iter().any(|n| n.key() == o.key()) {
            changes.push((o.key(), None));
        }
    }
    builder.update(Delta::Changes(&changes));
    let incremental = builder.model();
    let full = build(&new, &config());
    assert_eq!(incremental.resources.keys(), full.resources.keys());
    for (name, r) in full.resources.iter() {
        assert_eq!(incremental.resources[name].version, r.version, "{name}");
    }
    assert_eq!(incremental.version, full.version);
    let mut changed: Vec<String> = incremental
        .changed_since(&before)
        .unwrap()
        .into_iter()
        .map(|(_, n)| n.to_string())
        .collect();
    changed.sort();
    changed.dedup();
    changed
}

#[test]
fn entry_changes_are_incremental() {
    let mut builder = Builder::new(config());
    let mut old = objects(STATIC);
    builder.update(Delta::Full(&old));
    let mut step = |yaml: String| {
        let changed = apply(&mut builder, &old, &yaml);
        old = objects(&yaml);
        changed
    };
    let alias = "apps/alias.apps.svc.cluster.local";
    let key = "apps/legacy.example.com";

    // A port's protocol: the two services and nothing else (endpoint
    // ports carry no protocol).
    let edited = STATIC.replace("protocol: TCP}", "protocol: HTTP}");
    assert_eq!(step(edited.clone()), [alias, key]);

    // An endpoint goes: its workload only.
    let edited = edited.replace("  - {address: 10.20.0.1, serviceAccount: legacy}\n", "");
    assert_eq!(step(edited.clone()), [LEGACY_UID_1]);

    // A host goes: its service, and the workloads that listed it.
    let edited = edited.replace(
        "hosts: [legacy.example.com, alias]",
        "hosts: [legacy.example.com]",
    );
    assert_eq!(step(edited.clone()), [LEGACY_UID_2, alias]);

    // No addresses left: nothing is sent.
    let edited = edited.replace(
        "addresses: [240.0.0.10, 240.0.0.11/32, 10.9.0.0/16]",
        "addresses: []",
    );
    assert_eq!(step(edited.clone()), [LEGACY_UID_2, key]);

    // Back (but for a label, so that this version is new), then deleted.
    step(STATIC.replace("version: v7", "version: v8"));
    let changed = step(String::new());
    assert_eq!(changed, [LEGACY_UID_1, LEGACY_UID_2, alias, key]);
}

#[test]
fn selector_changes_are_incremental() {
    let mut builder = Builder::new(config());
    let mut old = objects(SELECTOR);
    builder.update(Delta::Full(&old));
    let mut step = |yaml: String| {
        let changed = apply(&mut builder, &old, &yaml);
        old = objects(&yaml);
        changed
    };
    let db = pod_uid("apps", "db-1");
    let web = pod_uid("apps", "web-1");

    // The selector moves to web: both pods, not the other namespace's.
    let edited = SELECTOR.replace(
        "workloadSelector: {labels: {app: db}}",
        "workloadSelector: {labels: {app: web}}",
    );
    assert_eq!(step(edited), [db.clone(), web.clone()]);

    // A pod's labels change: that pod.
    let edited = SELECTOR.replace(
        "metadata: {name: web-1, namespace: apps, labels: {app: web}}",
        "metadata: {name: web-1, namespace: apps, labels: {app: db}}",
    );
    assert_eq!(
        step(edited),
        [db.clone(), web.clone()],
        "back to db, web joins"
    );

    // A port is renamed: db-1's target is no longer its `sql` container
    // port; the service, which carries no port names, is the same.
    let edited = SELECTOR
        .replace(
            "metadata: {name: web-1, namespace: apps, labels: {app: web}}",
            "metadata: {name: web-1, namespace: apps, labels: {app: db}}",
        )
        .replace("name: sql, protocol: TCP", "name: pg, protocol: TCP");
    assert_eq!(step(edited), [db.as_str()]);

    // The entry goes: its service, and the pods it selected.
    let without = SELECTOR[..SELECTOR
        .find("---\napiVersion: networking.istio.io/v1")
        .unwrap()]
        .to_string()
        .replace(
            "metadata: {name: web-1, namespace: apps, labels: {app: web}}",
            "metadata: {name: web-1, namespace: apps, labels: {app: db}}",
        );
    assert_eq!(step(without), [db, web, ENTRY_KEY.to_string()]);
}

const COLLIDING: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shadow, namespace: apps, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [reviews.apps.svc.cluster.local, shared.example.com]
  addresses: [240.0.0.30]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.30.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: newer, namespace: other, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  hosts: [shared.example.com]
  addresses: [240.0.0.31]
  ports: [{number: 8080, name: http, protocol: HTTP}]
"#;

const REVIEWS: &str = r#"
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: apps}
spec:
  clusterIP: 10.96.0.40
  ports: [{name: http, port: 9080}]
"#;

/// A host's Workload API service is its owner's, as its routes are: a
/// Kubernetes Service before any ServiceEntry, then the oldest entry.
#[test]
fn host_owner_wins_and_changes_hands_incrementally() {
    let reviews = "apps/reviews.apps.svc.cluster.local";
    let m = model(COLLIDING);
    assert_eq!(service(&m, reviews).name, "shadow");
    assert_eq!(service(&m, "apps/shared.example.com").name, "shadow");
    assert!(!m.resources.contains_key("other/shared.example.com"));

    let with_service = format!("{COLLIDING}{REVIEWS}");
    let m = model(&with_service);
    let svc = service(&m, reviews);
    assert_eq!(
        (svc.name.as_str(), svc.ports[0].service_port),
        ("reviews", 9080)
    );
    let endpoint = workload(
        &m,
        "Kubernetes/networking.istio.io/ServiceEntry/apps/shadow/10.30.0.1",
    );
    assert_eq!(
        endpoint.services.keys().collect::<Vec<_>>(),
        ["apps/shared.example.com"]
    );

    let mut builder = Builder::new(config());
    let mut old = objects(COLLIDING);
    builder.update(Delta::Full(&old));
    let mut step = |yaml: String| {
        let changed = apply(&mut builder, &old, &yaml);
        old = objects(&yaml);
        changed
    };
    // The Service arrives: it takes the name over; the endpoint no longer
    // lists it.
    let uid = "Kubernetes/networking.istio.io/ServiceEntry/apps/shadow/10.30.0.1";
    assert_eq!(step(with_service), [uid, reviews]);
    // It goes: the entry's service is back.
    assert_eq!(step(COLLIDING.to_string()), [uid, reviews]);
    // The older entry goes: the newer takes `shared.example.com`.
    let newer_only = COLLIDING[COLLIDING
        .find("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: newer")
        .unwrap()..]
        .to_string();
    assert_eq!(
        step(newer_only),
        [
            uid,
            reviews,
            "apps/shared.example.com",
            "other/shared.example.com"
        ]
    );
}
