//! What the agents' traffic metrics cost (`istio_tcp_*` per connection,
//! `istio_request*` per HTTP request; `weft-agent --traffic-metrics`):
//! two scenarios, each run with the metrics on (the agents' default) and
//! off, alternating in the same rounds on the same cluster.
//!
//! - [`CONNECTIONS`]: the client of `connections/cross-node` (a new
//!   connection per 100-byte request and answer, 4 in flight), through
//!   weft L4: `weft` against `weft-metrics-off`; also both agents' CPU
//!   time per connection.
//! - [`HTTP`]: the client of `http/max-rps/cross-node` (16 keep-alive
//!   connections, 100-byte bodies, closed loop), through weft L7:
//!   `weft-l7` against `weft-l7-metrics-off`.
//!
//! Before each measurement, both agents restart with the variant's setting
//! (`WEFT_TRAFFIC_METRICS`), so that every measurement starts from fresh
//! agents, whichever the setting, and the wait for the Services to carry
//! traffic again is outside the measured window. After it, the agents'
//! Prometheus endpoints must hold samples of the scenario's metric with the
//! metrics on and none with them off (else the scenario fails: the setting
//! did not take). Afterwards the agents restart once more with the setting
//! the run started with.

use anyhow::{Result, bail};

use super::agents_cpu;
use crate::bench::report::{Metric, Sample, lower};
use crate::bench::runner::Run;
use crate::bench::testbed::{Placement, Testbed, Variant};

/// The new-connection rate, metrics on and off.
pub const CONNECTIONS: &str = "metrics/connection-rate/cross-node";
/// The HTTP L7 max request rate, metrics on and off.
pub const HTTP: &str = "metrics/http-l7-max-rps/cross-node";

/// Both agents' CPU time per new connection (the HTTP scenario reports it
/// per request already).
const AGENT_CPU: Metric = lower("agent CPU per connection", "µs");

pub fn run(run: &mut Run, testbed: &Testbed) {
    let s = run.settings.clone();
    if !(s.selected(CONNECTIONS) || s.selected(HTTP)) {
        return;
    }
    run.metrics_pair(testbed, CONNECTIONS, false, |testbed, variant| {
        measure(
            testbed,
            variant,
            "istio_tcp_connections_opened_total",
            |t| {
                let cpu = agents_cpu(t, variant)?;
                let mut samples = super::connrate::measure(t, variant, Placement::CrossNode, &s)?;
                let cpu = agents_cpu(t, variant)? - cpu;
                // Connections over the warm-up and the measured window alike.
                let rate = samples.iter().find(|(m, _)| m.name == "connections");
                if let Some(ops) = rate.map(|(_, r)| r * (s.seconds + s.warmup))
                    && ops > 0.0
                {
                    samples.push((AGENT_CPU, cpu * 1e6 / ops));
                }
                Ok(samples)
            },
        )
    });
    run.metrics_pair(testbed, HTTP, true, |testbed, variant| {
        measure(testbed, variant, "istio_requests_total", |t| {
            super::http::max_rps(t, variant, Placement::CrossNode, &s)
        })
    });
    if crate::bench::stopped() {
        return;
    }
    if let Err(e) = testbed.restore_traffic_metrics() {
        run.fail("metrics (restarting the agents as configured)", e);
    }
}

/// Restarts the agents with `variant`'s setting, runs `load`, and checks
/// that the agents recorded `family` if and only if the metrics were on.
fn measure(
    testbed: &Testbed,
    variant: Variant,
    family: &str,
    load: impl FnOnce(&Testbed) -> Result<Vec<Sample>>,
) -> Result<Vec<Sample>> {
    let on = variant.traffic_metrics();
    testbed.restart_agents_with_traffic_metrics(on)?;
    let samples = load(testbed)?;
    let recorded = testbed.traffic_recorded(family)?;
    let wrong: Vec<&str> = recorded
        .iter()
        .filter(|(_, found)| *found != on)
        .map(|(node, _)| node.as_str())
        .collect();
    if !wrong.is_empty() {
        bail!(
            "traffic metrics {}, but the agent of {} {} {family}",
            if on { "on" } else { "off" },
            wrong.join(" and "),
            if on { "recorded no" } else { "recorded" }
        );
    }
    Ok(samples)
}
