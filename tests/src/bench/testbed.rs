//! The benchmark cluster: two nodes, and two namespaces with identical
//! pods, `direct` (not in the mesh) and `mesh` (labelled
//! `istio.io/dataplane-mode=ambient`), so that both variants of every
//! scenario run on the same cluster in the same invocation.
//!
//! | pod | node | runs |
//! | --- | --- | --- |
//! | `client` | node-1 | the load generators (`weft-bench-load`, `iperf3 -c`), one at a time |
//! | `server-local` | node-1 | `weft-bench-load serve`, `iperf3 -s` (the same-node server) |
//! | `server-remote` | node-2 | `weft-bench-load serve`, `iperf3 -s` (the cross-node server) |
//! | `idle-<n>` (mesh only) | node-1 | nothing: they bring node-1's agent to 10 enrolled pods |
//!
//! The servers also run `weft-sim-http serve` (HTTP and gRPC `weft.test.Echo`)
//! on [`GRPC_PORT`]. In `mesh`, each server is behind two Services with the
//! same ports: `bench-l4-<local|remote>` declares them TCP (`tcp-*` names:
//! weft relays bytes, "weft L4") and `bench-l7-<local|remote>` declares them
//! HTTP and gRPC (weft terminates and routes each request, "weft L7"), with
//! a VirtualService: a match on the paths the load uses, a header set on
//! each request, and a retry policy. Only a Service's ports are L7: a pod's
//! own IP stays L4, so the HTTP scenarios address the Services' VIPs.
//!
//! When [`AUTHZ_SCENARIO`] is selected, `mesh` also has `server-authz` on
//! node-2 (the same servers as `server-remote`) behind `bench-l7-authz`, an
//! L7 Service like `bench-l7-remote` with the same VirtualService, plus a
//! RequestAuthentication (ES256, inline `jwks`) and an ALLOW
//! AuthorizationPolicy of [`AUTHZ_RULES`] HTTP rules for that pod alone:
//! the same L7 path as `bench-l7-remote`, with authorization at the
//! destination. Only then: the other scenarios see the testbed as before.
//!
//! The metrics scenarios restart both agents before each measurement, with
//! their traffic metrics on or off (see `testbed/metrics.rs`), and once
//! more after them with the setting the run started with.
//!
//! The pods, the Services and the servers they run are made in
//! `testbed/setup.rs`; the authz pod in `testbed/authz.rs`; ztunnel's in
//! `testbed/ztunnel.rs`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::options::Settings;
use super::stats::LoadReport;
use crate::{Cluster, Pod, PodSpec, Process, ServicePort, httpapp, wait_for};

mod authz;
mod metrics;
mod setup;
mod ztunnel;
use authz::add_authz;
pub use metrics::Telemetry;
use setup::{
    SERVER_LABEL, add_pods, add_services, locate_load_bin, start_servers, tune, virtual_service,
};
pub use ztunnel::Ztunnel;

pub const ECHO_PORT: u16 = 7001;
pub const RR_PORT: u16 = 7002;
pub const HOLD_PORT: u16 = 7003;
/// HTTP/1.1, `--body`-sized answers (1 KiB).
pub const HTTP_PORT: u16 = 8080;
/// HTTP/1.1, `--message`-sized answers (100 B).
pub const HTTP_SMALL_PORT: u16 = 8081;
/// `weft-sim-http serve`: HTTP/1.1, h2c and gRPC.
pub const GRPC_PORT: u16 = 9090;
pub const IPERF_PORT: u16 = 5201;

/// The path prefix of the HTTP load, which the VirtualService matches.
pub const HTTP_PATH: &str = "/bench";
/// The header the VirtualService sets on each request it routes.
const ROUTE_HEADER: &str = "x-weft-bench-route";

/// The scenario that needs `server-authz` and its policies.
pub const AUTHZ_SCENARIO: &str = "http/authz-latency/cross-node";
/// The rules of the authorization server's ALLOW policy; only the last
/// one matches the load's requests.
pub const AUTHZ_RULES: usize = 10;
/// The issuer of the tokens the RequestAuthentication accepts.
const AUTHZ_ISSUER: &str = "https://issuer.weft-bench.test";

/// The load generator binary, built with `weft-bench`.
pub const LOAD_BIN: &str = "weft-bench-load";

/// Ephemeral ports of every benchmark pod: clear of the mesh's 150xx ports
/// and the servers' ports, and wide enough for 10,000 held connections.
const PORT_RANGE: &str = "16000 65535";

