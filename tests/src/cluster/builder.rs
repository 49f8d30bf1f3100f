//! [`ClusterBuilder`]: the options of a simulated cluster, and building it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Cluster, State};
use crate::bins::{self, BinDir};
use crate::cleanup::{RunId, cleanup_stale};
use crate::config::ConfigDir;
use crate::control::ControlPlane;
use crate::netns::Netns;
use crate::preflight;
use crate::topology::Addressing;

/// Configures and builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    pub(super) nodes: u8,
    pub(super) mesh: bool,
    pub(super) kubernetes: bool,
    pub(super) trust_domain: String,
    pub(super) ready_timeout: Duration,
    pub(super) cni_timeout: Duration,
    pub(super) bin_dir: Option<PathBuf>,
    pub(super) agent_args: Vec<String>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: 2,
            mesh: true,
            kubernetes: false,
            trust_domain: "cluster.local".to_string(),
            ready_timeout: Duration::from_secs(60),
            cni_timeout: Duration::from_secs(60),
            bin_dir: None,
            agent_args: Vec::new(),
        }
    }
}

// === impl ClusterBuilder ===

impl ClusterBuilder {
    /// Two nodes, with the mesh (control plane, agents, CNI plugin).
    pub fn new() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Number of nodes (`node-1` … `node-<n>`), 1 to 50.
    pub fn nodes(mut self, n: u8) -> ClusterBuilder {
        self.nodes = n;
        self
    }

    /// With `false`, no weft process runs and pods join without the CNI
    /// plugin: just the topology.
    pub fn mesh(mut self, mesh: bool) -> ClusterBuilder {
        self.mesh = mesh;
        self
    }

    /// Kubernetes mode: an API server (in the control plane's namespace)
    /// holds the cluster's objects, weft-control watches it
    /// (`--kubeconfig`), pods get their IP in the API after their CNI ADD
    /// as kubelet writes it, and agents authenticate with a
    /// service-account token checked by TokenReview. Default: directory
    /// mode.
    pub fn kubernetes(mut self, on: bool) -> ClusterBuilder {
        self.kubernetes = on;
        self
    }

    /// The trust domain given to the control plane.
    pub fn trust_domain(mut self, domain: &str) -> ClusterBuilder {
        self.trust_domain = domain.to_string();
        self
    }

    /// How long the control plane and each agent get to become ready.
    pub fn ready_timeout(mut self, timeout: Duration) -> ClusterBuilder {
        self.ready_timeout = timeout;
        self
    }

    /// How long one CNI plugin call may take.
    pub fn cni_timeout(mut self, timeout: Duration) -> ClusterBuilder {
        self.cni_timeout = timeout;
        self
    }

    /// Where the binaries are (default: `$WEFT_BIN_DIR`, else the running
    /// executable's `target/<profile>/`).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> ClusterBuilder {
        self.bin_dir = Some(dir.into());
        self
    }

    /// More flags for every `weft-agent` (e.g. `["--cert-ttl", "6s"]`).
    pub fn agent_args(mut self, args: &[&str]) -> ClusterBuilder {
        self.agent_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Checks the host, removes leftovers of dead runs, builds the network,
    /// and (with the mesh) starts the control plane and one agent per node,
    /// waiting until each is ready. On error everything created is removed.
    pub fn build(self) -> Result<Cluster> {
        if !(1..=50).contains(&self.nodes) {
            bail!("a cluster has 1 to 50 nodes, not {}", self.nodes);
        }
        let cgroup2 = preflight::check_host()?;
        let bins = match &self.bin_dir {
            Some(dir) => BinDir::at(dir.clone()),
            None => BinDir::locate()?,
        };
        if self.mesh {
            bins.require(&[bins::CONTROL, bins::AGENT, bins::CNI])?;
            preflight::ensure_bpffs()?;
        }
        match cleanup_stale(&cgroup2) {
            Ok(removed) if !removed.is_empty() => {
                eprintln!("weft-sim: removed leftovers of dead runs {removed:?}");
            }
            Ok(_) => {}
            Err(e) => eprintln!("weft-sim: warning: could not remove stale runs: {e:#}"),
        }
        let run = RunId::new();
        let dir = run.temp_dir();
        let addressing = Addressing::for_run(&run);
        let run_cgroup = run.cgroup_dir(&cgroup2);
        let log_dir = dir.join("logs");
        let control = ControlPlane {
            netns: Netns::named(&run.netns("control")),
            ip: addressing.control_ip(),
            config_dir: dir.join("config"),
            kubeconfig: self.kubernetes.then(|| dir.join("kubeconfig")),
            state_dir: dir.join("control"),
            cgroup: run_cgroup.join("system").join("control"),
            log_dir: log_dir.clone(),
            binary: if self.mesh {
                Some(bins.get(bins::CONTROL)?)
            } else {
                None
            },
            trust_domain: self.trust_domain.clone(),
            ready_timeout: self.ready_timeout,
            extra_args: Mutex::new(Vec::new()),
            process: Mutex::new(None),
        };
        // From here on, dropping `cluster` (also on error) removes the run.
        let mut cluster = Cluster {
            app_binary: bins.get(bins::APP).ok(),
            http_binary: bins.get(bins::HTTP_APP).ok(),
            config: ConfigDir::at(dir.join("config")),
            fabric: Netns::named(&run.netns("fabric")),
            nodes: Vec::new(),
            state: Mutex::new(State::default()),
            mesh: self.mesh,
            cni_timeout: self.cni_timeout,
            control,
            bins,
            addressing,
            run_cgroup,
            cgroup2,
            log_dir,
            dir,
            run,
        };
        cluster.set_up(&self)?;
        Ok(cluster)
    }
}
