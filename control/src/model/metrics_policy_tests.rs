//! Tests of [`super`]: the mesh's default providers, the scopes, the
//! overrides' fields, the warnings, and what a change compiles again.

use prost::Message;

use weft_proto::telemetry::value;

use super::*;
use crate::model::telemetry_test_support::{compiling, config, objects};
use crate::{
    kinds::Object,
    model::{Builder, Delta, Model, build},
};

fn policy(model: &Model, ns: &str) -> Option<MetricsPolicy> {
    model.metrics.get(ns).and_then(|r| r.metrics_policy())
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, labels: {app: api}}
spec: {serviceAccountName: api, nodeName: n1}
status: {podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: n1}
status: {podIP: 10.0.0.6}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"#;

/// `PODS` and these Telemetries.
fn with(telemetries: &str) -> Vec<Object> {
    objects(&format!("{PODS}---\n{telemetries}"))
}

/// The warnings compiling `namespace` of `yaml` gives.
fn warnings(yaml: &[Object], mesh: &str, namespace: &str) -> Vec<String> {
    compiling(yaml, mesh, |telemetries, cx| {
        let policies = MetricsPolicies {
            telemetries,
            ..Default::default()
        };
        let mut warnings = Vec::new();
        policies.compile(namespace, cx, &mut warnings);
        warnings
    })
}

#[test]
fn the_root_always_carries_prometheus_by_default() {
    let model = build(&[], &config(""));
    let root = policy(&model, "istio-system").expect("the root's policy");
    assert_eq!(
        root.mesh,
        Some(MeshMetrics {
            default_providers: vec!["prometheus".into()],
        })
    );
    assert!(root.namespace_rules.is_none() && root.workloads.is_empty());
    assert_eq!(model.metrics.len(), 1);
    assert!(warnings(&[], "", "istio-system").is_empty());
}

#[test]
fn the_root_carries_the_configured_default_providers() {
    let mesh = "defaultProviders:\n  metrics: [prometheus, stackdriver]\n";
    let model = build(&[], &config(mesh));
    let root = policy(&model, "istio-system").unwrap().mesh.unwrap();
    assert_eq!(root.default_providers, ["prometheus", "stackdriver"]);
    assert_eq!(
        warnings(&[], mesh, "istio-system"),
        [
            "defaultProviders.metrics: provider `stackdriver` is `stackdriver`: weft's agents serve Prometheus only; it is ignored"
        ]
    );
    // Written empty: no default provider.
    let model = build(&[], &config("defaultProviders:\n  metrics: []\n"));
    let root = policy(&model, "istio-system").unwrap().mesh.unwrap();
    assert!(root.default_providers.is_empty());
}

