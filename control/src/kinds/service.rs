//! core/v1 Service: a virtual IP, ports, and a label selector choosing the
//! pods behind it.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Deserializer};

use super::ObjectMeta;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Service {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Pods whose labels include all of these back the service. Empty: no
    /// pods (endpoints are managed by hand in Kubernetes).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<ClusterIp>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<ClusterIp>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    /// Defaults to `port`.
    #[serde(default)]
    pub target_port: Option<TargetPort>,
    /// TCP (the default), UDP or SCTP; weft carries TCP only.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// Kubernetes' IntOrString for `targetPort`: a number, or the name of a
/// container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// `clusterIP`: an address, or no virtual IP (`None`: a headless service;
/// empty: Kubernetes would assign one, directory mode does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterIp {
    Ip(IpAddr),
    Headless,
}

impl Service {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    /// The service's virtual IPs (`clusterIPs`, else `clusterIP`).
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut vips = Vec::new();
        let all = self.spec.cluster_ip.iter().chain(&self.spec.cluster_ips);
        for ip in all {
            if let ClusterIp::Ip(ip) = ip
                && !vips.contains(ip)
            {
                vips.push(*ip);
            }
        }
        vips
    }

    /// Whether the selector picks a pod with these labels.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.spec.selector.is_empty()
            && self
                .spec
                .selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl ServicePort {
    pub fn is_tcp(&self) -> bool {
        matches!(self.protocol.as_deref(), None | Some("") | Some("TCP"))
    }
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let out_of_range =
            |n| serde::de::Error::custom(format_args!("targetPort {n} is out of range (1-65535)"));
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => u16::try_from(n)
                .ok()
                .filter(|n| *n != 0)
                .map(TargetPort::Number)
                .ok_or_else(|| out_of_range(n)),
            Raw::Text(s) if s.is_empty() => Err(serde::de::Error::custom(
                "targetPort is empty; give a port number or a container port name",
            )),
            // Kubernetes reads "8080" as a name that can never match; weft
            // reads the number the user meant.
            Raw::Text(s) => match s.parse::<u64>() {
                Ok(n) => u16::try_from(n)
                    .ok()
                    .filter(|n| *n != 0)
                    .map(TargetPort::Number)
                    .ok_or_else(|| out_of_range(n)),
                Err(_) => Ok(TargetPort::Name(s)),
            },
        }
    }
}

impl<'de> Deserialize<'de> for ClusterIp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "None" || text.is_empty() {
            return Ok(ClusterIp::Headless);
        }
        text.parse().map(ClusterIp::Ip).map_err(|_| {
            serde::de::Error::custom(format_args!(
                "clusterIP `{text}` is neither an IP address nor `None`"
            ))
        })
    }
}
