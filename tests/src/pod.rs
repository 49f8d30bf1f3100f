//! A pod: a network namespace with a veth to its node, a /32 address, a
//! link-local gateway, and its own cgroup for the processes it runs.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bins;
use crate::cni::POD_GATEWAY;
use crate::config::{ContainerPort, Labels};
use crate::netns::Netns;
use crate::node::{Node, program_name};
use crate::process::{Finished, Placement, Process, run};

/// What to create: the pod's placement and the metadata the control plane
/// sees in its Pod object.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// Node name (`node-1`, …).
    pub node: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name (a DNS label).
    pub name: String,
    /// Pod labels.
    pub labels: Labels,
    /// Service account; `default` when empty.
    pub service_account: String,
    /// Container ports.
    pub ports: Vec<ContainerPort>,
    /// Kubernetes' order of events: the Pod object has no IP until the
    /// CNI ADD has returned, then gets it (as kubelet writes the pod's
    /// status). Otherwise the IP is in the object from the start.
    pub ip_after_cni: bool,
    /// The pod started before weft was installed: its runtime never
    /// called `weft-cni` ADD, so the agent must find it on the node.
    pub before_weft: bool,
    /// The node its Pod object names, when not the one it runs on.
    pub scheduled_as: Option<String>,
}

// === impl PodSpec ===

impl PodSpec {
    /// A pod `namespace/name` on `node`, no labels, service account `default`.
    pub fn new(node: &str, namespace: &str, name: &str) -> PodSpec {
        PodSpec {
            node: node.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            ..PodSpec::default()
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> PodSpec {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Sets the service account.
    pub fn service_account(mut self, name: &str) -> PodSpec {
        self.service_account = name.to_string();
        self
    }

    /// Writes the pod's IP only after its CNI ADD, as on a real cluster.
    pub fn ip_after_cni(mut self) -> PodSpec {
        self.ip_after_cni = true;
        self
    }

    /// Starts the pod without calling `weft-cni` ADD, as for a pod that
    /// ran before weft was installed. (Its DEL is still called: a runtime
    /// runs the node's current CNI configuration on delete.)
    pub fn before_weft(mut self) -> PodSpec {
        self.before_weft = true;
        self
    }

    /// Names `node` in the Pod object (`spec.nodeName`) instead of the
    /// node the pod runs on, and calls no `weft-cni` ADD: weft's agents
    /// leave the pod alone (an agent enrols only its own node's pods),
    /// while the control plane serves it like any other. For pods whose
    /// node proxy is another mesh's, as the benchmark's ztunnel peer.
    /// (Its DEL is still called, as for [`PodSpec::before_weft`].)
    pub fn scheduled_as(mut self, node: &str) -> PodSpec {
        self.scheduled_as = Some(node.to_string());
        self
    }

    /// Adds a TCP container port.
    pub fn port(mut self, name: &str, port: u16) -> PodSpec {
        self.ports.push(ContainerPort {
            name: name.to_string(),
            port,
            protocol: "TCP".to_string(),
        });
        self
    }
}

/// A running pod. Cheap to clone; the cluster owns the pod's resources.
#[derive(Debug, Clone)]
pub struct Pod(pub(crate) Arc<PodInner>);

#[derive(Debug)]
pub(crate) struct PodInner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container_id: String,
    pub node: String,
    pub node_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
    pub labels: Labels,
    pub service_account: String,
    pub netns: Netns,
    /// Name of the node-side veth, in the node's netns.
    pub host_veth: String,
    pub cgroup: PathBuf,
    pub log_dir: PathBuf,
    pub app_binary: Option<PathBuf>,
    pub http_binary: Option<PathBuf>,
    pub config_file: String,
}

// === impl Pod ===

impl Pod {
    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The pod's Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    /// The pod's IP.
    pub fn ip(&self) -> Ipv4Addr {
        self.0.ip
    }

    /// `<pod IP>:<port>`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.0.ip, port))
    }

    /// The name of the node the pod runs on.
    pub fn node(&self) -> &str {
        &self.0.node
    }

    /// The IP of the node the pod runs on.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.0.node_ip
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> &str {
        &self.0.uid
    }

    /// The sandbox id given to the CNI plugin (`CNI_CONTAINERID`).
    pub fn container_id(&self) -> &str {
        &self.0.container_id
    }

    /// The pod's labels.
    pub fn labels(&self) -> &Labels {
        &self.0.labels
    }

    /// The pod's service account.
    pub fn service_account(&self) -> &str {
        &self.0.service_account
    }

    /// The pod's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.0.netns
    }

    /// The pod's cgroup directory.
    pub fn cgroup_dir(&self) -> &Path {
        &self.0.cgroup
    }

    /// The pod's config file name in the control plane's config directory.
    pub fn config_file(&self) -> &str {
        &self.0.config_file
    }

    /// Starts `cmd` in the pod: its network namespace and its cgroup, with
    /// `POD_NAME`, `POD_NAMESPACE` and `POD_IP` set. Output goes to a log
    /// file; the process is killed when the handle drops.
    pub fn spawn(&self, mut cmd: Command) -> Result<Process> {
        self.set_env(&mut cmd);
        let label = format!(
            "{}/{}/{}",
            self.0.namespace,
            self.0.name,
            program_name(&cmd)
        );
        Process::spawn(cmd, &self.placement(), &self.0.log_dir, &label)
    }

