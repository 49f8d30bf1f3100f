//! YAML → model: enrolment, service ports, named targetPorts, endpoints by
//! selector, CA index.

use std::path::Path;

use weft_proto::workload::{
    Address, AppProtocol, NetworkMode, Port, TunnelProtocol, Workload, WorkloadStatus,
    address::Type,
};

use super::*;
use crate::kinds::ObjectKey;
use crate::source::parse::parse_file;

fn config() -> ModelConfig {
    ModelConfig {
        cluster_id: "Kubernetes".into(),
        trust_domain: "cluster.local".into(),
        domain_suffix: "cluster.local".into(),
        root_namespace: "istio-system".into(),
        mesh: Default::default(),
    }
}

fn model(yaml: &str) -> Model {
    build(
        &parse_file(Path::new("t.yaml"), yaml).expect("valid yaml"),
        &config(),
    )
}

fn workload(model: &Model, ns: &str, name: &str) -> Workload {
    let uid = format!("Kubernetes//Pod/{ns}/{name}");
    match model
        .resources
        .get(&uid)
        .unwrap_or_else(|| panic!("no {uid}"))
        .address()
    {
        Some(Address {
            r#type: Some(Type::Workload(w)),
        }) => w,
        other => panic!("{uid} is {other:?}"),
    }
}

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: mesh
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: mesh
  labels: {app: web, version: v1}
spec:
  nodeName: node-a
  serviceAccountName: web
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 8080}
status:
  podIP: 10.1.0.5
  podIPs: [{ip: 10.1.0.5}, {ip: "fd00::5"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  namespace: mesh
  labels: {app: web, istio.io/dataplane-mode: none}
spec:
  nodeName: node-b
  containers:
  - name: app
    ports:
    - {name: web, containerPort: 9090}
status: {podIP: 10.1.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: mesh, labels: {app: web}}
spec: {nodeName: node-a, hostNetwork: true}
status: {podIP: 192.168.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: outside, namespace: plain, labels: {app: web}}
spec: {nodeName: node-a}
status: {podIP: 10.1.0.7}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: mesh}
spec: {nodeName: node-c, serviceAccountName: batch}
---
apiVersion: v1
kind: Pod
metadata: {name: unscheduled, namespace: mesh}
spec: {serviceAccountName: batch}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: mesh}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 81, targetPort: 9901}
  - {name: plain, port: 82}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: v1-only, namespace: mesh}
spec:
  selector: {app: web, version: v1}
  clusterIP: None
  ports: [{port: 80, targetPort: 8080}]
"#;

#[test]
fn enrolment_follows_namespace_and_pod_labels_and_host_network() {
    let m = model(CLUSTER);
    let hbone = |ns, name| workload(&m, ns, name).tunnel_protocol == TunnelProtocol::Hbone as i32;
    assert!(hbone("mesh", "web-1"), "ambient namespace enrols");
    assert!(!hbone("mesh", "web-2"), "pod label none opts out");
    assert!(!hbone("mesh", "host"), "hostNetwork is never enrolled");
    assert!(!hbone("plain", "outside"), "namespace without the label");
    assert_eq!(
        workload(&m, "mesh", "host").network_mode,
        NetworkMode::HostNetwork as i32
    );
}

