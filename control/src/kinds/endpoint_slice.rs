//! discovery.k8s.io/v1 EndpointSlice: endpoints of a Service given by
//! hand (a Service without a selector) or copied from a cluster.

use serde::Deserialize;

use super::{Ignored, Invalid, ObjectMeta, Validate, invalid};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSlice {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: Option<EndpointConditions>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub target_ref: Ignored,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub hints: Ignored,
    #[serde(default)]
    pub deprecated_topology: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConditions {
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

impl Validate for EndpointSlice {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        let family = self.address_type.as_str();
        if !matches!(family, "IPv4" | "IPv6" | "FQDN") {
            e.push(invalid(
                "addressType",
                format!("`{family}` is not one of `IPv4`, `IPv6`, `FQDN`"),
            ));
        }
        for (i, ep) in self.endpoints.iter().enumerate() {
            if ep.addresses.is_empty() {
                e.push(invalid(
                    format!("endpoints[{i}].addresses"),
                    "at least one address is required",
                ));
            }
            for (j, a) in ep.addresses.iter().enumerate() {
                let ok = match family {
                    "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                    "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                    _ => true,
                };
                if !ok {
                    e.push(invalid(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("`{a}` is not an {family} address"),
                    ));
                }
            }
        }
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(n) = p.port {
                super::istio::check_port(n, &format!("ports[{i}].port"), &mut e);
            }
        }
        e
    }
}
