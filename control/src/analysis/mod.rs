//! Analysis findings: problems in configuration that is valid on its own
//! but does not do what its author likely meant (a reference to nothing, a
//! rule that never matches, a policy a node proxy can only partly
//! enforce). Each has a stable code, in the spirit of `istioctl analyze`.

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding about one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Finding {
    /// Stable code, e.g. `W1001`; see [`codes`].
    pub code: &'static str,
    pub severity: Severity,
    /// `Kind namespace/name`.
    pub object: String,
    /// Field path inside the object, e.g. `spec.rules[0].to[0].operation.methods`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] {}", self.severity, self.code, self.object)?;
        if !self.path.is_empty() {
            write!(f, " {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The codes. Never reuse or renumber one.
pub mod codes {
    /// An AuthorizationPolicy uses HTTP attributes a node proxy cannot see.
    pub const AUTHZ_L7_ATTRIBUTES: &str = "W1001";
    /// An AuthorizationPolicy action (CUSTOM) that a node proxy cannot enforce.
    pub const AUTHZ_UNSUPPORTED_ACTION: &str = "W1002";
    /// An AuthorizationPolicy bound with targetRef(s): for a waypoint or
    /// gateway, not enforced by the node proxy.
    pub const AUTHZ_TARGET_REF: &str = "W1003";
}
