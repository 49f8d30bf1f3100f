//! core/v1 ConfigMap. weft reads one: `istio` in the root namespace, whose
//! `mesh` key is Istio's MeshConfig (see [`crate::mesh`]). Its `mesh` is
//! checked when the object is read, so a broken edit is rejected with the
//! field at fault and the last good version keeps serving. Every other
//! ConfigMap is accepted and ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Ignored, Invalid, ObjectMeta, Validate, invalid};
use crate::mesh::MeshConfig;

/// The ConfigMap that holds the mesh config, as Istio names it.
pub const MESH_CONFIG_MAP: &str = "istio";

/// The key of [`MESH_CONFIG_MAP`] that holds the MeshConfig YAML.
pub const MESH_KEY: &str = "mesh";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    binary_data: Ignored,
    #[serde(default)]
    immutable: Ignored,
}

impl ConfigMap {
    /// The MeshConfig this ConfigMap carries: `None` unless it is named
    /// [`MESH_CONFIG_MAP`]; Istio's defaults when it has no `mesh` key.
    pub fn mesh_config(&self) -> Option<Result<MeshConfig, String>> {
        if self.metadata.name != MESH_CONFIG_MAP {
            return None;
        }
        Some(match self.data.get(MESH_KEY) {
            Some(text) => MeshConfig::parse(text),
            None => Ok(MeshConfig::default()),
        })
    }
}

impl Validate for ConfigMap {
    fn validate(&self) -> Vec<Invalid> {
        match self.mesh_config() {
            Some(Err(reason)) => vec![invalid(format!("data.{MESH_KEY}"), reason)],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::{Object, TypeMeta, decode};

    fn read(text: &str) -> Result<Option<Object>, crate::kinds::DecodeError> {
        let docs = crate::yaml::parse(text, Default::default()).unwrap();
        let type_meta = TypeMeta {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        };
        decode(&type_meta, &docs[0].root)
    }

    #[test]
    fn the_istio_config_map_carries_the_mesh_config() {
        let Some(Object::ConfigMap(cm)) = read(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: opa\n      envoyExtAuthzGrpc: {service: opa.authz.svc.cluster.local, port: 9191}\n",
        )
        .unwrap() else {
            panic!("not a ConfigMap")
        };
        let mesh = cm.mesh_config().unwrap().unwrap();
        assert_eq!(mesh.extension_providers[0].name, "opa");
    }

    #[test]
    fn a_broken_mesh_is_refused_with_its_field_and_other_config_maps_are_ignored() {
        let err = read(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: opa\n      envoyExtAuthzGrpc: {service: opa, port: 1, statusOnError: nope}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("data.mesh: "), "{err}");
        assert!(err.contains("statusOnError"), "{err}");
        let Some(Object::ConfigMap(other)) = read(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-settings, namespace: shop}\ndata: {mesh: '{{ not yaml'}\n",
        )
        .unwrap() else {
            panic!("not a ConfigMap")
        };
        assert!(other.mesh_config().is_none());
    }
}
