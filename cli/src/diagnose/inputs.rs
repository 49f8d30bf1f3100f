//! What diagnose reads: the control plane's objects (`/debug/objects`),
//! its agents' sync state (`/debug/syncz`) and settings (`/debug/config`),
//! and each involved node's agent (`/config_dump`, `/stats/prometheus`).
//! The shapes here are the fields diagnose uses, no more.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::{
    http::{Endpoint, HttpError},
    proxy_status::{self, Syncz},
};

pub type Labels = BTreeMap<String, String>;

/// One object of `/debug/objects` with its kind's projected spec.
#[derive(Debug, Clone, Deserialize)]
pub struct Item<S> {
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub spec: S,
}

impl<S> Item<S> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub node: Option<String>,
    #[serde(default)]
    pub service_account: String,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub selector: Labels,
    #[serde(default)]
    pub vips: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub target_port: Value,
    pub app_protocol: Option<String>,
    #[serde(default)]
    pub selected_protocol: String,
}

impl ServicePort {
    /// Istio's protocol selection made this port HTTP (routes and
    /// per-request policy apply).
    pub fn is_http(&self) -> bool {
        matches!(self.selected_protocol.as_str(), "HTTP" | "HTTP2" | "GRPC")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tcp: Vec<L4Route>,
    #[serde(default)]
    pub tls: Vec<L4Route>,
    /// Namespaces that see it (empty or `*`: all; `.`: its own).
    #[serde(default, rename = "exportTo")]
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub matches: usize,
    #[serde(default)]
    pub route: Vec<Option<RouteDestination>>,
    #[serde(default)]
    pub redirect: bool,
    #[serde(default)]
    pub direct_response: bool,
    #[serde(default)]
    pub delegate: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct L4Route {
    #[serde(default)]
    pub route: Vec<Option<RouteDestination>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RouteDestination {
    pub host: String,
    #[serde(default)]
    pub subset: String,
    pub port: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces that see the rule (empty or `*`: all; `.`: its own).
    #[serde(default, rename = "exportTo")]
    pub export_to: Vec<String>,
    /// Whether it selects workloads: such a rule is for sidecars, and no
    /// client of weft's gets it.
    #[serde(default, rename = "workloadSelector")]
    pub workload_selector: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    pub selector: Option<Labels>,
    pub mode: String,
    #[serde(default)]
    pub port_level_mtls: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    pub selector: Option<Labels>,
    #[serde(default)]
    pub target_ref: bool,
    pub action: String,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub to: Vec<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// The control plane's objects, by kind.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub namespaces: Vec<Item<Value>>,
    pub pods: Vec<Item<PodSpec>>,
    pub services: Vec<Item<ServiceSpec>>,
    pub service_entries: Vec<Item<ServiceEntrySpec>>,
    pub virtual_services: Vec<Item<VirtualServiceSpec>>,
    pub destination_rules: Vec<Item<DestinationRuleSpec>>,
    pub peer_authentications: Vec<Item<PeerAuthenticationSpec>>,
    pub authorization_policies: Vec<Item<AuthorizationPolicySpec>>,
}

impl Objects {
    /// Parses `/debug/objects`.
    pub fn parse(body: &[u8]) -> Result<Objects, serde_json::Error> {
        #[derive(Deserialize)]
        struct List {
            objects: Vec<Value>,
        }
        let list: List = serde_json::from_slice(body)?;
        let mut out = Objects::default();
        for o in list.objects {
            let kind = o["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Namespace" => out.namespaces.push(serde_json::from_value(o)?),
                "Pod" => out.pods.push(serde_json::from_value(o)?),
                "Service" => out.services.push(serde_json::from_value(o)?),
                "ServiceEntry" => out.service_entries.push(serde_json::from_value(o)?),
                "VirtualService" => out.virtual_services.push(serde_json::from_value(o)?),
                "DestinationRule" => out.destination_rules.push(serde_json::from_value(o)?),
                "PeerAuthentication" => out.peer_authentications.push(serde_json::from_value(o)?),
                "AuthorizationPolicy" => {
                    out.authorization_policies.push(serde_json::from_value(o)?)
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// A namespace's labels (none when the namespace is not declared).
    pub fn namespace_labels(&self, name: &str) -> Option<&Labels> {
        self.namespaces
            .iter()
            .find(|n| n.name == name)
            .map(|n| &n.labels)
    }
}

/// The parts of an agent's `/config_dump` diagnose reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentDump {
    #[serde(rename = "workloadState")]
    pub state: AgentState,
    #[serde(default)]
    pub pods: Option<Vec<AgentPod>>,
    #[serde(default)]
    pub certificates: Vec<AgentCertificate>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentState {
    #[serde(default)]
    pub workloads: Vec<AgentWorkload>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentWorkload {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub node: String,
    pub identity: AgentIdentity,
    pub hbone: bool,
    /// Service key (`ns/hostname`) → service port → target port.
    #[serde(default)]
    pub services: BTreeMap<String, BTreeMap<String, u16>>,
    #[serde(default)]
    pub names: WorkloadNames,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentIdentity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkloadNames {
    #[serde(default)]
    pub workload: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentPod {
    pub namespace: String,
    pub name: String,
    pub enrolled: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentCertificate {
    pub identity: String,
    pub not_after: u64,
}

/// Why an agent could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// No connection: timed out or no route (the node or the path to it
    /// is down).
    Unreachable(String),
    /// Connected, but no answer in time (the agent is stopped or hung).
    NoAnswer(String),
    /// Nothing listens there, or no address is known: not checked.
    NotReadable(String),
    /// It answered something diagnose cannot read.
    Other(String),
}

impl AgentError {
    /// Sorted by what it says about the node; short texts (the hint of
    /// `HttpError` is for `proxy-config`, not for a line of diagnose).
    fn from_http(err: HttpError) -> AgentError {
        match err {
            HttpError::Connect { addr, cause, .. } => {
                let text = format!("{addr}: {}", io_words(&cause));
                if cause.kind() == std::io::ErrorKind::ConnectionRefused {
                    AgentError::NotReadable(text)
                } else {
                    AgentError::Unreachable(text)
                }
            }
            HttpError::Timeout {
                addr,
                path,
                timeout,
                ..
            } => AgentError::NoAnswer(format!(
                "{addr} did not answer GET {path} within {timeout:?}"
            )),
            err @ (HttpError::BadAddress { .. } | HttpError::Resolve { .. }) => {
                AgentError::NotReadable(err.to_string())
            }
            err => AgentError::Other(err.to_string()),
        }
    }
}

fn io_words(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused",
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            "no answer to the connection (timed out)"
        }
        std::io::ErrorKind::HostUnreachable => "host unreachable",
        std::io::ErrorKind::NetworkUnreachable => "network unreachable",
        _ => "cannot connect",
    }
}

/// One node's agent, as read.
#[derive(Debug, Clone)]
pub struct AgentView {
    /// The admin address used.
    pub addr: String,
    pub dump: Result<AgentDump, AgentError>,
    /// `/stats/prometheus`, classic text format.
    pub metrics: Result<String, AgentError>,
}

/// Everything the checks read.
#[derive(Debug, Default)]
pub struct Inputs {
    pub root_namespace: String,
    pub trust_domain: String,
    pub domain_suffix: String,
    pub objects: Objects,
    pub syncz: Option<Syncz>,
    /// Node → its agent, for the nodes involved.
    pub agents: BTreeMap<String, AgentView>,
    /// Seconds since the Unix epoch, when read.
    pub now_unix: u64,
}

impl Inputs {
    /// A workload as any agent's dump has it.
    pub fn agent_workload(&self, namespace: &str, name: &str) -> Option<&AgentWorkload> {
        self.agents
            .values()
            .filter_map(|a| a.dump.as_ref().ok())
            .flat_map(|d| &d.state.workloads)
            .find(|w| w.namespace == namespace && w.name == name)
    }
}

/// Where to read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The control plane's debug endpoint.
    pub control: Endpoint,
    /// Node → agent admin address, given with `--agent`.
    pub agents: BTreeMap<String, String>,
    /// Admin port of agents found through the control plane's streams.
    pub agent_port: u16,
    pub agent_hint: &'static str,
}

/// Why diagnose cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "{what} at {addr} sent {path} in an unexpected shape: {source}; are weftctl and weft-control the same version?"
    )]
    Shape {
        what: &'static str,
        addr: String,
        path: &'static str,
        source: serde_json::Error,
    },
}

/// Reads the control plane's view.
pub fn control(sources: &Sources, now_unix: u64) -> Result<Inputs, FetchError> {
    let shape = |path: &'static str| {
        let addr = sources.control.addr.clone();
        let what = sources.control.what;
        move |source| FetchError::Shape {
            what,
            addr,
            path,
            source,
        }
    };
    let objects =
        Objects::parse(&sources.control.get("/debug/objects")?).map_err(shape("/debug/objects"))?;
    let syncz = proxy_status::parse(&sources.control.get("/debug/syncz")?)
        .map_err(shape("/debug/syncz"))?;
    let config: Value = serde_json::from_slice(&sources.control.get("/debug/config")?)
        .map_err(shape("/debug/config"))?;
    let text = |key: &str, default: &str| {
        config[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    Ok(Inputs {
        root_namespace: text("root_namespace", "istio-system"),
        trust_domain: text("trust_domain", "cluster.local"),
        domain_suffix: text("domain_suffix", "cluster.local"),
        objects,
        syncz: Some(syncz),
        agents: BTreeMap::new(),
        now_unix,
    })
}

/// Reads the agents of `nodes`, in parallel (a hung agent costs one
/// timeout, not one per node).
pub fn agents(inputs: &mut Inputs, sources: &Sources, nodes: &[String]) {
    let jobs: Vec<(String, Option<String>)> = nodes
        .iter()
        .map(|node| (node.clone(), agent_addr(inputs, sources, node)))
        .collect();
    let views: Vec<(String, AgentView)> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(node, addr)| {
                let control = &sources.control;
                let hint = sources.agent_hint;
                scope.spawn(move || {
                    let view = read_agent(&node, addr, control, hint);
                    (node, view)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("agent reader panicked"))
            .collect()
    });
    inputs.agents.extend(views);
}

/// `--agent NODE=ADDR`, else the address the node's xDS stream comes
/// from, at the admin port.
pub fn agent_addr(inputs: &Inputs, sources: &Sources, node: &str) -> Option<String> {
    if let Some(addr) = sources.agents.get(node) {
        return Some(addr.clone());
    }
    let peer = inputs
        .syncz
        .as_ref()?
        .agents
        .iter()
        .rev()
        .find(|s| s.node == node)?
        .peer
        .clone()?;
    let host = match peer.rsplit_once(':') {
        Some((host, _)) => host.to_string(),
        None => peer,
    };
    Some(format!("{host}:{}", sources.agent_port))
}

fn read_agent(
    node: &str,
    addr: Option<String>,
    control: &Endpoint,
    hint: &'static str,
) -> AgentView {
    let Some(addr) = addr else {
        let missing = AgentError::NotReadable(format!(
            "no agent on {node} is connected to the control plane and no --agent {node}=ADDR was given"
        ));
        return AgentView {
            addr: String::new(),
            dump: Err(missing.clone()),
            metrics: Err(missing),
        };
    };
    let endpoint = Endpoint {
        addr: addr.clone(),
        what: "the agent's admin endpoint",
        hint,
        timeout: control.timeout,
    };
    let dump = endpoint
        .get("/config_dump")
        .map_err(AgentError::from_http)
        .and_then(|body| {
            serde_json::from_slice::<AgentDump>(&body).map_err(|e| {
                AgentError::Other(format!(
                    "the agent at {addr} sent /config_dump in an unexpected shape: {e}"
                ))
            })
        });
    // A node that did not answer once will not answer twice: do not pay
    // the timeout again.
    let metrics = match &dump {
        Err(err @ (AgentError::Unreachable(_) | AgentError::NoAnswer(_))) => Err(err.clone()),
        _ => endpoint
            .get("/stats/prometheus")
            .map_err(AgentError::from_http)
            .map(|body| String::from_utf8_lossy(&body).into_owned()),
    };
    AgentView {
        addr,
        dump,
        metrics,
    }
}
