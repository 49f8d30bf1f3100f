//! `weftctl proxy-config`: what one agent holds, from its admin API's
//! `/config_dump` (shaped by `weft_agent::admin`): the workloads, services
//! and policies the control plane sent it, the pods it enrolled and the
//! certificates it holds.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::{age, table::Table};

/// A part of the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Pods (and other workloads) of the whole mesh.
    Workloads,
    /// Services and their ports.
    Services,
    /// Compiled AuthorizationPolicies and PeerAuthentications.
    Policies,
    /// Pods on this node the agent was told about by weft-cni.
    Pods,
    /// Workload certificates the agent holds.
    Certificates,
    /// Every section.
    All,
}

impl Section {
    const EACH: [Section; 5] = [
        Section::Workloads,
        Section::Services,
        Section::Policies,
        Section::Pods,
        Section::Certificates,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Workloads => "workloads",
            Section::Services => "services",
            Section::Policies => "policies",
            Section::Pods => "pods",
            Section::Certificates => "certificates",
            Section::All => "all",
        }
    }

    /// Where the section sits in the dump.
    fn pointer(self) -> &'static str {
        match self {
            Section::Workloads => "/workloadState/workloads",
            Section::Services => "/workloadState/services",
            Section::Policies => "/workloadState/policies",
            Section::Pods => "/pods",
            Section::Certificates => "/certificates",
            Section::All => "",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("the agent's /config_dump is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error(
        "the agent's /config_dump has no `{pointer}`; are weftctl and weft-agent the same version?"
    )]
    Missing { pointer: &'static str },
    #[error(
        "the agent's /config_dump `{pointer}` has an unexpected shape: {source}; are weftctl and weft-agent the same version?"
    )]
    Shape {
        pointer: &'static str,
        source: serde_json::Error,
    },
}

