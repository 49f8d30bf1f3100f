//! Delta xDS over real TLS gRPC: first sync, pushes on config change,
//! reconnect with initial_resource_versions, ACK/NACK, authentication,
//! and misbehaving clients.

mod common;

use common::*;
use tonic::Code;
use weft_proto::{
    ADDRESS_TYPE_URL,
    discovery::DeltaDiscoveryResponse,
    workload::{AppProtocol, TunnelProtocol, address::Type},
};

async fn started() -> ControlPlane {
    ControlPlane::start(&[
        ("ns.yaml", MESH_NS),
        ("svc.yaml", WEB_SVC),
        ("pods/a.yaml", &pod("a", "node-1", "web", "10.1.0.1")),
    ])
    .await
}

fn version_of(response: &DeltaDiscoveryResponse, name: &str) -> String {
    response
        .resources
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name} not in response"))
        .version
        .clone()
}

#[tokio::test]
async fn first_sync_then_add_and_remove_on_disk() {
    let cp = started().await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();

    let first = xds.recv_and_ack().await;
    assert_eq!(first.type_url, ADDRESS_TYPE_URL);
    assert!(!first.nonce.is_empty());
    assert!(first.removed_resources.is_empty());
    assert_eq!(names(&first), [uid("a"), WEB_SVC_NAME.to_string()]);
    assert!(first.resources.iter().all(|r| !r.version.is_empty()));
    let workload = addresses(&first)
        .into_iter()
        .find_map(|a| match a {
            Type::Workload(w) => Some(w),
            Type::Service(_) => None,
        })
        .unwrap();
    assert_eq!(workload.addresses, vec![vec![10, 1, 0, 1]]);
    assert_eq!(workload.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(workload.services[WEB_SVC_NAME].ports[0].target_port, 8080);

    // A pod appears on disk: only it is pushed.
    cp.write("pods/b.yaml", &pod("b", "node-2", "web", "10.1.0.2"));
    let added = xds.recv_and_ack().await;
    assert_eq!(names(&added), [uid("b")]);
    assert!(added.removed_resources.is_empty());
    assert_ne!(added.nonce, first.nonce);

    // It disappears: removed_resources.
    cp.remove("pods/b.yaml");
    let removed = xds.recv_and_ack().await;
    assert!(removed.resources.is_empty());
    assert_eq!(removed.removed_resources, [uid("b")]);

    // A change to an existing pod: a new version of it alone.
    cp.write("pods/a.yaml", &pod("a", "node-1", "web", "10.1.0.9"));
    let changed = xds.recv_and_ack().await;
    assert_eq!(names(&changed), [uid("a")]);
    assert_ne!(
        version_of(&changed, &uid("a")),
        version_of(&first, &uid("a"))
    );
}

#[tokio::test]
async fn reconnect_with_initial_resource_versions_gets_only_differences() {
    let cp = started().await;
    cp.write("pods/b.yaml", &pod("b", "node-1", "web", "10.1.0.2"));
    common::eventually("pod b in the model", || {
        let model = cp.handle.model();
        async move {
            model
                .borrow()
                .resources
                .contains_key(&uid("b"))
                .then_some(())
        }
    })
    .await;

    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    let first = xds.recv_and_ack().await;
    assert_eq!(names(&first).len(), 3);
    let versions: Vec<(String, String)> = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(xds);

    // While disconnected: a changes, b goes, c arrives.
    cp.write("pods/a.yaml", &pod("a", "node-1", "web", "10.1.0.9"));
    cp.remove("pods/b.yaml");
    cp.write("pods/c.yaml", &pod("c", "node-1", "web", "10.1.0.3"));
    common::eventually("the model to see all three changes", || {
        let model = cp.handle.model();
        async move {
            let m = model.borrow();
            (m.resources.contains_key(&uid("c")) && !m.resources.contains_key(&uid("b")))
                .then_some(())
        }
    })
    .await;
    common::eventually("pod a's new address in the model", || {
        let model = cp.handle.model();
        let old = versions
            .iter()
            .find(|(n, _)| *n == uid("a"))
            .unwrap()
            .1
            .clone();
        async move { (model.borrow().resources[&uid("a")].version != old).then_some(()) }
    })
    .await;

    let mut initial: Vec<(&str, &str)> = versions
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let gone = uid("never-existed");
    initial.push((&gone, "0123"));
    let mut xds = cp.subscribe("node-1", &initial).await.unwrap();
    let resync = xds.recv_and_ack().await;
    // The service did not change: not resent.
    assert_eq!(names(&resync), [uid("a"), uid("c")]);
    assert_eq!(resync.removed_resources, [uid("b"), gone]);

    // Nothing changed at all: an empty first response still says "in sync".
    let now: Vec<(String, String)> = cp
        .handle
        .model()
        .borrow()
        .resources
        .values()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let now: Vec<(&str, &str)> = now.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut xds = cp.subscribe("node-1", &now).await.unwrap();
    let empty = xds.recv_and_ack().await;
    assert!(empty.resources.is_empty() && empty.removed_resources.is_empty());
    assert!(!empty.nonce.is_empty());
}

#[tokio::test]
async fn nack_is_recorded_in_syncz_and_resent_on_next_change() {
    let cp = started().await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    let first = xds.recv().await.unwrap();
    xds.nack(&first.nonce, "workload has an address of 3 bytes")
        .await;

    let status = eventually("the NACK in /debug/syncz", || async {
        let (code, body) = cp.debug_get("/debug/syncz").await;
        assert_eq!(code, 200);
        let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stream = streams["agents"].as_array()?.first()?.clone();
        let status = stream["types"][ADDRESS_TYPE_URL].clone();
        assert_eq!(stream["node"], "node-1");
        status["last_nack"].is_object().then_some(status)
    })
    .await;
    assert_eq!(status["last_sent_nonce"], first.nonce.as_str());
    assert_eq!(status["last_sent_version"], first.system_version_info);
    assert_eq!(status["last_acked_version"], "");
    assert_eq!(status["last_nack"]["nonce"], first.nonce.as_str());
    assert_eq!(
        status["last_nack"]["message"],
        "workload has an address of 3 bytes"
    );
    assert_eq!(status["nacks"], 1);

    // The rejected resources are sent again with the next change.
    cp.write("pods/b.yaml", &pod("b", "node-2", "web", "10.1.0.2"));
    let next = xds.recv_and_ack().await;
    assert_eq!(names(&next), [uid("a"), uid("b"), WEB_SVC_NAME.to_string()]);
    let status = eventually("the ACK in /debug/syncz", || async {
        let (_, body) = cp.debug_get("/debug/syncz").await;
        let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
        let status = streams["agents"].as_array()?.first()?["types"][ADDRESS_TYPE_URL].clone();
        (status["last_acked_nonce"] == next.nonce.as_str()).then_some(status)
    })
    .await;
    assert_eq!(status["resources"], 3);
    assert_eq!(status["last_acked_version"], next.system_version_info);
    assert_eq!(
        status["last_nack"]["message"], "workload has an address of 3 bytes",
        "the NACK stays visible after a later ACK"
    );
}

#[tokio::test]
async fn bad_or_missing_token_is_unauthenticated() {
    let cp = started().await;
    let forged = cp.token("node-1").replace("node-1.", "node-2.");
    for token in [forged.as_str(), "node-1", ""] {
        let err = XdsSession::open(cp.xds_client(token).await, request("node-1"))
            .await
            .err()
            .unwrap_or_else(|| panic!("token `{token}` accepted"));
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    // Without the header at all.
    let mut client = weft_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::new(cp.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request("node-1")).await.unwrap();
    let err = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("bootstrap-token"), "{err:?}");
}

#[tokio::test]
async fn unknown_type_url_fails_that_stream_only() {
    let cp = started().await;
    let mut good = cp.subscribe("node-1", &[]).await.unwrap();
    good.recv_and_ack().await;

    let mut bad_request = request("node-2");
    bad_request.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    let mut bad = XdsSession::open(cp.xds_client(&cp.token("node-2")).await, bad_request)
        .await
        .unwrap();
    let err = bad.recv().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("unsupported type URL"), "{err:?}");

    // The other stream still gets pushes.
    cp.write("pods/b.yaml", &pod("b", "node-2", "web", "10.1.0.2"));
    assert_eq!(names(&good.recv_and_ack().await), [uid("b")]);
}

