//! What the agents' per-request telemetry costs: the traffic metrics
//! (`istio_tcp_*` per connection, `istio_request*` per HTTP request;
//! `weft-agent --traffic-metrics`) and the access log (a line per
//! connection or request on each side; the mesh config's
//! `accessLogFile`). Two scenarios, each run with both on (the default;
//! "metrics on") and both off ("metrics off"), alternating in the same
//! rounds on the same cluster.
//!
//! - [`CONNECTIONS`]: the client of `connections/cross-node` (a new
//!   connection per 100-byte request and answer, 4 in flight), through
//!   weft L4: `weft` against `weft-metrics-off`; also both agents' CPU
//!   time per connection.
//! - [`HTTP`]: the client of `http/max-rps/cross-node` (16 keep-alive
//!   connections, 100-byte bodies, closed loop), through weft L7:
//!   `weft-l7` against `weft-l7-metrics-off`.
//!
//! Before each measurement (and before a profile of it starts), both
//! agents restart with the variant's setting
//! (`WEFT_TRAFFIC_METRICS`, and the access log in the mesh config), so
//! that every measurement starts from fresh agents, whichever the
//! setting, and the wait for the Services to carry traffic again is
//! outside the measured window. After it, the agents' Prometheus endpoints
//! must hold samples of the scenario's metric with the metrics on and none
//! with them off, and each agent's log must have grown by access-log lines
//! with them on and by next to nothing with them off (else the scenario
//! fails: the setting did not take). Afterwards the agents restart once more with the setting
//! the run started with. `--traffic-telemetry metrics` or `access-log`
//! turns only that part off in the "off" variant (and checks only it), to
//! tell what each costs.

use anyhow::{Result, bail};

use crate::bench::options::TrafficTelemetry;
use crate::bench::report::Sample;
use crate::bench::runner::Run;
use crate::bench::testbed::{Placement, Telemetry, Testbed, Variant};

/// The new-connection rate, metrics on and off.
pub const CONNECTIONS: &str = "metrics/connection-rate/cross-node";
/// The HTTP L7 max request rate, metrics on and off.
pub const HTTP: &str = "metrics/http-l7-max-rps/cross-node";

pub fn run(run: &mut Run, testbed: &Testbed) {
    let s = run.settings.clone();
    if !(s.selected(CONNECTIONS) || s.selected(HTTP)) {
        return;
    }
    let part = s.traffic_telemetry;
    let only = match part {
        TrafficTelemetry::Both => None,
        TrafficTelemetry::Metrics => Some("the traffic metrics"),
        TrafficTelemetry::AccessLog => Some("the access log"),
    };
    if let Some(only) = only {
        run.note(format!(
            "traffic telemetry: \"off\" turns off {only} only (--traffic-telemetry); the 95% targets are for both"
        ));
    }
    // Both scenarios' clients report the agents' CPU per connection or
    // per request themselves.
    run.metrics_pair(
        testbed,
        CONNECTIONS,
        false,
        Telemetry::Traffic(part),
        |testbed, variant| {
            measure(
                testbed,
                variant,
                part,
                "istio_tcp_connections_opened_total",
                |t| super::connrate::measure(t, variant, Placement::CrossNode, &s),
            )
        },
    );
    run.metrics_pair(
        testbed,
        HTTP,
        true,
        Telemetry::Traffic(part),
        |testbed, variant| {
            measure(testbed, variant, part, "istio_requests_total", |t| {
                super::http::max_rps(t, variant, Placement::CrossNode, &s)
            })
        },
    );
    if crate::bench::stopped() {
        return;
    }
    if let Err(e) = testbed.restore_telemetry() {
        run.fail("metrics (restarting the agents as configured)", e);
    }
}

/// An agent that logged fewer bytes during a measurement wrote no access
/// log (thousands of lines of a few hundred bytes each when it is on).
const ACCESS_LOG_BYTES: u64 = 64 * 1024;

/// Runs `load` on agents the runner restarted with `variant`'s setting
/// of `part`, and checks that the agents wrote access-log lines and
/// recorded `family` if and only if each was on.
fn measure(
    testbed: &Testbed,
    variant: Variant,
    part: TrafficTelemetry,
    family: &str,
    load: impl FnOnce(&Testbed) -> Result<Vec<Sample>>,
) -> Result<Vec<Sample>> {
    let on = variant.telemetry_on();
    let (logging, metrics) = (on || !part.access_log(), on || !part.metrics());
    let logged_before = testbed.agent_log_sizes();
    let samples = load(testbed)?;
    for ((node, before), (_, after)) in logged_before.iter().zip(testbed.agent_log_sizes()) {
        let grown = after.saturating_sub(*before);
        if logging != (grown >= ACCESS_LOG_BYTES) {
            bail!(
                "the access log {}, but the agent of {node} logged {grown} bytes during the measurement",
                if logging { "on" } else { "off" },
            );
        }
    }
    let recorded = testbed.traffic_recorded(family)?;
    let wrong: Vec<&str> = recorded
        .iter()
        .filter(|(_, found)| *found != metrics)
        .map(|(node, _)| node.as_str())
        .collect();
    if !wrong.is_empty() {
        bail!(
            "traffic metrics {}, but the agent of {} {} {family}",
            if metrics { "on" } else { "off" },
            wrong.join(" and "),
            if metrics { "recorded no" } else { "recorded" }
        );
    }
    Ok(samples)
}
