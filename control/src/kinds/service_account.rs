//! core/v1 ServiceAccount. Identities come from pods' serviceAccountName;
//! analysis checks that the account exists.

use serde::Deserialize;

use super::{Ignored, ObjectMeta};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccount {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    secrets: Ignored,
    #[serde(default)]
    image_pull_secrets: Ignored,
    #[serde(default)]
    automount_service_account_token: Ignored,
}
