//! core/v1 Namespace: only its labels matter (enrolment).

use serde::Deserialize;

use super::{Ignored, ObjectMeta};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Ignored,
    #[serde(default)]
    status: Ignored,
}
