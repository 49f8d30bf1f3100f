//! core/v1 Namespace: only its labels matter (enrolment).

use serde::Deserialize;

use super::ObjectMeta;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}
