//! networking.istio.io ServiceEntry (services the registry does not
//! have: external hosts, VMs) and WorkloadEntry (a non-Kubernetes
//! workload). Fields follow istio/api `service_entry.proto` and
//! `workload_entry.proto`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Ignored, Invalid, ObjectMeta, Validate,
    authorization_policy::check_cidr,
    gateway::check_protocol,
    invalid,
    istio::{check_dns_label, check_host, check_port},
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceEntrySpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub resolution: Option<Resolution>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    #[serde(default)]
    pub workload_selector: Option<EntrySelector>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub target_port: Option<u32>,
}

impl ServicePort {
    /// The application protocol: the `protocol` field alone, as Istio
    /// reads a ServiceEntry port (the name plays no part).
    pub fn app_protocol(&self) -> super::Protocol {
        super::Protocol::parse(&self.protocol)
    }

    /// The port on the endpoints: `targetPort`, else the number.
    pub fn target(&self) -> u32 {
        self.target_port.filter(|t| *t != 0).unwrap_or(self.number)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: WorkloadEntrySpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    /// IP, DNS name, or `unix://` path.
    #[serde(default)]
    pub address: String,
    /// Port name → number on this workload.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub locality: String,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub service_account: String,
}

impl WorkloadEntrySpec {
    fn check(&self, at: &str, address_required: bool, e: &mut Vec<Invalid>) {
        if self.address.is_empty() {
            if address_required {
                e.push(invalid(format!("{at}.address"), "must be set"));
            }
        } else if !self.address.starts_with("unix://")
            && self.address.parse::<std::net::IpAddr>().is_err()
        {
            check_host(&self.address, false, &format!("{at}.address"), e);
        }
        for (name, port) in &self.ports {
            check_port(*port, &format!("{at}.ports[\"{name}\"]"), e);
        }
        if let Some(w) = self.weight
            && w > 4_294_967
        {
            e.push(invalid(format!("{at}.weight"), "is too large"));
        }
    }
}

impl Validate for WorkloadEntry {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        self.spec.check("spec", true, &mut e);
        e
    }
}

impl Validate for ServiceEntry {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        let spec = &self.spec;
        let resolution = spec.resolution.unwrap_or(Resolution::None);
        if spec.hosts.is_empty() {
            e.push(invalid("spec.hosts", "at least one host is required"));
        }
        for (i, h) in spec.hosts.iter().enumerate() {
            check_host(h, false, &format!("spec.hosts[{i}]"), &mut e);
            if h.starts_with('*')
                && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
            {
                e.push(invalid(
                    format!("spec.hosts[{i}]"),
                    "a wildcard host cannot be resolved with DNS; use resolution NONE",
                ));
            }
        }
        for (i, a) in spec.addresses.iter().enumerate() {
            if let Err(m) = check_cidr(a) {
                e.push(invalid(format!("spec.addresses[{i}]"), m));
            }
        }
        let mut numbers = Vec::new();
        let mut names = Vec::new();
        for (i, p) in spec.ports.iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            check_port(p.number, &format!("{at}.number"), &mut e);
            if numbers.contains(&p.number) {
                e.push(invalid(
                    format!("{at}.number"),
                    format!("port {} is listed twice", p.number),
                ));
            }
            numbers.push(p.number);
            if p.name.is_empty() {
                e.push(invalid(format!("{at}.name"), "must be set"));
            } else {
                check_dns_label(&p.name, &format!("{at}.name"), &mut e);
                if names.contains(&&p.name) {
                    e.push(invalid(
                        format!("{at}.name"),
                        format!("port name `{}` is used twice", p.name),
                    ));
                }
                names.push(&p.name);
            }
            if !p.protocol.is_empty() {
                check_protocol(&p.protocol, &format!("{at}.protocol"), &mut e);
            }
            if let Some(t) = p.target_port {
                check_port(t, &format!("{at}.targetPort"), &mut e);
            }
        }
        if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
            e.push(invalid(
                "spec.workloadSelector",
                "`workloadSelector` and `endpoints` are mutually exclusive",
            ));
        }
        if resolution == Resolution::Static
            && spec.endpoints.is_empty()
            && spec.workload_selector.is_none()
        {
            e.push(invalid(
                "spec.endpoints",
                "resolution STATIC needs `endpoints` or a `workloadSelector`",
            ));
        }
        for (i, ep) in spec.endpoints.iter().enumerate() {
            let at = format!("spec.endpoints[{i}]");
            ep.check(&at, true, &mut e);
            if resolution == Resolution::Static
                && !ep.address.is_empty()
                && !ep.address.starts_with("unix://")
                && ep.address.parse::<std::net::IpAddr>().is_err()
            {
                e.push(invalid(
                    format!("{at}.address"),
                    "resolution STATIC needs IP addresses",
                ));
            }
            for name in ep.ports.keys() {
                if !spec.ports.iter().any(|p| &p.name == name) {
                    e.push(invalid(
                        format!("{at}.ports[\"{name}\"]"),
                        format!("`{name}` is not one of the entry's port names"),
                    ));
                }
            }
        }
        e
    }
}
