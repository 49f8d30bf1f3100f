//! core/v1 Node. Parsed so that a directory copied from a cluster loads;
//! nothing reads its fields yet.

use serde::Deserialize;

use super::{Ignored, ObjectMeta};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
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
