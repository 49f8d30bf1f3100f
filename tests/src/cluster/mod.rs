//! The cluster: building it, adding namespaces, pods and services, and
//! tearing everything down on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bins::{self, BinDir};
use crate::capture::Capture;
use crate::cgroup;
use crate::cleanup::{RunId, remove_run};
use crate::cni::{CniCall, CniCommand};
use crate::config::{self, ConfigDir, Labels, PodObject, ServicePort};
use crate::control::ControlPlane;
use crate::kube::KubeApi;
use crate::netns::{Netns, delete_netns};
use crate::node::{AgentConfig, Node};
use crate::pod::{Pod, PodInner, PodSpec, plumb};
use crate::process::tail;
use crate::topology::{self, Addressing, BRIDGE};

mod builder;
pub use builder::ClusterBuilder;

/// A simulated cluster. Dropping it (also during a panic) kills every
/// process it started and removes every namespace, cgroup, bpffs pin and
/// file it created; if a test is panicking, the tails of all logs are
/// printed first.
#[derive(Debug)]
pub struct Cluster {
    run: RunId,
    dir: PathBuf,
    log_dir: PathBuf,
    cgroup2: PathBuf,
    run_cgroup: PathBuf,
    addressing: Addressing,
    bins: BinDir,
    app_binary: Option<PathBuf>,
    http_binary: Option<PathBuf>,
    mesh: bool,
    cni_timeout: Duration,
    fabric: Netns,
    control: ControlPlane,
    nodes: Vec<Node>,
    config: ConfigDir,
    state: Mutex<State>,
}

/// What the cluster has added since it was built.
#[derive(Debug, Default)]
struct State {
    pods: BTreeMap<(String, String), Pod>,
    namespaces: BTreeSet<String>,
    service_accounts: BTreeSet<(String, String)>,
    services: BTreeMap<(String, String), Ipv4Addr>,
    next_service: u32,
}

// === impl Cluster ===

