//! Istio's ztunnel as a third variant of the L4 scenarios (`--peer
//! ztunnel=PATH`): the same pods as `direct` and `mesh` (a client on
//! node-1, servers on node-1 and node-2), in a namespace of their own
//! labelled `istio.io/dataplane-mode=ambient`, each with a ztunnel of its
//! own configured by weft-control.
//!
//! How ztunnel runs here, and why:
//! - In its `dedicated` proxy mode, one ztunnel inside each pod's network
//!   namespace (and cgroup), as Istio's own tests run it. Its `shared`
//!   mode (one per node) needs istio-cni to hand it the pods' network
//!   namespaces over its ZDS protocol, which weft does not speak; the data
//!   path (HBONE, its connection pool, its TLS) is the same code.
//! - Outbound capture is an iptables `REDIRECT` of the pod's TCP to
//!   ztunnel's 15001, except ztunnel's own connections (its packet mark,
//!   1337) and the control plane (ztunnel's `scripts/ztunnel-redirect.sh`
//!   does the same); inbound HBONE reaches ztunnel's 15008 on the pod's IP
//!   directly.
//! - Its Pod objects name `ztunnel-node-<n>`, not the node they run on
//!   (see [`PodSpec::scheduled_as`]): weft's agents leave them alone, and
//!   ztunnel's bootstrap token is that node's, as a ztunnel DaemonSet pod's
//!   would be.
//! - weft-control is its istiod: xDS and certificates on 15012, checked
//!   against weft's trust bundle under the name `weft-control`.
//! - Everything else is ztunnel's default (2 worker threads, its access
//!   log at info).
//!
//! Before any measurement, [`Ztunnel::add`] checks that a connection from
//! the client reaches each server through both ztunnels: the server's
//! ztunnel must count it as HBONE inbound (`reporter="destination"`), so
//! a plaintext path could not pass for ztunnel's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Placement, Pods, SERVER_LABEL, probe_args, start_servers, tune};
use crate::bench::options::Settings;
use crate::{Cluster, Pod, PodSpec, Process, wait_for};

/// The namespace of ztunnel's pods.
pub const NAMESPACE: &str = "ztunnel";

/// The packet mark ztunnel puts on its own connections (`PACKET_MARK`),
/// which the capture rule lets through.
const PACKET_MARK: u32 = 1337;

/// ztunnel's ports in each pod: outbound capture, readiness, metrics.
const OUTBOUND_PORT: u16 = 15001;
const READINESS_PORT: u16 = 15021;
const STATS_PORT: u16 = 15020;

/// The legacy (x_tables) iptables, as `impair.rs` uses it: its `nat`
/// table is in this kernel and Debian's `iptables` package ships it.
const IPTABLES: &str = "/usr/sbin/iptables-legacy";

/// ztunnel's pods, their servers and their proxies.
#[derive(Debug)]
pub struct Ztunnel {
    pub(super) pods: Pods,
    /// One ztunnel per pod, with the pod's name.
    proxies: Vec<(String, Process)>,
    /// The servers in the server pods, kept as long as the testbed.
    _servers: Vec<Process>,
}

impl Ztunnel {
    /// Adds the pods, starts their servers and a ztunnel in each, and
    /// waits until the client reaches both servers through ztunnel.
    pub fn add(
        cluster: &Cluster,
        binary: &Path,
        load_bin: &Path,
        settings: &Settings,
    ) -> Result<Ztunnel> {
        cluster.add_namespace(NAMESPACE, &[("istio.io/dataplane-mode", "ambient")])?;
        route_control_to_pods(cluster)?;
        let pod = |node: &str, name: &str, sa: &str, server: Option<Placement>| -> Result<Pod> {
            let mut spec = PodSpec::new(node, NAMESPACE, name)
                .service_account(sa)
                .scheduled_as(&api_node(node));
            if let Some(placement) = server {
                spec = spec.label(SERVER_LABEL, placement.server());
            }
            let pod = cluster.add_pod(spec)?;
            tune(&pod)?;
            Ok(pod)
        };
        let pods = Pods {
            client: pod("node-1", "client", "bench-client", None)?,
            local: pod(
                "node-1",
                "server-local",
                "bench-server",
                Some(Placement::SameNode),
            )?,
            remote: pod(
                "node-2",
                "server-remote",
                "bench-server",
                Some(Placement::CrossNode),
            )?,
        };
        let load_bin = load_bin.to_path_buf();
        let mut servers = start_servers(&pods.local, &load_bin, settings)?;
        servers.extend(start_servers(&pods.remote, &load_bin, settings)?);
        let mut proxies = Vec::new();
        for pod in [&pods.client, &pods.local, &pods.remote] {
            proxies.push((pod.name().to_string(), start(cluster, binary, pod)?));
        }
        let mut ztunnel = Ztunnel {
            pods,
            proxies,
            _servers: servers,
        };
        ztunnel.wait_ready()?;
        ztunnel.check_path(&load_bin)?;
        Ok(ztunnel)
    }