#[test]
fn workload_fields() {
    let m = model(CLUSTER);
    let w = workload(&m, "mesh", "web-1");
    assert_eq!(w.uid, "Kubernetes//Pod/mesh/web-1");
    assert_eq!(w.name, "web-1");
    assert_eq!(w.namespace, "mesh");
    assert_eq!(
        w.addresses,
        vec![
            vec![10, 1, 0, 5],
            "fd00::5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
                .to_vec()
        ]
    );
    assert_eq!(w.service_account, "web");
    assert_eq!(w.node, "node-a");
    assert_eq!(w.trust_domain, "cluster.local");
    assert_eq!(w.canonical_name, "web");
    assert_eq!(w.canonical_revision, "v1");
    assert_eq!(w.workload_name, "web-1");
    assert_eq!(w.cluster_id, "Kubernetes");
    assert_eq!(workload(&m, "mesh", "web-2").service_account, "default");
    // Scheduled, sandbox not up: the agent needs its identity and
    // enrolment before the API server has its IP.
    let pending = workload(&m, "mesh", "pending");
    assert!(pending.addresses.is_empty());
    assert_eq!(pending.node, "node-c");
    assert_eq!(pending.service_account, "batch");
    assert_eq!(pending.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(
        pending.status,
        WorkloadStatus::Unhealthy as i32,
        "no endpoint"
    );
    assert_eq!(w.status, WorkloadStatus::Healthy as i32);
    assert!(
        !m.resources.contains_key("Kubernetes//Pod/mesh/unscheduled"),
        "a pod on no node yet has no workload"
    );
}

#[test]
fn services_by_selector_with_resolved_target_ports() {
    let m = model(CLUSTER);
    let port = |s, t| Port {
        service_port: s,
        target_port: t,
        ..Default::default()
    };
    let key = "mesh/web.mesh.svc.cluster.local";
    let web1 = workload(&m, "mesh", "web-1");
    assert_eq!(
        web1.services[key].ports,
        // named targetPort `http` → 8080; UDP dropped.
        vec![port(80, 8080), port(81, 9901), port(82, 82)]
    );
    assert!(
        web1.services
            .contains_key("mesh/v1-only.mesh.svc.cluster.local")
    );
    // web-2 has no container port named `http`: not an endpoint of port 80.
    let web2 = workload(&m, "mesh", "web-2");
    assert_eq!(web2.services[key].ports, vec![port(81, 9901), port(82, 82)]);
    assert!(
        !web2
            .services
            .contains_key("mesh/v1-only.mesh.svc.cluster.local")
    );
    // Selectors never cross namespaces.
    assert!(workload(&m, "plain", "outside").services.is_empty());

    let Some(Type::Service(svc)) = m.resources[key].address().unwrap().r#type else {
        panic!("{key} is not a service");
    };
    assert_eq!(svc.hostname, "web.mesh.svc.cluster.local");
    assert_eq!(svc.addresses.len(), 1);
    assert_eq!(svc.addresses[0].address, vec![10, 96, 0, 10]);
    assert_eq!(svc.addresses[0].network, "");
    // A named targetPort is per workload: 0 on the service. Port `http`
    // is HTTP/1.1; `admin` and `plain` declare nothing.
    let http = Port {
        app_protocol: AppProtocol::Http11 as i32,
        ..port(80, 0)
    };
    assert_eq!(svc.ports, vec![http, port(81, 9901), port(82, 82)]);
    let Some(Type::Service(headless)) = m.resources["mesh/v1-only.mesh.svc.cluster.local"]
        .address()
        .unwrap()
        .r#type
    else {
        panic!("not a service");
    };
    assert!(headless.addresses.is_empty());
}

#[test]
fn ca_index_has_every_scheduled_pod() {
    let m = model(CLUSTER);
    assert!(m.node_runs("node-a", "mesh", "web"));
    assert!(m.node_runs("node-b", "mesh", "default"));
    assert!(
        m.node_runs("node-c", "mesh", "batch"),
        "pods without an IP count"
    );
    assert!(!m.node_runs("node-b", "mesh", "web"));
}

#[test]
fn versions_are_stable_and_follow_content() {
    let a = model(CLUSTER);
    let b = model(CLUSTER);
    assert_eq!(a.version, b.version);
    for (name, r) in a.resources.iter() {
        assert_eq!(r.version, b.resources[name].version, "{name}");
    }
    let changed = model(&CLUSTER.replace("10.1.0.6", "10.1.0.9"));
    assert_ne!(a.version, changed.version);
    let uid = "Kubernetes//Pod/mesh/web-2";
    assert_ne!(a.resources[uid].version, changed.resources[uid].version);
    let uid = "Kubernetes//Pod/mesh/web-1";
    assert_eq!(a.resources[uid].version, changed.resources[uid].version);
}

