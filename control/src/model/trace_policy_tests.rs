//! Tests of [`super`]: the mesh-wide settings, the scopes, the entries'
//! fields, and what a change compiles again.

use prost::Message;

use super::*;
use crate::model::telemetry_test_support::{compiling, config, objects};
use crate::{
    kinds::Object,
    model::{Builder, Delta, Model, build},
};

fn policy(model: &Model, ns: &str) -> Option<TracingPolicy> {
    model.tracing.get(ns).and_then(|r| r.tracing_policy())
}

const MESH: &str = r#"
enableTracing: false
defaultConfig:
  proxyMetadata: {ISTIO_META_DNS_CAPTURE: "true"}
  tracing: {sampling: 25}
defaultProviders:
  tracing: [otel]
extensionProviders:
- name: opa
  envoyExtAuthzGrpc: {service: opa.authz.svc.cluster.local, port: 9191}
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317, maxTagLength: 64}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
"#;

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

#[test]
fn the_root_always_carries_istios_defaults() {
    let model = build(&[], &config(""));
    let root = policy(&model, "istio-system").expect("the root's policy");
    assert_eq!(
        root.mesh,
        Some(MeshTracing {
            enabled: true,
            sampling: 1.0,
            default_providers: vec![],
            providers: vec![],
        })
    );
    assert!(root.namespace_rules.is_none() && root.workloads.is_empty());
    assert_eq!(model.tracing.len(), 1);
}

#[test]
fn the_root_carries_the_mesh_configs_tracing_providers() {
    let model = build(&[], &config(MESH));
    let mesh = policy(&model, "istio-system").unwrap().mesh.unwrap();
    assert!(!mesh.enabled);
    assert_eq!(mesh.sampling, 25.0);
    assert_eq!(mesh.default_providers, ["otel"]);
    assert_eq!(
        mesh.providers,
        [
            TracingProvider {
                name: "otel".into(),
                kind: TracingProviderKind::Opentelemetry as i32,
                service: "otel-collector.observability.svc.cluster.local".into(),
                port: 4317,
                max_tag_length: 64,
            },
            TracingProvider {
                name: "zipkin".into(),
                kind: TracingProviderKind::Unsupported as i32,
                service: "zipkin.istio-system.svc.cluster.local".into(),
                port: 9411,
                max_tag_length: 0,
            },
        ],
        "every tracing provider, and not the ext-authz one"
    );
    let mut warnings = Vec::new();
    mesh_tracing(&MeshConfig::parse(MESH).unwrap(), &mut warnings);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("`zipkin` is `zipkin`"), "{warnings:?}");
}

#[test]
fn telemetries_compile_per_scope_oldest_first() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{providers: [{name: otel}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: newer, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  tracing: [{randomSamplingPercentage: 50}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: older, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  tracing: [{randomSamplingPercentage: 10}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  tracing:
  - match: {mode: SERVER}
    providers: [{name: otel}]
  - match: {mode: CLIENT}
    disableSpanReporting: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web, namespace: shop}
spec:
  targetRef: {kind: Service, group: "", name: web}
  tracing: [{disableSpanReporting: false}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs-only, namespace: other}
spec:
  accessLogging: [{disabled: true}]
"#,
    );
    let model = build(&yaml, &config(MESH));
    let root = policy(&model, "istio-system").unwrap();
    assert!(root.mesh.is_some());
    let mesh_wide = root.namespace_rules.unwrap();
    assert_eq!(mesh_wide.telemetry, "istio-system/mesh-default");
    assert_eq!(mesh_wide.tracing[0].providers, ["otel"]);

    let shop = policy(&model, "shop").expect("shop's policy");
    assert!(shop.mesh.is_none());
    let ns = shop.namespace_rules.unwrap();
    assert_eq!(ns.telemetry, "shop/older", "the oldest wins");
    assert_eq!(ns.tracing[0].random_sampling_percentage, Some(10.0));
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
    let api = &shop.workloads[0].rules.as_ref().unwrap().tracing;
    assert_eq!(
        api.iter().map(Tracing::mode).collect::<Vec<_>>(),
        [Mode::Server, Mode::Client]
    );
    assert_eq!(api[1].disable_span_reporting, Some(true));
    // A namespace whose Telemetries set no `tracing` has no policy.
    assert!(policy(&model, "other").is_none());
    assert_eq!(model.tracing.len(), 2);
}

#[test]
fn optional_fields_are_set_only_when_written() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  tracing:
  - {}
  - randomSamplingPercentage: 0
    disableSpanReporting: false
"#,
    );
    let shop = policy(&build(&yaml, &config("")), "shop").unwrap();
    let tracing = shop.namespace_rules.unwrap().tracing;
    assert_eq!(
        tracing[0],
        Tracing {
            mode: Mode::ClientAndServer as i32,
            providers: vec![],
            random_sampling_percentage: None,
            disable_span_reporting: None,
            custom_tags: vec![],
        },
        "unset: inherited from the level above"
    );
    assert_eq!(tracing[1].random_sampling_percentage, Some(0.0));
    assert_eq!(tracing[1].disable_span_reporting, Some(false));
    // And so on the wire: proto3 `optional` keeps an explicit zero.
    let bytes = tracing[1].encode_to_vec();
    assert_eq!(Tracing::decode(bytes.as_slice()).unwrap(), tracing[1]);
}

