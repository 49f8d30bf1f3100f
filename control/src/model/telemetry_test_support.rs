//! What the tests of the Telemetry API's compilers share (`access_log`,
//! `trace_policy`, `metrics_policy`): a model config with a mesh config,
//! and objects from YAML.

use std::{path::Path, sync::Arc};

use super::ModelConfig;
use crate::{kinds::Object, mesh::MeshConfig, source::parse::parse_file};

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
