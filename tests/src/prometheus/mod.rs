//! A private, real Prometheus for a test: it scrapes the targets the test
//! names every second and answers PromQL over its HTTP API.
//!
//! Each [`Prometheus`] runs Debian's `/usr/bin/prometheus` (installed by
//! `cargo xtask setup`) with its own configuration and TSDB in a temporary
//! directory, listening on a free `127.0.0.1` port (never :9090, where a
//! system service may run). Dropping it kills the process and removes the
//! directory; the process also dies with the thread that started it
//! (`PR_SET_PDEATHSIG`), and directories of test processes that died are
//! removed at the next start.
//!
//! ```no_run
//! use weft_sim::prometheus::{Prometheus, ScrapeJob};
//! # fn main() -> anyhow::Result<()> {
//! let prom = Prometheus::start(&[
//!     ScrapeJob::new("weft-agent", ["127.0.0.1:15020"]).metrics_path("/stats/prometheus"),
//! ])?;
//! let opened = prom.query("sum(istio_tcp_connections_opened_total)")?;
//! println!("{:?}", opened.first().map(|s| s.value));
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::Netns;
use crate::process::{Placement, Process};
use crate::wait::wait_for;

mod api;
mod config;
mod http;

pub use api::{QueryError, RangeSeries, Sample, Target};
pub use config::ScrapeJob;

use config::config_yaml;
use http::http_in;

/// Where Debian's `prometheus` package puts the server.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";

/// How often every target is scraped (and rules evaluated).
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// Default bound of [`Prometheus::start`]'s waits: ready, then every target up.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Prefix of the temporary directories, `weft-prometheus-<pid>-<n>`; not
/// `weft-sim-…`, which the cluster's stale-run clean-up owns.
const DIR_PREFIX: &str = "weft-prometheus-";

/// Distinguishes the directories of Prometheuses started by one process.
static SEQ: AtomicU64 = AtomicU64::new(1);

/// Starts a [`Prometheus`] with options; [`Prometheus::start`] is the
/// common case.
#[derive(Debug, Clone)]
pub struct PrometheusBuilder {
    binary: PathBuf,
    jobs: Vec<ScrapeJob>,
    wait: Duration,
    wait_targets: bool,
    netns: Option<Netns>,
}

// === impl PrometheusBuilder ===

impl PrometheusBuilder {
    /// Adds a scrape job.
    pub fn job(mut self, job: ScrapeJob) -> PrometheusBuilder {
        self.jobs.push(job);
        self
    }

    /// Adds scrape jobs.
    pub fn jobs(mut self, jobs: &[ScrapeJob]) -> PrometheusBuilder {
        self.jobs.extend_from_slice(jobs);
        self
    }

    /// Runs another Prometheus binary than [`PROMETHEUS_BIN`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> PrometheusBuilder {
        self.binary = path.into();
        self
    }

    /// Bounds the waits for readiness and for the targets (each); default
    /// [`DEFAULT_WAIT`].
    pub fn wait(mut self, timeout: Duration) -> PrometheusBuilder {
        self.wait = timeout;
        self
    }

    /// Runs Prometheus inside `netns` (listening on its loopback), where
    /// it reaches what the test process cannot: a simulated cluster's
    /// agents on the fabric. Queries go through the same namespace.
    pub fn netns(mut self, netns: &Netns) -> PrometheusBuilder {
        self.netns = Some(netns.clone());
        self
    }

    /// Whether [`PrometheusBuilder::start`] waits until every target is up
    /// (default true); without it, only until Prometheus is ready.
    pub fn wait_for_targets(mut self, wait: bool) -> PrometheusBuilder {
        self.wait_targets = wait;
        self
    }

    /// Starts Prometheus, waits until it is ready and (unless disabled)
    /// until every target has been scraped successfully.
    pub fn start(self) -> Result<Prometheus> {
        if !self.binary.exists() {
            bail!(
                "Prometheus is not installed: {} is missing (run `cargo xtask setup`, \
                 which installs Debian's prometheus package)",
                self.binary.display()
            );
        }
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut prom = Prometheus {
            process: None,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            dir,
            jobs: self.jobs.clone(),
            netns: self.netns.clone(),
        };
        let config = prom.dir.join("prometheus.yml");
        std::fs::write(&config, config_yaml(&self.jobs)?)
            .with_context(|| format!("writing {}", config.display()))?;
        // The free port is found by binding and releasing it; another
        // process may take it in between, so a Prometheus that exits
        // before it is ready is started again on another port.
        let mut attempt = 1;
        while let Err(e) = prom.spawn(&self.binary, &config, self.wait) {
            let exited = prom.process.as_mut().is_some_and(|p| !p.is_running());
            if !exited || attempt == 3 {
                return Err(e);
            }
            attempt += 1;
        }
        if self.wait_targets {
            prom.wait_targets_up(self.wait)?;
        }
        Ok(prom)
    }
}