    /// The pid of each pod's ztunnel, by pod name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.proxies
            .iter()
            .map(|(pod, process)| (format!("ztunnel of {pod}"), process.pid()))
            .collect()
    }

    /// Waits until every ztunnel says it is ready (its xDS has arrived).
    fn wait_ready(&mut self) -> Result<()> {
        let pods = [&self.pods.client, &self.pods.local, &self.pods.remote];
        for (pod, (_, process)) in pods.into_iter().zip(self.proxies.iter_mut()) {
            // `Err` is "not yet" to `wait_for`: an exit ends the wait as
            // an outcome of its own.
            let outcome = wait_for(
                &format!("the ztunnel of {NAMESPACE}/{} to be ready", pod.name()),
                Duration::from_secs(60),
                || {
                    if let Some(status) = process.try_status() {
                        return Ok(Some(Err(status)));
                    }
                    let ready = pod.in_netns(|| get(READINESS_PORT, "/healthz/ready"))?;
                    Ok(ready
                        .is_ok_and(|(status, _)| status == 200)
                        .then_some(Ok(())))
                },
            )
            .with_context(|| format!("ztunnel's log:\n{}", process.log_tail(30)))?;
            if let Err(status) = outcome {
                bail!(
                    "the ztunnel of {NAMESPACE}/{} exited ({status}):\n{}",
                    pod.name(),
                    process.log_tail(30)
                );
            }
        }
        Ok(())
    }

    /// A short ping-pong from the client to each server, retried until it
    /// succeeds (the certificates come on first use) and the server's
    /// ztunnel has counted HBONE connections from the client.
    fn check_path(&self, load_bin: &Path) -> Result<()> {
        for server in [&self.pods.local, &self.pods.remote] {
            let args = probe_args(server);
            wait_for(
                &format!(
                    "ztunnel: the client to reach {} through HBONE",
                    server.name()
                ),
                Duration::from_secs(60),
                || {
                    let mut load = Command::new(load_bin);
                    load.args(&args);
                    let out = self.pods.client.run(load, Duration::from_secs(10))?;
                    if !out.success() {
                        return Ok(None);
                    }
                    let (_, metrics) = server.in_netns(|| get(STATS_PORT, "/metrics"))??;
                    Ok(inbound_from_client(&metrics).then_some(()))
                },
            )?;
        }
        Ok(())
    }
}

/// Routes from the control plane to every node's pods, as a cluster's pod
/// network has them: ztunnel reaches weft-control from a pod's address,
/// where weft's agents dial from their node's. Gone with the control
/// plane's network namespace.
fn route_control_to_pods(cluster: &Cluster) -> Result<()> {
    for node in cluster.nodes() {
        let (cidr, via) = (node.pod_cidr(), node.ip().to_string());
        cluster
            .control()
            .netns()
            .ip(&["route", "replace", &cidr, "via", &via])
            .with_context(|| format!("routing {cidr} via {via} in the control plane's netns"))?;
    }
    Ok(())
}

/// Whether the run selected any scenario that ztunnel runs in: those of
/// `Run::paired` and the footprints of idle pods and held connections
/// (names as the scenarios make them).
pub(super) fn l4_selected(settings: &Settings) -> bool {
    let mut names = vec![format!("footprint/idle-{}-pods", settings.idle_pods)];
    for count in &settings.hold_counts {
        names.push(format!("footprint/{count}-idle-connections"));
    }
    for placement in [Placement::CrossNode, Placement::SameNode] {
        names.extend([
            format!("throughput/{placement}/1-stream"),
            format!("throughput/{placement}/{}-streams", settings.streams),
            format!("latency/tcp-pingpong/{placement}"),
            format!("latency/http-{}rps/{placement}", settings.http_rate),
            format!("connections/{placement}"),
        ]);
    }
    names.iter().any(|name| settings.selected(name))
}

