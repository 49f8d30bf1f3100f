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

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::options::Settings;
use crate::{Cluster, Pod, PodSpec, Process, wait_for};

pub const ECHO_PORT: u16 = 7001;
pub const RR_PORT: u16 = 7002;
pub const HOLD_PORT: u16 = 7003;
pub const HTTP_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;

/// The load generator binary, built with `weft-bench`.
pub const LOAD_BIN: &str = "weft-bench-load";

/// Ephemeral ports of every benchmark pod: clear of the mesh's 150xx ports
/// and the servers' ports, and wide enough for 10,000 held connections.
const PORT_RANGE: &str = "16000 65535";

/// With the mesh or without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    Direct,
    Weft,
}

impl Variant {
    pub fn namespace(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Weft => "mesh",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Direct => "direct",
            Variant::Weft => "weft",
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

/// One variant's pods.
#[derive(Debug)]
struct Pods {
    client: Pod,
    local: Pod,
    remote: Pod,
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
        let (direct, weft, idle, servers) = cluster.with_logs(|cluster| {
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
            Ok((direct, weft, idle, servers))
        })?;
        let testbed = Testbed {
            _servers: servers,
            direct,
            weft,
            idle,
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
            Variant::Weft => &self.weft,
        }
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
                let args = load_args(
                    "pingpong",
                    server.addr(ECHO_PORT),
                    &[("seconds", "0.05"), ("warmup", "0")],
                );
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

fn add_pods(cluster: &Cluster, variant: Variant) -> Result<Pods> {
    let ns = variant.namespace();
    let pod = |node: &str, name: &str, sa: &str| -> Result<Pod> {
        let pod = cluster.add_pod(PodSpec::new(node, ns, name).service_account(sa))?;
        tune(&pod)?;
        Ok(pod)
    };
    Ok(Pods {
        client: pod("node-1", "client", "bench-client")?,
        local: pod("node-1", "server-local", "bench-server")?,
        remote: pod("node-2", "server-remote", "bench-server")?,
    })
}

/// The same sysctls in both variants' pods: a wide ephemeral port range and
/// `tcp_tw_reuse`, so that connection-rate runs (tens of thousands of
/// connections) and 10,000 held connections never run out of ports.
fn tune(pod: &Pod) -> Result<()> {
    pod.netns()
        .set_sysctl("ipv4/ip_local_port_range", PORT_RANGE)?;
    pod.netns().set_sysctl("ipv4/tcp_tw_reuse", "1")
}

fn start_servers(pod: &Pod, load_bin: &PathBuf, settings: &Settings) -> Result<Vec<Process>> {
    let mut serve = Command::new(load_bin);
    serve.args(["serve", "--echo", &ECHO_PORT.to_string()]);
    serve.args(["--http", &HTTP_PORT.to_string()]);
    serve.args(["--http-body", &settings.body.to_string()]);
    serve.args(["--rr", &RR_PORT.to_string()]);
    serve.args(["--rr-size", &settings.message.to_string()]);
    serve.args(["--hold", &HOLD_PORT.to_string()]);
    let serve = pod.spawn(serve)?;
    let mut iperf = Command::new("iperf3");
    iperf.args(["-s", "-p", &IPERF_PORT.to_string()]);
    let iperf = pod.spawn(iperf)?;
    let mut servers = vec![serve, iperf];
    let ports = [ECHO_PORT, HTTP_PORT, RR_PORT, HOLD_PORT, IPERF_PORT];
    wait_for(
        &format!("the servers of {} to listen on {ports:?}", pod.name()),
        Duration::from_secs(10),
        || {
            for process in servers.iter_mut() {
                if let Some(status) = process.try_status() {
                    bail!(
                        "{} exited ({status}):\n{}",
                        process.name(),
                        process.log_tail(20)
                    );
                }
            }
            let listening = pod.in_netns(listening_ports)??;
            Ok(ports.iter().all(|p| listening.contains(p)).then_some(()))
        },
    )?;
    Ok(servers)
}

/// TCP ports (v4 and v6) in state LISTEN in the calling thread's network
/// namespace.
fn listening_ports() -> Result<Vec<u16>> {
    // `thread-self`: `/proc/self/net` would show the process's namespace.
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp")?
        + &std::fs::read_to_string("/proc/thread-self/net/tcp6")?;
    Ok(table
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            // local_address is `HEXIP:HEXPORT`; state 0A is LISTEN.
            let port = fields.get(1)?.rsplit_once(':')?.1;
            (fields.get(3) == Some(&"0A")).then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect())
}

/// `weft-bench-load` sits next to `weft-bench` (or in the binaries directory).
fn locate_load_bin(bin_dir: Option<&std::path::Path>) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding weft-bench's own path")?;
    let mut candidates = vec![exe.with_file_name(LOAD_BIN)];
    if let Some(dir) = bin_dir {
        candidates.push(dir.join(LOAD_BIN));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "{LOAD_BIN} not found (looked at {candidates:?}); build it with \
                 `cargo build --release -p weft-sim --bins`"
            )
        })
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
