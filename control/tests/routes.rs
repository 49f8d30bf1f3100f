//! `weft.route.v1.RouteConfig` and `DestinationPolicy` on the same delta
//! ADS stream as the Workload API: wildcard and explicit subscriptions,
//! pushes of only the hosts a change touches, subsets following pods,
//! ACK/NACK and reconnects per type.

mod common;

use common::*;
use prost::Message;
use weft_proto::{
    ADDRESS_TYPE_URL, DESTINATION_POLICY_TYPE_URL, ROUTE_CONFIG_TYPE_URL,
    discovery::DeltaDiscoveryResponse,
    route::{DestinationPolicy, RouteConfig},
};

const WEB_ROUTE: &str = "mesh/web.mesh.svc.cluster.local";
const API_ROUTE: &str = "mesh/api.mesh.svc.cluster.local";

fn versioned_pod(name: &str, app: &str, version: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: mesh, labels: {{app: {app}, version: {version}}}}}
spec: {{nodeName: node-1, containers: [{{name: app}}]}}
status: {{podIP: {ip}}}
"
    )
}

const API_SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: mesh}
spec:
  selector: {app: api}
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80}]
";

const WEB_DR: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: mesh}
spec:
  host: web
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

fn web_vs(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: mesh}}
spec:
  hosts: [web]
  http:
  - route:
    - {{destination: {{host: web, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: web, subset: v2}}, weight: {v2}}}
"
    )
}

const API_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: mesh}
spec:
  hosts: [api]
  http:
  - route: [{destination: {host: api}}]
    timeout: 2s
";

async fn started() -> ControlPlane {
    ControlPlane::start(&[
        ("ns.yaml", MESH_NS),
        ("svc.yaml", WEB_SVC),
        ("api.yaml", API_SVC),
        (
            "pods/w1.yaml",
            &versioned_pod("w1", "web", "v1", "10.1.0.1"),
        ),
        (
            "pods/w2.yaml",
            &versioned_pod("w2", "web", "v2", "10.1.0.2"),
        ),
        (
            "pods/a1.yaml",
            &versioned_pod("a1", "api", "v1", "10.1.0.3"),
        ),
        ("dr.yaml", WEB_DR),
        ("vs.yaml", &web_vs(90, 10)),
        ("api-vs.yaml", API_VS),
    ])
    .await
}

fn route_configs(response: &DeltaDiscoveryResponse) -> Vec<RouteConfig> {
    assert_eq!(response.type_url, ROUTE_CONFIG_TYPE_URL);
    response
        .resources
        .iter()
        .map(|r| {
            let any = r.resource.as_ref().unwrap();
            assert_eq!(any.type_url, ROUTE_CONFIG_TYPE_URL);
            RouteConfig::decode(any.value.as_slice()).unwrap()
        })
        .collect()
}

