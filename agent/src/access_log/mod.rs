//! The access log: one line per HTTP request (L7) and per connection
//! (L4), on each side that logs, in Envoy's default text format as Istio
//! sets it, or as JSON with Istio's keys, or in MeshConfig's
//! `accessLogFormat`. Lines go through a bounded buffer that a thread of
//! their own writes out ([`sink`]): the proxy never waits for a write,
//! and when the output cannot keep up, lines are dropped and counted
//! (`weft_agent_access_log_dropped_total`). An `envoyOtelAls` provider's
//! lines are OpenTelemetry log records instead, sent to its collector
//! over OTLP/gRPC ([`otel`]); an `envoyHttpAls` or `envoyTcpAls`
//! provider's, entries streamed to Envoy's gRPC access-log service
//! ([`als`]).
//!
//! What is logged comes from the control plane
//! (`weft.telemetry.v1.AccessLogPolicy`, see [`policy`]): MeshConfig's
//! output and format, and the Telemetry API's `accessLogging` (on, off,
//! a filter, for the client side, the server side or both). The client's
//! agent writes the client side's line, the server's agent the server
//! side's: a request between two meshed pods makes two lines.
//!
//! The format and the filter were parsed by weft-control; here they are
//! rendered ([`format`]) and evaluated ([`filter`]) on an [`Entry`].

pub mod als;
pub mod entry;
pub mod filter;
pub mod format;
pub mod otel;
pub mod policy;
pub mod sink;
mod stable;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

pub use self::{
    entry::{Entry, Headers, Http},
    policy::{Decision, Side},
};
use self::{
    policy::{Compiled, Destination, Policies},
    sink::Sink,
};
use crate::state::WorkloadStore;

/// The agent's stdout, as MeshConfig's `accessLogFile` names it.
pub const STDOUT: &str = "/dev/stdout";

/// Lines dropped because the output could not keep up.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped so far (`weft_agent_access_log_dropped_total`).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A connection's `%CONNECTION_ID%`.
pub fn next_connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The app's address as a sidecar would see it: the app dialled through
/// the pod's loopback (eBPF sends its `connect()` to 127.0.0.1:15001), so
/// the proxy's peer is 127.0.0.1; the line shows the pod's IP instead.
pub fn app_address(
    peer: std::net::SocketAddr,
    workload: &crate::state::Workload,
) -> std::net::SocketAddr {
    match workload.ips.first() {
        Some(ip) if peer.ip().is_loopback() => std::net::SocketAddr::new(*ip, peer.port()),
        _ => peer,
    }
}

/// The policies, the sinks and the exporters, shared by every proxy of
/// the agent.
#[derive(Default)]
pub struct AccessLog {
    policies: Policies,
    /// One sink (and writer thread) per file, by path; stdout's is
    /// shared by every output that names it.
    sinks: Mutex<HashMap<String, Sink>>,
    /// Set at start, see [`AccessLog::export_with`].
    exporters: RwLock<Option<Arc<Exporters>>>,
    /// Records and entries dropped because no exporter was set yet.
    unsent: AtomicU64,
    /// Every access-log service a root policy has had that is still
    /// alive: a request or connection that began before a push keeps its
    /// decision, and with it a replaced service, which opens a stream of
    /// its own if it sends again. Each is ended at exit.
    services: Mutex<Vec<std::sync::Weak<als::Service>>>,
}

/// What sends lines that are not written to a file.
struct Exporters {
    /// Where access-log services' entries find the peers' workloads.
    store: Arc<WorkloadStore>,
    /// Records for `envoyOtelAls` collectors.
    otel: otel::Exporter,
    /// Entries for `envoyHttpAls` and `envoyTcpAls` services.
    als: als::Exporter,
}

/// The access-log services a policy's outputs send to.
fn services(policy: &policy::Compiled) -> impl Iterator<Item = &Arc<als::Service>> {
    policy.outputs().filter_map(|o| match &o.to {
        Destination::Service(service) => Some(service),
        Destination::File { .. } | Destination::Collector(_) => None,
    })
}

thread_local! {
    /// A line is rendered into a buffer of the thread's, kept for its
    /// next line.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The agent's access log (one per process, as its stdout is).
pub fn global() -> &'static AccessLog {
    static LOG: OnceLock<AccessLog> = OnceLock::new();
    LOG.get_or_init(AccessLog::default)
}

impl AccessLog {
    /// The versions held, for the xDS stream's `initial_resource_versions`.
    pub fn versions(&self) -> HashMap<String, String> {
        self.policies.versions()
    }

