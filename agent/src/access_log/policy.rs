//! The access-log policies received from the control plane
//! (`weft.telemetry.v1.AccessLogPolicy`, one per namespace), and the
//! decision they make for one side of one request or connection: which
//! outputs get a line, each with which filter. Istio's scopes: the root
//! namespace's Telemetry is mesh-wide, a namespace's applies to its pods,
//! one with a selector to the pods it picks; they merge in that order as
//! istiod's `mergeLogs` merges them (see [`Policies::decide`]). Outputs
//! are MeshConfig's own (`accessLogFile`), the file providers
//! (`envoyFileAccessLog`, the built-in `envoy` among them), the
//! OpenTelemetry collectors (`envoyOtelAls`) and Envoy's access-log
//! services (`envoyHttpAls`, `envoyTcpAls`).

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, RwLock},
};

use weft_proto::telemetry::{AccessLogPolicy, AccessLogRules, Encoding, MeshAccessLog, Mode};

use super::{
    STDOUT, als::Service, entry::Headers, filter::Filter, format::Format, otel::Collector,
    sink::Sink,
};

/// Which side of the traffic a line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's agent (`reporter="source"`): Telemetry mode CLIENT.
    Client,
    /// The server's agent: mode SERVER.
    Server,
}

/// One `accessLogging` entry, compiled.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    mode: Mode,
    disabled: bool,
    filter: Option<Arc<Filter>>,
    /// The providers it names, lower-cased; empty: those of the entry
    /// before it.
    providers: Vec<String>,
}

impl Rule {
    fn applies(&self, side: Side) -> bool {
        matches!(
            (self.mode, side),
            (Mode::ClientAndServer, _)
                | (Mode::Client, Side::Client)
                | (Mode::Server, Side::Server)
        )
    }
}

/// One Telemetry's entries.
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    telemetry: String,
    rules: Vec<Rule>,
}

impl Rules {
    fn compile(r: &AccessLogRules) -> Result<Rules, String> {
        let rules = r
            .logging
            .iter()
            .map(|l| {
                let filter = match &l.filter {
                    Some(f) => match &f.expr {
                        Some(e) => Some(Arc::new(Filter::checked(f.text.clone(), e.clone())?)),
                        None => None,
                    },
                    None => None,
                };
                Ok(Rule {
                    mode: l.mode(),
                    disabled: l.disabled,
                    filter,
                    providers: l.providers.iter().map(|p| p.to_ascii_lowercase()).collect(),
                })
            })
            .collect::<Result<_, String>>()
            .map_err(|e| format!("Telemetry {}: {e}", r.telemetry))?;
        Ok(Rules {
            telemetry: r.telemetry.clone(),
            rules,
        })
    }
}

/// Where lines go and how they look: MeshConfig's own output, a file
/// provider's, or an OpenTelemetry collector.
#[derive(Debug)]
pub struct Output {
    pub to: Destination,
    pub format: Arc<Format>,
}

/// Where an output's lines go.
#[derive(Debug)]
pub enum Destination {
    File {
        /// `/dev/stdout` or a path (MeshConfig's empty `accessLogFile`:
        /// stdout, see [`Compiled::mesh_off`]).
        path: String,
        /// Opened on the first line (see [`super::AccessLog::write`]): a
        /// provider nothing names opens no file. `None`: it could not be.
        sink: OnceLock<Option<Sink>>,
    },
    /// An `envoyOtelAls` provider's: each line a log record.
    Collector(Arc<Collector>),
    /// An `envoyHttpAls` or `envoyTcpAls` provider's: each line an entry
    /// of Envoy's access-log service.
    Service(Arc<Service>),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::File { path, .. } => f.write_str(path),
            Destination::Collector(c) => write!(f, "otlp://{}:{}", c.service, c.port),
            Destination::Service(s) => write!(f, "als://{}:{}", s.service, s.port),
        }
    }
}

/// Looked up for every request and connection, by keys the control plane
/// sent: a fast hash rather than SipHash's flood resistance.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One namespace's policy, compiled.
#[derive(Debug)]
pub struct Compiled {
    /// The root's: MeshConfig's own output.
    mesh: Option<Arc<Output>>,
    /// MeshConfig's `accessLogFile` is empty: its output is written only
    /// when a Telemetry entry turns it on.
    mesh_off: bool,
    /// The root's: the providers by (lower-case) name, with their file
    /// output, collector or access-log service; `None` for one the
    /// control plane sent with none (from a newer weft-control, of a kind
    /// this agent does not know): it resolves, and gets nothing.
    providers: Map<String, Option<Arc<Output>>>,
    /// The root's: `defaultProviders.accessLogging`.
    defaults: Vec<String>,
    namespace: Option<Arc<Rules>>,
    /// Workload uid → the Telemetries that pick it, oldest first.
    workloads: Map<String, Vec<Arc<Rules>>>,
}

