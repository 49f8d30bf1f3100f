//! `weftctl proxy-config`: what one agent holds, from its admin API's
//! `/config_dump` (shaped by `weft_agent::admin`): the workloads, services
//! and policies the control plane sent it, the pods it enrolled and the
//! certificates it holds; its L7 routes, clusters and endpoints
//! ([`l7`]) and its listeners ([`listeners`]), in `istioctl
//! proxy-config`'s shapes; and its log level ([`log`], `/logging`).

mod l7;
mod listeners;
pub mod log;

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
    /// L7 routes from VirtualServices, one row per route (host, match,
    /// destinations and weights, timeout, retries).
    Routes,
    /// One row per service host, port and subset, with its
    /// DestinationRule policy (load balancer, TLS, outlier detection,
    /// connection pool).
    Clusters,
    /// Each cluster's endpoints: address, health, outlier check.
    Endpoints,
    /// The workload certificates (serial, validity, root): `certificates`
    /// in istioctl's words.
    Secret,
    /// What the agent listens on: its own ports, and 15001, 15006, 15008
    /// in each enrolled pod.
    Listeners,
    /// The agent's log level; with `--level`, changes it.
    Log,
    /// Every section of the dump.
    All,
}

impl Section {
    const EACH: [Section; 9] = [
        Section::Workloads,
        Section::Services,
        Section::Policies,
        Section::Pods,
        Section::Certificates,
        Section::Listeners,
        Section::Routes,
        Section::Clusters,
        Section::Endpoints,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Workloads => "workloads",
            Section::Services => "services",
            Section::Policies => "policies",
            Section::Pods => "pods",
            Section::Certificates => "certificates",
            Section::Routes => "routes",
            Section::Clusters => "clusters",
            Section::Endpoints => "endpoints",
            Section::Secret => "secret",
            Section::Listeners => "listeners",
            Section::Log => "log",
            Section::All => "all",
        }
    }

    /// Where the section sits in the dump (`log` is not in it).
    fn pointer(self) -> &'static str {
        match self {
            Section::Workloads => "/workloadState/workloads",
            Section::Services => "/workloadState/services",
            Section::Policies => "/workloadState/policies",
            Section::Pods => "/pods",
            Section::Certificates | Section::Secret => "/certificates",
            Section::Routes => "/l7/routes",
            Section::Clusters | Section::Endpoints => "/clusters",
            Section::Listeners => "/listeners",
            Section::Log | Section::All => "",
        }
    }

    /// Sections an older agent's dump lacks: `all` says so instead of
    /// failing.
    fn added_later(self) -> bool {
        matches!(
            self,
            Section::Routes | Section::Clusters | Section::Endpoints | Section::Listeners
        )
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
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    not_before: Option<i64>,
    #[serde(default)]
    root: Option<String>,
}

/// Parses the dump.
pub fn parse(body: &[u8]) -> Result<Value, DumpError> {
    serde_json::from_slice(body).map_err(DumpError::NotJson)
}

fn pointed(dump: &Value, section: Section) -> Result<&Value, DumpError> {
    dump.pointer(section.pointer()).ok_or(DumpError::Missing {
        pointer: section.pointer(),
    })
}

/// The section as JSON (`all`: the whole dump; `endpoints`: each
/// cluster's endpoints, one object each, naming the cluster).
pub fn section_json(dump: &Value, section: Section) -> Result<Value, DumpError> {
    match section {
        Section::Endpoints => Ok(Value::Array(l7::endpoints_json(typed(dump, section)?))),
        _ => pointed(dump, section).cloned(),
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    dump: &Value,
    section: Section,
) -> Result<Option<Vec<T>>, DumpError> {
    let value = pointed(dump, section)?;
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
        if each.added_later() && dump.pointer(each.pointer()).is_none() {
            out.push_str("not in this agent's dump (an older weft-agent?)\n");
            continue;
        }
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
        Section::Certificates | Section::Secret => match typed(dump, section)? {
            Some(list) if section == Section::Secret => secrets(list, now_unix),
            Some(list) => certificates(list, now_unix),
            None => {
                return Ok("the agent has no certificate manager yet (still starting)\n".into());
            }
        },
        Section::Routes => l7::routes(typed(dump, section)?.unwrap_or_default()),
        Section::Clusters => match typed(dump, section)? {
            Some(list) => l7::clusters(list),
            None => return Ok("the agent has no L7 proxy yet (still starting)\n".into()),
        },
        Section::Endpoints => match typed(dump, section)? {
            Some(list) => l7::endpoints(list),
            None => return Ok("the agent has no L7 proxy yet (still starting)\n".into()),
        },
        Section::Listeners => listeners::table(typed(dump, section)?.unwrap_or_default()),
        Section::Log => {
            return Ok("the log level is not in the dump: see `weftctl proxy-config log`\n".into());
        }
        Section::All => unreachable!("rendered section by section"),
    };
    if table.is_empty() {
        return Ok(format!("no {}\n", section.name()));
    }
    Ok(table.render())
}

pub(crate) fn join(items: &[String]) -> String {
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

fn secrets(list: Vec<Certificate>, now_unix: u64) -> Table {
    let mut t = Table::new([
        "RESOURCE NAME",
        "TYPE",
        "STATUS",
        "SERIAL NUMBER",
        "NOT BEFORE",
        "NOT AFTER",
        "ROOT",
    ]);
    for c in list {
        let status = if c.not_after > now_unix {
            "VALID"
        } else {
            "EXPIRED"
        };
        let not_before = c
            .not_before
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(c.issued_at);
        t.row([
            c.identity,
            "Cert Chain".to_string(),
            status.to_string(),
            c.serial.unwrap_or_else(|| "-".into()),
            utc(not_before),
            utc(c.not_after),
            c.root.unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// Unix seconds as `2026-12-02T19:04:05Z`.
pub fn utc(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
