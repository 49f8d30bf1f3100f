//! The agents' telemetry on or off, for the scenarios that measure what
//! it costs, on the same cluster, pods and Services as every other
//! scenario: both agents restarted with the settings below in the
//! environment they inherit from this process (as with `--agent-env`).
//!
//! - [`Telemetry::Traffic`], the per-request telemetry: the traffic
//!   metrics (`istio_tcp_*` per connection, `istio_request*` per HTTP
//!   request; `WEFT_TRAFFIC_METRICS`) and the access log (the mesh
//!   config's `accessLogFile`, `/dev/stdout` or `""`).
//! - [`Telemetry::Kernel`], what the agent measures with eBPF: the
//!   per-workload TCP health (`WEFT_TCP_HEALTH`, the `weft_tcp_health`
//!   program) and the per-pod mesh waits (`WEFT_MESH_WAITS`, the SYN
//!   stamp in `weft_sockops` included).

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Mutex;

use super::*;
use crate::bench::options::{KernelTelemetry, TrafficTelemetry};

/// What a scenario turns off to measure its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telemetry {
    /// All of it, or one part (`weft-bench --traffic-telemetry`).
    Traffic(TrafficTelemetry),
    /// All of it, or one part (`weft-bench --kernel-telemetry`).
    Kernel(KernelTelemetry),
}

impl Telemetry {
    /// The agent's settings (`weft-agent --traffic-metrics`,
    /// `--tcp-health`, `--mesh-waits`).
    fn env(self) -> &'static [&'static str] {
        match self {
            Telemetry::Traffic(part) if part.metrics() => &["WEFT_TRAFFIC_METRICS"],
            Telemetry::Traffic(_) => &[],
            Telemetry::Kernel(KernelTelemetry::Both) => &["WEFT_TCP_HEALTH", "WEFT_MESH_WAITS"],
            Telemetry::Kernel(KernelTelemetry::TcpHealth) => &["WEFT_TCP_HEALTH"],
            Telemetry::Kernel(KernelTelemetry::MeshWaits) => &["WEFT_MESH_WAITS"],
        }
    }
}

/// Each setting changed here, as it was before its first change.
static ORIGINAL: Mutex<Option<HashMap<&'static str, Option<OsString>>>> = Mutex::new(None);

impl Testbed {
    /// Restarts both agents (node-2's, then node-1's) with `telemetry` on
    /// or off, and waits until every client reaches its servers and the L4
    /// and L7 Services carry traffic as declared again.
    pub fn restart_agents_with(&self, telemetry: Telemetry, on: bool) -> Result<()> {
        {
            let mut original = ORIGINAL.lock().expect("settings lock");
            let original = original.get_or_insert_with(HashMap::new);
            for name in telemetry.env() {
                original
                    .entry(name)
                    .or_insert_with(|| std::env::var_os(name));
                set_env(
                    name,
                    Some(&OsString::from(if on { "true" } else { "false" })),
                );
            }
        }
        if let Telemetry::Traffic(part) = telemetry {
            // The part left on stays as the run started: on.
            self.set_access_log(on || !part.access_log())?;
        }
        self.restart_agents()
    }

    /// Writes the mesh config with the access log to stdout (`on`) or
    /// off, and gives weft-control a moment to read it before the agents
    /// restart and fetch it (the scenario checks that it took).
    fn set_access_log(&self, on: bool) -> Result<()> {
        let file = if on { "/dev/stdout" } else { "" };
        self.cluster.write_config_file(
            "bench-mesh-config.yaml",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    accessLogFile: \"{file}\"\n"
            ),
        )?;
        std::thread::sleep(std::time::Duration::from_secs(1));
        Ok(())
    }

    /// Bytes each agent has logged so far, by node: the scenario compares
    /// them before and after a measurement to prove the access log was on
    /// (a line per connection or request) or off.
    pub fn agent_log_sizes(&self) -> Vec<(String, u64)> {
        self.cluster
            .nodes()
            .iter()
            .map(|node| (node.name().to_string(), node.agent_log_len()))
            .collect()
    }

    /// Puts every setting [`Testbed::restart_agents_with`] changed back as
    /// the run started with and, if there was any, restarts the agents
    /// with them, so that later scenarios see the agents as configured.
    pub fn restore_telemetry(&self) -> Result<()> {
        let Some(original) = ORIGINAL.lock().expect("settings lock").take() else {
            return Ok(());
        };
        for (name, value) in &original {
            set_env(name, value.as_ref());
        }
        self.set_access_log(true)?;
        self.restart_agents()
    }

    fn restart_agents(&self) -> Result<()> {
        self.cluster.with_logs(|cluster| {
            for node in cluster.nodes().iter().rev() {
                node.restart_agent()?;
            }
            self.wait_reachable()?;
            self.wait_services()
        })
    }

    /// Whether each agent's Prometheus endpoint holds a sample of `family`
    /// (e.g. `istio_requests_total`), by node: the proof that the
    /// telemetry was on or off during a measurement.
    pub fn traffic_recorded(&self, family: &str) -> Result<Vec<(String, bool)>> {
        let prefix = format!("{family}{{");
        self.cluster
            .nodes()
            .iter()
            .map(|node| {
                let text = node.agent_metrics()?;
                let found = text.lines().any(|l| l.starts_with(&prefix));
                Ok((node.name().to_string(), found))
            })
            .collect()
    }
}

fn set_env(name: &str, value: Option<&OsString>) {
    // SAFETY: the benchmark's only thread runs here: the clients and
    // servers are other processes, and the helper threads of a command's
    // run or of a network namespace are joined before it returns.
    unsafe {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
}