impl Cluster {
    /// A builder: `Cluster::builder().nodes(2).mesh(false).build()?`.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::new()
    }

    fn set_up(&mut self, opts: &ClusterBuilder) -> Result<()> {
        std::fs::create_dir_all(&self.log_dir)
            .with_context(|| format!("creating {}", self.log_dir.display()))?;
        self.run.record_owner()?;
        self.config = ConfigDir::create(self.dir.join("config"))?;
        cgroup::create(&self.run_cgroup.join("system"))?;
        cgroup::create(&self.control.cgroup)?;

        self.fabric = topology::create_fabric(&self.run)?;
        let control_ns = self.control.netns.name().to_string();
        topology::attach_to_fabric(&self.fabric, "ctl", &control_ns, self.control.ip)?;
        if let Some(kubeconfig) = &self.control.kubeconfig {
            let api = KubeApi::start_in(&self.control.netns)?;
            api.write_kubeconfig(kubeconfig)?;
            self.config = self.config.clone().with_api(api);
        }
        for n in 1..=opts.nodes {
            let node = self.create_node(n, opts)?;
            self.config
                .write_object(&config::node(&node.name, node.ip, &node.pod_cidr()))?;
            self.nodes.push(node);
        }
        for node in &self.nodes {
            for peer in self.nodes.iter().filter(|p| p.name != node.name) {
                let via = peer.ip.to_string();
                node.netns
                    .ip(&["route", "add", &peer.pod_cidr(), "via", &via])?;
            }
        }
        if self.mesh {
            self.control.start()?;
            for node in &self.nodes {
                let token = match self.config.api() {
                    Some(api) => api.agent_token(&node.name),
                    None => self.control.bootstrap_token(&node.name)?,
                };
                std::fs::write(node.token_file(), token)?;
                node.start_agent()?;
            }
        }
        Ok(())
    }

    fn create_node(&self, n: u8, opts: &ClusterBuilder) -> Result<Node> {
        let name = format!("node-{n}");
        let ip = self.addressing.node_ip(n);
        let netns =
            topology::attach_to_fabric(&self.fabric, &format!("n{n}"), &self.run.netns(&name), ip)?;
        topology::make_router(&netns)?;
        let pods_cgroup = self.run_cgroup.join(&name);
        let system_cgroup = self.run_cgroup.join("system").join(&name);
        cgroup::create(&pods_cgroup)?;
        cgroup::create(&system_cgroup)?;
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(&dir)?;
        let agent_config = match self.mesh {
            true => Some(AgentConfig {
                binary: self.bins.get(bins::AGENT)?,
                control_addr: self.control.xds_addr(),
                ca_root_file: self.control.trust_bundle(),
                ready_timeout: opts.ready_timeout,
                extra_args: opts.agent_args.clone(),
            }),
            false => None,
        };
        Ok(Node {
            bpffs: self.run.bpffs_dir(&name),
            pod_net: self.addressing.pod_net(n),
            log_dir: self.log_dir.clone(),
            agent: Mutex::new(None),
            retired_agents: Mutex::new(Vec::new()),
            next_pod_host: Mutex::new(2),
            name,
            ip,
            netns,
            pods_cgroup,
            system_cgroup,
            dir,
            agent_config,
        })
    }

    /// The API server of a Kubernetes-mode cluster
    /// ([`ClusterBuilder::kubernetes`]).
    pub fn kube_api(&self) -> Option<&weft_apiserver::ApiServer> {
        self.config.api().map(KubeApi::server)
    }

    /// The run id (prefix of every named thing of this cluster).
    pub fn run_id(&self) -> &RunId {
        &self.run
    }

    /// The run's working directory (config, state, logs, sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding every process's log.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The cgroup v2 mount point.
    pub fn cgroup2_root(&self) -> &Path {
        &self.cgroup2
    }

    /// The run's cgroup tree, `<cgroup2>/weft-sim-<run>`.
    pub fn run_cgroup(&self) -> &Path {
        &self.run_cgroup
    }

    /// The address plan (fabric, pod and service ranges).
    pub fn addressing(&self) -> Addressing {
        self.addressing
    }

    /// Whether weft runs in this cluster.
    pub fn mesh(&self) -> bool {
        self.mesh
    }

    /// Where the binaries were found.
    pub fn bin_dir(&self) -> &Path {
        self.bins.dir()
    }

    /// The fabric namespace (holding the bridge between nodes).
    pub fn fabric(&self) -> &Netns {
        &self.fabric
    }

    /// The control plane.
    pub fn control(&self) -> &ControlPlane {
        &self.control
    }

    /// All nodes, `node-1` first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!("no node {name:?} in this cluster (nodes: {names:?})")
        })
    }

    /// The config directory the control plane watches.
    pub fn config_dir(&self) -> &Path {
        self.config.path()
    }

    /// Writes `<config dir>/<name>` atomically (any YAML, e.g. Istio resources).
    pub fn write_config_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        self.config.write_file(name, text)
    }

    /// Removes `<config dir>/<name>`.
    pub fn remove_config_file(&self, name: &str) -> Result<()> {
        self.config.remove_file(name)
    }

    /// Writes a Namespace object with `labels` (e.g.
    /// `[("istio.io/dataplane-mode", "ambient")]`); rewriting replaces them.
    pub fn add_namespace(&self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        check_dns_label("namespace", name)?;
        self.config
            .write_object(&config::namespace(name, &config::labels(labels)))?;
        self.lock().namespaces.insert(name.to_string());
        Ok(())
    }

    /// Adds a pod the way kubelet and a container runtime would: allocates
    /// its IP, writes its Pod object, creates its namespace, veth, routes and
    /// cgroup, then (with the mesh) calls `weft-cni ADD` as a chained plugin.
    /// If the plugin fails, everything is undone and the error quotes its
    /// output. A namespace not yet added is written without labels.
    pub fn add_pod(&self, spec: PodSpec) -> Result<Pod> {
        check_dns_label("namespace", &spec.namespace)?;
        check_dns_label("pod name", &spec.name)?;
        let node = self.node(&spec.node)?;
        let key = (spec.namespace.clone(), spec.name.clone());
        if self.lock().pods.contains_key(&key) {
            bail!("pod {}/{} already exists", spec.namespace, spec.name);
        }
        let sa = match spec.service_account.as_str() {
            "" => "default".to_string(),
            sa => sa.to_string(),
        };
        self.ensure_namespace_and_sa(&spec.namespace, &sa)?;
        let ip = node.allocate_pod_ip()?;
        let id = format!("{}/{}/{}", self.run, spec.namespace, spec.name);
        let uid = uuid_like(&id);
        let object = config::pod(&PodObject {
            namespace: &spec.namespace,
            name: &spec.name,
            uid: &uid,
            labels: &spec.labels,
            node: spec.scheduled_as.as_deref().unwrap_or(&node.name),
            service_account: &sa,
            ports: &spec.ports,
            ip,
            host_ip: node.ip,
        });
        // Kubernetes mode plays kubelet: the IP reaches the API after CNI.
        let ip_after_cni = spec.ip_after_cni || self.config.api().is_some();
        let config_file = if ip_after_cni {
            // Scheduled, sandbox not up yet: no IP in the API.
            let mut scheduled = object.clone();
            if let Some(status) = scheduled["status"].as_object_mut() {
                status.remove("podIP");
                status.remove("podIPs");
            }
            self.config.write_object(&scheduled)?
        } else {
            self.config.write_object(&object)?
        };
        let pod = Pod(Arc::new(PodInner {
            container_id: hex_id(&id, 64),
            netns: Netns::named(
                &self
                    .run
                    .netns(&format!("pod-{}_{}", spec.namespace, spec.name)),
            ),
            host_veth: format!("wp{}", ip.octets()[3]),
            cgroup: node
                .pods_cgroup
                .join(format!("{}_{}", spec.namespace, spec.name)),
            log_dir: self.log_dir.clone(),
            app_binary: self.app_binary.clone(),
            http_binary: self.http_binary.clone(),
            node: node.name.clone(),
            node_ip: node.ip,
            namespace: spec.namespace,
            name: spec.name,
            labels: spec.labels,
            service_account: sa,
            config_file,
            uid,
            ip,
        }));
        let started = self
            .start_sandbox(node, &pod, !spec.before_weft && spec.scheduled_as.is_none())
            .and_then(|()| {
                if ip_after_cni {
                    // kubelet writes the pod's status, IP included.
                    self.config.write_object(&object)?;
                }
                Ok(())
            });
        if let Err(e) = started {
            let undo = self.destroy_sandbox(node, &pod);
            let _ = self.config.remove_file(&pod.0.config_file);
            return Err(match undo {
                Ok(()) => e,
                Err(u) => e.context(format!("(and undoing the pod failed: {u:#})")),
            });
        }
        self.lock().pods.insert(key, pod.clone());
        Ok(pod)
    }

    fn ensure_namespace_and_sa(&self, namespace: &str, sa: &str) -> Result<()> {
        let mut state = self.lock();
        if !state.namespaces.contains(namespace) {
            self.config
                .write_object(&config::namespace(namespace, &Labels::new()))?;
            state.namespaces.insert(namespace.to_string());
        }
        let key = (namespace.to_string(), sa.to_string());
        if !state.service_accounts.contains(&key) {
            self.config
                .write_object(&config::service_account(namespace, sa))?;
            state.service_accounts.insert(key);
        }
        Ok(())
    }

    /// Network, cgroup, then (with `cni`) the CNI plugin.
    fn start_sandbox(&self, node: &Node, pod: &Pod, cni: bool) -> Result<()> {
        let p = &pod.0;
        Netns::create(p.netns.name())?;
        plumb(node, &p.netns, &p.host_veth, p.ip)?;
        cgroup::create(&p.cgroup)?;
        if self.mesh && cni {
            self.cni_call(node, pod, CniCommand::Add)
                .map_err(|e| anyhow::anyhow!("{e:#}\n{}", node.agent_log_tail(40)))?;
        }
        Ok(())
    }

    fn cni_call(&self, node: &Node, pod: &Pod, command: CniCommand) -> Result<String> {
        let p = &pod.0;
        let plugin = self.bins.get(bins::CNI)?;
        let netns_path = p.netns.path();
        let socket = node.cni_socket();
        CniCall {
            plugin: &plugin,
            bin_dir: self.bins.dir(),
            command,
            container_id: &p.container_id,
            netns: &netns_path,
            pod_namespace: &p.namespace,
            pod_name: &p.name,
            pod_uid: &p.uid,
            ip: p.ip,
            agent_socket: &socket,
        }
        .invoke(self.cni_timeout)
    }

    /// Kills the pod's processes, removes its veth, namespace and cgroup.
    fn destroy_sandbox(&self, node: &Node, pod: &Pod) -> Result<()> {
        let p = &pod.0;
        let mut first_err = cgroup::kill_all(&p.cgroup, Duration::from_secs(10)).err();
        if node.netns.ip(&["link", "show", &p.host_veth]).is_ok()
            && let Err(e) = node.netns.ip(&["link", "del", &p.host_veth])
        {
            first_err.get_or_insert(e);
        }
        if let Err(e) = delete_netns(p.netns.name()) {
            first_err.get_or_insert(e);
        }
        if let Err(e) = cgroup::remove_tree(&p.cgroup) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Deletes a pod like kubelet: stops its processes, calls `weft-cni
    /// DEL` (with the mesh), removes its network, cgroup and Pod object.
    pub fn delete_pod(&self, pod: &Pod) -> Result<()> {
        let p = &pod.0;
        let node = self.node(&p.node)?;
        if self
            .lock()
            .pods
            .remove(&(p.namespace.clone(), p.name.clone()))
            .is_none()
        {
            bail!("pod {}/{} is not in this cluster", p.namespace, p.name);
        }
        let mut first_err = cgroup::kill_all(&p.cgroup, Duration::from_secs(10)).err();
        if self.mesh
            && let Err(e) = self.cni_call(node, pod, CniCommand::Del)
        {
            first_err.get_or_insert(e);
        }
        if let Err(e) = self.destroy_sandbox(node, pod) {
            first_err.get_or_insert(e);
        }
        if let Err(e) = self.config.remove_file(&p.config_file) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The pod `namespace/name`, if it exists.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.lock()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// All pods.
    pub fn pods(&self) -> Vec<Pod> {
        self.lock().pods.values().cloned().collect()
    }

    /// Writes a ClusterIP Service selecting pods by `selector`; returns its
    /// VIP (kept if the service is rewritten).
    pub fn add_service(
        &self,
        namespace: &str,
        name: &str,
        selector: &[(&str, &str)],
        ports: &[ServicePort],
    ) -> Result<Ipv4Addr> {
        check_dns_label("namespace", namespace)?;
        check_dns_label("service name", name)?;
        let mut state = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let vip = match state.services.get(&key) {
            Some(vip) => *vip,
            None => {
                let vip = self
                    .addressing
                    .service_ip(state.next_service)
                    .with_context(|| {
                        format!("no VIPs left in {}", self.addressing.service_cidr())
                    })?;
                state.next_service += 1;
                vip
            }
        };
        let selector = config::labels(selector);
        self.config
            .write_object(&config::service(namespace, name, &selector, vip, ports))?;
        state.services.insert(key, vip);
        Ok(vip)
    }

    /// Removes a Service object.
    pub fn remove_service(&self, namespace: &str, name: &str) -> Result<()> {
        self.lock()
            .services
            .remove(&(namespace.to_string(), name.to_string()));
        self.config
            .remove_file(&format!("service-{namespace}-{name}.yaml"))
    }

    /// Captures every frame between nodes (on the fabric bridge).
    pub fn capture_between_nodes(&self) -> Result<Capture> {
        let pcap = self
            .log_dir
            .join(format!("capture-{BRIDGE}-{}.pcap", unique()));
        Capture::start(&self.fabric, BRIDGE, pcap)
    }

    /// Captures every frame to and from one node (on its fabric-side veth).
    pub fn capture_node(&self, node: &str) -> Result<Capture> {
        let n = self.node(node)?;
        let port = format!("n{}", n.ip.octets()[3]);
        let pcap = self
            .log_dir
            .join(format!("capture-{port}-{}.pcap", unique()));
        Capture::start(&self.fabric, &port, pcap)
    }

    /// The last `lines` lines of every log of the run (control plane,
    /// agents, pod processes).
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.log_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        logs.iter()
            .map(|p| {
                format!(
                    "----- {} (last {lines} lines) -----\n{}\n",
                    p.display(),
                    tail(p, lines)
                )
            })
            .collect()
    }

    /// Runs a test body; if it returns an error, the tails of all logs are
    /// attached to it. (A panicking body gets them printed by `Drop`.)
    pub fn with_logs<T>(&self, body: impl FnOnce(&Cluster) -> Result<T>) -> Result<T> {
        body(self).map_err(|e| {
            anyhow::anyhow!("{e:#}\n\nlogs of run {}:\n{}", self.run, self.logs_tail(40))
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "weft-sim: test failed with cluster {} alive; logs follow\n{}",
                self.run,
                self.logs_tail(40)
            );
        }
        for node in &self.nodes {
            node.stop_agent(None);
        }
        self.control.stop(None);
        if std::env::var_os("WEFT_SIM_KEEP_LOGS").is_some() {
            let kept = std::env::temp_dir().join(format!("weft-sim-logs-{}", self.run));
            if std::fs::rename(&self.log_dir, &kept).is_ok() {
                eprintln!(
                    "weft-sim: logs of run {} kept in {}",
                    self.run,
                    kept.display()
                );
            }
        }
        for e in remove_run(&self.run, &self.cgroup2) {
            eprintln!("weft-sim: warning: tearing down run {}: {e:#}", self.run);
        }
    }
}

