//! The rendered manifests as a list of objects, in the order they are
//! applied: what exists before what refers to it.

use kube::api::GroupVersionKind;
use serde::Deserialize as _;
use serde_json::Value;

/// One object of the rendered manifests.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `metadata.namespace` as rendered (namespaced kinds without one get
    /// the install namespace when applied).
    pub namespace: Option<String>,
    /// The whole object, sent as the server-side apply body.
    pub body: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("the rendered manifests are not YAML: {0}")]
    Yaml(serde_yaml::Error),
    #[error(
        "document {index} of the rendered manifests has no {field} (every object needs apiVersion, kind and metadata.name)"
    )]
    Missing { index: usize, field: &'static str },
}

impl Object {
    /// `daemonset/weft-agent`, as kubectl names objects.
    pub fn label(&self) -> String {
        format!("{}/{}", self.kind.to_lowercase(), self.name)
    }

    pub fn gvk(&self) -> GroupVersionKind {
        let (group, version) = match self.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version.as_str()),
        };
        GroupVersionKind::gvk(group, version, &self.kind)
    }

    /// `spec.group` of a CustomResourceDefinition.
    pub fn crd_group(&self) -> Option<&str> {
        (self.kind == "CustomResourceDefinition")
            .then(|| self.body.pointer("/spec/group")?.as_str())
            .flatten()
    }

    /// Whether this CustomResourceDefinition declares `gvk`.
    pub fn declares(&self, gvk: &GroupVersionKind) -> bool {
        self.crd_group() == Some(gvk.group.as_str())
            && self
                .body
                .pointer("/spec/names/kind")
                .and_then(Value::as_str)
                == Some(gvk.kind.as_str())
    }

    /// `metadata.labels`, as (key, value) pairs.
    pub fn labels(&self) -> Vec<(&str, &str)> {
        self.body
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Every object of a multi-document YAML stream (documents holding only
/// comments are skipped), in [`apply_rank`] order, manifest order within
/// a rank.
pub fn parse(yaml: &str) -> Result<Vec<Object>, ObjectsError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let body = Value::deserialize(document).map_err(ObjectsError::Yaml)?;
        if body.is_null() {
            continue;
        }
        let field = |pointer: &str, field| {
            body.pointer(pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or(ObjectsError::Missing {
                    index: index + 1,
                    field,
                })
        };
        objects.push(Object {
            api_version: field("/apiVersion", "apiVersion")?,
            kind: field("/kind", "kind")?,
            name: field("/metadata/name", "metadata.name")?,
            namespace: field("/metadata/namespace", "").ok(),
            body,
        });
    }
    objects.sort_by_key(|o| apply_rank(&o.kind));
    Ok(objects)
}

/// Where a kind goes in the apply order (Helm's install order, shortened):
/// namespaces and CRDs, then identities and their rights, then config and
/// services, then what runs pods. Uninstall goes the other way.
pub fn apply_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "PriorityClass" | "ResourceQuota" | "LimitRange" | "NetworkPolicy" => 2,
        "ServiceAccount" | "Secret" | "ConfigMap" | "PersistentVolumeClaim" => 3,
        "ClusterRole" | "Role" => 4,
        "ClusterRoleBinding" | "RoleBinding" => 5,
        "Service" | "PodDisruptionBudget" => 6,
        "DaemonSet" | "Deployment" | "StatefulSet" | "Job" | "CronJob" | "Pod" => 8,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Values, render};

    #[test]
    fn the_rendered_manifests_parse_in_apply_order() {
        let objects = parse(&render(&Values::default()).unwrap()).unwrap();
        assert!(objects.len() >= 3, "{objects:?}");
        assert_eq!(objects[0].kind, "Namespace");
        let ranks: Vec<u8> = objects.iter().map(|o| apply_rank(&o.kind)).collect();
        assert!(ranks.is_sorted(), "{ranks:?}");
        // Workloads last, after the ServiceAccounts they run as.
        let position = |kind: &str| objects.iter().position(|o| o.kind == kind).unwrap();
        assert!(position("ServiceAccount") < position("DaemonSet"));
        assert!(position("ServiceAccount") < position("Deployment"));
        for object in &objects {
            if let Some(namespace) = &object.namespace {
                assert_eq!(namespace, "istio-system", "{object:?}");
            } else {
                assert!(
                    !["ServiceAccount", "Deployment", "DaemonSet"].contains(&object.kind.as_str())
                );
            }
        }
    }

    #[test]
    fn comment_only_documents_are_skipped_and_missing_fields_named() {
        let yaml = "# header\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# only a comment\n";
        let objects = parse(yaml).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].label(), "configmap/a");
        assert_eq!(objects[0].namespace, None);
        assert_eq!(
            objects[0].gvk(),
            GroupVersionKind::gvk("", "v1", "ConfigMap")
        );

        let error = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "document 1 of the rendered manifests has no metadata.name (every object needs apiVersion, kind and metadata.name)"
        );
    }

    #[test]
    fn a_crd_declares_its_kind() {
        let yaml = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  names:\n    kind: Widget\n";
        let crd = &parse(yaml).unwrap()[0];
        assert_eq!(crd.crd_group(), Some("example.com"));
        assert!(crd.declares(&GroupVersionKind::gvk("example.com", "v1", "Widget")));
        assert!(!crd.declares(&GroupVersionKind::gvk("example.com", "v1", "Gadget")));
    }
}