    /// Applies an xDS response of `AccessLogPolicy` resources, already
    /// compiled (see [`compile`]). Outputs are opened by their first line;
    /// files the new root's outputs no longer name are closed (their
    /// writers finish what was appended); access-log services' streams
    /// carry over to the providers that a push left as they were.
    pub fn apply(&self, upserts: Vec<(String, String, Compiled)>, removed: &[String]) {
        let before = self.policies.root();
        let Some(root) = self.policies.apply(upserts, removed) else {
            return;
        };
        if before.as_ref().is_none_or(|b| !Arc::ptr_eq(b, &root)) {
            for new in services(&root) {
                for old in before.iter().flat_map(|b| services(b)) {
                    new.take_stream_of(old);
                }
            }
            let mut known = self.services.lock().unwrap_or_else(|e| e.into_inner());
            known.retain(|s| s.strong_count() > 0);
            known.extend(services(&root).map(Arc::downgrade));
        }
        let used: Vec<&str> = root
            .outputs()
            .filter_map(|o| match &o.to {
                Destination::File { path, .. } => Some(path.as_str()),
                Destination::Collector(_) | Destination::Service(_) => None,
            })
            .collect();
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|file, _| used.contains(&file.as_str()));
    }

    /// Whether `side` of the workload `uid` in `namespace` logs, and how.
    pub fn decide(&self, namespace: &str, uid: &str, side: Side) -> Option<Decision> {
        self.policies.decide(namespace, uid, side)
    }

    /// Writes every line waiting, now (at exit: the writers gather for
    /// [`sink::GATHER`] before they write).
    pub fn flush(&self) {
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        for sink in sinks.values() {
            sink.flush();
        }
    }

    /// Sends the `envoyOtelAls` providers' records and the
    /// `envoyHttpAls` and `envoyTcpAls` providers' entries through new
    /// exporters that find collectors and services in `store` (their
    /// tasks start on the runtime of the first item); `node` names this
    /// agent's node to the access-log services. Until then, they are
    /// dropped (and counted).
    pub fn export_with(&self, store: Arc<WorkloadStore>, node: &str) {
        *self.exporters.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Exporters {
            store: store.clone(),
            otel: otel::Exporter::new(store.clone()),
            als: als::Exporter::with(store, als::Entries::new(node)),
        }));
    }

    fn exporters(&self) -> Option<Arc<Exporters>> {
        self.exporters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// At exit: sends the records and entries queued now, then ends the
    /// access-log services' streams and waits for the services to answer
    /// (so that the last batches reach them); waits for at most `within`
    /// in all.
    pub async fn flush_records(&self, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        if let Some(exporters) = self.exporters() {
            tokio::join!(exporters.otel.flush(within), exporters.als.flush(within));
        }
        let live: Vec<Arc<als::Service>> = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        let closing = futures::future::join_all(live.iter().map(|s| s.close()));
        let _ = tokio::time::timeout_at(deadline, closing).await;
    }

    /// Records and entries sent by the current exporters: [exported,
    /// dropped, failed].
    pub fn records(&self) -> [u64; 3] {
        let counts = self.exporters().map_or([[0; 3]; 2], |e| {
            [e.otel.stats.snapshot(), e.als.stats.snapshot()]
        });
        let unsent = self.unsent.load(Ordering::Relaxed);
        [0, 1, 2].map(|i| counts[0][i] + counts[1][i] + if i == 1 { unsent } else { 0 })
    }

    /// Writes the entry's line to each output whose filter keeps it.
    pub fn write(&self, decision: &Decision, entry: &Entry<'_>) {
        // The other side's workload, for access-log services' entries.
        let mut peer = None;
        for line in decision.lines() {
            if let Some(filter) = &line.filter
                && !filter.matches(entry)
            {
                continue;
            }
            match &line.output.to {
                Destination::File { path, sink } => {
                    let sink = sink.get_or_init(|| {
                        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
                        sink_for(&mut sinks, path)
                    });
                    if let Some(sink) = sink {
                        with_line(|buffer| {
                            line.output.format.render_into(entry, buffer);
                            sink.append(buffer);
                        });
                    }
                }
                Destination::Collector(collector) => {
                    let exporters = self.exporters.read().unwrap_or_else(|e| e.into_inner());
                    match exporters.as_ref() {
                        Some(exporters) => with_line(|buffer| {
                            let record = otel::record(&line.output.format, entry, buffer);
                            exporters.otel.submit(collector.clone(), record);
                        }),
                        None => {
                            self.unsent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Destination::Service(service) => {
                    let exporters = self.exporters.read().unwrap_or_else(|e| e.into_inner());
                    match exporters.as_ref() {
                        Some(exporters) => {
                            // Looked up once, and only for a service that
                            // logs it.
                            let peer = if service.logs_peer(decision.side) {
                                peer.get_or_insert_with(|| {
                                    als::peer(entry, decision.side, &exporters.store)
                                })
                                .as_ref()
                            } else {
                                None
                            };
                            let item = als::entry(service, entry, peer);
                            exporters.als.submit(service.clone(), item);
                        }
                        None => {
                            self.unsent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

/// Runs `f` with the thread's line buffer, emptied.
fn with_line(f: impl FnOnce(&mut Vec<u8>)) {
    LINE.with_borrow_mut(|buffer| {
        buffer.clear();
        f(buffer);
        // A line with a huge header does not keep its memory.
        if buffer.capacity() > 64 * 1024 {
            *buffer = Vec::new();
        }
    });
}

/// The sink writing to `file`, started if there is none yet. A file that
/// cannot be opened is logged and its lines go to stdout instead.
fn sink_for(sinks: &mut HashMap<String, Sink>, file: &str) -> Option<Sink> {
    if let Some(sink) = sinks.get(file) {
        return Some(sink.clone());
    }
    let out = if file == STDOUT {
        crate::log_sink::Output::stdout()
    } else {
        match crate::log_sink::Output::file(std::path::Path::new(file)) {
            Ok(out) => out,
            Err(err) => {
                tracing::warn!(file, error = %err, "cannot open the access log file; writing its lines to stdout");
                // Kept under the file's name too, so that it is found,
                // and closed, as the file's.
                let stdout = sink_for(sinks, STDOUT)?;
                sinks.insert(file.to_string(), stdout.clone());
                return Some(stdout);
            }
        }
    };
    match Sink::start(out) {
        Ok(sink) => {
            tracing::info!(file, "access log output");
            sinks.insert(file.to_string(), sink.clone());
            Some(sink)
        }
        Err(err) => {
            tracing::warn!(file, error = %err, "cannot start an access log thread; no lines for this output");
            None
        }
    }
}

/// An L4 connection's upstream cluster, as Istio names it (formatted only
/// when the line is written).
#[derive(Debug, Clone, Copy)]
pub enum Cluster<'a> {
    /// `outbound|<port>||<service host>`.
    Outbound(u16, &'a str),
    /// `inbound|<port>||`.
    Inbound(u16),
    /// `PassthroughCluster`: not a service.
    Passthrough,
}

impl std::fmt::Display for Cluster<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cluster::Outbound(port, host) => write!(f, "outbound|{port}||{host}"),
            Cluster::Inbound(port) => write!(f, "inbound|{port}||"),
            Cluster::Passthrough => f.write_str("PassthroughCluster"),
        }
    }
}

/// One L4 connection as one side saw it, when it ended.
pub struct Tcp<'a> {
    pub side: Side,
    /// The pod whose side this is (its Telemetry scope).
    pub workload: &'a crate::state::Workload,
    pub started: std::time::Instant,
    /// From the downstream (the client's app, or the peer proxy).
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub upstream_host: Option<std::net::SocketAddr>,
    /// The local address of the connection to `upstream_host`.
    pub upstream_local: Option<std::net::SocketAddr>,
    /// The workload behind `upstream_host`, when the client side chose
    /// one (else an access-log service's entry looks it up by address).
    pub upstream_workload: Option<&'a std::sync::Arc<crate::state::Workload>>,
    pub cluster: Cluster<'a>,
    pub downstream_local: Option<std::net::SocketAddr>,
    pub downstream_remote: Option<std::net::SocketAddr>,
    /// The client's proven identity (server side, HBONE).
    pub peer_identity: Option<&'a crate::state::Identity>,
    pub mtls: bool,
    /// The downstream, or the upstream made, was HBONE's TLS.
    pub downstream_tls: bool,
    pub upstream_tls: bool,
    pub flags: crate::l7::reply::Flags,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub failure: Option<&'a dyn std::fmt::Display>,
    /// The rule that refused or closed it (`ns[NS]-policy[NAME]-rule[N]`),
    /// for `%CONNECTION_TERMINATION_DETAILS%`.
    pub denied_rule: Option<&'a str>,
}

/// Writes an L4 connection's line, if its side logs. Nothing is
/// formatted when it does not.
pub fn tcp(t: &Tcp<'_>) {
    let log = global();
    let Some(decision) = log.decide(&t.workload.namespace, &t.workload.uid, t.side) else {
        return;
    };
    let duration = t.started.elapsed();
    let cluster = t.cluster.to_string();
    let failure = t.failure.map(ToString::to_string).unwrap_or_default();
    let mut e = Entry::new(
        std::time::SystemTime::now()
            .checked_sub(duration)
            .unwrap_or(std::time::UNIX_EPOCH),
        duration,
    );
    e.flags = t.flags;
    e.denied_rule = t.denied_rule;
    e.transport_failure = &failure;
    e.bytes_received = t.bytes_received;
    e.bytes_sent = t.bytes_sent;
    e.upstream_host = t.upstream_host;
    e.upstream_local = t.upstream_local;
    e.upstream_workload = t.upstream_workload;
    e.upstream_cluster = &cluster;
    e.downstream_local = t.downstream_local;
    e.downstream_remote = t.downstream_remote;
    e.peer_identity = t.peer_identity;
    e.local_identity = Some(&t.workload.identity);
    e.connection_id = Some(next_connection_id());
    e.mtls = t.mtls;
    e.downstream_tls = t.downstream_tls;
    e.upstream_tls = t.upstream_tls;
    log.write(&decision, &e);
}

/// Converts a resource (for the xDS client): the error names what the
/// agent cannot render.
pub fn compile(p: &weft_proto::telemetry::AccessLogPolicy) -> Result<Compiled, String> {
    Compiled::compile(p)
}