/// A request that is not a DeltaDiscoveryRequest: field 1 (node, a
/// message) sent as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(uint64, tag = "1")]
    node: u64,
}

#[tokio::test]
async fn garbage_request_closes_only_that_stream() {
    let cp = started().await;
    let mut good = cp.subscribe("node-1", &[]).await.unwrap();
    good.recv_and_ack().await;

    let channel = tonic::service::interceptor::InterceptedService::new(
        cp.channel().await,
        Token::new(&cp.token("node-2")),
    );
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Garbage { node: 7 }).await.unwrap();
    let codec = tonic_prost::ProstCodec::<Garbage, DeltaDiscoveryResponse>::default();
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
    );
    let result = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            path,
            codec,
        )
        .await;
    let err = match result {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(WAIT, stream.message()).await.unwrap() {
                Err(status) => status,
                Ok(other) => panic!("garbage got an answer: {other:?}"),
            }
        }
    };
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // The server and the well-behaved stream carry on.
    cp.write("pods/b.yaml", &pod("b", "node-2", "web", "10.1.0.2"));
    assert_eq!(names(&good.recv_and_ack().await), [uid("b")]);
    let mut again = cp.subscribe("node-3", &[]).await.unwrap();
    assert_eq!(names(&again.recv_and_ack().await).len(), 3);
}

