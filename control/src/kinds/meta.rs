//! `metadata`, shared by every kind.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The subset of Kubernetes' ObjectMeta that weft reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    /// Defaults to `default` for namespaced kinds.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Optional in directory mode; weft derives stable ids from names.
    #[serde(default)]
    pub uid: Option<String>,
    /// RFC 3339; where Istio picks the oldest of conflicting policies.
    /// Absent sorts first (then by name).
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

impl ObjectMeta {
    pub fn namespace(&self) -> &str {
        match self.namespace.as_deref() {
            None | Some("") => "default",
            Some(ns) => ns,
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}
