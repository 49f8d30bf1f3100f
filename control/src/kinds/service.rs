//! core/v1 Service: a virtual IP, ports, and a label selector choosing the
//! pods behind it.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Deserializer};

use super::ObjectMeta;

/// `metadata` and the top level are strict; fields of the spec that weft
/// does not read (type, sessionAffinity, ...) are not checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    api_version: super::Ignored,
    #[serde(default)]
    kind: super::Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
    #[serde(default)]
    status: super::Ignored,
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

    /// The application protocol Istio selects for this port.
    pub fn app_protocol(&self) -> super::Protocol {
        super::Protocol::of_service_port(
            u32::from(self.port),
            self.name.as_deref().unwrap_or(""),
            self.protocol.as_deref().filter(|p| !p.is_empty()),
            self.app_protocol.as_deref(),
        )
    }
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntOrStringVisitor)
    }
}

/// Kubernetes' IntOrString.
struct IntOrStringVisitor;

fn port_number<E: serde::de::Error>(n: u64) -> Result<TargetPort, E> {
    u16::try_from(n)
        .ok()
        .filter(|n| *n != 0)
        .map(TargetPort::Number)
        .ok_or_else(|| E::custom(format_args!("targetPort {n} is out of range (1-65535)")))
}

impl serde::de::Visitor<'_> for IntOrStringVisitor {
    type Value = TargetPort;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a port number or a container port name")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<TargetPort, E> {
        port_number(n)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<TargetPort, E> {
        Err(E::custom(format_args!(
            "targetPort {n} is out of range (1-65535)"
        )))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TargetPort, E> {
        if s.is_empty() {
            return Err(E::custom(
                "targetPort is empty; give a port number or a container port name",
            ));
        }
        // Kubernetes reads "8080" as a name that can never match; weft
        // reads the number the user meant.
        match s.parse::<u64>() {
            Ok(n) => port_number(n),
            Err(_) => Ok(TargetPort::Name(s.to_string())),
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

impl super::Validate for Service {
    fn validate(&self) -> Vec<super::Invalid> {
        let mut e = Vec::new();
        let mut names = Vec::new();
        for (i, p) in self.spec.ports.iter().enumerate() {
            if p.port == 0 {
                e.push(super::invalid(
                    format!("spec.ports[{i}].port"),
                    "0 is not a port number (1-65535)",
                ));
            }
            if let Some(name) = &p.name {
                if names.contains(&name) {
                    e.push(super::invalid(
                        format!("spec.ports[{i}].name"),
                        format!("port name `{name}` is used twice"),
                    ));
                }
                names.push(name);
            } else if self.spec.ports.len() > 1 {
                e.push(super::invalid(
                    format!("spec.ports[{i}].name"),
                    "with more than one port, every port needs a name",
                ));
            }
        }
        e
    }
}
