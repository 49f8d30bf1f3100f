//! VirtualService and DestinationRule → RouteConfig and
//! DestinationPolicy: each feature's compiled form, resolution of hosts,
//! ports and subsets, precedence, and incremental updates.

use std::path::Path;

use weft_proto::{
    DESTINATION_POLICY_TYPE_URL, ROUTE_CONFIG_TYPE_URL,
    route::{
        self as pb, DestinationPolicy, RouteConfig,
        client_tls_settings::TlsMode,
        http_body::Specifier,
        http_fault_injection::abort::ErrorType,
        load_balancer_settings::{LbPolicy, SimpleLb, consistent_hash_lb::HashKey},
        string_match::MatchType,
    },
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

fn route(model: &Model, name: &str) -> RouteConfig {
    model
        .routes
        .get(name)
        .unwrap_or_else(|| panic!("no RouteConfig {name}; have {:?}", model.routes.keys()))
        .route_config()
        .expect("a RouteConfig")
}

fn policy(model: &Model, name: &str) -> DestinationPolicy {
    model
        .destinations
        .get(name)
        .unwrap_or_else(|| {
            panic!(
                "no DestinationPolicy {name}; have {:?}",
                model.destinations.keys()
            )
        })
        .destination_policy()
        .expect("a DestinationPolicy")
}

fn uid(ns: &str, name: &str) -> String {
    format!("Kubernetes//Pod/{ns}/{name}")
}

fn exact(s: &str) -> Option<pb::StringMatch> {
    Some(pb::StringMatch {
        match_type: Some(MatchType::Exact(s.into())),
    })
}

fn secs(s: i64, ms: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: ms * 1_000_000,
    })
}

fn pod(name: &str, ns: &str, labels: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec: {{nodeName: n1, containers: [{{name: c}}]}}\nstatus: {{podIP: {ip}}}\n"
    )
}

/// reviews (v1, v2, v3 pods) and ratings in `bookinfo`; a client pod in
/// `front`.
fn bookinfo() -> String {
    let mut y = String::from(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  selector: {app: ratings}
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 9080}, {name: grpc, port: 9090}]
"#,
    );
    y += &pod(
        "reviews-v1",
        "bookinfo",
        "app: reviews, version: v1",
        "10.1.0.1",
    );
    y += &pod(
        "reviews-v2",
        "bookinfo",
        "app: reviews, version: v2",
        "10.1.0.2",
    );
    y += &pod(
        "reviews-v3",
        "bookinfo",
        "app: reviews, version: v3",
        "10.1.0.3",
    );
    y += &pod(
        "ratings-1",
        "bookinfo",
        "app: ratings, version: v1",
        "10.1.0.4",
    );
    y += &pod("client", "front", "app: client, canary: 'yes'", "10.1.0.5");
    y += &pod("other", "front", "app: other", "10.1.0.6");
    y
}

const REVIEWS_DR: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
  - {name: v3, labels: {version: v3}}
"#;

const CANARY_VS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews.bookinfo.svc.cluster.local, subset: v3}, weight: 10}
"#;

const REVIEWS: &str = "bookinfo/reviews.bookinfo.svc.cluster.local";

mod compile;
mod delegate;
mod incremental;
