//! MeshConfig's access log (`accessLogFile`, `accessLogEncoding`,
//! `accessLogFormat`) and the Telemetry API's `accessLogging`, compiled
//! into `weft.telemetry.v1.AccessLogPolicy`: one per namespace that has a
//! Telemetry with `accessLogging`, and always one for the root namespace,
//! which carries the mesh-wide output. Format strings ([`format`]) and
//! filter expressions ([`cel`]) are parsed here; a proxy only renders and
//! evaluates them.
//!
//! Scopes are Istio's: the root namespace's Telemetry without a selector
//! is mesh-wide, a namespace's without a selector applies to its
//! namespace, one with a `selector` (or a `targetRef` to a Service) to the
//! pods it picks, and the most specific applies (the agent merges the
//! three levels, see `agent/src/access_log/policy.rs`).

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
    telemetries::{TelemetryIndex, namespace_wide},
};
use crate::{
    kinds::{
        Object, ObjectKey, Telemetry,
        telemetry::{AccessLogging as Entry, WorkloadMode},
    },
    mesh::MeshConfig,
};

/// The built-in provider: Envoy's file access log, as Istio names it.
pub const ENVOY_PROVIDER: &str = "envoy";

/// The Telemetries by namespace.
#[derive(Debug, Default)]
pub struct AccessLogs {
    pub telemetries: TelemetryIndex,
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
        &self,
        dirty: &BTreeSet<String>,
        cx: &Context<'_>,
        resources: &mut Resources,
        names: &mut Vec<(&'static str, String)>,
    ) {
        for namespace in dirty {
            match self.compile(namespace, cx) {
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

    fn compile(&self, namespace: &str, cx: &Context<'_>) -> Option<AccessLogPolicy> {
        let root = namespace == cx.config.root_namespace;
        let telemetries = self
            .telemetries
            .oldest_first(namespace, cx.objects, |t| !t.spec.access_logging.is_empty());
        let mut policy = AccessLogPolicy {
            namespace: namespace.to_string(),
            mesh: root.then(|| mesh_access_log(cx.mesh)),
            ..Default::default()
        };
        for t in telemetries {
            let rules = rules(t, namespace);
            if namespace_wide(t) {
                if policy.namespace_rules.is_none() {
                    policy.namespace_rules = Some(rules);
                }
                continue;
            }
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
                Some(selector) => selector.selects(labels),
                None => services.iter().any(|s| s.selects(labels)),
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

/// A Telemetry's entries for the built-in provider.
fn rules(t: &Telemetry, namespace: &str) -> AccessLogRules {
    AccessLogRules {
        telemetry: format!("{namespace}/{}", t.metadata.name),
        logging: t
            .spec
            .access_logging
            .iter()
            .filter(|e| for_envoy(e))
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
            })
            .collect(),
    }
}

/// Whether an entry is for the built-in provider: it names none (the
/// default provider) or names `envoy`.
fn for_envoy(e: &Entry) -> bool {
    e.providers.is_empty() || e.providers.iter().any(|p| p.name == ENVOY_PROVIDER)
}

/// MeshConfig's output, with the default formats filled in.
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
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        model::{Builder, Delta, build},
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

    fn policy(model: &super::super::Model, ns: &str) -> Option<AccessLogPolicy> {
        model
            .access_logs
            .get(ns)
            .and_then(|r| r.access_log_policy())
    }

    const PODS: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: api-1\n  namespace: shop\n  labels: {app: api}\nspec:\n  serviceAccountName: api\n  nodeName: n1\nstatus:\n  podIP: 10.0.0.5\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n  labels: {app: web}\nspec:\n  nodeName: n1\nstatus:\n  podIP: 10.0.0.6\n";

    #[test]
    fn the_root_always_carries_the_mesh_output_in_istios_default_format() {
        let model = build(&[], &config());
        let root = policy(&model, "istio-system").expect("the root's policy");
        let mesh = root.mesh.unwrap();
        assert_eq!(mesh.file, "/dev/stdout");
        assert_eq!(mesh.text, format::parse(format::DEFAULT_TEXT).unwrap());
        assert!(root.namespace_rules.is_none() && model.access_logs.len() == 1);
    }

    #[test]
    fn telemetries_compile_per_namespace_and_selector() {
        let yaml = format!(
            "{PODS}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: off\n  namespace: shop\nspec:\n  accessLogging:\n  - disabled: true\n  - providers: [{{name: otel}}]\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: api-errors\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {{app: api}}\n  accessLogging:\n  - match: {{mode: SERVER}}\n    filter:\n      expression: response.code >= 400\n"
        );
        let mut builder = Builder::new(config());
        builder.update(Delta::Full(&objects(&yaml)));
        let shop = policy(builder.model(), "shop").expect("shop's policy");
        assert!(shop.mesh.is_none());
        let ns = shop.namespace_rules.unwrap();
        assert_eq!(ns.telemetry, "shop/off");
        assert_eq!(
            ns.logging.len(),
            1,
            "the otel entry is not the built-in provider's"
        );
        assert!(ns.logging[0].disabled);
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
}
