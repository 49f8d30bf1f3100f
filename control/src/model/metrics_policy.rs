//! MeshConfig's `defaultProviders.metrics` and the Telemetry API's
//! `metrics`, compiled into `weft.telemetry.v1.MetricsPolicy`: one per
//! namespace that has a Telemetry with `metrics`, and always one for the
//! root namespace, which carries the mesh's default providers.
//!
//! Scopes are those of [`super::access_log`]: the root namespace's
//! namespace-wide Telemetry (the oldest without a selector or targetRef,
//! whether or not it sets `metrics`) is mesh-wide, a namespace's applies
//! to its namespace, those with a `selector` (or a `targetRef` to a
//! Service) to the pods they pick, oldest first; a proxy merges the
//! levels. Each `metrics` entry is kept as written, with tag values parsed
//! (validation refused those weft's agent cannot evaluate).
//!
//! weft's agents serve Prometheus metrics only, and know it by the name
//! `prometheus`. Provider names are therefore resolved here as istiod
//! resolves them ([`MeshConfig::resolve_provider`]: built-ins included,
//! case ignored) and sent as the agent reads them (see [`agent_name`]):
//! a name of a `prometheus`-kind provider (`my-prom`, `Prometheus`) as
//! `prometheus`; any other as written, except that one spelled
//! `prometheus` whose provider has another kind gets that kind appended,
//! so the agent does not take it for Prometheus. Another kind, an unknown
//! name, or an override of a `customMetric`, is logged here (once per
//! change) and kept, so the agent ignores it and a push never stops.

use std::collections::BTreeSet;

use weft_proto::{
    METRICS_POLICY_TYPE_URL,
    telemetry::{
        IstioMetric, MeshMetrics, Metrics, MetricsOverride, MetricsPolicy, MetricsRules,
        MetricsWorkloadRules, Mode, TagOverride,
    },
};

use super::{
    Resources,
    access_log::{Context, cel, picked},
    telemetries::{TelemetryIndex, Warned, publish},
};
use crate::{
    kinds::{
        Telemetry,
        telemetry::{MetricsOverride as OverrideSpec, TagOverride as TagSpec, WorkloadMode},
    },
    mesh::{MeshConfig, ProviderKind},
};

/// The one metrics provider name weft's agents serve (they compare names
/// to it exactly).
const PROMETHEUS: &str = "prometheus";

/// The Telemetries by namespace, and the warnings last logged for each
/// namespace's policy.
#[derive(Debug, Default)]
pub struct MetricsPolicies {
    pub telemetries: TelemetryIndex,
    warned: Warned,
}

