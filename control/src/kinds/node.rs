//! core/v1 Node. Parsed so that a directory copied from a cluster loads;
//! nothing reads its fields yet.

use serde::Deserialize;

use super::ObjectMeta;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Node {
    pub metadata: ObjectMeta,
}