impl Compiled {
    /// Converts a policy; the error names what the agent cannot render.
    pub fn compile(p: &AccessLogPolicy) -> Result<Compiled, String> {
        let mesh = match &p.mesh {
            Some(m) => Some(Arc::new(
                output(m, STDOUT).map_err(|e| format!("MeshConfig's access log: {e}"))?,
            )),
            None => None,
        };
        let mut providers = Map::default();
        for provider in &p.providers {
            let name = provider.name.to_ascii_lowercase();
            let out = match (&provider.output, &provider.otel, &provider.grpc) {
                (Some(out), _, _) => Some(output(out, STDOUT)),
                (None, Some(otel), _) => {
                    Some(Collector::compile(&name, otel).map(|(c, format)| Output {
                        to: Destination::Collector(Arc::new(c)),
                        format: Arc::new(format),
                    }))
                }
                (None, None, Some(grpc)) => {
                    Some(Service::compile(&name, grpc).map(|(s, format)| Output {
                        to: Destination::Service(Arc::new(s)),
                        format: Arc::new(format),
                    }))
                }
                (None, None, None) => None,
            }
            .transpose()
            .map_err(|e| format!("access log provider {}: {e}", provider.name))?;
            providers.insert(name, out.map(Arc::new));
        }
        let mut workloads: Map<String, Vec<Arc<Rules>>> = Map::default();
        for w in &p.workloads {
            let Some(rules) = &w.rules else { continue };
            let rules = Arc::new(Rules::compile(rules)?);
            for uid in &w.workload_uids {
                workloads
                    .entry(uid.clone())
                    .or_default()
                    .push(rules.clone());
            }
        }
        Ok(Compiled {
            mesh_off: p.mesh.as_ref().is_some_and(|m| m.file.is_empty()),
            mesh,
            providers,
            defaults: p
                .default_providers
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            namespace: match &p.namespace_rules {
                Some(r) => Some(Arc::new(Rules::compile(r)?)),
                None => None,
            },
            workloads,
        })
    }

    /// Every output this policy has (the root's).
    pub(super) fn outputs(&self) -> impl Iterator<Item = &Arc<Output>> {
        self.mesh.iter().chain(self.providers.values().flatten())
    }
}

/// `file`, empty replaced by `empty` (stdout).
fn output(m: &MeshAccessLog, empty: &str) -> Result<Output, String> {
    let format = match m.encoding() {
        Encoding::Json => Format::json(&m.json)?,
        Encoding::Text => Format::text(&m.text)?,
    };
    Ok(Output {
        to: Destination::File {
            path: if m.file.is_empty() {
                empty.to_string()
            } else {
                m.file.clone()
            },
            sink: OnceLock::new(),
        },
        format: Arc::new(format),
    })
}

/// One line to write: to an output, if its filter keeps it.
#[derive(Debug, Clone)]
pub struct Line {
    pub output: Arc<Output>,
    pub filter: Option<Arc<Filter>>,
}

/// What to do for one request or connection: a line for each provider
/// that logs it (most often one).
#[derive(Debug, Clone)]
pub struct Decision {
    first: Line,
    more: Vec<Line>,
    /// The side it is for.
    pub side: Side,
}

impl Decision {
    fn one(line: Line, side: Side) -> Decision {
        Decision {
            first: line,
            more: Vec::new(),
            side,
        }
    }

    /// The lines, in the providers' name order.
    pub fn lines(&self) -> impl Iterator<Item = &Line> {
        std::iter::once(&self.first).chain(&self.more)
    }

    /// What a logged request keeps of its headers: those the formats
    /// print and the filters read.
    pub fn request_headers(&self, map: &http::HeaderMap) -> Headers {
        self.capture(map, Format::request_headers, Filter::request_headers)
    }

    /// What a logged response keeps of its headers.
    pub fn response_headers(&self, map: &http::HeaderMap) -> Headers {
        self.capture(map, Format::response_headers, Filter::response_headers)
    }

