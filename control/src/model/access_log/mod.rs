//! MeshConfig's access log (`accessLogFile`, `accessLogEncoding`,
//! `accessLogFormat`, the `envoyFileAccessLog` providers and
//! `defaultProviders.accessLogging`) and the Telemetry API's
//! `accessLogging`, compiled into `weft.telemetry.v1.AccessLogPolicy`: one
//! per namespace that has a Telemetry with `accessLogging`, and always one
//! for the root namespace, which carries the mesh-wide outputs. Format
//! strings ([`format`]) and filter expressions ([`cel`]) are parsed here;
//! a proxy only renders and evaluates them.
//!
//! Scopes are Istio's (see [`super::telemetries::Scoped`]): the root
//! namespace's namespace-wide Telemetry (the oldest without a selector or
//! targetRef) is mesh-wide, a namespace's applies to its namespace, one
//! with a `selector` (or a `targetRef` to a Service) to the pods it picks,
//! and the agent merges the three levels as istiod's `mergeLogs` does (see
//! `agent/src/access_log/policy.rs`). Every entry is kept, with the
//! provider names it gives lower-cased; a name that is not a file provider
//! is logged here (once per change) and skipped by the agent, so a typo
//! never stops a push.

pub mod cel;
pub mod format;

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use weft_proto::{
    ACCESS_LOG_POLICY_TYPE_URL,
    telemetry::{
        AccessLogPolicy, AccessLogRules, AccessLogging, Encoding, Filter, MeshAccessLog, Mode,
        WorkloadRules,
    },
};

use super::{
    ModelConfig, Resources, XdsResource,
    telemetries::{TelemetryIndex, Warned},
};
use crate::{
    kinds::{Object, ObjectKey, Telemetry, telemetry::WorkloadMode},
    mesh::{MeshConfig, ProviderKind},
};

/// The Telemetries by namespace, and the warnings last logged for each
/// namespace's policy.
#[derive(Debug, Default)]
pub struct AccessLogs {
    pub telemetries: TelemetryIndex,
    warned: Warned,
    /// Namespaces with several namespace-wide Telemetries (compiled here,
    /// for the three parts of the Telemetry API).
    warned_scope: Warned,
}

/// What compiling reads (access logs and tracing alike).
pub struct Context<'a> {
    pub config: &'a ModelConfig,
    pub mesh: &'a MeshConfig,
    pub objects: &'a HashMap<ObjectKey, Object>,
    pub pods_by_ns: &'a HashMap<String, BTreeSet<ObjectKey>>,
}

impl AccessLogs {
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
            self.warned.log(namespace, "access logging", warnings);
            let scope = self
                .telemetries
                .scoped(namespace, cx.objects)
                .ignored_warning(namespace);
            self.warned_scope
                .log(namespace, "Telemetry", scope.into_iter().collect());
            match policy {
                Some(policy) => {
                    let bytes = policy.encode_to_vec();
                    let resource = XdsResource::new(
                        namespace.clone(),
                        ACCESS_LOG_POLICY_TYPE_URL,
                        bytes.clone(),
                        &bytes,
                    );
                    if resources.put(resource) {
                        names.push((ACCESS_LOG_POLICY_TYPE_URL, namespace.clone()));
                    }
                }
                None => {
                    if resources.remove(namespace) {
                        names.push((ACCESS_LOG_POLICY_TYPE_URL, namespace.clone()));
                    }
                }
            }
        }
    }

    fn compile(
        &self,
        namespace: &str,
        cx: &Context<'_>,
        warnings: &mut Vec<String>,
    ) -> Option<AccessLogPolicy> {
        let root = namespace == cx.config.root_namespace;
        let scoped = self.telemetries.scoped(namespace, cx.objects);
        let mut policy = AccessLogPolicy {
            namespace: namespace.to_string(),
            ..Default::default()
        };
        if root {
            policy.mesh = Some(mesh_access_log(cx.mesh));
            policy.providers = cx.mesh.access_log_providers();
            policy.default_providers = cx.mesh.default_access_log_providers();
            for name in &policy.default_providers {
                if let Some(w) = unknown_provider(name, cx.mesh) {
                    warnings.push(format!("defaultProviders.accessLogging: {w}"));
                }
            }
        }
        let logs = |t: &&Telemetry| !t.spec.access_logging.is_empty();
        policy.namespace_rules = scoped
            .namespace_wide
            .filter(logs)
            .map(|t| rules(t, namespace, cx.mesh, warnings));
        for t in scoped.selecting.into_iter().filter(logs) {
            let rules = rules(t, namespace, cx.mesh, warnings);
            let workload_uids = picked(t, namespace, cx);
            policy.workloads.push(WorkloadRules {
                rules: Some(rules),
                workload_uids,
            });
        }
        (root || policy.namespace_rules.is_some() || !policy.workloads.is_empty()).then_some(policy)
    }
}