/// Applying changes one at a time gives the same model as building from
/// scratch, and records exactly the names that changed.
#[test]
fn incremental_updates_match_a_full_build() {
    let objects = parse_file(Path::new("t.yaml"), CLUSTER).unwrap();
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&objects));
    let before = builder.model().version.clone();

    // Pod web-2 moves; Service v1-only goes; a STRICT mesh policy arrives.
    let edited = CLUSTER.replace("10.1.0.6", "10.1.0.9").replace(
        "metadata: {name: v1-only, namespace: mesh}",
        "metadata: {name: v1-only, namespace: gone}",
    ) + "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: mesh}\nspec: {mtls: {mode: STRICT}}\n";
    let new_objects = parse_file(Path::new("t.yaml"), &edited).unwrap();
    let key = |o: &Object| o.key();
    let mut changes: Vec<(ObjectKey, Option<Object>)> = Vec::new();
    for o in &new_objects {
        if !objects.contains(o) {
            changes.push((key(o), Some(o.clone())));
        }
    }
    for o in &objects {
        if !new_objects.iter().any(|n| key(n) == key(o)) {
            changes.push((key(o), None));
        }
    }
    builder.update(Delta::Changes(&changes));
    let incremental = builder.model();
    let full = build(&new_objects, &config());
    assert_eq!(incremental.version, full.version);
    for t in [
        weft_proto::ADDRESS_TYPE_URL,
        weft_proto::AUTHORIZATION_TYPE_URL,
    ] {
        let (a, b) = (incremental.of_type(t).unwrap(), full.of_type(t).unwrap());
        assert_eq!(a.keys(), b.keys());
        for (name, r) in a.iter() {
            assert_eq!(r.version, b[name].version, "{name}");
        }
    }
    let changed: Vec<String> = incremental
        .changed_since(&before)
        .unwrap()
        .into_iter()
        .map(|(_, n)| n.to_string())
        .collect();
    assert!(
        changed.contains(&"Kubernetes//Pod/mesh/web-2".to_string()),
        "{changed:?}"
    );
    assert!(changed.contains(&"mesh/v1-only.mesh.svc.cluster.local".to_string()));
    assert!(changed.contains(&"gone/v1-only.gone.svc.cluster.local".to_string()));
    assert!(changed.contains(&"istio-system/istio_converted_static_strict".to_string()));
    assert!(
        !changed.contains(&"Kubernetes//Pod/plain/outside".to_string()),
        "untouched"
    );
    assert!(incremental.node_runs("node-a", "mesh", "web"));
}

fn service(model: &Model, key: &str) -> weft_proto::workload::Service {
    match model
        .resources
        .get(key)
        .unwrap_or_else(|| panic!("no {key}"))
        .address()
    {
        Some(Address {
            r#type: Some(Type::Service(s)),
        }) => s,
        other => panic!("{key} is {other:?}"),
    }
}

const PROTOCOLS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: mesh}
spec:
  clusterIP: 10.96.0.20
  ports:
  - {name: http, port: 80}
  - {name: http-web, port: 81}
  - {name: httpfoo, port: 82}
  - {name: HTTP2-x, port: 83}
  - {name: grpc, port: 84}
  - {name: grpc-web, port: 85}
  - {name: h2c, port: 86}
  - {name: tcp, port: 87, appProtocol: http}
  - {name: http-but, port: 88, appProtocol: tcp}
  - {name: a, port: 89, appProtocol: kubernetes.io/h2c}
  - {name: b, port: 90, appProtocol: kubernetes.io/ws}
  - {name: c, port: 91, appProtocol: kubernetes.io/wss}
  - {name: https, port: 443}
  - {name: tls, port: 92}
  - {name: mongo, port: 93}
  - {name: mysql, port: 94}
  - {name: redis, port: 95}
  - {name: tcp-db, port: 96}
  - {name: other, port: 97, appProtocol: custom}
  - {name: udp-ish, port: 98, appProtocol: grpc}
"#;

