//! The agents' traffic metrics (`istio_tcp_*` per connection,
//! `istio_request*` per HTTP request) on or off, for the metrics
//! scenarios: both agents restarted with `WEFT_TRAFFIC_METRICS` set,
//! which they inherit from this process (as with `--agent-env`), on the
//! same cluster, pods and Services as every other scenario.

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
        self.restart_agents()
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
