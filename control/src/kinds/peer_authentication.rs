//! security.istio.io PeerAuthentication (v1, v1beta1): whether a workload
//! accepts plaintext. Follows istio/api `security/v1beta1/peer_authentication.proto`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ObjectMeta, selector::WorkloadSelector};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAuthentication {
    #[serde(default, rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
    #[serde(default)]
    status: super::Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// No selector: the namespace (the mesh, in the root namespace).
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Per workload port (the container port, not the service port).
    /// Needs a selector.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Inherit from the parent (namespace, then mesh); PERMISSIVE at the top.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl PeerAuthentication {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    /// The top-level mode; UNSET when `mtls` is absent.
    pub fn mode(&self) -> MtlsMode {
        self.spec.mtls.map(|m| m.mode).unwrap_or_default()
    }

    /// Namespace- or mesh-wide: no selector, or one without labels.
    pub fn is_wide(&self) -> bool {
        self.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    }
}

impl super::Validate for PeerAuthentication {
    fn validate(&self) -> Vec<super::Invalid> {
        self.check().err().into_iter().collect()
    }
}

impl PeerAuthentication {
    /// Istio's value rules for PeerAuthentication.
    fn check(&self) -> Result<(), super::Invalid> {
        use super::invalid;
        if !self.spec.port_level_mtls.is_empty() && self.is_wide() {
            return Err(invalid(
                "spec.portLevelMtls",
                "`portLevelMtls` needs a `selector` with labels: ports are per workload",
            ));
        }
        for port in self.spec.port_level_mtls.keys() {
            if *port == 0 || *port > 65535 {
                return Err(invalid(
                    format!("spec.portLevelMtls.{port}"),
                    format!("{port} is not a port number (1-65535)"),
                ));
            }
        }
        Ok(())
    }
}