/// The node name ztunnel's pods on `node` have in the API.
fn api_node(node: &str) -> String {
    format!("ztunnel-{node}")
}

/// Captures the pod's outbound TCP and starts its ztunnel.
fn start(cluster: &Cluster, binary: &Path, pod: &Pod) -> Result<Process> {
    let control = cluster.control();
    let capture = [
        "-w",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "!",
        "-o",
        "lo",
        "-m",
        "mark",
        "!",
        "--mark",
        &format!("{PACKET_MARK:#x}/0xfff"),
        "!",
        "-d",
        &control.ip().to_string(),
        "-j",
        "REDIRECT",
        "--to-ports",
        &OUTBOUND_PORT.to_string(),
    ];
    let mut iptables = Command::new(IPTABLES);
    iptables.args(capture);
    pod.run(iptables, Duration::from_secs(10))?
        .check(&format!(
            "{IPTABLES} (apt-get install -y iptables) in pod {}",
            pod.name()
        ))
        .context("the ztunnel pods' capture needs the kernel's legacy nat table")?;

    let dir = cluster.dir().join("ztunnel").join(pod.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let node = api_node(pod.node());
    let token = dir.join("istio-token");
    // No newline: ztunnel sends the file's bytes as they are.
    std::fs::write(&token, control.bootstrap_token(&node)?.trim())
        .with_context(|| format!("writing {}", token.display()))?;
    let xds = format!("https://{}", control.xds_addr());
    let root = control.trust_bundle();
    let mut cmd = Command::new(binary);
    cmd.arg("proxy")
        .current_dir(&dir)
        .env("XDS_ADDRESS", &xds)
        .env("CA_ADDRESS", &xds)
        .env("ALT_XDS_HOSTNAME", "weft-control")
        .env("ALT_CA_HOSTNAME", "weft-control")
        .env("XDS_ROOT_CA", &root)
        .env("CA_ROOT_CA", &root)
        .env("AUTH_TOKEN", &token)
        .env("PROXY_MODE", "dedicated")
        .env(
            "PROXY_WORKLOAD_INFO",
            format!("{NAMESPACE}/{}/{}", pod.name(), pod.service_account()),
        )
        .env("NODE_NAME", &node)
        .env("INSTANCE_IP", pod.ip().to_string())
        .env("ENABLE_ORIG_SRC", "false")
        .env("PACKET_MARK", PACKET_MARK.to_string())
        .env("RUST_LOG", "info");
    pod.spawn(cmd)
}

/// Whether ztunnel's metrics count TCP connections it accepted over
/// HBONE from the benchmark's client.
fn inbound_from_client(metrics: &str) -> bool {
    metrics.lines().any(|line| {
        line.starts_with("istio_tcp_connections_opened_total{")
            && line.contains("reporter=\"destination\"")
            && line.contains(&format!("source_workload_namespace=\"{NAMESPACE}\""))
            && line.contains("connection_security_policy=\"mutual_tls\"")
            && line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
    })
}

/// `GET path` from `127.0.0.1:port` in the calling thread's network
/// namespace: the status and the body.
fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status from :{port}{path}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hbone_inbound_from_the_client_counts() {
        let line = |reporter: &str, ns: &str, security: &str, value: &str| {
            format!(
                "istio_tcp_connections_opened_total{{reporter=\"{reporter}\",\
                 source_workload_namespace=\"{ns}\",connection_security_policy=\"{security}\"}} {value}"
            )
        };
        assert!(inbound_from_client(&line(
            "destination",
            NAMESPACE,
            "mutual_tls",
            "3"
        )));
        assert!(!inbound_from_client(&line(
            "destination",
            NAMESPACE,
            "mutual_tls",
            "0"
        )));
        assert!(!inbound_from_client(&line(
            "source",
            NAMESPACE,
            "mutual_tls",
            "3"
        )));
        assert!(!inbound_from_client(&line(
            "destination",
            "mesh",
            "mutual_tls",
            "3"
        )));
        assert!(!inbound_from_client(&line(
            "destination",
            NAMESPACE,
            "none",
            "3"
        )));
    }
}
