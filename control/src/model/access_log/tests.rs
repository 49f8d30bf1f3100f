//! Tests of [`super`]: the root's outputs, the scopes, the entries'
//! providers, and the warnings.

use super::*;
use crate::model::telemetry_test_support::{compiling, config, objects};
use crate::model::{Builder, Delta, Model, build};

fn policy(model: &Model, ns: &str) -> Option<AccessLogPolicy> {
    model
        .access_logs
        .get(ns)
        .and_then(|r| r.access_log_policy())
}

/// The warnings compiling `namespace` of `yaml` gives, and the scope
/// warning.
fn warnings(yaml: &[Object], mesh: &str, namespace: &str) -> (Vec<String>, Option<String>) {
    compiling(yaml, mesh, |telemetries, cx| {
        let logs = AccessLogs {
            telemetries,
            ..Default::default()
        };
        let mut warnings = Vec::new();
        logs.compile(namespace, cx, &mut warnings);
        let scope = logs
            .telemetries
            .scoped(namespace, cx.objects)
            .ignored_warning(namespace);
        (warnings, scope)
    })
}

const PODS: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: api-1\n  namespace: shop\n  labels: {app: api}\nspec:\n  serviceAccountName: api\n  nodeName: n1\nstatus:\n  podIP: 10.0.0.5\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n  labels: {app: web}\nspec:\n  nodeName: n1\nstatus:\n  podIP: 10.0.0.6\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n";

/// `PODS` and these Telemetries.
fn with(telemetries: &str) -> Vec<Object> {
    objects(&format!("{PODS}---\n{telemetries}"))
}

#[test]
fn the_root_always_carries_the_mesh_output_in_istios_default_format() {
    let model = build(&[], &config(""));
    let root = policy(&model, "istio-system").expect("the root's policy");
    let mesh = root.mesh.unwrap();
    assert_eq!(mesh.file, "/dev/stdout");
    assert_eq!(mesh.text, format::parse(format::DEFAULT_TEXT).unwrap());
    assert!(root.namespace_rules.is_none() && model.access_logs.len() == 1);
    // The built-in `envoy` provider, and no default provider.
    let names: Vec<&str> = root.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["envoy"]);
    assert!(root.default_providers.is_empty());
}

#[test]
fn the_root_carries_the_file_providers_and_the_default_ones() {
    let mesh = "defaultProviders:\n  accessLogging: [Envoy, Json-Logs, otel, nope]\nextensionProviders:\n- name: Json-Logs\n  envoyFileAccessLog:\n    path: /var/log/a.json\n    logFormat: {labels: {code: '%RESPONSE_CODE%'}}\n- name: otel\n  envoyOtelAls: {service: otel, port: 4317}\n";
    let model = build(&[], &config(mesh));
    let root = policy(&model, "istio-system").unwrap();
    assert_eq!(
        root.default_providers,
        ["envoy", "json-logs", "otel", "nope"]
    );
    assert_eq!(
        root.providers,
        MeshConfig::parse(mesh).unwrap().access_log_providers()
    );
    let names: Vec<(&str, bool, bool)> = root
        .providers
        .iter()
        .map(|p| (p.name.as_str(), p.output.is_some(), p.otel.is_some()))
        .collect();
    assert_eq!(
        names,
        [
            ("envoy", true, false),
            ("json-logs", true, false),
            ("otel", false, true)
        ],
        "an OpenTelemetry provider resolves to its collector"
    );
    assert_eq!(
        warnings(&[], mesh, "istio-system").0,
        [
            "defaultProviders.accessLogging: provider `nope` is not in the mesh config's extensionProviders; it is ignored",
        ]
    );
}

#[test]
fn telemetries_compile_per_namespace_and_selector() {
    let yaml = with(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: off\n  namespace: shop\nspec:\n  accessLogging:\n  - disabled: true\n  - providers: [{name: otel}]\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: api-errors\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {app: api}\n  accessLogging:\n  - match: {mode: SERVER}\n    filter:\n      expression: response.code >= 400\n",
    );
    let mut builder = Builder::new(config(""));
    builder.update(Delta::Full(&yaml));
    let shop = policy(builder.model(), "shop").expect("shop's policy");
    assert!(shop.mesh.is_none() && shop.providers.is_empty() && shop.default_providers.is_empty());
    let ns = shop.namespace_rules.unwrap();
    assert_eq!(ns.telemetry, "shop/off");
    assert_eq!(ns.logging.len(), 2, "every entry, whatever its provider");
    assert!(ns.logging[0].disabled && ns.logging[0].providers.is_empty());
    assert_eq!(ns.logging[1].providers, ["otel"]);
    assert_eq!(shop.workloads.len(), 1);
    let api = &shop.workloads[0];
    assert_eq!(api.workload_uids, ["Kubernetes//Pod/shop/api-1"]);
    let rules = api.rules.as_ref().unwrap();
    assert_eq!(rules.logging[0].mode(), Mode::Server);
    assert_eq!(
        rules.logging[0].filter.as_ref().unwrap().text,
        "response.code >= 400"
    );
    // Without its Telemetries, the namespace has no policy.
    builder.update(Delta::Full(&objects(PODS)));
    assert!(policy(builder.model(), "shop").is_none());
}

