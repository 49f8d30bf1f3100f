//! L4 authorization, with Istio's semantics, evaluated at the destination
//! on every inbound connection (HBONE and plaintext).
//!
//! The control plane compiles AuthorizationPolicy and PeerAuthentication
//! into `istio.security.Authorization` ([`convert`]); the agent keeps them
//! in the [`crate::state::WorkloadStore`] and decides per connection
//! ([`eval`]): DENY policies first, then, if any ALLOW policy applies to the
//! workload, the connection must match one. AUDIT policies only log;
//! dry-run policies are evaluated and logged, never enforced.

mod convert;
mod eval;

pub use convert::{PolicyError, from_proto};
pub use eval::{Decision, DenyReason, evaluate};

use std::net::IpAddr;

use crate::state::Identity;

/// Which workloads a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scope {
    /// Every workload in the mesh (root namespace, no selector).
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// The workloads that name the policy (their `authorization_policies`).
    WorkloadSelector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Action {
    Allow,
    Deny,
    Audit,
}

/// One compiled policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    /// OR-ed: the action applies if one group matches.
    pub groups: Vec<Group>,
    pub dry_run: bool,
    /// HTTP attributes of the source policy that a node proxy cannot see.
    pub l7_ignored: Vec<String>,
}

impl Policy {
    /// `namespace/name`, how workloads and logs refer to it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// AND-ed rules.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Group {
    pub rules: Vec<Vec<Match>>,
}

/// Values of one kind are OR-ed; the kinds present are AND-ed; a `not_`
/// list matches when none of its values does.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Match {
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub service_accounts: Vec<(String, String)>,
    pub not_service_accounts: Vec<(String, String)>,
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub source_ips: Vec<Cidr>,
    pub not_source_ips: Vec<Cidr>,
    pub destination_ips: Vec<Cidr>,
    pub not_destination_ips: Vec<Cidr>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any value at all (e.g. "has a peer identity").
    Presence,
}

impl StringMatch {
    /// `None`: the attribute is absent (a plaintext peer has no identity).
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (_, None) => false,
            (Self::Presence, Some(_)) => true,
            (Self::Exact(want), Some(v)) => v == want,
            (Self::Prefix(want), Some(v)) => v.starts_with(want.as_str()),
            (Self::Suffix(want), Some(v)) => v.ends_with(want.as_str()),
        }
    }
}

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What a policy decision is made on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's verified identity; `None` for plaintext.
    pub src_identity: Option<Identity>,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
}