/// Every port carries Istio's protocol selection as the Workload API's
/// `app_protocol`: HTTP/1.1, HTTP/2, gRPC, or UNKNOWN for everything a
/// node proxy carries as opaque TCP (never TCP or TLS).
#[test]
fn service_ports_carry_app_protocol() {
    let m = model(PROTOCOLS);
    let svc = service(&m, "mesh/api.mesh.svc.cluster.local");
    let got: Vec<(u32, AppProtocol)> = svc
        .ports
        .iter()
        .map(|p| (p.service_port, p.app_protocol()))
        .collect();
    use AppProtocol::*;
    assert_eq!(
        got,
        vec![
            (80, Http11),
            (81, Http11),
            (82, Unknown),
            (83, Http2),
            (84, Grpc),
            (85, Http11),
            (86, Http2),
            (87, Http11),
            (88, Unknown),
            (89, Http2),
            (90, Http11),
            (91, Unknown),
            (443, Unknown),
            (92, Unknown),
            (93, Unknown),
            (94, Unknown),
            (95, Unknown),
            (96, Unknown),
            (97, Unknown),
            (98, Grpc),
        ]
    );
}

/// Renaming a port, or setting its appProtocol, is a change of the
/// Service resource the incremental builder sends.
#[test]
fn port_protocol_changes_are_incremental() {
    let objects = parse_file(Path::new("t.yaml"), PROTOCOLS).unwrap();
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&objects));
    let key = "mesh/api.mesh.svc.cluster.local";
    for (edit, port, want) in [
        (
            PROTOCOLS.replace("{name: tcp-db, port: 96}", "{name: http-db, port: 96}"),
            96,
            AppProtocol::Http11,
        ),
        (
            PROTOCOLS.replace(
                "{name: other, port: 97, appProtocol: custom}",
                "{name: other, port: 97, appProtocol: grpc}",
            ),
            97,
            AppProtocol::Grpc,
        ),
    ] {
        let before = builder.model().version.clone();
        let old_version = builder.model().resources[key].version.clone();
        let new_objects = parse_file(Path::new("t.yaml"), &edit).unwrap();
        builder.update(Delta::Full(&new_objects));
        let m = builder.model();
        assert_ne!(m.resources[key].version, old_version);
        // (A version seen before, the original after a round trip, may
        // list a name more than once.)
        let mut changed: Vec<&str> = m
            .changed_since(&before)
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        changed.dedup();
        assert_eq!(changed, vec![key]);
        let svc = service(m, key);
        let p = svc.ports.iter().find(|p| p.service_port == port).unwrap();
        assert_eq!(p.app_protocol(), want);
        assert_eq!(m.version, build(&new_objects, &config()).version);
        // Back to the original for the next edit.
        builder.update(Delta::Full(&objects));
    }
}

#[test]
fn workload_names_follow_the_controller_as_istio_names_them() {
    let pod = |owner: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: mesh\n  labels: {{{labels}}}\n  ownerReferences: [{owner}]\nspec: {{nodeName: node-a}}\nstatus: {{podIP: 10.1.0.9}}\n"
        )
    };
    let name = |owner: &str, labels: &str| {
        let m = model(&(CLUSTER.to_string() + "---\n" + &pod(owner, labels)));
        workload(&m, "mesh", "p").workload_name
    };
    let rs =
        "{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c6f5, uid: u, controller: true}";
    assert_eq!(name(rs, "pod-template-hash: 7d4b9c6f5"), "web");
    assert_eq!(
        name(rs, ""),
        "web-7d4b9c6f5",
        "no hash label: the ReplicaSet"
    );
    let job = "{apiVersion: batch/v1, kind: Job, name: nightly-29012345, controller: true}";
    assert_eq!(name(job, ""), "nightly");
    let plain_job = "{apiVersion: batch/v1, kind: Job, name: migrate-1, controller: true}";
    assert_eq!(name(plain_job, ""), "migrate-1");
    let not_controller = "{apiVersion: v1, kind: ConfigMap, name: cm, controller: false}";
    assert_eq!(name(not_controller, ""), "p");
    let m = model(&(CLUSTER.to_string() + "---\n" + &pod(rs, "pod-template-hash: 7d4b9c6f5")));
    assert_eq!(
        workload(&m, "mesh", "p").canonical_name,
        "web",
        "defaults to the workload name"
    );
}
