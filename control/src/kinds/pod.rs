//! core/v1 Pod: where a workload runs, under which identity, on which IPs
//! and ports.

use std::net::IpAddr;

use serde::Deserialize;

use super::ObjectMeta;

/// Only `metadata` and the top level are strict: a PodSpec has far more
/// fields than weft reads, and they are not checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    #[serde(default)]
    api_version: super::Ignored,
    #[serde(default)]
    kind: super::Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The node the pod is scheduled on; the CA only signs for pods on the
    /// caller's node.
    #[serde(default)]
    pub node_name: Option<String>,
    /// `serviceAccount` is the deprecated spelling Kubernetes still accepts.
    #[serde(default, alias = "serviceAccount")]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<IpAddr>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PodIp {
    pub ip: IpAddr,
}

impl Pod {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    /// `spec.serviceAccountName`, `default` when unset.
    pub fn service_account(&self) -> &str {
        match self.spec.service_account_name.as_deref() {
            None | Some("") => "default",
            Some(sa) => sa,
        }
    }

    pub fn node_name(&self) -> Option<&str> {
        self.spec.node_name.as_deref().filter(|n| !n.is_empty())
    }

    /// `status.podIPs`, or `status.podIP` when the list is empty; no
    /// duplicates, primary first.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = Vec::new();
        let candidates = self
            .status
            .pod_ip
            .iter()
            .copied()
            .chain(self.status.pod_ips.iter().map(|p| p.ip));
        for ip in candidates {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        ips
    }

    /// The number of the container port called `name`, if any container
    /// declares one.
    pub fn named_port(&self, name: &str) -> Option<u16> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    }
}

impl super::Validate for Pod {
    fn validate(&self) -> Vec<super::Invalid> {
        let mut e = Vec::new();
        for (i, c) in self.spec.containers.iter().enumerate() {
            for (j, p) in c.ports.iter().enumerate() {
                if p.container_port == 0 {
                    e.push(super::invalid(
                        format!("spec.containers[{i}].ports[{j}].containerPort"),
                        "0 is not a port number (1-65535)",
                    ));
                }
            }
        }
        e
    }
}
