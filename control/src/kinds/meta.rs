//! `metadata`, shared by every kind, and the bits every object has.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Kubernetes' ObjectMeta. Every field of the real schema is accepted (so
/// that objects exported from a cluster load); weft reads the first ones.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default)]
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
    #[serde(default)]
    generate_name: Ignored,
    #[serde(default)]
    self_link: Ignored,
    #[serde(default)]
    resource_version: Ignored,
    #[serde(default)]
    generation: Ignored,
    #[serde(default)]
    deletion_timestamp: Ignored,
    #[serde(default)]
    deletion_grace_period_seconds: Ignored,
    /// Read for the workload name (a Deployment's pods are one workload).
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default)]
    finalizers: Ignored,
    #[serde(default)]
    managed_fields: Ignored,
}

impl ObjectMeta {
    pub fn new(name: &str, namespace: &str) -> Self {
        ObjectMeta {
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        }
    }

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

/// One `ownerReferences` entry; weft reads the controller's kind and name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: bool,
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    uid: Ignored,
    #[serde(default)]
    block_owner_deletion: Ignored,
}

/// A field that is valid in the schema but that weft does not read
/// (`status`, bookkeeping metadata): accepted with any content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}
