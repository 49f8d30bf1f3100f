//! A node: a network namespace on the fabric bridge, a pod CIDR, a cgroup
//! that parents its pods' cgroups, and (in a mesh cluster) a `weft-agent`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;
use crate::probe::http_status;
use crate::process::{Finished, Placement, Process, run};
use crate::wait::wait_for;

/// The agent's readiness port (Istio's 15021).
pub const AGENT_READY_PORT: u16 = 15021;

/// How a node's agent is started; absent in a cluster built with `mesh(false)`.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub binary: PathBuf,
    pub control_addr: SocketAddr,
    pub ca_root_file: PathBuf,
    pub ready_timeout: Duration,
    /// More flags for every agent (e.g. `--cert-ttl 6s`).
    pub extra_args: Vec<String>,
}

/// One node of the cluster.
#[derive(Debug)]
pub struct Node {
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) pod_net: Ipv4Addr,
    pub(crate) netns: Netns,
    pub(crate) pods_cgroup: PathBuf,
    pub(crate) system_cgroup: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) bpffs: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) agent_config: Option<AgentConfig>,
    pub(crate) agent: Mutex<Option<Process>>,
    /// Agents replaced by an upgrade, finishing their connections.
    pub(crate) retired_agents: Mutex<Vec<Process>>,
    /// Last octet of the next pod IP (never reused within a run).
    pub(crate) next_pod_host: Mutex<u8>,
}

// === impl Node ===

impl Node {
    /// The node's name, e.g. `node-1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's IP on the fabric bridge.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The node's pod CIDR, e.g. `10.21.1.0/24`.
    pub fn pod_cidr(&self) -> String {
        format!("{}/24", self.pod_net)
    }

    /// The node's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The cgroup directory holding this node's pods' cgroups: where the
    /// node's agent attaches its cgroup eBPF programs (`--cgroup`).
    pub fn cgroup_dir(&self) -> &Path {
        &self.pods_cgroup
    }

    /// The bpffs directory the node's agent pins into (`--bpffs-dir`).
    pub fn bpffs_dir(&self) -> &Path {
        &self.bpffs
    }

    /// The agent's CNI socket (`--cni-socket`, and `agent_socket` for weft-cni).
    pub fn cni_socket(&self) -> PathBuf {
        self.dir.join("cni.sock")
    }