impl MetricsPolicies {
    /// Compiles the `dirty` namespaces' policies again.
    pub fn rebuild(
        &mut self,
        dirty: &BTreeSet<String>,
        cx: &Context<'_>,
        resources: &mut Resources,
        names: &mut Vec<(&'static str, String)>,
    ) {
        for namespace in dirty {
            let mut warnings = Vec::new();
            let policy = self.compile(namespace, cx, &mut warnings);
            publish(namespace, policy, METRICS_POLICY_TYPE_URL, resources, names);
            self.warned.log(namespace, "metrics", warnings);
        }
    }

    fn compile(
        &self,
        namespace: &str,
        cx: &Context<'_>,
        warnings: &mut Vec<String>,
    ) -> Option<MetricsPolicy> {
        let root = namespace == cx.config.root_namespace;
        let scoped = self.telemetries.scoped(namespace, cx.objects);
        let mut policy = MetricsPolicy {
            namespace: namespace.to_string(),
            mesh: root.then(|| mesh_metrics(cx.mesh, warnings)),
            ..Default::default()
        };
        let measures = |t: &&Telemetry| !t.spec.metrics.is_empty();
        policy.namespace_rules = scoped
            .namespace_wide
            .filter(measures)
            .map(|t| rules(t, namespace, cx.mesh, warnings));
        for t in scoped.selecting.into_iter().filter(measures) {
            let rules = rules(t, namespace, cx.mesh, warnings);
            let workload_uids = picked(t, namespace, cx);
            policy.workloads.push(MetricsWorkloadRules {
                rules: Some(rules),
                workload_uids,
            });
        }
        (root || policy.namespace_rules.is_some() || !policy.workloads.is_empty()).then_some(policy)
    }
}

/// The root's mesh-wide part, names as the agent reads them; warns of
/// default providers weft's agents do not serve.
fn mesh_metrics(mesh: &MeshConfig, warnings: &mut Vec<String>) -> MeshMetrics {
    let names = mesh.default_metrics_providers();
    for name in &names {
        if let Some(w) = unserved_provider(name, mesh) {
            warnings.push(format!("defaultProviders.metrics: {w}"));
        }
    }
    MeshMetrics {
        default_providers: names.iter().map(|n| agent_name(n, mesh)).collect(),
    }
}

/// Warns of what in `t`'s `metrics` weft's agents ignore: providers that
/// are not Prometheus, and overrides of custom metrics.
fn check(t: &Telemetry, telemetry: &str, mesh: &MeshConfig, warnings: &mut Vec<String>) {
    let metrics = &t.spec.metrics;
    let providers: BTreeSet<&str> = metrics
        .iter()
        .flat_map(|m| &m.providers)
        .map(|p| p.name.as_str())
        .collect();
    for name in providers {
        if let Some(w) = unserved_provider(name, mesh) {
            warnings.push(format!("Telemetry {telemetry}: {w}"));
        }
    }
    let custom: BTreeSet<&str> = metrics
        .iter()
        .flat_map(|m| &m.overrides)
        .filter_map(|o| o.matches.as_ref()?.custom_metric.as_deref())
        .filter(|c| !c.is_empty())
        .collect();
    for name in custom {
        warnings.push(format!(
            "Telemetry {telemetry}: customMetric `{name}`: weft records no custom metrics; the override applies to nothing"
        ));
    }
}

/// Why weft's agents ignore the metrics provider `name`, if they do.
fn unserved_provider(name: &str, mesh: &MeshConfig) -> Option<String> {
    match mesh.resolve_provider(name).map(|p| p.kind()) {
        None => Some(format!(
            "provider `{name}` is not in the mesh config's extensionProviders; it is ignored"
        )),
        Some(Some(ProviderKind::Prometheus)) => None,
        Some(Some(kind)) => Some(format!(
            "provider `{name}` is `{}`: weft's agents serve Prometheus only; it is ignored",
            kind.field()
        )),
        Some(None) => Some(format!(
            "provider `{name}` has no kind weft knows: weft's agents serve Prometheus only; it is ignored"
        )),
    }
}

/// The name the agent receives for the metrics provider `name`:
/// `prometheus` when it resolves to a provider of kind `prometheus`; else
/// `name` as written, with ` (<kind>)` appended when it is spelled
/// `prometheus` (any case), so that the agent, which knows Prometheus by
/// that name, does not serve a provider redefined as another kind.
fn agent_name(name: &str, mesh: &MeshConfig) -> String {
    if mesh.is_prometheus(name) {
        return PROMETHEUS.to_string();
    }
    if name.eq_ignore_ascii_case(PROMETHEUS) {
        let kind = mesh
            .resolve_provider(name)
            .and_then(|p| p.kind())
            .map_or("unknown kind", ProviderKind::field);
        return format!("{name} ({kind})");
    }
    name.to_string()
}

/// A Telemetry's `metrics` entries, in order, provider names as the agent
/// reads them ([`agent_name`]); warns of what the agent ignores.
fn rules(
    t: &Telemetry,
    namespace: &str,
    mesh: &MeshConfig,
    warnings: &mut Vec<String>,
) -> MetricsRules {
    let telemetry = format!("{namespace}/{}", t.metadata.name);
    check(t, &telemetry, mesh, warnings);
    MetricsRules {
        telemetry,
        metrics: t
            .spec
            .metrics
            .iter()
            .map(|m| Metrics {
                providers: m
                    .providers
                    .iter()
                    .map(|p| agent_name(&p.name, mesh))
                    .collect(),
                overrides: m.overrides.iter().filter_map(metrics_override).collect(),
            })
            .collect(),
    }
}

/// One `overrides` entry; `None` for one naming a metric Istio does not
/// define (validation refused it already).
fn metrics_override(o: &OverrideSpec) -> Option<MetricsOverride> {
    let selector = o.matches.as_ref();
    let metric = match selector.and_then(|m| m.metric.as_deref()) {
        None => IstioMetric::AllMetrics,
        Some(name) => IstioMetric::from_str_name(name)?,
    };
    Some(MetricsOverride {
        mode: match selector.and_then(|m| m.mode) {
            Some(WorkloadMode::Client) => Mode::Client,
            Some(WorkloadMode::Server) => Mode::Server,
            _ => Mode::ClientAndServer,
        } as i32,
        metric: metric as i32,
        disabled: o.disabled,
        // A map: already in name order.
        tags: o
            .tag_overrides
            .iter()
            .filter_map(|(name, tag)| tag_override(name, tag))
            .collect(),
        custom_metric: selector
            .and_then(|m| m.custom_metric.clone())
            .unwrap_or_default(),
    })
}

/// One `tagOverrides` entry: REMOVE, or UPSERT (the default) with its
/// value parsed; `None` for an unknown operation or a value that does not
/// parse (validation refused both already).
fn tag_override(name: &str, tag: &TagSpec) -> Option<TagOverride> {
    match tag.operation.as_deref() {
        Some("REMOVE") => Some(TagOverride {
            name: name.to_string(),
            remove: true,
            ..Default::default()
        }),
        None | Some("UPSERT") => {
            let text = tag.value.as_deref()?;
            let value = cel::parse_value(text).ok()?;
            Some(TagOverride {
                name: name.to_string(),
                remove: false,
                value: Some(value),
                text: text.to_string(),
            })
        }
        Some(_) => None,
    }
}

#[cfg(test)]
#[path = "metrics_policy_tests.rs"]
mod tests;