#[test]
fn entries_keep_their_providers_lower_cased_and_unknown_ones_are_warned_of() {
    let mesh = "extensionProviders:\n- name: Files\n  envoyFileAccessLog: {path: /var/log/a.log}\n- name: als\n  envoyHttpAls: {service: als, port: 9000, additionalRequestHeadersToLog: [':authority', 'bad name'], additionalResponseTrailersToLog: [grpc-message]}\n- name: tcp-als\n  envoyTcpAls: {service: als, port: 9000}\n";
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec:
  accessLogging:
  - providers: [{name: Envoy}, {name: FILES}]
  - providers: [{name: als}, {name: Typo}, {name: typo}, {name: tcp-als}]
    disabled: true
  - providers: [{name: prometheus}]
"#,
    );
    let shop = policy(&build(&yaml, &config(mesh)), "shop").unwrap();
    let providers: Vec<Vec<String>> = shop
        .namespace_rules
        .unwrap()
        .logging
        .into_iter()
        .map(|l| l.providers)
        .collect();
    assert_eq!(
        providers,
        [
            vec!["envoy".to_string(), "files".to_string()],
            vec![
                "als".to_string(),
                "typo".to_string(),
                "typo".to_string(),
                "tcp-als".to_string()
            ],
            vec!["prometheus".to_string()],
        ]
    );
    assert_eq!(
        warnings(&yaml, mesh, "shop").0,
        [
            "Telemetry shop/t: provider `als`: envoyHttpAls logs without additionalRequestHeadersToLog: `bad name`, additionalResponseTrailersToLog (weft's agent keeps no trailers for its logs)",
            "Telemetry shop/t: provider `Typo` is not in the mesh config's extensionProviders; it is ignored",
            "Telemetry shop/t: provider `prometheus` is `prometheus`, which writes no access log; it is ignored",
        ],
        "once per name, ignoring case; none for file providers nor gRPC services"
    );
}

#[test]
fn only_the_oldest_namespace_wide_telemetry_applies() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: older, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  metrics: [{providers: [{name: prometheus}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: newer, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: newest, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  selector: {matchLabels: {}}
  accessLogging: [{disabled: true}]
"#,
    );
    let model = build(&yaml, &config(""));
    assert!(
        policy(&model, "shop").is_none(),
        "the oldest sets no accessLogging: the newer ones are ignored"
    );
    let (_, scope) = warnings(&yaml, "", "shop");
    assert_eq!(
        scope.unwrap(),
        "several namespace-wide Telemetries: shop/older applies; shop/newer, shop/newest are ignored (istiod applies only the oldest Telemetry without a selector or targetRef, to metrics, tracing and access logging alike)"
    );
    // One namespace-wide Telemetry: no warning.
    let (_, scope) = warnings(&with(PODS), "", "shop");
    assert!(scope.is_none());
}

#[test]
fn an_empty_selector_is_namespace_wide_and_a_target_ref_is_not() {
    let yaml = with(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: a-empty, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {matchLabels: {}}
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  targetRef: {kind: Service, group: "", name: web}
  accessLogging: [{providers: [{name: envoy}]}]
"#,
    );
    let shop = policy(&build(&yaml, &config("")), "shop").unwrap();
    assert_eq!(shop.namespace_rules.unwrap().telemetry, "shop/a-empty");
    assert_eq!(shop.workloads.len(), 1);
    assert_eq!(
        shop.workloads[0].workload_uids,
        ["Kubernetes//Pod/shop/web-1"],
        "the Service's pods"
    );
}

#[test]
fn a_mesh_config_change_lists_its_providers_in_the_roots_policy() {
    let telemetry = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: shop}\nspec:\n  accessLogging: [{providers: [{name: files}]}]\n";
    let mesh_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: files\n      envoyFileAccessLog: {path: /var/log/a.log}\n";
    let mut builder = Builder::new(config(""));
    builder.update(Delta::Full(&with(telemetry)));
    builder.update(Delta::Full(&with(&format!("{telemetry}---\n{mesh_map}"))));
    let root = policy(builder.model(), "istio-system").unwrap();
    let names: Vec<&str> = root.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["envoy", "files"]);
}