/// (weight, subset endpoints) of the first HTTP route's destinations.
fn split(config: &RouteConfig) -> Vec<(i32, Vec<String>)> {
    config.http[0]
        .route
        .iter()
        .map(|d| {
            let dest = d.destination.as_ref().unwrap();
            (
                d.weight,
                dest.endpoints
                    .as_ref()
                    .map(|e| e.workload_uids.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Subscribes to every type (wildcard) and returns the first response of
/// each, in the order they came.
async fn subscribe_all(cp: &ControlPlane) -> (XdsSession, Vec<DeltaDiscoveryResponse>) {
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    let mut first = vec![xds.recv_and_ack().await];
    for t in [ROUTE_CONFIG_TYPE_URL, DESTINATION_POLICY_TYPE_URL] {
        xds.subscribe_type(t, &[]).await;
        first.push(xds.recv_and_ack().await);
    }
    (xds, first)
}

#[tokio::test]
async fn route_and_policy_types_with_pushes_of_only_what_changed() {
    let cp = started().await;
    let (mut xds, first) = subscribe_all(&cp).await;
    assert_eq!(first[0].type_url, ADDRESS_TYPE_URL);
    let routes = &first[1];
    assert_eq!(names(routes), [API_ROUTE, WEB_ROUTE]);
    assert!(!routes.system_version_info.is_empty());
    let web = route_configs(routes)
        .into_iter()
        .find(|r| r.name == WEB_ROUTE)
        .unwrap();
    assert_eq!(split(&web), [(90, vec![uid("w1")]), (10, vec![uid("w2")])]);
    let policies = &first[2];
    assert_eq!(policies.type_url, DESTINATION_POLICY_TYPE_URL);
    assert_eq!(names(policies), [WEB_ROUTE]);
    let p = DestinationPolicy::decode(
        policies.resources[0]
            .resource
            .as_ref()
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    assert_eq!(p.policies[0].subsets.len(), 2);

    // A VirtualService change: only web's RouteConfig is pushed.
    cp.write("vs.yaml", &web_vs(50, 50));
    let pushed = xds.recv_and_ack().await;
    assert_eq!(pushed.type_url, ROUTE_CONFIG_TYPE_URL);
    assert_eq!(names(&pushed), [WEB_ROUTE]);
    assert_eq!(
        split(&route_configs(&pushed)[0]),
        [(50, vec![uid("w1")]), (50, vec![uid("w2")])]
    );

    // A new v2 pod: its workload, then web's route (the subset grew);
    // api's route is not sent.
    cp.write(
        "pods/w3.yaml",
        &versioned_pod("w3", "web", "v2", "10.1.0.4"),
    );
    let workload = xds.recv_and_ack().await;
    assert_eq!(workload.type_url, ADDRESS_TYPE_URL);
    assert_eq!(names(&workload), [uid("w3")]);
    let pushed = xds.recv_and_ack().await;
    assert_eq!(names(&pushed), [WEB_ROUTE]);
    assert_eq!(
        split(&route_configs(&pushed)[0]),
        [(50, vec![uid("w1")]), (50, vec![uid("w2"), uid("w3")])]
    );

    // A pod moving address: only its workload.
    cp.write(
        "pods/w3.yaml",
        &versioned_pod("w3", "web", "v2", "10.1.0.9"),
    );
    let moved = xds.recv_and_ack().await;
    assert_eq!(
        (moved.type_url.as_str(), names(&moved)),
        (ADDRESS_TYPE_URL, vec![uid("w3")])
    );

    // The DestinationRule changes: its policy, then the route using its
    // subsets.
    cp.write("dr.yaml", &WEB_DR.replace("ROUND_ROBIN", "RANDOM"));
    let policy = xds.recv_and_ack().await;
    assert_eq!(
        (policy.type_url.as_str(), names(&policy)),
        (DESTINATION_POLICY_TYPE_URL, vec![WEB_ROUTE.to_string()])
    );

    // The VirtualService goes: web's RouteConfig is removed.
    cp.remove("vs.yaml");
    let removed = xds.recv_and_ack().await;
    assert_eq!(removed.type_url, ROUTE_CONFIG_TYPE_URL);
    assert!(removed.resources.is_empty());
    assert_eq!(removed.removed_resources, [WEB_ROUTE]);

    // Nothing else was pending: the next change is the next response.
    cp.write("api-vs.yaml", &API_VS.replace("2s", "3s"));
    let next = xds.recv_and_ack().await;
    assert_eq!(names(&next), [API_ROUTE]);
}

#[tokio::test]
async fn explicit_route_subscription_gets_only_its_names() {
    let cp = started().await;
    let mut first = request("node-1");
    first.type_url = ROUTE_CONFIG_TYPE_URL.to_string();
    first.resource_names_subscribe =
        vec![API_ROUTE.into(), "mesh/none.mesh.svc.cluster.local".into()];
    let mut xds = XdsSession::open(cp.xds_client(&cp.token("node-1")).await, first)
        .await
        .unwrap();
    let response = xds.recv_and_ack().await;
    assert_eq!(names(&response), [API_ROUTE]);
    assert_eq!(
        response.removed_resources,
        ["mesh/none.mesh.svc.cluster.local"],
        "a subscribed name that does not exist is answered as removed"
    );
    // A change to web (not subscribed) sends nothing; a change to api does.
    cp.write("vs.yaml", &web_vs(50, 50));
    cp.write("api-vs.yaml", &API_VS.replace("2s", "3s"));
    let next = xds.recv_and_ack().await;
    assert_eq!(names(&next), [API_ROUTE]);
    assert_eq!(route_configs(&next)[0].http[0].timeout.unwrap().seconds, 3);
}

#[tokio::test]
async fn nack_is_kept_and_the_route_resent_reconnect_sends_differences() {
    let cp = started().await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    xds.recv_and_ack().await;
    xds.subscribe_type(ROUTE_CONFIG_TYPE_URL, &[]).await;
    let routes = xds.recv().await.unwrap();
    let held: Vec<(String, String)> = routes
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    xds.nack_type(ROUTE_CONFIG_TYPE_URL, &routes.nonce, "unknown match field")
        .await;
    let stream = eventually("the NACK in /debug/syncz", || async {
        let (_, body) = cp.debug_get("/debug/syncz").await;
        let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stream = streams["agents"].as_array()?.first()?.clone();
        stream["types"][ROUTE_CONFIG_TYPE_URL]["last_nack"]
            .is_object()
            .then_some(stream)
    })
    .await;
    let t = &stream["types"][ROUTE_CONFIG_TYPE_URL];
    assert_eq!(t["last_nack"]["message"], "unknown match field");
    assert_eq!(stream["types"][ADDRESS_TYPE_URL]["nacks"], 0);

    // The next route change sends it again along with the rejected ones.
    cp.write("api-vs.yaml", &API_VS.replace("2s", "3s"));
    let again = xds.recv_and_ack().await;
    assert_eq!(names(&again), [API_ROUTE, WEB_ROUTE]);
    drop(xds);

    // Reconnecting with what it held: only api (changed since) comes.
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    xds.recv_and_ack().await;
    let initial: Vec<(&str, &str)> = held.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    xds.subscribe_type(ROUTE_CONFIG_TYPE_URL, &initial).await;
    let response = xds.recv_and_ack().await;
    assert_eq!(response.type_url, ROUTE_CONFIG_TYPE_URL);
    assert_eq!(names(&response), [API_ROUTE]);
    assert!(response.removed_resources.is_empty());
}
