//! `istio.type.v1beta1.WorkloadSelector`: the `selector` of Istio policies.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Selects the workloads (pods) whose labels include all of
/// `match_labels`. Empty selects every workload in scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `istio.type.v1beta1.PolicyTargetReference`: `targetRef(s)` of policies
/// bound to a waypoint or gateway rather than to workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}