/// With the mesh or without; for the HTTP and gRPC scenarios, also which
/// path through the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    Direct,
    /// Through weft; in the HTTP and gRPC scenarios, to a Service port
    /// declared TCP ("weft L4": bytes relayed).
    Weft,
    /// Through weft to a Service port declared HTTP or gRPC ("weft L7":
    /// terminated and routed per request). HTTP and gRPC scenarios only.
    WeftL7,
    /// [`Variant::WeftL7`] to `server-authz` (cross-node), whose agent
    /// validates each request's JWT and evaluates an ALLOW policy of
    /// [`AUTHZ_RULES`] HTTP rules. [`AUTHZ_SCENARIO`] only.
    WeftL7Authz,
    /// [`Variant::Weft`] with both agents restarted with the telemetry a
    /// scenario measures off: their traffic metrics and access log in the
    /// `metrics/*` scenarios, TCP health and mesh waits in
    /// `kernel-telemetry/*`; against [`Variant::Weft`] with it on.
    WeftMetricsOff,
    /// [`Variant::WeftL7`] with the agents' traffic metrics off.
    WeftL7MetricsOff,
    /// Istio's ztunnel instead of weft, on pods of their own (see
    /// `testbed/ztunnel.rs`); the L4 scenarios, with `--peer ztunnel=PATH`.
    Ztunnel,
}

impl Variant {
    pub fn namespace(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Ztunnel => ztunnel::NAMESPACE,
            _ => "mesh",
        }
    }

    /// Whether the agents record the telemetry a scenario measures (their
    /// default).
    pub fn telemetry_on(self) -> bool {
        !matches!(self, Variant::WeftMetricsOff | Variant::WeftL7MetricsOff)
    }

    /// Whether a mesh (weft, or the ztunnel peer) is on the path.
    pub fn meshed(self) -> bool {
        self != Variant::Direct
    }

    /// The name in a scenario that measures three paths (`weft` is then
    /// `weft-l4`).
    pub fn path_name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Weft => "weft-l4",
            Variant::WeftL7 => "weft-l7",
            Variant::WeftL7Authz => "weft-l7-authz",
            Variant::WeftMetricsOff => "weft-metrics-off",
            Variant::WeftL7MetricsOff => "weft-l7-metrics-off",
            Variant::Ztunnel => "ztunnel",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Direct => "direct",
            Variant::Weft => "weft",
            Variant::WeftL7 => "weft-l7",
            Variant::WeftL7Authz => "weft-l7-authz",
            Variant::WeftMetricsOff => "weft-metrics-off",
            Variant::WeftL7MetricsOff => "weft-l7-metrics-off",
            Variant::Ztunnel => "ztunnel",
        })
    }
}

/// Where the server is, seen from the client on node-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    SameNode,
    CrossNode,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::SameNode => "same-node",
            Placement::CrossNode => "cross-node",
        })
    }
}

impl Placement {
    /// `local` or `remote`: the server's name and label.
    fn server(self) -> &'static str {
        match self {
            Placement::SameNode => "local",
            Placement::CrossNode => "remote",
        }
    }
}

/// One variant's pods.
#[derive(Debug)]
struct Pods {
    client: Pod,
    local: Pod,
    remote: Pod,
}

/// The VIPs of the mesh's Services in front of the servers.
#[derive(Debug)]
struct Vips {
    l4_local: Ipv4Addr,
    l4_remote: Ipv4Addr,
    l7_local: Ipv4Addr,
    l7_remote: Ipv4Addr,
}

/// The authorization server of [`AUTHZ_SCENARIO`].
#[derive(Debug)]
pub struct Authz {
    /// `server-authz` (mesh, node-2), kept for as long as the testbed.
    _server: Pod,
    /// The VIP of `bench-l7-authz`.
    vip: Ipv4Addr,
    /// `Authorization: Bearer <token>`: a valid ES256 token, for an hour,
    /// that the policy's matching rule lets in.
    pub header: String,
}

/// The cluster, its pods and their servers. Dropping it stops the servers
/// and tears the cluster down.
#[derive(Debug)]
pub struct Testbed {
    // Servers first: they stop before the cluster goes.
    _servers: Vec<Process>,
    direct: Pods,
    weft: Pods,
    idle: Vec<Pod>,
    vips: Vips,
    /// Only when [`AUTHZ_SCENARIO`] is selected.
    authz: Option<Authz>,
    /// Whether `bench-l7-authz` lets the token in (and nothing else),
    /// checked once.
    authz_ready: OnceLock<Result<(), String>>,
    /// Istio's ztunnel and its pods, with `--peer ztunnel=PATH`.
    ztunnel: Option<Ztunnel>,
    /// Whether the L4 and L7 Services carry traffic as they should,
    /// checked once, by the first scenario that needs them.
    services_ready: OnceLock<Result<(), String>>,
    load_bin: PathBuf,
    pub cluster: Cluster,
}

