//! core/v1 ServiceAccount. Identities come from pods' serviceAccountName;
//! the object itself carries nothing weft reads yet.

use serde::Deserialize;

use super::ObjectMeta;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceAccount {
    pub metadata: ObjectMeta,
}