    fn capture(
        &self,
        map: &http::HeaderMap,
        format: fn(&Format) -> &[http::HeaderName],
        filter: fn(&Filter) -> &[http::HeaderName],
    ) -> Headers {
        if self.more.is_empty() {
            let line = &self.first;
            let read = line.filter.as_deref().map_or(&[][..], filter);
            return Headers::capture(map, format(&line.output.format), read);
        }
        let mut all: Vec<http::HeaderName> = Vec::new();
        for line in self.lines() {
            let read = line.filter.as_deref().map_or(&[][..], filter);
            for name in format(&line.output.format).iter().chain(read) {
                if !all.contains(name) {
                    all.push(name.clone());
                }
            }
        }
        Headers::capture(map, &all, &[])
    }

    /// Whether a line may print, or a filter read, the request's header
    /// `name`.
    pub fn wants_request_header(&self, name: &http::HeaderName) -> bool {
        self.lines().any(|line| {
            line.output.format.request_headers().contains(name)
                || line
                    .filter
                    .as_ref()
                    .is_some_and(|f| f.request_headers().contains(name))
        })
    }
}

/// The policies by namespace.
#[derive(Debug, Default)]
pub struct Policies {
    inner: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Namespace → (version, policy).
    namespaces: Map<String, (String, Arc<Compiled>)>,
    /// The root namespace's (the one carrying `mesh`).
    root: Option<Arc<Compiled>>,
    /// Merges made since the last change, by workload uid and side: a
    /// merge allocates, and Telemetries change rarely.
    merged: RwLock<Map<String, [Option<Option<Decision>>; 2]>>,
}

/// Merges kept at most (a node's pods, both sides, with room).
const MERGED: usize = 4096;

/// The provider an entry that names none acts on when there are no
/// `defaultProviders.accessLogging`: MeshConfig's own output (provider
/// names are never empty).
const MESH: &str = "";

/// What the levels say for one provider.
#[derive(Clone, Copy)]
enum Says<'a> {
    Log(Option<&'a Arc<Filter>>),
    Off,
}

impl Policies {
    /// The versions held, for `initial_resource_versions`.
    pub fn versions(&self) -> HashMap<String, String> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state
            .namespaces
            .iter()
            .map(|(n, (v, _))| (n.clone(), v.clone()))
            .collect()
    }

    /// The root namespace's policy in force, if any.
    pub fn root(&self) -> Option<Arc<Compiled>> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state.root.clone()
    }

    /// Applies an xDS response (already compiled); returns the root's
    /// policy now in force, if any (its outputs need sinks).
    pub fn apply(
        &self,
        upserts: Vec<(String, String, Compiled)>,
        removed: &[String],
    ) -> Option<Arc<Compiled>> {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for name in removed {
            state.namespaces.remove(name);
        }
        for (name, version, compiled) in upserts {
            state.namespaces.insert(name, (version, Arc::new(compiled)));
        }
        state
            .merged
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        state.root = state
            .namespaces
            .values()
            .find(|(_, c)| c.mesh.is_some())
            .map(|(_, c)| c.clone());
        state.root.clone()
    }

    /// Whether `side` of the workload `uid` in `namespace` logs, and
    /// where. `None` also before the control plane has sent the mesh's
    /// policy.
    ///
    /// Istio's merge (`mergeLogs`): the levels are the root namespace's
    /// Telemetry, the namespace's, then those whose selector picks the
    /// workload, oldest first. The providers in scope are
    /// `defaultProviders.accessLogging`, replaced by those the last level
    /// naming any names; each entry (for this side) turns its providers,
    /// or the previous entry's, on with a filter, or off. A provider sent
    /// without an output (a kind this agent does not know) gets nothing;
    /// when no provider resolves, MeshConfig's own output applies.
    pub fn decide(&self, namespace: &str, uid: &str, side: Side) -> Option<Decision> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let root = state.root.as_ref()?;
        let mesh = root.mesh.as_ref()?;
        let own = state.namespaces.get(namespace).map(|(_, c)| c);
        let workload = own
            .and_then(|c| c.workloads.get(uid))
            .map_or(&[][..], Vec::as_slice);
        // The root namespace's own pods: its rules are the mesh's.
        let own = own.filter(|c| !Arc::ptr_eq(c, root));
        let levels = || {
            root.namespace
                .iter()
                .chain(own.and_then(|c| c.namespace.as_ref()))
                .chain(workload)
                .map(|rules| rules.rules.as_slice())
        };
        let fallback = || {
            (!root.mesh_off).then(|| {
                Decision::one(
                    Line {
                        output: mesh.clone(),
                        filter: None,
                    },
                    side,
                )
            })
        };
        if levels().next().is_none() && root.defaults.is_empty() {
            return fallback();
        }
        let at = side as usize;
        let cached = state
            .merged
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .and_then(|sides| sides[at].clone());
        if let Some(decision) = cached {
            return decision;
        }
        let mut merged = state.merged.write().unwrap_or_else(|e| e.into_inner());
        if merged.len() >= MERGED {
            merged.clear();
        }
        let decision = merge(root, mesh, levels, side, fallback);
        merged.entry(uid.to_string()).or_default()[at] = Some(decision.clone());
        decision
    }
}

