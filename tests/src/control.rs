//! The control plane: `weft-control serve` in its own namespace on the
//! fabric, reading the harness's config directory.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;
use crate::probe::http_status;
use crate::process::{Placement, Process, run};
use crate::wait::wait_for;

/// xDS and CA port (Istio's 15012).
pub const XDS_PORT: u16 = 15012;
/// Monitoring and debug port (Istio's 15014), serving `/ready`.
pub const DEBUG_PORT: u16 = 15014;

/// The control plane of a cluster.
#[derive(Debug)]
pub struct ControlPlane {
    pub(crate) netns: Netns,
    pub(crate) ip: Ipv4Addr,
    pub(crate) config_dir: PathBuf,
    /// Kubernetes mode: watch the API server of this kubeconfig instead of
    /// `config_dir`.
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) state_dir: PathBuf,
    pub(crate) cgroup: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) binary: Option<PathBuf>,
    pub(crate) trust_domain: String,
    pub(crate) ready_timeout: Duration,
    /// More flags for `weft-control serve` (e.g. a CA given as files).
    pub(crate) extra_args: Mutex<Vec<String>>,
    pub(crate) process: Mutex<Option<Process>>,
}

// === impl ControlPlane ===

impl ControlPlane {
    /// The control plane's IP on the fabric.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `<control ip>:15012`, what agents dial.
    pub fn xds_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, XDS_PORT))
    }

    /// `<control ip>:15014`.
    pub fn debug_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, DEBUG_PORT))
    }

    /// The control plane's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The control plane's state directory (`--state-dir`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The CA's root certificates, written by the control plane at start.
    pub fn trust_bundle(&self) -> PathBuf {
        self.state_dir.join("trust-bundle.pem")
    }

    /// The control plane's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        let mut slot = self.lock();
        let p = slot.as_mut()?;
        p.is_running().then(|| p.pid())
    }

    /// The last `lines` lines of the control plane's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match self.lock().as_ref() {
            Some(p) => p.log_tail(lines),
            None => "(control plane not started)".to_string(),
        }
    }

    fn binary(&self) -> Result<&Path> {
        self.binary
            .as_deref()
            .context("the cluster was built with mesh(false): it has no control plane")
    }

    /// Starts `weft-control serve` and waits until `/ready` answers 200 and
    /// the trust bundle exists.
    pub fn start(&self) -> Result<()> {
        let binary = self.binary()?;
        let mut slot = self.lock();
        if let Some(p) = slot.as_mut()
            && p.is_running()
        {
            bail!("the control plane is already running (pid {})", p.pid());
        }
        std::fs::create_dir_all(&self.state_dir)?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve");
        match &self.kubeconfig {
            Some(kubeconfig) => cmd.arg("--kubeconfig").arg(kubeconfig),
            None => cmd.arg("--config-dir").arg(&self.config_dir),
        };
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--xds-addr")
            .arg(format!("0.0.0.0:{XDS_PORT}"))
            .arg("--debug-addr")
            .arg(format!("0.0.0.0:{DEBUG_PORT}"))
            .arg("--trust-domain")
            .arg(&self.trust_domain)
            .args(
                self.extra_args
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter(),
            );
        *slot = Some(Process::spawn(
            cmd,
            &self.placement(),
            &self.log_dir,
            "control/weft-control",
        )?);
        drop(slot);
        self.wait_ready(self.ready_timeout)
    }

    /// Waits until `GET /ready` on the debug port answers 200 and the trust
    /// bundle exists; fails at once, with the log, if the process exits.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let addr = self.debug_addr();
        let bundle = self.trust_bundle();
        let what = format!(
            "the control plane to be ready (GET http://{addr}/ready, {})",
            bundle.display()
        );
        let outcome = wait_for(&what, timeout, || {
            if let Some(p) = self.lock().as_mut()
                && let Some(status) = p.try_status()
            {
                return Ok(Some(Err(anyhow::anyhow!("weft-control exited ({status})"))));
            }
            match http_status(&self.netns, addr, "/ready")? {
                200 if bundle.is_file() => Ok(Some(Ok(()))),
                200 => bail!("ready, but {} does not exist", bundle.display()),
                code => bail!("/ready answered {code}"),
            }
        });
        outcome.and_then(|r| r).map_err(|e| {
            anyhow::anyhow!(
                "the control plane is not ready: {e:#}\n{}",
                self.log_tail(60)
            )
        })
    }

    /// Stops the control plane: SIGKILL, or SIGTERM with up to `grace`.
    /// Returns whether it exited by itself within `grace`.
    pub fn stop(&self, graceful: Option<Duration>) -> bool {
        let mut slot = self.lock();
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

    /// Kills the control plane and starts it again, waiting until ready.
    pub fn restart(&self) -> Result<()> {
        self.stop(None);
        self.start()
    }

    /// Restarts the control plane with `args` added to `serve`'s flags
    /// (replacing those of an earlier call).
    pub fn restart_with(&self, args: &[&str]) -> Result<()> {
        *self.extra_args.lock().unwrap_or_else(|e| e.into_inner()) =
            args.iter().map(|a| a.to_string()).collect();
        self.restart()
    }

    /// Runs `weft-control bootstrap-token --state-dir … --node <node>` and
    /// returns the token (its stdout, trimmed).
    pub fn bootstrap_token(&self, node: &str) -> Result<String> {
        let mut cmd = Command::new(self.binary()?);
        cmd.arg("bootstrap-token")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--node")
            .arg(node);
        let done = run(cmd, &self.placement(), None, Duration::from_secs(30))?
            .check(&format!("weft-control bootstrap-token for {node}"))?;
        let token = done.stdout.trim().to_string();
        if token.is_empty() {
            bail!(
                "weft-control bootstrap-token for {node} printed no token\n{}",
                done.stderr
            );
        }
        Ok(token)
    }

    fn placement(&self) -> Placement {
        Placement {
            netns: Some(self.netns.clone()),
            cgroup: Some(self.cgroup.clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Process>> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }
}
