//! What the testbed is built from: the pods of a variant, the Services
//! in front of the servers (L4 and L7, with the L7 ones'
//! VirtualServices), the servers the pods run, and where the load
//! generator's binary is.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{
    ECHO_PORT, GRPC_PORT, HOLD_PORT, HTTP_PATH, HTTP_PORT, HTTP_SMALL_PORT, IPERF_PORT, LOAD_BIN,
    PORT_RANGE, Placement, Pods, ROUTE_HEADER, RR_PORT, Variant, Vips,
};
use crate::bench::options::Settings;
use crate::{Cluster, Pod, PodSpec, Process, ServicePort, wait_for};

pub(super) fn add_pods(cluster: &Cluster, variant: Variant) -> Result<Pods> {
    let ns = variant.namespace();
    let pod = |node: &str, name: &str, sa: &str| -> Result<Pod> {
        let pod = cluster.add_pod(PodSpec::new(node, ns, name).service_account(sa))?;
        tune(&pod)?;
        Ok(pod)
    };
    let server = |node: &str, placement: Placement| -> Result<Pod> {
        let name = format!("server-{}", placement.server());
        let pod = cluster.add_pod(
            PodSpec::new(node, ns, &name)
                .service_account("bench-server")
                .label(SERVER_LABEL, placement.server()),
        )?;
        tune(&pod)?;
        Ok(pod)
    };
    Ok(Pods {
        client: pod("node-1", "client", "bench-client")?,
        local: server("node-1", Placement::SameNode)?,
        remote: server("node-2", Placement::CrossNode)?,
    })
}

/// The label the Services select a server by: `local` or `remote`.
pub(super) const SERVER_LABEL: &str = "bench-server";

/// The L4 and L7 Services in front of each server of `mesh`, and the L7
/// ones' VirtualServices.
pub(super) fn add_services(cluster: &Cluster) -> Result<Vips> {
    let ns = Variant::Weft.namespace();
    let add = |placement: Placement| -> Result<(Ipv4Addr, Ipv4Addr)> {
        let server = placement.server();
        let selector = [(SERVER_LABEL, server)];
        let l4 = cluster.add_service(
            ns,
            &format!("bench-l4-{server}"),
            &selector,
            &[
                ServicePort::tcp("tcp-http", HTTP_PORT, HTTP_PORT),
                ServicePort::tcp("tcp-http-small", HTTP_SMALL_PORT, HTTP_SMALL_PORT),
                ServicePort::tcp("tcp-grpc", GRPC_PORT, GRPC_PORT),
            ],
        )?;
        let l7_name = format!("bench-l7-{server}");
        let l7 = cluster.add_service(
            ns,
            &l7_name,
            &selector,
            &[
                ServicePort::http("http", HTTP_PORT, HTTP_PORT),
                ServicePort::http("http-small", HTTP_SMALL_PORT, HTTP_SMALL_PORT),
                ServicePort::tcp("grpc", GRPC_PORT, GRPC_PORT).with_app_protocol("grpc"),
            ],
        )?;
        cluster.write_config_file(
            &format!("virtualservice-{ns}-{l7_name}.yaml"),
            &virtual_service(ns, &l7_name),
        )?;
        Ok((l4, l7))
    };
    let (l4_local, l7_local) = add(Placement::SameNode)?;
    let (l4_remote, l7_remote) = add(Placement::CrossNode)?;
    Ok(Vips {
        l4_local,
        l4_remote,
        l7_local,
        l7_remote,
    })
}

/// The L7 Service's routes: the load's paths (HTTP under [`HTTP_PATH`],
/// the gRPC service's methods) to the Service itself, a header set on each
/// request (the proof that L7 routing is in effect), and Istio-style
/// retries of 5xx answers; anything else gets the mesh's `404` (no route).
pub(super) fn virtual_service(ns: &str, host: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {host}
  namespace: {ns}
spec:
  hosts:
  - {host}
  http:
  - name: bench
    match:
    - uri:
        prefix: {HTTP_PATH}
    - uri:
        prefix: /weft.test.Echo/
    headers:
      request:
        set:
          {ROUTE_HEADER}: l7
    retries:
      attempts: 2
      retryOn: 5xx
    route:
    - destination:
        host: {host}
"#
    )
}

/// The same sysctls in both variants' pods: a wide ephemeral port range and
/// `tcp_tw_reuse`, so that connection-rate runs (tens of thousands of
/// connections) and 10,000 held connections never run out of ports.
pub(super) fn tune(pod: &Pod) -> Result<()> {
    pod.netns()
        .set_sysctl("ipv4/ip_local_port_range", PORT_RANGE)?;
    pod.netns().set_sysctl("ipv4/tcp_tw_reuse", "1")
}

pub(super) fn start_servers(
    pod: &Pod,
    load_bin: &PathBuf,
    settings: &Settings,
) -> Result<Vec<Process>> {
    let mut serve = Command::new(load_bin);
    serve.args(["serve", "--echo", &ECHO_PORT.to_string()]);
    serve.args(["--http", &HTTP_PORT.to_string()]);
    serve.args(["--http-body", &settings.body.to_string()]);
    serve.args(["--http", &format!("{HTTP_SMALL_PORT}:{}", settings.message)]);
    serve.args(["--rr", &RR_PORT.to_string()]);
    serve.args(["--rr-size", &settings.message.to_string()]);
    serve.args(["--hold", &HOLD_PORT.to_string()]);
    let serve = pod.spawn(serve)?;
    let mut iperf = Command::new("iperf3");
    iperf.args(["-s", "-p", &IPERF_PORT.to_string()]);
    let iperf = pod.spawn(iperf)?;
    let grpc = pod.spawn_http(&["serve", "--port", &GRPC_PORT.to_string()])?;
    let mut servers = vec![serve, iperf, grpc];
    let ports = [
        ECHO_PORT,
        HTTP_PORT,
        HTTP_SMALL_PORT,
        RR_PORT,
        HOLD_PORT,
        IPERF_PORT,
        GRPC_PORT,
    ];
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
pub(super) fn locate_load_bin(bin_dir: Option<&std::path::Path>) -> Result<PathBuf> {
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