#[derive(Debug, Deserialize)]
struct Identity {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[derive(Debug, Deserialize)]
struct Workload {
    name: String,
    namespace: String,
    ips: Vec<String>,
    node: String,
    identity: Identity,
    hbone: bool,
    services: BTreeMap<String, BTreeMap<String, u16>>,
    policies: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Service {
    name: String,
    namespace: String,
    hostname: String,
    vips: Vec<String>,
    ports: BTreeMap<String, u16>,
}

#[derive(Debug, Deserialize)]
struct Policy {
    name: String,
    namespace: String,
    scope: String,
    action: String,
    groups: Vec<Value>,
    dry_run: bool,
    l7_ignored: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Pod {
    namespace: String,
    name: String,
    netns: String,
    enrolled: bool,
    identity: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Certificate {
    identity: String,
    pods: u64,
    issued_at: u64,
    not_after: u64,
}

/// Parses the dump.
pub fn parse(body: &[u8]) -> Result<Value, DumpError> {
    serde_json::from_slice(body).map_err(DumpError::NotJson)
}

/// The section as JSON (`all`: the whole dump).
pub fn section_json(dump: &Value, section: Section) -> Result<&Value, DumpError> {
    dump.pointer(section.pointer()).ok_or(DumpError::Missing {
        pointer: section.pointer(),
    })
}

fn typed<T: serde::de::DeserializeOwned>(
    dump: &Value,
    section: Section,
) -> Result<Option<Vec<T>>, DumpError> {
    let value = section_json(dump, section)?;
    if value.is_null() {
        return Ok(None);
    }
    serde_json::from_value(value.clone())
        .map(Some)
        .map_err(|source| DumpError::Shape {
            pointer: section.pointer(),
            source,
        })
}

/// The section as a table (`all`: every section, titled).
pub fn render(dump: &Value, section: Section, now_unix: u64) -> Result<String, DumpError> {
    if section != Section::All {
        return render_one(dump, section, now_unix);
    }
    let mut out = String::new();
    for (i, each) in Section::EACH.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}:\n", each.name().to_uppercase()));
        out.push_str(&render_one(dump, each, now_unix)?);
    }
    Ok(out)
}

fn render_one(dump: &Value, section: Section, now_unix: u64) -> Result<String, DumpError> {
    let table = match section {
        Section::Workloads => workloads(typed(dump, section)?.unwrap_or_default()),
        Section::Services => services(typed(dump, section)?.unwrap_or_default()),
        Section::Policies => policies(typed(dump, section)?.unwrap_or_default()),
        Section::Pods => match typed(dump, section)? {
            Some(list) => pods(list),
            None => return Ok("the agent is not enrolling pods yet (still starting)\n".into()),
        },
        Section::Certificates => match typed(dump, section)? {
            Some(list) => certificates(list, now_unix),
            None => {
                return Ok("the agent has no certificate manager yet (still starting)\n".into());
            }
        },
        Section::All => unreachable!("rendered section by section"),
    };
    if table.is_empty() {
        return Ok(format!("no {}\n", section.name()));
    }
    Ok(table.render())
}

fn join(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

fn workloads(list: Vec<Workload>) -> Table {
    let mut t = Table::new([
        "NAMESPACE",
        "NAME",
        "IPS",
        "NODE",
        "PROTOCOL",
        "IDENTITY",
        "SERVICES",
        "POLICIES",
    ]);
    for w in list {
        let services: Vec<String> = w
            .services
            .iter()
            .map(|(key, ports)| {
                let ports: Vec<String> = ports
                    .iter()
                    .map(|(port, target)| port_pair(port, *target))
                    .collect();
                format!("{key}:{}", ports.join("/"))
            })
            .collect();
        t.row([
            w.namespace,
            w.name,
            join(&w.ips),
            w.node,
            if w.hbone { "HBONE" } else { "TCP" }.to_string(),
            w.identity.to_string(),
            join(&services),
            join(&w.policies),
        ]);
    }
    t
}

/// `80->8080`, or `80` when the target is the same port (0).
fn port_pair(port: &str, target: u16) -> String {
    if target == 0 || port == target.to_string() {
        port.to_string()
    } else {
        format!("{port}->{target}")
    }
}

fn services(list: Vec<Service>) -> Table {
    let mut t = Table::new(["NAMESPACE", "NAME", "HOSTNAME", "VIPS", "PORTS"]);
    for s in list {
        let mut ports: Vec<(u32, String)> = s
            .ports
            .iter()
            .map(|(port, target)| (port.parse().unwrap_or(u32::MAX), port_pair(port, *target)))
            .collect();
        ports.sort();
        let ports: Vec<String> = ports.into_iter().map(|(_, p)| p).collect();
        t.row([s.namespace, s.name, s.hostname, join(&s.vips), join(&ports)]);
    }
    t
}

fn policies(list: Vec<Policy>) -> Table {
    let mut t = Table::new([
        "NAMESPACE",
        "NAME",
        "SCOPE",
        "ACTION",
        "RULES",
        "DRY-RUN",
        "NOT ENFORCED (L7)",
    ]);
    for p in list {
        t.row([
            p.namespace,
            p.name,
            p.scope,
            p.action.to_uppercase(),
            p.groups.len().to_string(),
            p.dry_run.to_string(),
            join(&p.l7_ignored),
        ]);
    }
    t
}

fn pods(list: Vec<Pod>) -> Table {
    let mut t = Table::new(["NAMESPACE", "NAME", "IN MESH", "IDENTITY", "NETNS"]);
    for p in list {
        t.row([
            p.namespace,
            p.name,
            if p.enrolled { "yes" } else { "no" }.to_string(),
            p.identity.unwrap_or_else(|| "-".into()),
            p.netns,
        ]);
    }
    t
}

fn certificates(list: Vec<Certificate>, now_unix: u64) -> Table {
    let mut t = Table::new(["IDENTITY", "PODS", "ISSUED", "EXPIRES"]);
    for c in list {
        let expires = if c.not_after > now_unix {
            format!("in {}", age(c.not_after, now_unix))
        } else {
            format!("EXPIRED {} ago", age(now_unix, c.not_after))
        };
        t.row([
            c.identity,
            c.pods.to_string(),
            format!("{} ago", age(now_unix, c.issued_at)),
            expires,
        ]);
    }
    t
}