#[test]
fn telemetries_compile_per_scope_oldest_first() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics: [{providers: [{name: prometheus}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: newer, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  metrics: [{overrides: [{disabled: true}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: older, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  metrics: [{overrides: [{disabled: false}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web, namespace: shop}
spec:
  targetRef: {kind: Service, group: "", name: web}
  metrics: [{providers: [{name: prometheus}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tracing-only, namespace: other}
spec:
  tracing: [{randomSamplingPercentage: 5}]
"#,
    );
    let model = build(&yaml, &config(""));
    let root = policy(&model, "istio-system").unwrap();
    assert!(root.mesh.is_some());
    let mesh_wide = root.namespace_rules.unwrap();
    assert_eq!(mesh_wide.telemetry, "istio-system/mesh-default");
    assert_eq!(mesh_wide.metrics[0].providers, ["prometheus"]);

    let shop = policy(&model, "shop").expect("shop's policy");
    assert!(shop.mesh.is_none());
    let ns = shop.namespace_rules.unwrap();
    assert_eq!(ns.telemetry, "shop/older", "the oldest wins");
    assert_eq!(ns.metrics[0].overrides[0].disabled, Some(false));
    let workloads: Vec<(&str, &[String])> = shop
        .workloads
        .iter()
        .map(|w| {
            (
                w.rules.as_ref().unwrap().telemetry.as_str(),
                w.workload_uids.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        workloads,
        [
            ("shop/api", &["Kubernetes//Pod/shop/api-1".to_string()][..]),
            ("shop/web", &["Kubernetes//Pod/shop/web-1".to_string()][..]),
        ]
    );
    let api = &shop.workloads[0].rules.as_ref().unwrap().metrics[0].overrides[0];
    assert_eq!(
        (api.mode(), api.metric(), api.disabled),
        (Mode::Server, IstioMetric::RequestCount, Some(true))
    );
    // A namespace whose Telemetries set no `metrics` has no policy.
    assert!(policy(&model, "other").is_none());
    assert_eq!(model.metrics.len(), 2);
}

#[test]
fn overrides_compile_their_metric_mode_and_tags() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - {}
    - match: {metric: TCP_SENT_BYTES, mode: CLIENT}
      disabled: false
    - match: {metric: GRPC_RESPONSE_MESSAGES, mode: CLIENT_AND_SERVER}
      tagOverrides:
        user: {value: "request.headers['X-User']"}
        request_host: {operation: REMOVE, value: ignored}
        port: {operation: UPSERT, value: string(destination.port)}
        team: {value: "'payments'"}
    - match: {customMetric: my_metric}
      disabled: true
"#,
    );
    let shop = policy(&build(&yaml, &config("")), "shop").unwrap();
    let overrides = &shop.namespace_rules.unwrap().metrics[0].overrides;
    assert_eq!(
        overrides[0],
        MetricsOverride {
            mode: Mode::ClientAndServer as i32,
            metric: IstioMetric::AllMetrics as i32,
            disabled: None,
            tags: vec![],
            custom_metric: String::new(),
        },
        "unset: every metric, both sides, recording unchanged"
    );
    assert_eq!(
        (overrides[1].mode(), overrides[1].metric()),
        (Mode::Client, IstioMetric::TcpSentBytes)
    );
    assert_eq!(overrides[1].disabled, Some(false));
    // And so on the wire: proto3 `optional` keeps an explicit false.
    let bytes = overrides[1].encode_to_vec();
    assert_eq!(
        MetricsOverride::decode(bytes.as_slice()).unwrap(),
        overrides[1]
    );

    assert_eq!(
        (overrides[2].mode(), overrides[2].metric()),
        (Mode::ClientAndServer, IstioMetric::GrpcResponseMessages)
    );
    let upsert = |name: &str, kind, text: &str| TagOverride {
        name: name.into(),
        remove: false,
        value: Some(weft_proto::telemetry::Value { kind: Some(kind) }),
        text: text.into(),
    };
    assert_eq!(
        overrides[2].tags,
        [
            upsert(
                "port",
                value::Kind::Attribute("destination.port".into()),
                "string(destination.port)"
            ),
            TagOverride {
                name: "request_host".into(),
                remove: true,
                value: None,
                text: String::new(),
            },
            upsert("team", value::Kind::String("payments".into()), "'payments'"),
            upsert(
                "user",
                value::Kind::RequestHeader("x-user".into()),
                "request.headers['X-User']"
            ),
        ],
        "in name order"
    );

    assert_eq!(overrides[3].custom_metric, "my_metric");
    assert_eq!(overrides[3].metric(), IstioMetric::AllMetrics);
    assert_eq!(overrides[3].disabled, Some(true));
}

#[test]
fn every_istio_metric_name_maps_to_its_enum_value() {
    for (name, metric) in [
        ("ALL_METRICS", IstioMetric::AllMetrics),
        ("REQUEST_COUNT", IstioMetric::RequestCount),
        ("REQUEST_DURATION", IstioMetric::RequestDuration),
        ("REQUEST_SIZE", IstioMetric::RequestSize),
        ("RESPONSE_SIZE", IstioMetric::ResponseSize),
        ("TCP_OPENED_CONNECTIONS", IstioMetric::TcpOpenedConnections),
        ("TCP_CLOSED_CONNECTIONS", IstioMetric::TcpClosedConnections),
        ("TCP_SENT_BYTES", IstioMetric::TcpSentBytes),
        ("TCP_RECEIVED_BYTES", IstioMetric::TcpReceivedBytes),
        ("GRPC_REQUEST_MESSAGES", IstioMetric::GrpcRequestMessages),
        ("GRPC_RESPONSE_MESSAGES", IstioMetric::GrpcResponseMessages),
    ] {
        let spec = OverrideSpec {
            matches: Some(crate::kinds::telemetry::MetricSelector {
                metric: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            metrics_override(&spec).map(|o| o.metric()),
            Some(metric),
            "{name}"
        );
    }
}

#[test]
fn other_providers_and_custom_metrics_are_kept_and_warned_of() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  metrics:
  - providers: [{name: stackdriver}, {name: prometheus}]
    overrides:
    - match: {customMetric: my_metric}
      disabled: true
"#,
    );
    let model = build(&yaml, &config(""));
    let shop = policy(&model, "shop").expect("the push is not refused");
    let rules = shop.namespace_rules.unwrap();
    assert_eq!(rules.metrics[0].providers, ["stackdriver", "prometheus"]);
    assert_eq!(rules.metrics[0].overrides[0].custom_metric, "my_metric");
    assert_eq!(
        warnings(&yaml, "", "shop"),
        [
            "Telemetry shop/t: provider `stackdriver` is `stackdriver`: weft's agents serve Prometheus only; it is ignored",
            "Telemetry shop/t: customMetric `my_metric`: weft records no custom metrics; the override applies to nothing",
        ]
    );
}

#[test]
fn changes_compile_the_namespaces_they_touch() {
    let telemetry = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  metrics: [{overrides: [{disabled: true}]}]
"#;
    let mut builder = Builder::new(config(""));
    builder.update(Delta::Full(&with(telemetry)));
    let uids = |b: &Builder| {
        policy(b.model(), "shop").unwrap().workloads[0]
            .workload_uids
            .clone()
    };
    assert_eq!(uids(&builder), ["Kubernetes//Pod/shop/api-1"]);

    // A new pod the selector picks.
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: api-2, namespace: shop, labels: {app: api}}
spec: {nodeName: n1}
status: {podIP: 10.0.0.7}
"#;
    builder.update(Delta::Full(&with(&format!("{telemetry}---\n{pod}"))));
    assert_eq!(
        uids(&builder),
        ["Kubernetes//Pod/shop/api-1", "Kubernetes//Pod/shop/api-2"]
    );

    // The mesh config changes: the root's default providers follow.
    let mesh_map = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultProviders:
      metrics: []
"#;
    let before = builder.model().version.clone();
    builder.update(Delta::Full(&with(&format!("{telemetry}---\n{mesh_map}"))));
    let mesh = policy(builder.model(), "istio-system")
        .unwrap()
        .mesh
        .unwrap();
    assert!(mesh.default_providers.is_empty());
    let changes = builder.model().history.back().unwrap();
    assert_eq!(changes.from, before);
    assert!(
        changes
            .names
            .contains(&(METRICS_POLICY_TYPE_URL, "istio-system".to_string())),
        "{:?}",
        changes.names
    );

    // Without its Telemetry, the namespace has no policy, and the change
    // names it.
    builder.update(Delta::Full(&with(mesh_map)));
    assert!(policy(builder.model(), "shop").is_none());
    assert!(policy(builder.model(), "istio-system").is_some());
    let changes = builder.model().history.back().unwrap();
    assert!(
        changes
            .names
            .contains(&(METRICS_POLICY_TYPE_URL, "shop".to_string())),
        "{:?}",
        changes.names
    );
}

#[test]
fn providers_of_kind_prometheus_reach_the_agent_as_prometheus() {
    let mesh = "defaultProviders:\n  metrics: [my-prom, Prometheus, nope]\nextensionProviders:\n- name: my-prom\n  prometheus: {}\n- name: logs\n  envoyFileAccessLog: {}\n";
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  metrics:
  - providers: [{name: MY-PROM}, {name: logs}]
"#,
    );
    let model = build(&yaml, &config(mesh));
    let root = policy(&model, "istio-system").unwrap().mesh.unwrap();
    assert_eq!(root.default_providers, ["prometheus", "prometheus", "nope"]);
    let shop = policy(&model, "shop").unwrap().namespace_rules.unwrap();
    assert_eq!(shop.metrics[0].providers, ["prometheus", "logs"]);
    assert_eq!(
        warnings(&[], mesh, "istio-system"),
        [
            "defaultProviders.metrics: provider `nope` is not in the mesh config's extensionProviders; it is ignored"
        ]
    );
    assert_eq!(
        warnings(&yaml, mesh, "shop"),
        [
            "Telemetry shop/t: provider `logs` is `envoyFileAccessLog`: weft's agents serve Prometheus only; it is ignored"
        ]
    );
}

#[test]
fn prometheus_redefined_as_another_kind_is_not_served() {
    let mesh = "extensionProviders:\n- name: prometheus\n  stackdriver: {}\n";
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  metrics: [{providers: [{name: prometheus}]}]
"#,
    );
    let model = build(&yaml, &config(mesh));
    let root = policy(&model, "istio-system").unwrap().mesh.unwrap();
    assert_eq!(
        root.default_providers,
        ["prometheus (stackdriver)"],
        "Istio's default `[prometheus]` now names a stackdriver provider"
    );
    let shop = policy(&model, "shop").unwrap().namespace_rules.unwrap();
    assert_eq!(shop.metrics[0].providers, ["prometheus (stackdriver)"]);
    assert_eq!(
        warnings(&[], mesh, "istio-system"),
        [
            "defaultProviders.metrics: provider `prometheus` is `stackdriver`: weft's agents serve Prometheus only; it is ignored"
        ]
    );
}

#[test]
fn a_newer_namespace_wide_telemetry_is_ignored_when_the_oldest_sets_no_metrics() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: older, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: newer, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  metrics: [{overrides: [{disabled: true}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: api, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  selector: {matchLabels: {app: api}}
  metrics: [{overrides: [{disabled: true}]}]
"#,
    );
    let shop = policy(&build(&yaml, &config("")), "shop").expect("the selector's");
    assert!(shop.namespace_rules.is_none(), "`newer` is ignored");
    assert_eq!(shop.workloads.len(), 1);
    // Without the selector's, the namespace has no policy at all.
    let yaml: Vec<Object> = yaml.into_iter().filter(|o| o.key().name != "api").collect();
    assert!(policy(&build(&yaml, &config("")), "shop").is_none());
}

#[test]
fn a_mesh_config_change_resolves_the_names_again() {
    let telemetry = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  metrics: [{providers: [{name: my-prom}]}]
"#;
    let mesh_map = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - name: my-prom
      prometheus: {}
"#;
    let mut builder = Builder::new(config(""));
    builder.update(Delta::Full(&with(telemetry)));
    let providers = |b: &Builder| {
        policy(b.model(), "shop")
            .unwrap()
            .namespace_rules
            .unwrap()
            .metrics[0]
            .providers
            .clone()
    };
    assert_eq!(providers(&builder), ["my-prom"]);
    builder.update(Delta::Full(&with(&format!("{telemetry}---\n{mesh_map}"))));
    assert_eq!(providers(&builder), ["prometheus"]);
    let changes = builder.model().history.back().unwrap();
    assert!(
        changes
            .names
            .contains(&(METRICS_POLICY_TYPE_URL, "shop".to_string())),
        "{:?}",
        changes.names
    );
}