#[test]
fn custom_tags_compile_in_name_order_with_lower_case_headers() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  tracing:
  - customTags:
      zone: {environment: {name: ZONE, defaultValue: unknown}}
      team: {literal: {value: payments}}
      user: {header: {name: X-User-ID}}
"#,
    );
    let shop = policy(&build(&yaml, &config("")), "shop").unwrap();
    let tags = &shop.namespace_rules.unwrap().tracing[0].custom_tags;
    let tag = |name: &str, kind| CustomTag {
        name: name.into(),
        kind: Some(kind),
    };
    assert_eq!(
        tags,
        &[
            tag("team", custom_tag::Kind::Literal("payments".into())),
            tag(
                "user",
                custom_tag::Kind::Header(HeaderTag {
                    name: "x-user-id".into(),
                    default_value: String::new(),
                })
            ),
            tag(
                "zone",
                custom_tag::Kind::Environment(EnvironmentTag {
                    name: "ZONE".into(),
                    default_value: "unknown".into(),
                })
            ),
        ]
    );
}

#[test]
fn unknown_providers_are_kept_and_warned_of() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: typo, namespace: shop}
spec:
  tracing:
  - providers: [{name: otle}, {name: opa}, {name: otel}]
"#,
    );
    let model = build(&yaml, &config(MESH));
    let shop = policy(&model, "shop").expect("the push is not refused");
    assert_eq!(
        shop.namespace_rules.unwrap().tracing[0].providers,
        ["otle", "opa", "otel"]
    );
    let warnings = compiling(&yaml, MESH, |telemetries, cx| {
        let policies = TracingPolicies {
            telemetries,
            ..Default::default()
        };
        let mut warnings = Vec::new();
        policies.compile("shop", cx, &mut warnings);
        warnings
    });
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("Telemetry shop/typo: provider `opa` is not a tracing provider"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("Telemetry shop/typo: provider `otle` is not in the mesh config"),
        "{warnings:?}"
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
  tracing: [{providers: [{name: otel}]}]
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

    // The mesh config changes: the root's settings follow.
    let mesh_map = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultConfig: {tracing: {sampling: 100}}
    extensionProviders:
    - name: otel
      opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
"#;
    let before = builder.model().version.clone();
    builder.update(Delta::Full(&with(&format!("{telemetry}---\n{mesh_map}"))));
    let mesh = policy(builder.model(), "istio-system")
        .unwrap()
        .mesh
        .unwrap();
    assert_eq!(mesh.sampling, 100.0);
    assert_eq!(mesh.providers[0].name, "otel");
    let changes = builder.model().history.back().unwrap();
    assert_eq!(changes.from, before);
    assert!(
        changes
            .names
            .contains(&(TRACING_POLICY_TYPE_URL, "istio-system".to_string())),
        "{:?}",
        changes.names
    );

    // Without its Telemetry, the namespace has no policy.
    builder.update(Delta::Full(&with(mesh_map)));
    assert!(policy(builder.model(), "shop").is_none());
    assert!(policy(builder.model(), "istio-system").is_some());
}

#[test]
fn a_newer_namespace_wide_telemetry_is_ignored_when_the_oldest_sets_no_tracing() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-older, namespace: istio-system, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {matchLabels: {}}
  metrics: [{overrides: [{disabled: true}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-newer, namespace: istio-system, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  tracing: [{randomSamplingPercentage: 50}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: older, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  metrics: [{overrides: [{disabled: true}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: newer, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  tracing: [{randomSamplingPercentage: 10}]
"#,
    );
    let model = build(&yaml, &config(MESH));
    let root = policy(&model, "istio-system").unwrap();
    assert!(
        root.namespace_rules.is_none(),
        "the mesh-wide Telemetry (an empty selector) sets no tracing"
    );
    assert!(policy(&model, "shop").is_none(), "nor does shop's");
}
