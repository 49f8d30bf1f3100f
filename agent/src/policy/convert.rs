//! From `istio.security.Authorization` to [`Policy`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_proto::security::{self as pb, string_match::MatchType};

use super::{
    Action, AttributeMatch, Cidr, Group, Match, Policy, Scope, StringMatch,
    http::{AttributeKey, PathTemplate},
};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {policy}: address of {len} bytes (expected 4 or 16)")]
    Address { policy: String, len: usize },
    #[error("policy {policy}: prefix length {length} is too long for {addr}")]
    Prefix {
        policy: String,
        addr: IpAddr,
        length: u32,
    },
    #[error("policy {policy}: port {port} is out of range")]
    Port { policy: String, port: u32 },
    #[error("policy {policy}: unknown {what} value {value}")]
    Enum {
        policy: String,
        what: &'static str,
        value: i32,
    },
}

/// Converts one Authorization; every value is checked, so a malformed
/// policy is NACKed as a whole rather than half-applied.
pub fn from_proto(authz: pb::Authorization) -> Result<Policy, PolicyError> {
    let name = format!("{}/{}", authz.namespace, authz.name);
    let scope = match pb::Scope::try_from(authz.scope) {
        Ok(pb::Scope::Global) => Scope::Global,
        Ok(pb::Scope::Namespace) => Scope::Namespace,
        Ok(pb::Scope::WorkloadSelector) => Scope::WorkloadSelector,
        Err(_) => {
            return Err(PolicyError::Enum {
                policy: name,
                what: "scope",
                value: authz.scope,
            });
        }
    };
    // An AUDIT policy travels as a dry-run DENY with weft's `audit` flag
    // (what other clients read as "log, do not enforce").
    let action = match pb::Action::try_from(authz.action) {
        // CUSTOM travels as a dry-run DENY with weft's provider.
        _ if authz.ext_authz.is_some() => Action::Custom,
        Ok(pb::Action::Allow) => Action::Allow,
        Ok(pb::Action::Deny) if authz.audit => Action::Audit,
        Ok(pb::Action::Deny) => Action::Deny,
        Err(_) => {
            return Err(PolicyError::Enum {
                policy: name,
                what: "action",
                value: authz.action,
            });
        }
    };
    let groups = convert_groups(&name, authz.groups)?;
    // Without HTTP attributes the policy is the same per request.
    let http_groups = if authz.l7_attributes_ignored.is_empty() {
        None
    } else {
        Some(convert_groups(&name, authz.http_groups)?)
    };
    Ok(Policy {
        name: authz.name,
        namespace: authz.namespace,
        scope,
        action,
        groups,
        http_groups,
        // Carried as dry-run for other clients; weft enforces both.
        dry_run: authz.dry_run && !authz.audit && authz.ext_authz.is_none(),
        l7_ignored: authz.l7_attributes_ignored,
        jwt_rules: authz.jwt_rules,
        ext_authz: authz.ext_authz,
    })
}

fn convert_groups(policy: &str, groups: Vec<pb::Group>) -> Result<Vec<Group>, PolicyError> {
    groups
        .into_iter()
        .map(|group| {
            let rules = group
                .rules
                .into_iter()
                .map(|rules| {
                    rules
                        .matches
                        .into_iter()
                        .map(|m| convert_match(policy, m))
                        .collect()
                })
                .collect::<Result<Vec<Vec<Match>>, _>>()?;
            Ok(Group {
                rules,
                rule: group.rule,
            })
        })
        .collect()
}

fn strings(list: Vec<pb::StringMatch>) -> Vec<StringMatch> {
    list.into_iter()
        .filter_map(|m| match m.match_type? {
            MatchType::Exact(v) => Some(StringMatch::Exact(v)),
            MatchType::Prefix(v) => Some(StringMatch::Prefix(v)),
            MatchType::Suffix(v) => Some(StringMatch::Suffix(v)),
            MatchType::Presence(()) => Some(StringMatch::Presence),
            MatchType::PathTemplate(v) => Some(StringMatch::Template(PathTemplate::parse(&v))),
        })
        .collect()
}

fn accounts(list: Vec<pb::ServiceAccountMatch>) -> Vec<(String, String)> {
    list.into_iter()
        .map(|sa| (sa.namespace, sa.service_account))
        .collect()
}

fn cidrs(policy: &str, list: Vec<pb::Address>) -> Result<Vec<Cidr>, PolicyError> {
    list.into_iter()
        .map(|a| {
            let addr = match a.address.len() {
                4 => IpAddr::V4(Ipv4Addr::new(
                    a.address[0],
                    a.address[1],
                    a.address[2],
                    a.address[3],
                )),
                16 => {
                    let octets: [u8; 16] = a.address.as_slice().try_into().expect("length checked");
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
                len => {
                    return Err(PolicyError::Address {
                        policy: policy.to_string(),
                        len,
                    });
                }
            };
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if a.length > max {
                return Err(PolicyError::Prefix {
                    policy: policy.to_string(),
                    addr,
                    length: a.length,
                });
            }
            Ok(Cidr {
                addr,
                prefix: a.length as u8,
            })
        })
        .collect()
}

fn ports(policy: &str, list: Vec<u32>) -> Result<Vec<u16>, PolicyError> {
    list.into_iter()
        .map(|p| {
            u16::try_from(p).map_err(|_| PolicyError::Port {
                policy: policy.to_string(),
                port: p,
            })
        })
        .collect()
}

fn convert_match(policy: &str, m: pb::Match) -> Result<Match, PolicyError> {
    Ok(Match {
        namespaces: strings(m.namespaces),
        not_namespaces: strings(m.not_namespaces),
        service_accounts: accounts(m.service_accounts),
        not_service_accounts: accounts(m.not_service_accounts),
        principals: strings(m.principals),
        not_principals: strings(m.not_principals),
        source_ips: cidrs(policy, m.source_ips)?,
        not_source_ips: cidrs(policy, m.not_source_ips)?,
        destination_ips: cidrs(policy, m.destination_ips)?,
        not_destination_ips: cidrs(policy, m.not_destination_ips)?,
        destination_ports: ports(policy, m.destination_ports)?,
        not_destination_ports: ports(policy, m.not_destination_ports)?,
        hosts: strings(m.hosts),
        not_hosts: strings(m.not_hosts),
        methods: strings(m.methods),
        not_methods: strings(m.not_methods),
        paths: strings(m.paths),
        not_paths: strings(m.not_paths),
        request_principals: strings(m.request_principals),
        not_request_principals: strings(m.not_request_principals),
        attributes: m
            .attributes
            .into_iter()
            .map(|a| AttributeMatch {
                key: AttributeKey::parse(&a.key),
                values: strings(a.values),
                not_values: strings(a.not_values),
            })
            .collect(),
    })
}