    /// Runs `cmd` in the pod to completion (killed after `timeout`).
    pub fn run(&self, mut cmd: Command, timeout: Duration) -> Result<Finished> {
        self.set_env(&mut cmd);
        run(cmd, &self.placement(), None, timeout)
    }

    /// A `weft-sim-app` command with `args`, to pass to [`Pod::spawn`] or
    /// [`Pod::run`].
    pub fn app(&self, args: &[&str]) -> Result<Command> {
        self.command(self.0.app_binary.as_deref(), bins::APP, args)
    }

    /// Starts `weft-sim-app <args>` in the pod.
    pub fn spawn_app(&self, args: &[&str]) -> Result<Process> {
        self.spawn(self.app(args)?)
    }

    /// Runs `weft-sim-app <args>` in the pod to completion.
    pub fn run_app(&self, args: &[&str], timeout: Duration) -> Result<Finished> {
        self.run(self.app(args)?, timeout)
    }

    /// A `weft-sim-http` command with `args` (HTTP/1.1, HTTP/2 and gRPC
    /// server and clients), to pass to [`Pod::spawn`] or [`Pod::run`].
    pub fn http(&self, args: &[&str]) -> Result<Command> {
        self.command(self.0.http_binary.as_deref(), bins::HTTP_APP, args)
    }

    /// Starts `weft-sim-http <args>` in the pod, e.g.
    /// `["serve", "--port", "8080"]`.
    pub fn spawn_http(&self, args: &[&str]) -> Result<Process> {
        self.spawn(self.http(args)?)
    }

    /// Runs `weft-sim-http <args>` in the pod to completion, e.g.
    /// `["get", "http://10.96.0.10/", "--h2", "true"]`.
    pub fn run_http(&self, args: &[&str], timeout: Duration) -> Result<Finished> {
        self.run(self.http(args)?, timeout)
    }

    fn command(&self, binary: Option<&Path>, name: &str, args: &[&str]) -> Result<Command> {
        let binary = binary.with_context(|| {
            format!(
                "{name} was not found next to the test binary; run `cargo build -p weft-sim` \
                 (needed by pod {}/{})",
                self.0.namespace, self.0.name
            )
        })?;
        let mut cmd = Command::new(binary);
        cmd.args(args);
        Ok(cmd)
    }

    /// Runs `f` on a thread inside the pod's network namespace (not its
    /// cgroup: eBPF attached to the node's cgroup does not see these
    /// sockets). Use it to create sockets for the test process itself.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        self.0.netns.run(f)
    }

    /// A listening socket on `0.0.0.0:<port>` inside the pod's network
    /// namespace. For tokio: `set_nonblocking(true)`, then
    /// `tokio::net::TcpListener::from_std`.
    pub fn tcp_listener(&self, port: u16) -> Result<TcpListener> {
        self.in_netns(|| TcpListener::bind(("0.0.0.0", port)))?
            .with_context(|| format!("binding port {port} in pod {}", self.0.name))
    }

    /// A TCP connection to `addr` made from inside the pod's network namespace.
    pub fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        self.in_netns(|| TcpStream::connect_timeout(&addr, timeout))?
            .with_context(|| format!("connecting to {addr} from pod {}", self.0.name))
    }

    fn set_env(&self, cmd: &mut Command) {
        cmd.env("POD_NAME", &self.0.name)
            .env("POD_NAMESPACE", &self.0.namespace)
            .env("POD_IP", self.0.ip.to_string());
    }

    fn placement(&self) -> Placement {
        Placement {
            netns: Some(self.0.netns.clone()),
            cgroup: Some(self.0.cgroup.clone()),
        }
    }
}

/// Creates the pod's side of the network as a primary CNI plugin would:
/// a veth `<host_veth>`/`eth0` between node and pod, the pod IP as a /32 on
/// eth0, `169.254.1.1` as the gateway (an address on the node-side veth),
/// and a /32 route to the pod on the node.
pub(crate) fn plumb(node: &Node, netns: &Netns, host_veth: &str, ip: Ipv4Addr) -> Result<()> {
    let pod_ns = netns.name();
    let ip32 = format!("{ip}/32");
    let gw = POD_GATEWAY.to_string();
    let node_ip = node.ip().to_string();
    let n = node.netns();
    n.ip(&[
        "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", pod_ns,
    ])?;
    n.ip(&[
        "addr",
        "add",
        &format!("{gw}/32"),
        "dev",
        host_veth,
        "scope",
        "link",
    ])?;
    n.ip(&["link", "set", host_veth, "up"])?;
    n.ip(&["route", "add", &ip32, "dev", host_veth, "src", &node_ip])?;
    netns.ip(&["addr", "add", &ip32, "dev", "eth0"])?;
    netns.ip(&["link", "set", "eth0", "up"])?;
    netns.ip(&["route", "add", &gw, "dev", "eth0", "scope", "link"])?;
    netns.ip(&["route", "add", "default", "via", &gw, "dev", "eth0"])?;
    Ok(())
}
