//! MeshConfig's `defaultProviders.metrics` and the Telemetry API's
//! `metrics`, compiled into `weft.telemetry.v1.MetricsPolicy`: one per
//! namespace that has a Telemetry with `metrics`, and always one for the
//! root namespace, which carries the mesh's default providers.
//!
//! Scopes are those of [`super::access_log`]: the root namespace's
//! Telemetry without a selector is mesh-wide, a namespace's applies to its
//! namespace, one with a `selector` (or a `targetRef` to a Service) to the
//! pods it picks, and the oldest Telemetry wins where several apply; a
//! proxy merges the levels. Each `metrics` entry is kept as written, with
//! tag values parsed (validation refused those weft's agent cannot
//! evaluate). weft's agents serve Prometheus metrics only: another
//! provider name, or an override of a `customMetric`, is logged here (once
//! per change) and kept, so the agent ignores it and a push never stops.

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
    telemetries::{TelemetryIndex, Warned, namespace_wide, publish},
};
use crate::kinds::{
    Telemetry,
    telemetry::{MetricsOverride as OverrideSpec, TagOverride as TagSpec, WorkloadMode},
};

/// The one metrics provider weft's agents serve.
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
        let telemetries = self
            .telemetries
            .oldest_first(namespace, cx.objects, |t| !t.spec.metrics.is_empty());
        let mut policy = MetricsPolicy {
            namespace: namespace.to_string(),
            mesh: root.then(|| mesh_metrics(cx.mesh.default_metrics_providers(), warnings)),
            ..Default::default()
        };
        for t in telemetries {
            let rules = rules(t, namespace);
            check(&rules, warnings);
            if namespace_wide(t) {
                if policy.namespace_rules.is_none() {
                    policy.namespace_rules = Some(rules);
                }
                continue;
            }
            let workload_uids = picked(t, namespace, cx);
            policy.workloads.push(MetricsWorkloadRules {
                rules: Some(rules),
                workload_uids,
            });
        }
        (root || policy.namespace_rules.is_some() || !policy.workloads.is_empty()).then_some(policy)
    }
}

/// The root's mesh-wide part; warns of default providers weft's agents do
/// not serve.
fn mesh_metrics(default_providers: Vec<String>, warnings: &mut Vec<String>) -> MeshMetrics {
    for name in &default_providers {
        if let Some(w) = unserved_provider(name) {
            warnings.push(format!("defaultProviders.metrics: {w}"));
        }
    }
    MeshMetrics { default_providers }
}

/// Warns of what in `rules` weft's agents ignore: providers other than
/// Prometheus, and overrides of custom metrics.
fn check(rules: &MetricsRules, warnings: &mut Vec<String>) {
    let providers: BTreeSet<&str> = rules
        .metrics
        .iter()
        .flat_map(|m| &m.providers)
        .map(String::as_str)
        .collect();
    for name in providers {
        if let Some(w) = unserved_provider(name) {
            warnings.push(format!("Telemetry {}: {w}", rules.telemetry));
        }
    }
    let custom: BTreeSet<&str> = rules
        .metrics
        .iter()
        .flat_map(|m| &m.overrides)
        .map(|o| o.custom_metric.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    for name in custom {
        warnings.push(format!(
            "Telemetry {}: customMetric `{name}`: weft records no custom metrics; the override applies to nothing",
            rules.telemetry
        ));
    }
}

/// Why weft's agents ignore the metrics provider `name`, if they do.
fn unserved_provider(name: &str) -> Option<String> {
    (name != PROMETHEUS)
        .then(|| format!("weft's agents serve Prometheus only; provider `{name}` is ignored"))
}

/// A Telemetry's `metrics` entries, in order.
fn rules(t: &Telemetry, namespace: &str) -> MetricsRules {
    MetricsRules {
        telemetry: format!("{namespace}/{}", t.metadata.name),
        metrics: t
            .spec
            .metrics
            .iter()
            .map(|m| Metrics {
                providers: m.providers.iter().map(|p| p.name.clone()).collect(),
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