    /// The agent's state directory (`--state-dir`).
    pub fn agent_state_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// The bootstrap token file (`--token-file`).
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// Runs `f` on a thread inside the node's network namespace.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        self.netns.run(f)
    }

    /// Starts `cmd` in the node's network namespace (as a host process of
    /// the node: not in any pod's cgroup). Output goes to a log file.
    pub fn spawn(&self, cmd: Command) -> Result<Process> {
        let label = format!("{}/{}", self.name, program_name(&cmd));
        Process::spawn(cmd, &self.placement(), &self.log_dir, &label)
    }

    /// Runs `cmd` to completion in the node's network namespace.
    pub fn run(&self, cmd: Command, timeout: Duration) -> Result<Finished> {
        run(cmd, &self.placement(), None, timeout)
    }

    fn placement(&self) -> Placement {
        Placement {
            netns: Some(self.netns.clone()),
            cgroup: Some(self.system_cgroup.clone()),
        }
    }

    /// The running agent's pid, if any.
    pub fn agent_pid(&self) -> Option<u32> {
        let mut slot = self.lock_agent();
        let p = slot.as_mut()?;
        p.is_running().then(|| p.pid())
    }

    /// `GET <path>` from the agent's admin API (`127.0.0.1:15000`), as
    /// JSON.
    pub fn admin_json(&self, path: &str) -> Result<serde_json::Value> {
        let admin: SocketAddr = ([127, 0, 0, 1], 15000).into();
        let (status, body) = crate::probe::http_get(&self.netns, admin, path)?;
        if status != 200 {
            bail!("{}: GET {path} answered {status}: {body}", self.name);
        }
        serde_json::from_str(&body)
            .with_context(|| format!("{}: GET {path} is not JSON: {body}", self.name))
    }

    /// `POST <path>` to the agent's admin API, as JSON; the agent may take
    /// up to `timeout` to answer (a profile).
    pub fn admin_post_json(&self, path: &str, timeout: Duration) -> Result<serde_json::Value> {
        let admin: SocketAddr = ([127, 0, 0, 1], 15000).into();
        let (status, body) = crate::probe::http_request(&self.netns, admin, "POST", path, timeout)?;
        if status != 200 {
            bail!("{}: POST {path} answered {status}: {body}", self.name);
        }
        serde_json::from_str(&body)
            .with_context(|| format!("{}: POST {path} is not JSON: {body}", self.name))
    }

    /// The agent's metrics (`<node IP>:15020/stats/prometheus`), in the
    /// classic Prometheus text format.
    pub fn agent_metrics(&self) -> Result<String> {
        let addr = SocketAddr::from((self.ip(), 15020));
        let (status, body) = crate::probe::http_get(&self.netns, addr, "/stats/prometheus")?;
        if status != 200 {
            bail!(
                "{}: GET /stats/prometheus answered {status}: {body}",
                self.name
            );
        }
        Ok(body)
    }

    /// The agent's whole log so far.
    pub fn agent_log(&self) -> String {
        match self.lock_agent().as_ref() {
            Some(p) => p.log(),
            None => String::new(),
        }
    }

    /// How many bytes the agent has logged so far (stdout and stderr,
    /// access log included); 0 when it is not running.
    pub fn agent_log_len(&self) -> u64 {
        match self.lock_agent().as_ref() {
            Some(p) => std::fs::metadata(p.log_path()).map_or(0, |m| m.len()),
            None => 0,
        }
    }

    /// The last `lines` lines of the agent's log.
    pub fn agent_log_tail(&self, lines: usize) -> String {
        match self.lock_agent().as_ref() {
            Some(p) => p.log_tail(lines),
            None => format!("({}: no agent started)", self.name),
        }
    }

    /// Starts the agent and waits until it reports ready.
    pub fn start_agent(&self) -> Result<()> {
        let cfg = self.agent_config()?;
        let mut slot = self.lock_agent();
        if let Some(p) = slot.as_mut()
            && p.is_running()
        {
            bail!(
                "the agent of {} is already running (pid {})",
                self.name,
                p.pid()
            );
        }
        let process = self.spawn_agent(cfg)?;
        *slot = Some(process);
        drop(slot);
        self.wait_agent_ready(cfg.ready_timeout)
    }

    fn spawn_agent(&self, cfg: &AgentConfig) -> Result<Process> {
        std::fs::create_dir_all(self.agent_state_dir())?;
        let mut cmd = Command::new(&cfg.binary);
        cmd.arg("--node-name")
            .arg(&self.name)
            .arg("--control-addr")
            .arg(cfg.control_addr.to_string())
            .arg("--ca-root-file")
            .arg(&cfg.ca_root_file)
            .arg("--token-file")
            .arg(self.token_file())
            .arg("--cni-socket")
            .arg(self.cni_socket())
            .arg("--state-dir")
            .arg(self.agent_state_dir())
            .arg("--bpffs-dir")
            .arg(&self.bpffs)
            .arg("--cgroup")
            .arg(&self.pods_cgroup)
            .args(&cfg.extra_args);
        let label = format!("{}/weft-agent", self.name);
        Process::spawn(cmd, &self.placement(), &self.log_dir, &label)
    }

    /// Upgrades the agent as a DaemonSet rolling with `maxSurge: 1` does:
    /// a new agent starts beside the running one and takes its listeners
    /// over; once it serves them, the old one gets SIGTERM and finishes
    /// the connections it holds, for up to its `--drain-timeout`. Returns
    /// when the new agent is ready; [`Self::wait_retired_agents`] waits for
    /// the old one to exit.
    pub fn upgrade_agent(&self) -> Result<()> {
        let cfg = self.agent_config()?;
        let mut slot = self.lock_agent();
        let Some(mut old) = slot.take() else {
            bail!(
                "the agent of {} is not running: nothing to upgrade",
                self.name
            );
        };
        if !old.is_running() {
            bail!(
                "the agent of {} has exited: nothing to upgrade\n{}",
                self.name,
                old.log_tail(40)
            );
        }
        *slot = Some(self.spawn_agent(cfg)?);
        drop(slot);
        let what = format!("the new agent of {} to take the node over", self.name);
        let took_over = wait_for(&what, cfg.ready_timeout, || {
            let mut slot = self.lock_agent();
            let new = slot.as_mut().expect("the new agent was just started");
            if let Some(status) = new.try_status() {
                return Ok(Some(Err(anyhow::anyhow!(
                    "the new agent exited ({status})"
                ))));
            }
            Ok(new.log().contains("took this node over").then_some(Ok(())))
        })
        .and_then(|outcome| outcome);
        let retire = |mut old: Process| {
            let _ = old.signal(nix::sys::signal::Signal::SIGTERM);
            self.retired_agents
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old);
        };
        if let Err(err) = took_over {
            retire(old);
            bail!("{err:#}\nnew agent:\n{}", self.agent_log_tail(60));
        }
        self.wait_agent_ready(cfg.ready_timeout)?;
        // The old agent logs the handover once the new one has the
        // sockets, through its log's batching writer: the new agent can
        // be ready before that line is written.
        let logged = wait_for(
            &format!("the old agent of {} to log the handover", self.name),
            cfg.ready_timeout,
            || Ok(old.log().contains("handed this node over").then_some(())),
        );
        if logged.is_err() {
            let tail = old.log_tail(40);
            retire(old);
            bail!(
                "the old agent of {} did not log the handover:\n{tail}",
                self.name
            );
        }
        retire(old);
        Ok(())
    }

    /// The pids of the agents replaced by upgrades that still run; those
    /// that exited are dropped from the list, with their exit status.
    pub fn retired_agents(&self) -> (Vec<u32>, Vec<std::process::ExitStatus>) {
        let mut retired = self
            .retired_agents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut exited = Vec::new();
        retired.retain_mut(|p| match p.try_status() {
            Some(status) => {
                exited.push(status);
                false
            }
            None => true,
        });
        (retired.iter().map(Process::pid).collect(), exited)
    }

    /// Waits up to `timeout` for the agents replaced by upgrades to exit,
    /// and returns their logs. Errors if one is still running, or exited
    /// with a failure.
    pub fn wait_retired_agents(&self, timeout: Duration) -> Result<Vec<String>> {
        let mut retired = self
            .retired_agents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut logs = Vec::new();
        for mut old in retired.drain(..) {
            let status = old.wait_exit(timeout).with_context(|| {
                format!("a retired agent of {}:\n{}", self.name, old.log_tail(40))
            })?;
            if !status.success() {
                bail!(
                    "a retired agent of {} exited with {status}:\n{}",
                    self.name,
                    old.log_tail(40)
                );
            }
            logs.push(old.log());
        }
        Ok(logs)
    }

    /// Waits until `GET http://<node ip>:15021/healthz/ready` answers 200;
    /// fails at once, with the agent's log, if the agent exits meanwhile.
    pub fn wait_agent_ready(&self, timeout: Duration) -> Result<()> {
        let addr = SocketAddr::from((self.ip, AGENT_READY_PORT));
        let what = format!(
            "the agent of {} to be ready (GET http://{addr}/healthz/ready)",
            self.name
        );
        let outcome = wait_for(&what, timeout, || {
            if let Some(p) = self.lock_agent().as_mut()
                && let Some(status) = p.try_status()
            {
                return Ok(Some(Err(anyhow::anyhow!("the agent exited ({status})"))));
            }
            match http_status(&self.netns, addr, "/healthz/ready")? {
                200 => Ok(Some(Ok(()))),
                code => bail!("readiness answered {code}"),
            }
        });
        outcome.and_then(|r| r).map_err(|e| {
            anyhow::anyhow!(
                "the agent of {} is not ready: {e:#}\n{}",
                self.name,
                self.agent_log_tail(60)
            )
        })
    }

    /// Stops the agent: SIGKILL, or SIGTERM with up to `grace` to exit
    /// (then SIGKILL). Returns whether it exited by itself within `grace`.
    pub fn stop_agent(&self, graceful: Option<Duration>) -> bool {
        let mut slot = self.lock_agent();
        let Some(p) = slot.as_mut() else {
            return true;
        };
        match graceful {
            Some(grace) => p.terminate(grace).1,
            None => {
                p.kill();
                true
            }
        }
    }

    /// Kills the agent (SIGKILL) and starts it again, waiting until ready.
    pub fn restart_agent(&self) -> Result<()> {
        self.stop_agent(None);
        self.start_agent()
    }

    /// Stops the agent with SIGTERM (SIGKILL after `grace`) and starts it
    /// again, waiting until ready. Errors if it did not exit within `grace`.
    pub fn restart_agent_graceful(&self, grace: Duration) -> Result<()> {
        if !self.stop_agent(Some(grace)) {
            bail!(
                "the agent of {} did not exit within {grace:?} of SIGTERM and was killed\n{}",
                self.name,
                self.agent_log_tail(60)
            );
        }
        self.start_agent()
    }

    fn agent_config(&self) -> Result<&AgentConfig> {
        self.agent_config.as_ref().with_context(|| {
            format!(
                "{} has no agent: the cluster was built with mesh(false)",
                self.name
            )
        })
    }

    fn lock_agent(&self) -> std::sync::MutexGuard<'_, Option<Process>> {
        self.agent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the next free pod IP of this node.
    pub(crate) fn allocate_pod_ip(&self) -> Result<Ipv4Addr> {
        let mut next = self.next_pod_host.lock().unwrap_or_else(|e| e.into_inner());
        if *next == 255 {
            bail!("{} has no pod IPs left in {}", self.name, self.pod_cidr());
        }
        let [a, b, c, _] = self.pod_net.octets();
        let ip = Ipv4Addr::new(a, b, c, *next);
        *next += 1;
        Ok(ip)
    }
}

/// The file name of a command's program, for log labels.
pub(crate) fn program_name(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "process".to_string())
}