/// Kubernetes names used here must be DNS labels (they end up in netns and
/// cgroup names).
fn check_dns_label(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!("{what} {name:?} is not a DNS label (lower-case letters, digits, '-', at most 63)");
    }
    Ok(())
}

/// `len` hex digits derived from `seed` and per-process randomness.
fn hex_id(seed: &str, len: usize) -> String {
    let state = RandomState::new();
    let mut out = String::with_capacity(len + 16);
    let mut round = 0u64;
    while out.len() < len {
        let mut h = state.build_hasher();
        h.write(seed.as_bytes());
        h.write_u64(round);
        out.push_str(&format!("{:016x}", h.finish()));
        round += 1;
    }
    out.truncate(len);
    out
}

/// A version-4-shaped UUID derived from `seed`.
fn uuid_like(seed: &str) -> String {
    let h = hex_id(seed, 32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A process-wide counter for file names.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Cluster>();
        shared::<Pod>();
        shared::<Node>();
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "demo", "web-1", "x0"] {
            check_dns_label("n", ok).unwrap();
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(check_dns_label("n", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_have_runtime_shapes() {
        let id = hex_id("w1n0/demo/web", 64);
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let uid = uuid_like("x");
        assert_eq!(uid.len(), 36);
        assert_eq!(
            uid.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
    }
}
