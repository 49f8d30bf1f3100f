//! Kubernetes mode: replicas elect one leader on a `coordination.k8s.io`
//! Lease, and only the leader writes the `istio-ca-root-cert` ConfigMaps.
//! A leader that shuts down gives the lease up and another replica takes
//! over; a lease left by a replica that died is taken over once it has
//! expired; a replica that is not the leader never writes.

mod common;

use std::time::Duration;

use common::{kube::*, *};
use serde_json::{Value, json};
use weft_apiserver::{ApiServer, Options};
use weft_control::leader::LeaderElection;

/// Short durations, so that take-overs happen within a test's wait.
fn election(identity: &str) -> LeaderElection {
    LeaderElection {
        lease: "weft-control-leader".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    }
}

async fn replica(api: &ApiServer, identity: &str) -> ControlPlane {
    let cp = control_plane_with(api, ApiServer::ADMIN_TOKEN, |config| {
        config.leader_election = election(identity);
    })
    .await;
    eventually("/ready", || async {
        (cp.debug_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    cp
}

fn lease(api: &ApiServer) -> Option<Value> {
    api.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some("istio-system"),
        "weft-control-leader",
    )
}

fn holder(api: &ApiServer) -> Option<String> {
    lease(api)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

async fn leads(cp: &ControlPlane) -> bool {
    syncz(cp).await["leader"]["leader"] == true
}

async fn root_cert_published(api: &ApiServer, namespace: &str) {
    eventually(&format!("istio-ca-root-cert in {namespace}"), || async {
        api.get("v1", "ConfigMap", Some(namespace), "istio-ca-root-cert")
            .map(|_| ())
    })
    .await;
}

fn namespace(api: &ApiServer, name: &str) {
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
}

#[tokio::test]
async fn one_replica_leads_and_a_successor_takes_over_when_it_stops() {
    let api = api_server(Options::default()).await;
    let first = replica(&api, "replica-a").await;
    eventually("replica-a to hold the lease", || async {
        (holder(&api).as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let second = replica(&api, "replica-b").await;
    eventually("both replicas to agree on the leader", || async {
        let syncz = syncz(&second).await;
        (syncz["leader"]["holder"] == "replica-a").then_some(())
    })
    .await;
    assert!(leads(&first).await);
    assert!(!leads(&second).await, "{}", syncz(&second).await);
    root_cert_published(&api, "mesh").await;

    // The leader stops: it gives the lease up, the other replica takes it
    // (one transition) and publishes to namespaces created since.
    first.handle.shutdown().await;
    eventually("replica-b to take the lease over", || async {
        (holder(&api).as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    assert_eq!(lease(&api).unwrap()["spec"]["leaseTransitions"], 1);
    assert!(leads(&second).await);
    namespace(&api, "after-failover");
    root_cert_published(&api, "after-failover").await;
}

#[tokio::test]
async fn a_lease_held_by_a_dead_replica_is_taken_over_only_after_it_expires() {
    let api = api_server(Options::default()).await;
    // A replica that died holding the lease: nobody renews it.
    api.apply(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "weft-control-leader", "namespace": "istio-system"},
        "spec": {"holderIdentity": "dead-replica", "leaseDurationSeconds": 3,
                 "acquireTime": "2026-01-01T00:00:00.000000Z",
                 "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 4},
    }));
    let cp = replica(&api, "replica-c").await;
    // The renew time is far in the past by the wall clock, but a replica
    // counts from when it first saw the record (clock skew): it waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(holder(&api).as_deref(), Some("dead-replica"));
    assert!(!leads(&cp).await);
    assert!(
        api.get("v1", "ConfigMap", Some("mesh"), "istio-ca-root-cert")
            .is_none(),
        "a replica that does not lead must not write the root ConfigMaps"
    );

    eventually("the expired lease to be taken over", || async {
        (holder(&api).as_deref() == Some("replica-c")).then_some(())
    })
    .await;
    assert_eq!(lease(&api).unwrap()["spec"]["leaseTransitions"], 5);
    root_cert_published(&api, "mesh").await;
}

#[tokio::test]
async fn without_leases_a_replica_never_leads_but_still_serves() {
    let api = api_server(Options::default()).await;
    // Leases are not served at all: every read fails.
    api.remove_resource("coordination.k8s.io", "leases");
    let cp = replica(&api, "replica-d").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let syncz = syncz(&cp).await;
    assert_eq!(syncz["leader"]["leader"], false, "{syncz}");
    assert!(
        api.get("v1", "ConfigMap", Some("mesh"), "istio-ca-root-cert")
            .is_none()
    );
    // It still serves agents: leadership is only for cluster-wide writes.
    cp.ca_client(&cp.token("node-1"))
        .await
        .create_certificate(ca_request("spiffe://cluster.local/ns/mesh/sa/web", None))
        .await
        .expect("a replica that does not lead still signs");
}