/// A running Prometheus; killed, and its directory removed, on drop.
#[derive(Debug)]
pub struct Prometheus {
    process: Option<Process>,
    addr: SocketAddr,
    dir: PathBuf,
    jobs: Vec<ScrapeJob>,
    /// Where it runs, when not in the test's own namespace.
    netns: Option<Netns>,
}

// === impl Prometheus ===

impl Prometheus {
    /// Options: binary, waits.
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder {
            binary: PROMETHEUS_BIN.into(),
            jobs: Vec::new(),
            wait: DEFAULT_WAIT,
            wait_targets: true,
            netns: None,
        }
    }

    /// Starts a Prometheus scraping `jobs` every second; returns once it is
    /// ready and every target is up.
    pub fn start(jobs: &[ScrapeJob]) -> Result<Prometheus> {
        Prometheus::builder().jobs(jobs).start()
    }

    fn spawn(&mut self, binary: &Path, config: &Path, timeout: Duration) -> Result<()> {
        if let Some(mut old) = self.process.take() {
            old.kill();
        }
        self.addr = match &self.netns {
            Some(netns) => netns.run(free_port)??,
            None => free_port()?,
        };
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg("--storage.tsdb.retention.time=1d")
            .current_dir(&self.dir);
        // SAFETY: prctl(2) only; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let label = format!("prometheus-{}", self.addr.port());
        let placement = Placement {
            netns: self.netns.clone(),
            ..Placement::default()
        };
        self.process = Some(Process::spawn(cmd, &placement, &self.dir, &label)?);
        self.wait_ready(timeout)
    }

    /// Waits until `/-/ready` answers 200; fails early, with the log, if
    /// the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let addr = self.addr;
        let netns = self.netns.clone();
        let what = format!("Prometheus at {addr} to be ready (GET /-/ready)");
        let process = self.process.as_mut().context("Prometheus is not running")?;
        let start = Instant::now();
        let mut exited = None;
        let ready = wait_for(&what, timeout, || {
            if let Some(status) = process.try_status() {
                exited = Some(status);
                return Ok(Some(false));
            }
            let (status, _) = http_in(netns.as_ref(), addr, "GET", "/-/ready", None)?;
            Ok((status == 200).then_some(true))
        });
        match (ready, exited) {
            (_, Some(status)) => bail!(
                "Prometheus exited ({status}) {:?} after starting, before it was ready\n{}",
                start.elapsed(),
                process.log_tail(30)
            ),
            (Ok(_), None) => Ok(()),
            (Err(e), None) => Err(e.context(process.log_tail(30))),
        }
    }

    /// `host:port` Prometheus listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`, Prometheus's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The temporary directory holding the configuration, TSDB and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The scrape jobs it was started with.
    pub fn jobs(&self) -> &[ScrapeJob] {
        &self.jobs
    }

    /// The process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Everything Prometheus has logged.
    pub fn log(&self) -> String {
        self.process.as_ref().map(Process::log).unwrap_or_default()
    }

    /// Waits until every configured target has been scraped and is up.
    /// The error lists each target's health and last scrape error.
    pub fn wait_targets_up(&self, timeout: Duration) -> Result<()> {
        let expected: usize = self.jobs.iter().map(|j| j.targets.len()).sum();
        let mut last = Vec::new();
        let result = wait_for(
            &format!(
                "all {expected} scrape targets of Prometheus at {} to be up",
                self.addr
            ),
            timeout,
            || {
                let targets = self.targets()?;
                let up = targets.len() == expected && targets.iter().all(|t| t.health == "up");
                last = targets;
                Ok(up.then_some(()))
            },
        );
        result.map_err(|e| {
            let states: Vec<String> = last
                .iter()
                .map(|t| {
                    format!(
                        "  job {} {}: {}{}",
                        t.job,
                        t.scrape_url,
                        t.health,
                        if t.last_error.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", t.last_error)
                        }
                    )
                })
                .collect();
            anyhow!(
                "{e:#}\ntargets ({} of {expected} known):\n{}",
                last.len(),
                states.join("\n")
            )
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes `weft-prometheus-<pid>-*` directories whose process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<SocketAddr> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_run_setup() {
        let err = Prometheus::builder()
            .binary("/nonexistent/prometheus")
            .start()
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/prometheus"), "{err}");
        assert!(err.contains("cargo xtask setup"), "{err}");
    }
}
