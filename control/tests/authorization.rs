//! `istio.security.Authorization` over the same delta ADS stream as
//! `istio.workload.Address`: per-type subscriptions, ACK/NACK per type,
//! pushes of policy changes, and workloads naming their policies.

mod common;

use common::*;
use prost::Message;
use weft_proto::{
    ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
    discovery::DeltaDiscoveryResponse,
    security::{Action, Authorization, Scope},
    workload::address::Type,
};

const ALLOW_CLIENT: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-client
  namespace: mesh
spec:
  selector:
    matchLabels:
      app: web
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/mesh/sa/client]
    to:
    - operation:
        ports: ['8080']
";

const MESH_STRICT: &str = "apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
";

async fn started() -> ControlPlane {
    ControlPlane::start(&[
        ("ns.yaml", MESH_NS),
        ("svc.yaml", WEB_SVC),
        ("pods/a.yaml", &pod("a", "node-1", "web", "10.1.0.1")),
        ("policy.yaml", ALLOW_CLIENT),
    ])
    .await
}

fn authorizations(response: &DeltaDiscoveryResponse) -> Vec<Authorization> {
    assert_eq!(response.type_url, AUTHORIZATION_TYPE_URL);
    response
        .resources
        .iter()
        .map(|r| {
            let any = r.resource.as_ref().unwrap();
            assert_eq!(any.type_url, AUTHORIZATION_TYPE_URL);
            Authorization::decode(any.value.as_slice()).unwrap()
        })
        .collect()
}

fn workload_policies(response: &DeltaDiscoveryResponse, uid: &str) -> Vec<String> {
    let i = response
        .resources
        .iter()
        .position(|r| r.name == uid)
        .unwrap();
    match addresses(response).swap_remove(i) {
        Type::Workload(w) => w.authorization_policies,
        Type::Service(_) => panic!("{uid} is a service"),
    }
}

/// Receives until a response of `type_url` arrives, ACKing everything.
async fn recv_type(xds: &mut XdsSession, type_url: &str) -> DeltaDiscoveryResponse {
    loop {
        let r = xds.recv_and_ack().await;
        if r.type_url == type_url {
            return r;
        }
    }
}

#[tokio::test]
async fn both_types_on_one_stream() {
    let cp = started().await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    let addresses = xds.recv_and_ack().await;
    assert_eq!(addresses.type_url, ADDRESS_TYPE_URL);
    assert_eq!(
        workload_policies(&addresses, &uid("a")),
        ["mesh/allow-client"]
    );

    xds.subscribe_type(AUTHORIZATION_TYPE_URL, &[]).await;
    let policies = xds.recv_and_ack().await;
    assert_eq!(names(&policies), ["mesh/allow-client"]);
    let a = &authorizations(&policies)[0];
    assert_eq!(a.scope, Scope::WorkloadSelector as i32);
    assert_eq!(a.action, Action::Allow as i32);
    assert_eq!(a.groups[0].rules[0].matches[0].destination_ports, [8080]);
    assert!(!policies.system_version_info.is_empty());

    // A mesh-wide STRICT PeerAuthentication: the static policy appears and
    // the workload now names it too; each type is pushed on its own.
    cp.write("peer.yaml", MESH_STRICT);
    let (mut got_policy, mut got_workload) = (false, false);
    while !(got_policy && got_workload) {
        let r = xds.recv_and_ack().await;
        if r.type_url == AUTHORIZATION_TYPE_URL {
            assert_eq!(names(&r), ["istio-system/istio_converted_static_strict"]);
            got_policy = true;
        } else {
            assert_eq!(names(&r), [uid("a")]);
            assert_eq!(
                workload_policies(&r, &uid("a")),
                [
                    "mesh/allow-client",
                    "istio-system/istio_converted_static_strict"
                ]
            );
            got_workload = true;
        }
    }

    // Removing the policy file removes the resource.
    cp.remove("policy.yaml");
    let removed = recv_type(&mut xds, AUTHORIZATION_TYPE_URL).await;
    assert!(removed.resources.is_empty());
    assert_eq!(removed.removed_resources, ["mesh/allow-client"]);
}

#[tokio::test]
async fn nack_of_one_type_leaves_the_other_in_sync() {
    let cp = started().await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    let addresses = xds.recv_and_ack().await;
    xds.subscribe_type(AUTHORIZATION_TYPE_URL, &[]).await;
    let policies = xds.recv().await.unwrap();
    xds.nack_type(
        AUTHORIZATION_TYPE_URL,
        &policies.nonce,
        "cannot parse policy",
    )
    .await;

    let stream = eventually("the NACK in /debug/syncz", || async {
        let (_, body) = cp.debug_get("/debug/syncz").await;
        let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stream = streams["agents"].as_array()?.first()?.clone();
        stream["types"][AUTHORIZATION_TYPE_URL]["last_nack"]
            .is_object()
            .then_some(stream)
    })
    .await;
    let authz = &stream["types"][AUTHORIZATION_TYPE_URL];
    assert_eq!(authz["last_nack"]["message"], "cannot parse policy");
    assert_eq!(authz["last_acked_version"], "");
    let addr = &stream["types"][ADDRESS_TYPE_URL];
    assert_eq!(addr["nacks"], 0);
    assert_eq!(addr["last_acked_nonce"], addresses.nonce.as_str());
    assert_eq!(addr["last_acked_version"], addresses.system_version_info);

    // The next policy change resends the rejected policy with the new one.
    cp.write(
        "policy2.yaml",
        &ALLOW_CLIENT.replace("name: allow-client", "name: second"),
    );
    let again = recv_type(&mut xds, AUTHORIZATION_TYPE_URL).await;
    assert_eq!(names(&again), ["mesh/allow-client", "mesh/second"]);
}

#[tokio::test]
async fn reconnect_with_initial_versions_per_type() {
    let cp = started().await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    xds.recv_and_ack().await;
    xds.subscribe_type(AUTHORIZATION_TYPE_URL, &[]).await;
    let policies = xds.recv_and_ack().await;
    let held = &policies.resources[0];
    let (name, version) = (held.name.clone(), held.version.clone());
    drop(xds);

    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    xds.recv_and_ack().await;
    xds.subscribe_type(
        AUTHORIZATION_TYPE_URL,
        &[(&name, &version), ("mesh/gone", "123")],
    )
    .await;
    let response = xds.recv_and_ack().await;
    assert_eq!(response.type_url, AUTHORIZATION_TYPE_URL);
    assert!(response.resources.is_empty(), "already up to date");
    assert_eq!(response.removed_resources, ["mesh/gone"]);
}

#[tokio::test]
async fn authorization_first_then_addresses() {
    // A client may subscribe to the types in any order.
    let cp = started().await;
    let mut first = request("node-1");
    first.type_url = AUTHORIZATION_TYPE_URL.to_string();
    let mut xds = XdsSession::open(cp.xds_client(&cp.token("node-1")).await, first)
        .await
        .unwrap();
    let policies = xds.recv_and_ack().await;
    assert_eq!(names(&policies), ["mesh/allow-client"]);
    xds.subscribe_type(ADDRESS_TYPE_URL, &[]).await;
    let addresses = xds.recv_and_ack().await;
    assert_eq!(addresses.type_url, ADDRESS_TYPE_URL);
    assert_eq!(names(&addresses).len(), 2);
}
