//! MeshConfig's tracing (`enableTracing`, `defaultConfig.tracing.sampling`,
//! `defaultProviders.tracing`, the tracing kinds of `extensionProviders`)
//! and the Telemetry API's `tracing`, compiled into
//! `weft.telemetry.v1.TracingPolicy`: one per namespace that has a
//! Telemetry with `tracing`, and always one for the root namespace, which
//! carries the mesh-wide settings. (Named `trace_policy` so as not to
//! shadow the `tracing` logging crate.)
//!
//! Scopes are those of [`super::access_log`]: the root namespace's
//! namespace-wide Telemetry (the oldest without a selector or targetRef,
//! whether or not it sets `tracing`) is mesh-wide, a namespace's applies
//! to its namespace, those with a `selector` (or a `targetRef` to a
//! Service) to the pods they pick, oldest first; a proxy merges the levels
//! field by field. Provider names are kept as
//! written: one that MeshConfig does not define as a tracing provider is
//! logged here (once per change) and ignored by the agent, so a typo
//! never stops a push.

use std::collections::BTreeSet;

use weft_proto::{
    TRACING_POLICY_TYPE_URL,
    telemetry::{
        CustomTag, EnvironmentTag, HeaderTag, MeshTracing, Mode, Tracing, TracingPolicy,
        TracingProvider, TracingProviderKind, TracingRules, TracingWorkloadRules, custom_tag,
    },
};

use super::{
    Resources,
    access_log::{Context, picked},
    telemetries::{TelemetryIndex, Warned, publish},
};
use crate::{
    kinds::{
        Telemetry,
        telemetry::{CustomTag as TagSpec, WorkloadMode},
    },
    mesh::MeshConfig,
};

/// The Telemetries by namespace, and the warnings last logged for each
/// namespace's policy.
#[derive(Debug, Default)]
pub struct TracingPolicies {
    pub telemetries: TelemetryIndex,
    warned: Warned,
}

impl TracingPolicies {
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
            publish(namespace, policy, TRACING_POLICY_TYPE_URL, resources, names);
            self.warned.log(namespace, "tracing", warnings);
        }
    }

    fn compile(
        &self,
        namespace: &str,
        cx: &Context<'_>,
        warnings: &mut Vec<String>,
    ) -> Option<TracingPolicy> {
        let root = namespace == cx.config.root_namespace;
        let scoped = self.telemetries.scoped(namespace, cx.objects);
        let mut policy = TracingPolicy {
            namespace: namespace.to_string(),
            mesh: root.then(|| mesh_tracing(cx.mesh, warnings)),
            ..Default::default()
        };
        let traces = |t: &&Telemetry| !t.spec.tracing.is_empty();
        if let Some(t) = scoped.namespace_wide.filter(traces) {
            let rules = rules(t, namespace);
            check_providers(&rules, cx.mesh, warnings);
            policy.namespace_rules = Some(rules);
        }
        for t in scoped.selecting.into_iter().filter(traces) {
            let rules = rules(t, namespace);
            check_providers(&rules, cx.mesh, warnings);
            let workload_uids = picked(t, namespace, cx);
            policy.workloads.push(TracingWorkloadRules {
                rules: Some(rules),
                workload_uids,
            });
        }
        (root || policy.namespace_rules.is_some() || !policy.workloads.is_empty()).then_some(policy)
    }
}

/// Warns of the provider names in `rules` that MeshConfig does not define
/// as tracing providers (they stay in the policy; the agent skips them).
fn check_providers(rules: &TracingRules, mesh: &MeshConfig, warnings: &mut Vec<String>) {
    let names: BTreeSet<&str> = rules
        .tracing
        .iter()
        .flat_map(|t| &t.providers)
        .map(String::as_str)
        .collect();
    for name in names {
        if let Some(w) = unknown_provider(name, mesh) {
            warnings.push(format!("Telemetry {}: {w}", rules.telemetry));
        }
    }
}

/// Why `name` is not a tracing provider of `mesh`, if it is not.
fn unknown_provider(name: &str, mesh: &MeshConfig) -> Option<String> {
    match mesh.provider(name) {
        None => Some(format!(
            "provider `{name}` is not in the mesh config's extensionProviders; it is ignored"
        )),
        Some(p) if p.tracer().is_none() => Some(format!(
            "provider `{name}` is not a tracing provider (opentelemetry, zipkin, ...); it is ignored"
        )),
        Some(_) => None,
    }
}

/// A Telemetry's `tracing` entries, in order.
fn rules(t: &Telemetry, namespace: &str) -> TracingRules {
    TracingRules {
        telemetry: format!("{namespace}/{}", t.metadata.name),
        tracing: t
            .spec
            .tracing
            .iter()
            .map(|e| Tracing {
                mode: match e.matches.as_ref().and_then(|m| m.mode) {
                    Some(WorkloadMode::Client) => Mode::Client,
                    Some(WorkloadMode::Server) => Mode::Server,
                    _ => Mode::ClientAndServer,
                } as i32,
                providers: e.providers.iter().map(|p| p.name.clone()).collect(),
                random_sampling_percentage: e.random_sampling_percentage,
                disable_span_reporting: e.disable_span_reporting,
                // A map: already in name order.
                custom_tags: e
                    .custom_tags
                    .iter()
                    .filter_map(|(name, tag)| custom_tag(name, tag))
                    .collect(),
            })
            .collect(),
    }
}

/// One `customTags` entry; `None` for one without exactly one source
/// (validation refused it already).
fn custom_tag(name: &str, tag: &TagSpec) -> Option<CustomTag> {
    let kind = match (&tag.literal, &tag.header, &tag.environment) {
        (Some(l), None, None) => custom_tag::Kind::Literal(l.value.clone()),
        (None, Some(h), None) => custom_tag::Kind::Header(HeaderTag {
            name: h.name.to_ascii_lowercase(),
            default_value: h.default_value.clone(),
        }),
        (None, None, Some(e)) => custom_tag::Kind::Environment(EnvironmentTag {
            name: e.name.clone(),
            default_value: e.default_value.clone(),
        }),
        _ => return None,
    };
    Some(CustomTag {
        name: name.to_string(),
        kind: Some(kind),
    })
}

/// MeshConfig's tracing, with Istio's defaults filled in; warns of
/// default providers that are not tracing providers and of providers of a
/// kind weft sends no spans to.
pub fn mesh_tracing(mesh: &MeshConfig, warnings: &mut Vec<String>) -> MeshTracing {
    let default_providers = mesh.default_tracing_providers().to_vec();
    for name in &default_providers {
        if let Some(w) = unknown_provider(name, mesh) {
            warnings.push(format!("defaultProviders.tracing: {w}"));
        }
    }
    let providers = mesh
        .extension_providers
        .iter()
        .filter_map(|p| {
            let tracer = p.tracer()?;
            if !tracer.opentelemetry {
                warnings.push(format!(
                    "provider `{}` is `{}`: weft continues its trace headers but sends spans only to opentelemetry providers",
                    p.name, tracer.kind
                ));
            }
            Some(TracingProvider {
                name: p.name.clone(),
                kind: if tracer.opentelemetry {
                    TracingProviderKind::Opentelemetry
                } else {
                    TracingProviderKind::Unsupported
                } as i32,
                service: tracer.service.to_string(),
                port: tracer.port,
                max_tag_length: tracer.max_tag_length,
            })
        })
        .collect();
    MeshTracing {
        enabled: mesh.tracing_enabled(),
        sampling: mesh.tracing_sampling(),
        default_providers,
        providers,
    }
}

#[cfg(test)]
#[path = "trace_policy_tests.rs"]
mod tests;
