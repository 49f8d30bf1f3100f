//! What the tests of the Telemetry API's compilers share (`access_log`,
//! `trace_policy`, `metrics_policy`): a model config with a mesh config,
//! and objects from YAML.

use std::{collections::HashMap, path::Path, sync::Arc};

use super::{ModelConfig, access_log::Context, telemetries::TelemetryIndex};
use crate::{
    kinds::{Object, ObjectKey},
    mesh::MeshConfig,
    source::parse::parse_file,
};

/// The cluster's usual names, with the mesh config `mesh` (YAML).
pub fn config(mesh: &str) -> ModelConfig {
    ModelConfig {
        cluster_id: "Kubernetes".into(),
        trust_domain: "cluster.local".into(),
        domain_suffix: "cluster.local".into(),
        root_namespace: "istio-system".into(),
        mesh: Arc::new(MeshConfig::parse(mesh).expect("valid mesh config")),
    }
}

/// The objects of a YAML file.
pub fn objects(yaml: &str) -> Vec<Object> {
    parse_file(Path::new("t.yaml"), yaml).expect("valid yaml")
}

/// Calls `f` with the Telemetries of `yaml` indexed and what compiling
/// reads (the mesh config `mesh`, no pods), as a compiler's `rebuild`
/// would.
pub fn compiling<R>(
    yaml: &[Object],
    mesh: &str,
    f: impl FnOnce(TelemetryIndex, &Context<'_>) -> R,
) -> R {
    let mut index = TelemetryIndex::default();
    for o in yaml {
        index.index(&o.key(), true);
    }
    let objects: HashMap<ObjectKey, Object> = yaml.iter().map(|o| (o.key(), o.clone())).collect();
    let cfg = config(mesh);
    let cx = Context {
        config: &cfg,
        mesh: &cfg.mesh,
        objects: &objects,
        pods_by_ns: &HashMap::new(),
    };
    f(index, &cx)
}