#[tokio::test]
async fn shutdown_ends_streams() {
    let cp = started().await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    xds.recv_and_ack().await;
    let ControlPlane {
        handle,
        config_dir: _config_dir,
        state_dir: _state_dir,
    } = cp;
    tokio::time::timeout(WAIT, handle.shutdown())
        .await
        .expect("shutdown within the deadline");
    // The stream ends (cleanly or with an error), it does not hang.
    let _ = xds.recv().await;
}

#[tokio::test]
async fn explicit_subscription_gets_only_those_names() {
    let cp = started().await;
    let mut first = request("node-1");
    first.resource_names_subscribe = vec![uid("a"), uid("missing")];
    let mut xds = XdsSession::open(cp.xds_client(&cp.token("node-1")).await, first)
        .await
        .unwrap();
    let response = xds.recv_and_ack().await;
    assert_eq!(names(&response), [uid("a")]);
    // A subscribed name that does not exist is answered as removed.
    assert_eq!(response.removed_resources, [uid("missing")]);

    // Other resources changing do not concern this client...
    cp.write("pods/b.yaml", &pod("b", "node-2", "web", "10.1.0.2"));
    eventually("pod b in the model", || {
        let model = cp.handle.model();
        async move {
            model
                .borrow()
                .resources
                .contains_key(&uid("b"))
                .then_some(())
        }
    })
    .await;
    // ...but subscribing to one later brings it, and only it.
    let mut more = request("node-1");
    more.resource_names_subscribe = vec![uid("b")];
    xds.send(more).await;
    let response = xds.recv_and_ack().await;
    assert_eq!(names(&response), [uid("b")]);
    assert!(response.removed_resources.is_empty());
}

/// More workloads than one response carries: the first sync comes in
/// chunks (each its own nonce, each ACKed), together everything once;
/// after it, a change sends only itself.
#[tokio::test]
async fn large_first_sync_in_chunks_then_only_changes() {
    const PODS: usize = 4_500;
    let mut many = String::new();
    for i in 0..PODS {
        many += &pod(
            &format!("p{i}"),
            "node-1",
            "web",
            &format!("10.2.{}.{}", i / 250, i % 250),
        );
        many += "---\n";
    }
    let cp = ControlPlane::start(&[
        ("ns.yaml", MESH_NS),
        ("svc.yaml", WEB_SVC),
        ("pods.yaml", &many),
    ])
    .await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut nonces = std::collections::BTreeSet::new();
    let mut responses = 0;
    while seen.len() < PODS + 1 {
        let r = xds.recv_and_ack().await;
        assert!(r.removed_resources.is_empty());
        assert!(nonces.insert(r.nonce.clone()));
        for name in names(&r) {
            assert!(seen.insert(name.clone()), "{name} sent twice");
        }
        responses += 1;
    }
    assert!(
        responses >= 3,
        "{responses} responses for {} resources",
        seen.len()
    );
    assert!(seen.contains(WEB_SVC_NAME));

    cp.write("pods/late.yaml", &pod("late", "node-1", "web", "10.3.0.1"));
    let next = xds.recv_and_ack().await;
    assert_eq!(names(&next), [uid("late")]);
}

/// Ports carry their application protocol, and a ServiceEntry written on
/// disk is pushed as its service and endpoint workload, then removed.
#[tokio::test]
async fn app_protocol_and_service_entries_over_xds() {
    let cp = started().await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    let first = xds.recv_and_ack().await;
    let web = addresses(&first)
        .into_iter()
        .find_map(|a| match a {
            Type::Service(s) => Some(s),
            Type::Workload(_) => None,
        })
        .unwrap();
    assert_eq!(web.ports[0].app_protocol(), AppProtocol::Http11);

    cp.write(
        "se.yaml",
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: mesh}
spec:
  hosts: [db.example.com]
  addresses: [240.0.0.5]
  resolution: STATIC
  ports: [{number: 50051, name: api, protocol: GRPC}]
  endpoints: [{address: 10.50.0.1}]
",
    );
    let endpoint = "Kubernetes/networking.istio.io/ServiceEntry/mesh/db/10.50.0.1";
    let added = xds.recv_and_ack().await;
    assert_eq!(names(&added), [endpoint, "mesh/db.example.com"]);
    for a in addresses(&added) {
        match a {
            Type::Service(s) => {
                assert_eq!(s.ports[0].app_protocol(), AppProtocol::Grpc);
                assert_eq!(s.addresses[0].address, vec![240, 0, 0, 5]);
            }
            Type::Workload(w) => {
                assert_eq!(w.tunnel_protocol, TunnelProtocol::None as i32);
                assert_eq!(
                    w.services["mesh/db.example.com"].ports[0].target_port,
                    50051
                );
            }
        }
    }
    let (_, resources) = cp.debug_get("/debug/resources").await;
    assert!(resources.contains(endpoint), "{resources}");

    cp.remove("se.yaml");
    let removed = xds.recv_and_ack().await;
    let mut gone = removed.removed_resources.clone();
    gone.sort();
    assert_eq!(gone, [endpoint, "mesh/db.example.com"]);
}