/// istiod's `mergeLogs` over `levels` for `side` (see
/// [`Policies::decide`]).
fn merge<'a, L>(
    root: &'a Compiled,
    mesh: &'a Arc<Output>,
    levels: impl Fn() -> L,
    side: Side,
    fallback: impl Fn() -> Option<Decision>,
) -> Option<Decision>
where
    L: Iterator<Item = &'a [Rule]>,
{
    let defaults: Vec<&str> = if root.defaults.is_empty() {
        vec![MESH]
    } else {
        root.defaults.iter().map(String::as_str).collect()
    };
    // The providers in scope, and the filter each one's last mention
    // by name sets.
    let mut in_scope = defaults.clone();
    let mut filters: Vec<(&str, Option<&Arc<Filter>>)> = Vec::new();
    for rules in levels() {
        let mut named: Vec<&str> = Vec::new();
        for rule in rules.iter().filter(|r| r.applies(side)) {
            for name in names(rule) {
                if !named.contains(&name) {
                    named.push(name);
                }
                set(&mut filters, name, rule.filter.as_ref());
            }
        }
        if !named.is_empty() {
            in_scope = named;
        }
    }
    // What each entry says, in order; with no entries, the defaults
    // log unfiltered.
    let mut said: Vec<(&str, Says)> = Vec::new();
    if levels().next().is_none() {
        said = defaults.iter().map(|d| (*d, Says::Log(None))).collect();
    }
    let mut parent = defaults;
    for rule in levels().flatten() {
        let unnamed = rule.providers.is_empty();
        let providers = if unnamed { parent.clone() } else { names(rule) };
        for &name in &providers {
            if !in_scope.contains(&name) || !rule.applies(side) {
                continue;
            }
            let says = if rule.disabled {
                Says::Off
            } else if unnamed && rule.filter.is_some() {
                // weft's reading: an entry that names no provider
                // filters the ones it inherits (Istio takes filters
                // only from entries that name their provider).
                Says::Log(rule.filter.as_ref())
            } else {
                Says::Log(get(&filters, name).flatten())
            };
            set(&mut said, name, says);
        }
        parent = providers;
    }
    // Resolved, in the providers' name order (Istio's).
    said.sort_by(|a, b| a.0.cmp(b.0));
    let mut resolved = false;
    let mut lines = Vec::new();
    for (name, says) in said {
        let output = if name == MESH {
            Some(Some(mesh))
        } else {
            root.providers.get(name).map(Option::as_ref)
        };
        // Unknown, or of a kind that logs no access: skipped.
        let Some(output) = output else { continue };
        resolved = true;
        // Sent without an output (a kind this agent does not know):
        // resolved, nothing to send.
        let Some(output) = output else { continue };
        if let Says::Log(filter) = says {
            lines.push(Line {
                output: output.clone(),
                filter: filter.cloned(),
            });
        }
    }
    if !resolved {
        return fallback();
    }
    let mut lines = lines.into_iter();
    let first = lines.next()?;
    Some(Decision {
        first,
        more: lines.collect(),
        side,
    })
}

/// The providers an entry names.
fn names(rule: &Rule) -> Vec<&str> {
    rule.providers.iter().map(String::as_str).collect()
}

/// Sets `key`'s value in a small association list.
fn set<'a, V>(list: &mut Vec<(&'a str, V)>, key: &'a str, value: V) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => list.push((key, value)),
    }
}

fn get<V: Copy>(list: &[(&str, V)], key: &str) -> Option<V> {
    list.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
