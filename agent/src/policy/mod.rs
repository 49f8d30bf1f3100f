//! Authorization, with Istio's semantics, evaluated at the destination.
//!
//! The control plane compiles AuthorizationPolicy and PeerAuthentication
//! into `istio.security.Authorization` ([`convert`]); the agent keeps them
//! in the [`crate::state::WorkloadStore`] and decides ([`eval`]): DENY
//! policies first, then, if any ALLOW policy applies to the workload, the
//! connection or request must match one. AUDIT policies only log; dry-run
//! policies are evaluated and logged, never enforced.
//!
//! Where: on a port a Service declares HTTP, per request
//! ([`evaluate_request`], with the HTTP attributes of [`http`]); on every
//! other port, once per connection ([`evaluate`]), where a rule's HTTP
//! attributes cannot be seen (an ALLOW rule that uses them never matches,
//! a DENY rule is enforced without them, as ztunnel does).

mod convert;
mod eval;
pub mod http;

pub use convert::{PolicyError, from_proto};
pub use eval::{Decision, DenyReason, evaluate, evaluate_request};
pub use http::Request;

use std::{net::IpAddr, sync::Arc};

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
    /// CUSTOM: matching requests are sent to an external authorization
    /// provider ([`Policy::ext_authz`]) before DENY and ALLOW.
    Custom,
}

/// One compiled policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    /// OR-ed: the action applies if one group matches. What is enforced
    /// per connection, where HTTP attributes cannot be seen.
    pub groups: Vec<Group>,
    /// The groups with their HTTP attributes, enforced per request on HTTP
    /// ports; `None` when the policy has no HTTP attribute (then `groups`
    /// is the whole policy).
    pub http_groups: Option<Vec<Group>>,
    pub dry_run: bool,
    /// HTTP attributes of the source policy that a node proxy cannot see.
    pub l7_ignored: Vec<String>,
    /// A RequestAuthentication's `jwtRules` (weft's extension): such a
    /// resource is not an authorization policy, see
    /// [`Self::is_request_authentication`].
    #[serde(skip)]
    pub jwt_rules: Vec<weft_proto::security::JwtRule>,
    /// A CUSTOM policy's provider (weft's extension).
    #[serde(skip)]
    pub ext_authz: Option<weft_proto::security::ExtAuthz>,
}

impl Policy {
    /// `namespace/name`, how workloads and logs refer to it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A RequestAuthentication carried as an Authorization resource
    /// (`request_authentication_<name>`): its JWT rules validate requests
    /// ([`crate::authn`]); it never takes part in a decision.
    pub fn is_request_authentication(&self) -> bool {
        !self.jwt_rules.is_empty() || self.name.starts_with("request_authentication_")
    }

    /// Compiled from a PeerAuthentication (mutual TLS required), by the
    /// names Istio gives those: a property of the connection, never of a
    /// request.
    pub fn is_peer_authentication(&self) -> bool {
        self.name == "istio_converted_static_strict"
            || self.name.starts_with("converted_peer_authentication_")
    }
}

/// AND-ed rules: one AuthorizationPolicy rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Group {
    pub rules: Vec<Vec<Match>>,
    /// The index of the policy's rule it was compiled from (`None`: not
    /// sent, the group's position stands for it).
    pub rule: Option<u32>,
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
    // HTTP attributes (only in `Policy::http_groups`).
    /// Lower-cased; matched against the authority with and without port.
    pub hosts: Vec<StringMatch>,
    pub not_hosts: Vec<StringMatch>,
    pub methods: Vec<StringMatch>,
    pub not_methods: Vec<StringMatch>,
    /// Matched against the normalised path, without its query.
    pub paths: Vec<StringMatch>,
    pub not_paths: Vec<StringMatch>,
    /// `iss/sub` of the request's validated JWT.
    pub request_principals: Vec<StringMatch>,
    pub not_request_principals: Vec<StringMatch>,
    /// `when` conditions on HTTP attributes, AND-ed.
    pub attributes: Vec<AttributeMatch>,
}

/// A `when` condition on an HTTP attribute: a value must match one of
/// `values` (if any) and none of `not_values`. An attribute with several
/// values (a list claim, the audiences, a repeated header) matches when one
/// of them does.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttributeMatch {
    pub key: http::AttributeKey,
    pub values: Vec<StringMatch>,
    pub not_values: Vec<StringMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any value at all (e.g. "has a peer identity").
    Presence,
    /// An Istio path template (`{*}`: one segment, `{**}`: any number).
    Template(http::PathTemplate),
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
            (Self::Template(template), Some(v)) => template.matches(v),
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
    /// The peer's verified identity; `None` for plaintext. Shared with
    /// the connection (`l7::inbound::Inbound::client`): an L7 request's
    /// decision takes a reference count, not a copy of three strings.
    pub src_identity: Option<Arc<Identity>>,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
}