/// The uids of the pods a Telemetry's selector or targetRefs pick (also
/// used for `tracing` and `metrics`, see `model::trace_policy` and
/// `model::metrics_policy`).
pub(super) fn picked(t: &Telemetry, namespace: &str, cx: &Context<'_>) -> Vec<String> {
    let services: Vec<&crate::kinds::Service> = t
        .spec
        .target_ref
        .iter()
        .chain(&t.spec.target_refs)
        .filter(|r| r.kind == "Service")
        .filter_map(|r| {
            let key = ObjectKey {
                kind: "Service",
                namespace: namespace.to_string(),
                name: r.name.clone(),
            };
            match cx.objects.get(&key) {
                Some(Object::Service(s)) => Some(s.as_ref()),
                _ => None,
            }
        })
        .collect();
    let mut uids: Vec<String> = cx
        .pods_by_ns
        .get(namespace)
        .into_iter()
        .flatten()
        .filter_map(|k| match cx.objects.get(k) {
            Some(Object::Pod(p)) => Some(p),
            _ => None,
        })
        .filter(|p| {
            let labels = &p.metadata.labels;
            match &t.spec.selector {
                Some(selector) if !selector.match_labels.is_empty() => selector.selects(labels),
                _ => services.iter().any(|s| s.selects(labels)),
            }
        })
        .map(|p| {
            format!(
                "{}//Pod/{}/{}",
                cx.config.cluster_id, namespace, p.metadata.name
            )
        })
        .collect();
    uids.sort();
    uids
}

/// A Telemetry's `accessLogging` entries, in order; warns of the
/// provider names that are not file providers.
fn rules(
    t: &Telemetry,
    namespace: &str,
    mesh: &MeshConfig,
    warnings: &mut Vec<String>,
) -> AccessLogRules {
    let telemetry = format!("{namespace}/{}", t.metadata.name);
    let mut warned: BTreeSet<String> = BTreeSet::new();
    for p in t.spec.access_logging.iter().flat_map(|e| &e.providers) {
        let name = p.name.to_ascii_lowercase();
        if !warned.contains(&name)
            && let Some(w) = unknown_provider(&p.name, mesh)
        {
            warnings.push(format!("Telemetry {telemetry}: {w}"));
            warned.insert(name);
        }
    }
    AccessLogRules {
        telemetry,
        logging: t
            .spec
            .access_logging
            .iter()
            .map(|e| AccessLogging {
                mode: match e.matches.as_ref().and_then(|m| m.mode) {
                    Some(WorkloadMode::Client) => Mode::Client,
                    Some(WorkloadMode::Server) => Mode::Server,
                    _ => Mode::ClientAndServer,
                } as i32,
                disabled: e.disabled == Some(true),
                // Validation parsed it already; an expression that fails
                // here cannot have been accepted.
                filter: e
                    .filter
                    .as_ref()
                    .filter(|f| !f.expression.trim().is_empty())
                    .and_then(|f| {
                        cel::parse(&f.expression).ok().map(|expr| Filter {
                            text: f.expression.clone(),
                            expr: Some(expr),
                        })
                    }),
                providers: e
                    .providers
                    .iter()
                    .map(|p| p.name.to_ascii_lowercase())
                    .collect(),
            })
            .collect(),
    }
}

/// Why the access-log provider `name` writes nothing, if it does not
/// resolve to a provider that logs (see [`MeshConfig::resolve_provider`]),
/// or what of it weft leaves out.
fn unknown_provider(name: &str, mesh: &MeshConfig) -> Option<String> {
    let provider = mesh.resolve_provider(name);
    match provider.map(|p| p.kind()) {
        None => Some(format!(
            "provider `{name}` is not in the mesh config's extensionProviders; it is ignored"
        )),
        Some(Some(
            ProviderKind::EnvoyFileAccessLog
            | ProviderKind::EnvoyOtelAls
            | ProviderKind::EnvoyTcpAls,
        )) => None,
        Some(Some(ProviderKind::EnvoyHttpAls)) => {
            let als = provider.and_then(|p| p.envoy_http_als.as_ref())?;
            let mut left_out = als.not_headers();
            if !als.additional_response_trailers_to_log.is_empty() {
                left_out.push(
                    "additionalResponseTrailersToLog (weft's agent keeps no trailers for its logs)"
                        .to_string(),
                );
            }
            (!left_out.is_empty()).then(|| {
                format!(
                    "provider `{name}`: envoyHttpAls logs without {}",
                    left_out.join(", ")
                )
            })
        }
        Some(Some(kind)) => Some(format!(
            "provider `{name}` is `{}`, which writes no access log; it is ignored",
            kind.field()
        )),
        Some(None) => Some(format!(
            "provider `{name}` has no kind weft knows; it is ignored"
        )),
    }
}

/// MeshConfig's output (`accessLogFile`), with the default formats
/// filled in; also the built-in `envoy` provider's format (see
/// [`MeshConfig::access_log_providers`]).
pub fn mesh_access_log(mesh: &MeshConfig) -> MeshAccessLog {
    let json = mesh.access_log_json();
    let custom = mesh
        .access_log_format
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    MeshAccessLog {
        file: mesh.access_log_file(),
        encoding: if json { Encoding::Json } else { Encoding::Text } as i32,
        text: if json {
            Vec::new()
        } else {
            format::parse(custom.unwrap_or(format::DEFAULT_TEXT)).unwrap_or_default()
        },
        json: match (json, custom) {
            (false, _) => Vec::new(),
            (true, Some(custom)) => format::parse_json(custom).unwrap_or_default(),
            (true, None) => format::default_json(),
        },
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
