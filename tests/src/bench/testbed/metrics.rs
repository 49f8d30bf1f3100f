//! The agents' per-request telemetry on or off, for the metrics
//! scenarios: the traffic metrics (`istio_tcp_*` per connection,
//! `istio_request*` per HTTP request; both agents restarted with
//! `WEFT_TRAFFIC_METRICS` set, which they inherit from this process, as
//! with `--agent-env`) and the access log (the mesh config's
//! `accessLogFile`, `/dev/stdout` or `""`), on the same cluster, pods and
//! Services as every other scenario.

use std::ffi::OsString;

use super::*;

/// The agent's setting (`weft-agent --traffic-metrics`).
const TRAFFIC_METRICS_ENV: &str = "WEFT_TRAFFIC_METRICS";

/// `WEFT_TRAFFIC_METRICS` as it was before the first restart here.
static ORIGINAL: OnceLock<Option<OsString>> = OnceLock::new();

impl Testbed {
    /// Restarts both agents (node-2's, then node-1's) with their traffic
    /// metrics on or off, and waits until every client reaches its servers
    /// and the L4 and L7 Services carry traffic as declared again.
    pub fn restart_agents_with_traffic_metrics(&self, on: bool) -> Result<()> {
        ORIGINAL.get_or_init(|| std::env::var_os(TRAFFIC_METRICS_ENV));
        set_env(Some(&OsString::from(if on { "true" } else { "false" })));
        self.set_access_log(on)?;
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

    /// Puts `WEFT_TRAFFIC_METRICS` back as the run started with and, if
    /// [`Testbed::restart_agents_with_traffic_metrics`] changed it,
    /// restarts the agents with it, so that later scenarios see the agents
    /// as configured.
    pub fn restore_traffic_metrics(&self) -> Result<()> {
        let Some(original) = ORIGINAL.get() else {
            return Ok(());
        };
        set_env(original.as_ref());
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
    /// (e.g. `istio_requests_total`), by node: the proof that the traffic
    /// metrics were on or off during a measurement.
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

fn set_env(value: Option<&OsString>) {
    // SAFETY: the benchmark's only thread runs here: the clients and
    // servers are other processes, and the helper threads of a command's
    // run or of a network namespace are joined before it returns.
    unsafe {
        match value {
            Some(v) => std::env::set_var(TRAFFIC_METRICS_ENV, v),
            None => std::env::remove_var(TRAFFIC_METRICS_ENV),
        }
    }
}
