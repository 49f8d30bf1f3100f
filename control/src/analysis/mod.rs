//! Analysis findings: problems in configuration that is valid on its own
//! but does not do what its author likely meant (a reference to nothing, a
//! rule that never matches, a policy a node proxy can only partly
//! enforce). Each has a stable code, in the spirit of `istioctl analyze`.

mod checks;

use serde::Serialize;

use crate::kinds::Object;

/// Every check over `objects`, sorted by object, then code.
pub fn analyze(objects: &[Object], domain_suffix: &str, root_namespace: &str) -> Vec<Finding> {
    let cx = checks::Context::new(objects, domain_suffix, root_namespace);
    let mut out = Vec::new();
    checks::run(objects, &cx, &mut out);
    out.sort_by(|a, b| (&a.object, &a.path, a.code).cmp(&(&b.object, &b.path, b.code)));
    out.dedup();
    out
}

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
    /// An AuthorizationPolicy uses HTTP attributes: enforced per request
    /// on HTTP ports only (informational).
    pub const AUTHZ_L7_ATTRIBUTES: &str = "W1001";
    /// A CUSTOM AuthorizationPolicy whose provider the mesh config does not
    /// have, or of a kind weft does not support (not enforced).
    pub const AUTHZ_UNSUPPORTED_ACTION: &str = "W1002";
    /// An AuthorizationPolicy bound with targetRef(s): for a waypoint or
    /// gateway, not enforced by the node proxy.
    pub const AUTHZ_TARGET_REF: &str = "W1003";
    /// An AuthorizationPolicy's HTTP fields apply to a Service port that
    /// is not HTTP, where the node proxy cannot see requests.
    pub const AUTHZ_HTTP_ON_TCP_PORT: &str = "W1004";

    /// A destination host that is neither a Service nor a ServiceEntry host.
    pub const HOST_NOT_FOUND: &str = "W2001";
    /// A route to a subset no DestinationRule defines for that host.
    pub const SUBSET_NOT_FOUND: &str = "W2002";
    /// A VirtualService bound to a Gateway that does not exist.
    pub const GATEWAY_NOT_FOUND: &str = "W2003";
    /// A pod runs as a service account that does not exist.
    pub const SERVICE_ACCOUNT_NOT_FOUND: &str = "W2004";
    /// A route delegates to a VirtualService that does not exist, or that
    /// has `hosts` (so is not a delegate).
    pub const DELEGATE_NOT_FOUND: &str = "W2005";
    /// A route delegates to a VirtualService not exported to its namespace.
    pub const DELEGATE_NOT_EXPORTED: &str = "W2006";
    /// A DestinationRule subset that selects no pod.
    pub const SUBSET_SELECTS_NOTHING: &str = "W3001";
    /// A VirtualService rule that an earlier rule always takes first.
    pub const ROUTE_SHADOWED: &str = "W3002";
    /// Two VirtualServices route the same host for the same gateways.
    pub const CONFLICTING_VIRTUAL_SERVICES: &str = "W3003";
    /// Two DestinationRules for the same host.
    pub const CONFLICTING_DESTINATION_RULES: &str = "W3004";
    /// A delegate VirtualService's route that is left out: it delegates
    /// again, or its matches are not within the delegating route's.
    pub const DELEGATE_ROUTE_DROPPED: &str = "W3005";
    /// A policy whose selector matches no pod.
    pub const SELECTOR_MATCHES_NOTHING: &str = "W4001";
    /// Several namespace-wide PeerAuthentications in one namespace.
    pub const CONFLICTING_PEER_AUTHENTICATIONS: &str = "W4002";
    /// A Service port whose protocol cannot be told (name, appProtocol).
    pub const PROTOCOL_UNKNOWN: &str = "W5001";
}
