//! What the agent's eBPF-based telemetry costs: the per-workload TCP
//! health (`weft_tcp_health`) and the per-pod mesh waits (the SYN stamp in
//! `weft_sockops` and the proxy's clock reads), always on by default, and
//! an on-demand CPU profile.
//!
//! - [`CONNECTIONS`]: the client of `connections/cross-node` through weft
//!   L4, with both on (`weft`) and off (`weft-metrics-off` in the JSON:
//!   `WEFT_TCP_HEALTH=false`, `WEFT_MESH_WAITS=false`), alternating in the
//!   same rounds; both agents restart before each measurement, and their
//!   scrape must then hold `weft_tcp_*` and `weft_mesh_wait_seconds` with
//!   them on and neither with them off (else the scenario fails: the
//!   setting did not take).
//! - [`THROUGHPUT`]: the same for one iperf3 stream, cross-node.
//! - [`PROFILING`]: node-1's agent profiles a pod spinning on a CPU (`mesh`
//!   namespace, `weft-sim-burn cpu`) at 99 Hz; the cost is the profile's
//!   own account (`cost` in the agent's answer: the sampling program's
//!   run time as the kernel counts it, plus the agent's CPU time spent on
//!   the profile) as a share of one CPU over its duration. The agent's
//!   whole CPU time over the same window, against an equal window without
//!   a profile just before, is reported beside it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{agents_cpu, connrate, throughput};
use crate::bench::report::{Metric, Sample, lower};
use crate::bench::runner::Run;
use crate::bench::testbed::{Placement, Telemetry, Testbed, Variant};

/// The new-connection rate, TCP health and mesh waits on and off.
pub const CONNECTIONS: &str = "kernel-telemetry/connection-rate/cross-node";
/// Single-stream throughput, on and off.
pub const THROUGHPUT: &str = "kernel-telemetry/throughput/cross-node";
/// A 99 Hz profile of a busy pod.
pub const PROFILING: &str = "profiling/pod-99hz";

/// The profile's own account, as a share of one CPU.
const PROFILE_COST: Metric = lower("profile's cost", "% of one CPU");
/// The agent's CPU time during the profile, less an equal window without.
const AGENT_ADDED: Metric = lower("agent CPU added", "% of one CPU");

/// Families that only the kernel telemetry writes.
const FAMILIES: [&str; 2] = [
    "weft_tcp_connections_established_total",
    "weft_mesh_wait_seconds_count",
];

pub fn run(run: &mut Run, testbed: &Testbed) {
    let s = run.settings.clone();
    if s.selected(CONNECTIONS) {
        run.metrics_pair(testbed, CONNECTIONS, false, |testbed, variant| {
            measure(testbed, variant, |t| {
                connrate::measure(t, variant, Placement::CrossNode, &s)
            })
        });
    }
    if s.selected(THROUGHPUT) {
        run.metrics_pair(testbed, THROUGHPUT, false, |testbed, variant| {
            measure(testbed, variant, |t| {
                throughput::measure(t, variant, Placement::CrossNode, 1, s.seconds)
            })
        });
    }
    if crate::bench::stopped() {
        return;
    }
    if let Err(e) = testbed.restore_telemetry() {
        run.fail("kernel telemetry (restarting the agents as configured)", e);
    }
    if s.selected(PROFILING) {
        // weftctl's default duration (10 s for a quick run): the agent's
        // cost is mostly per profile (loading the program, symbolizing),
        // the kernel's per sample.
        let seconds = if s.quick { 10.0 } else { 30.0 };
        run.once_with(testbed, PROFILING, &[Variant::Weft], |testbed, _| {
            profile_cost(testbed, seconds)
        });
    }
}

/// Restarts the agents with the kernel telemetry as `variant` says, runs
/// `load`, and checks that the agents recorded it if and only if it was on.
fn measure(
    testbed: &Testbed,
    variant: Variant,
    load: impl FnOnce(&Testbed) -> Result<Vec<Sample>>,
) -> Result<Vec<Sample>> {
    let on = variant.telemetry_on();
    testbed.restart_agents_with(Telemetry::Kernel, on)?;
    let samples = load(testbed)?;
    for family in FAMILIES {
        for (node, found) in testbed.traffic_recorded(family)? {
            if found != on {
                bail!(
                    "TCP health and mesh waits {}, but the agent of {node} {} {family}",
                    if on { "on" } else { "off" },
                    if on { "recorded no" } else { "recorded" }
                );
            }
        }
    }
    Ok(samples)
}

/// Profiles a busy pod for `seconds` at 99 Hz through node-1's agent.
fn profile_cost(testbed: &Testbed, seconds: f64) -> Result<Vec<Sample>> {
    let pod = testbed.client(Variant::Weft);
    let burn = testbed.cluster.bin_dir().join("weft-sim-burn");
    ensure!(
        burn.is_file(),
        "{} is missing: build it first (cargo build --bins)",
        burn.display()
    );
    let mut cmd = Command::new(burn);
    cmd.arg("cpu");
    let _burning = pod.spawn(cmd)?;
    let node = testbed.cluster.node("node-1")?;
    let window = Duration::from_secs_f64(seconds);
    // The agent's CPU over a window without a profile, then with one.
    let idle_cpu = {
        let before = agents_cpu(testbed, Variant::Weft)?;
        std::thread::sleep(window);
        agents_cpu(testbed, Variant::Weft)? - before
    };
    let before = agents_cpu(testbed, Variant::Weft)?;
    let started = Instant::now();
    let path = format!(
        "/profile?pod={}%2F{}&duration_ms={}&frequency=99",
        pod.namespace(),
        pod.name(),
        window.as_millis()
    );
    let answer = node.admin_post_json(&path, window + Duration::from_secs(60))?;
    let elapsed = started.elapsed().as_secs_f64();
    let profiling_cpu = agents_cpu(testbed, Variant::Weft)? - before;
    let samples = answer["samples"].as_u64().unwrap_or(0);
    ensure!(
        samples > 0,
        "the profile of a pod spinning on a CPU has no sample: {answer}"
    );
    let cost = &answer["cost"];
    let kernel = cost["program_seconds"].as_f64().with_context(|| {
        format!("the kernel's run time of the sampling program (are eBPF statistics on?): {cost}")
    })?;
    let agent = cost["agent_cpu_seconds"]
        .as_f64()
        .with_context(|| format!("the agent's CPU time in {cost}"))?;
    println!(
        "    profile: {samples} samples; the program {:.1} ms, the agent {:.1} ms over {seconds:.0} s; the agents' CPU {:.1} ms against {:.1} ms without a profile",
        kernel * 1e3,
        agent * 1e3,
        profiling_cpu * 1e3,
        idle_cpu * 1e3 * elapsed / seconds,
    );
    Ok(vec![
        (PROFILE_COST, (kernel + agent) / seconds * 100.0),
        (
            AGENT_ADDED,
            (profiling_cpu - idle_cpu * elapsed / seconds) / seconds * 100.0,
        ),
    ])
}