// === impl Testbed ===

impl Testbed {
    /// Builds the cluster, adds the pods, starts the servers and waits
    /// until every client can reach every server of its variant.
    pub fn build(settings: &Settings, bin_dir: Option<PathBuf>) -> Result<Testbed> {
        let load_bin = locate_load_bin(bin_dir.as_deref())?;
        let mut builder = Cluster::builder().nodes(2);
        if let Some(dir) = bin_dir {
            builder = builder.bin_dir(dir);
        }
        let cluster = builder.build()?;
        let (direct, weft, idle, mut servers, vips, authz) = cluster.with_logs(|cluster| {
            cluster.add_namespace("direct", &[])?;
            cluster.add_namespace("mesh", &[("istio.io/dataplane-mode", "ambient")])?;
            let direct = add_pods(cluster, Variant::Direct)?;
            let weft = add_pods(cluster, Variant::Weft)?;
            let idle = (3..=settings.idle_pods)
                .map(|n| {
                    cluster.add_pod(
                        PodSpec::new("node-1", "mesh", &format!("idle-{n}"))
                            .service_account("bench-idle"),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let mut servers = Vec::new();
            for pods in [&direct, &weft] {
                for server in [&pods.local, &pods.remote] {
                    servers.extend(start_servers(server, &load_bin, settings)?);
                }
            }
            let vips = add_services(cluster)?;
            let authz = match settings.selected(AUTHZ_SCENARIO) {
                true => Some(add_authz(cluster, &load_bin, settings)?),
                false => None,
            };
            Ok((direct, weft, idle, servers, vips, authz))
        })?;
        let ztunnel = match &settings.ztunnel {
            Some(_) if !ztunnel::l4_selected(settings) => {
                println!("weft-bench: no L4 scenario selected: ztunnel is not started");
                None
            }
            Some(binary) => Some(
                cluster
                    .with_logs(|cluster| Ztunnel::add(cluster, binary, &load_bin, settings))
                    .context("starting the ztunnel peer")?,
            ),
            None => None,
        };
        let authz = authz.map(|(authz, processes)| {
            servers.extend(processes);
            authz
        });
        let testbed = Testbed {
            _servers: servers,
            direct,
            weft,
            idle,
            vips,
            authz,
            ztunnel,
            authz_ready: OnceLock::new(),
            services_ready: OnceLock::new(),
            load_bin,
            cluster,
        };
        testbed.cluster.with_logs(|_| testbed.wait_reachable())?;
        Ok(testbed)
    }

    pub fn client(&self, variant: Variant) -> &Pod {
        &self.pods(variant).client
    }

    pub fn server(&self, variant: Variant, placement: Placement) -> &Pod {
        let pods = self.pods(variant);
        match placement {
            Placement::SameNode => &pods.local,
            Placement::CrossNode => &pods.remote,
        }
    }

    fn pods(&self, variant: Variant) -> &Pods {
        match variant {
            Variant::Direct => &self.direct,
            Variant::Ztunnel => {
                &self
                    .ztunnel
                    .as_ref()
                    .expect(
                        "Variant::Ztunnel only runs with a ztunnel peer (see Testbed::l4_variants)",
                    )
                    .pods
            }
            _ => &self.weft,
        }
    }

    /// The node proxies of a variant's cross-node path, the client's
    /// first: weft's two agents, or the ztunnels of `client` and
    /// `server-remote`.
    pub fn cross_node_proxies(&self, variant: Variant) -> Result<Vec<(String, u32)>> {
        match variant {
            Variant::Ztunnel => {
                let proxies = self.proxies(variant)?;
                let of = |pod: &Pod| {
                    proxies
                        .iter()
                        .find(|(name, _)| name.ends_with(pod.name()))
                        .cloned()
                        .with_context(|| format!("no ztunnel for {}", pod.name()))
                };
                Ok(vec![
                    of(self.client(variant))?,
                    of(self.server(variant, Placement::CrossNode))?,
                ])
            }
            _ => self.agents(),
        }
    }

    /// Whether the testbed has the authorization server (`server-authz`
    /// on node-2), i.e. whether [`AUTHZ_SCENARIO`] was selected.
    pub fn authz_selected(&self) -> bool {
        self.authz.is_some()
    }

    /// The variants of the L4 scenarios: direct, weft, and ztunnel when
    /// the run has it as a peer.
    pub fn l4_variants(&self) -> Vec<Variant> {
        let mut variants = vec![Variant::Direct, Variant::Weft];
        if self.ztunnel.is_some() {
            variants.push(Variant::Ztunnel);
        }
        variants
    }

    /// The node proxies on a variant's path, by name, with their pids:
    /// weft's agents, each of ztunnel's proxies, none for direct.
    pub fn proxies(&self, variant: Variant) -> Result<Vec<(String, u32)>> {
        match variant {
            Variant::Direct => Ok(Vec::new()),
            Variant::Ztunnel => Ok(self.ztunnel.as_ref().map(Ztunnel::pids).unwrap_or_default()),
            _ => self.agents(),
        }
    }

    /// Where a variant's client reaches `port` of the server at
    /// `placement` in the HTTP and gRPC scenarios: direct (and ztunnel),
    /// the pod's IP (no kube-proxy here); weft, the VIP of the Service declaring the
    /// port TCP; weft-l7, the VIP of the one declaring it HTTP or gRPC
    /// (the `-metrics-off` variants as their `weft` and `weft-l7`);
    /// weft-l7-authz, `bench-l7-authz` (cross-node whatever `placement`;
    /// the unspecified address when the testbed has no authorization
    /// server, see [`Testbed::authz`]).
    pub fn service_addr(&self, variant: Variant, placement: Placement, port: u16) -> SocketAddr {
        let vip = match (variant, placement) {
            (Variant::Direct | Variant::Ztunnel, _) => {
                return self.server(variant, placement).addr(port);
            }
            (Variant::WeftL7Authz, _) => {
                self.authz.as_ref().map_or(Ipv4Addr::UNSPECIFIED, |a| a.vip)
            }
            (Variant::Weft | Variant::WeftMetricsOff, Placement::SameNode) => self.vips.l4_local,
            (Variant::Weft | Variant::WeftMetricsOff, Placement::CrossNode) => self.vips.l4_remote,
            (Variant::WeftL7 | Variant::WeftL7MetricsOff, Placement::SameNode) => {
                self.vips.l7_local
            }
            (Variant::WeftL7 | Variant::WeftL7MetricsOff, Placement::CrossNode) => {
                self.vips.l7_remote
            }
        };
        SocketAddr::from((vip, port))
    }

    /// Waits (once per run) until the L4 and L7 Services work as declared:
    /// through an L7 Service, a request carries the header its
    /// VirtualService sets, through an L4 one it does not, and the HTTP
    /// servers answer through both. Config reaches the agents
    /// asynchronously.
    pub fn services_ready(&self) -> Result<()> {
        self.services_ready
            .get_or_init(|| {
                self.cluster
                    .with_logs(|_| self.wait_services())
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(|e| anyhow::anyhow!("the L4 and L7 Services are not ready: {e}"))
    }

    /// The authorization server, once (per run) its policies are in force
    /// on node-2: requests with the token are answered `200` and requests
    /// without it `403`.
    pub fn authz(&self) -> Result<&Authz> {
        let authz = self.authz.as_ref().with_context(|| {
            format!("the testbed has no authorization server ({AUTHZ_SCENARIO} was not selected)")
        })?;
        self.services_ready()?;
        self.authz_ready
            .get_or_init(|| {
                self.cluster
                    .with_logs(|_| self.wait_authz(authz))
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(|e| anyhow::anyhow!("the authorization policy is not in force: {e}"))?;
        Ok(authz)
    }

    fn wait_authz(&self, authz: &Authz) -> Result<()> {
        let client = self.client(Variant::WeftL7Authz);
        let addr = SocketAddr::from((authz.vip, HTTP_PORT));
        let short = [("seconds", "0.05"), ("warmup", "0"), ("connections", "1")];
        let load = |header: Option<&str>| -> Result<LoadReport> {
            let mut args = load_args("http", addr, &short);
            if let Some(h) = header {
                args.extend(["--header".to_string(), h.to_string()]);
            }
            let out = client
                .run(self.load(&args), Duration::from_secs(10))?
                .check("weft-bench-load http")?;
            LoadReport::parse(&out.stdout)
        };
        wait_for(
            &format!("{addr} (bench-l7-authz) to answer 200 with the token and 403 without"),
            Duration::from_secs(60),
            || {
                let with = load(Some(&authz.header))?;
                if with.count == 0 || with.errors > 0 {
                    bail!(
                        "with the token: {} answered 200, {} not ({:?})",
                        with.count,
                        with.errors,
                        with.first_error
                    );
                }
                let without = load(None)?;
                let denied = without.first_error.as_deref() == Some("answered with status 403");
                if without.count > 0 || !denied {
                    bail!(
                        "without a token: {} answered 200, {} not ({:?})",
                        without.count,
                        without.errors,
                        without.first_error
                    );
                }
                Ok(Some(()))
            },
        )
    }

    /// Restarts the agent of node-1 (the client's node), which then starts
    /// from a fresh heap, and waits until it carries the Services' traffic
    /// again.
    pub fn restart_client_agent(&self) -> Result<()> {
        self.cluster.with_logs(|cluster| {
            cluster.node("node-1")?.restart_agent()?;
            self.wait_services()
        })
    }

    fn wait_services(&self) -> Result<()> {
        let client = self.client(Variant::WeftL7);
        for placement in [Placement::CrossNode, Placement::SameNode] {
            for variant in [Variant::Weft, Variant::WeftL7] {
                let echo = self.service_addr(variant, placement, GRPC_PORT);
                let url = format!("http://{echo}{HTTP_PATH}/route-check");
                let expected = (variant == Variant::WeftL7).then_some("l7");
                wait_for(
                    &format!(
                        "{placement}: a request to {url} ({}) to {} the header {ROUTE_HEADER}",
                        variant.path_name(),
                        if expected.is_some() {
                            "carry"
                        } else {
                            "not carry"
                        }
                    ),
                    Duration::from_secs(60),
                    || {
                        let reply = httpapp::get_one(client, &url, &["--timeout", "2"])?;
                        if reply.status != 200 {
                            bail!("answered {}: {}", reply.status, reply.body);
                        }
                        let seen = reply.seen()?;
                        let header = seen["headers"][ROUTE_HEADER].as_str();
                        if header != expected {
                            bail!("{ROUTE_HEADER} was {header:?}");
                        }
                        Ok(Some(()))
                    },
                )?;
                for port in [HTTP_PORT, HTTP_SMALL_PORT] {
                    let addr = self.service_addr(variant, placement, port);
                    let args = load_args(
                        "http",
                        addr,
                        &[("seconds", "0.05"), ("warmup", "0"), ("connections", "1")],
                    );
                    wait_for(
                        &format!("{placement}: HTTP requests to {addr} to succeed"),
                        Duration::from_secs(30),
                        || {
                            let out = client
                                .run(self.load(&args), Duration::from_secs(10))?
                                .check("weft-bench-load http")?;
                            let r = LoadReport::parse(&out.stdout)?;
                            if r.count == 0 || r.errors > 0 {
                                bail!(
                                    "{} answered, {} errors ({:?})",
                                    r.count,
                                    r.errors,
                                    r.first_error
                                );
                            }
                            Ok(Some(()))
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Pods in the mesh on node-1 (client, same-node server, idle pods).
    pub fn enrolled_on_node_1(&self) -> usize {
        2 + self.idle.len()
    }

    /// A `weft-bench-load` command.
    pub fn load(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.load_bin);
        cmd.args(args);
        cmd
    }

    /// The pid of each node's agent, by node name.
    pub fn agents(&self) -> Result<Vec<(String, u32)>> {
        self.cluster
            .nodes()
            .iter()
            .map(|n| {
                let pid = n
                    .agent_pid()
                    .with_context(|| format!("the agent of {} is not running", n.name()))?;
                Ok((n.name().to_string(), pid))
            })
            .collect()
    }

    /// Runs a short ping-pong from each client to each of its servers,
    /// retrying until it succeeds (the mesh needs its certificates first).
    fn wait_reachable(&self) -> Result<()> {
        for variant in [Variant::Direct, Variant::Weft] {
            for placement in [Placement::SameNode, Placement::CrossNode] {
                let server = self.server(variant, placement);
                let args = probe_args(server);
                wait_for(
                    &format!(
                        "{variant} {placement}: the client to reach {}",
                        server.name()
                    ),
                    Duration::from_secs(60),
                    || {
                        let out = self
                            .client(variant)
                            .run(self.load(&args), Duration::from_secs(10))?;
                        Ok(out.success().then_some(()))
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// `weft-bench-load pingpong` arguments for a 50 ms probe of `server`'s
/// echo port: whether a client reaches it at all.
fn probe_args(server: &Pod) -> Vec<String> {
    load_args(
        "pingpong",
        server.addr(ECHO_PORT),
        &[("seconds", "0.05"), ("warmup", "0")],
    )
}

/// Arguments of a `weft-bench-load` client: `<command> --addr <addr>
/// [--key value]...`.
pub fn load_args(
    command: &str,
    addr: std::net::SocketAddr,
    options: &[(&str, &str)],
) -> Vec<String> {
    let mut args = vec![command.to_string(), "--addr".to_string(), addr.to_string()];
    for (key, value) in options {
        args.push(format!("--{key}"));
        args.push(value.to_string());
    }
    args
}
