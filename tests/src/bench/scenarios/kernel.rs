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
//!   setting did not take). `--kernel-telemetry tcp-health` or
//!   `mesh-waits` turns only that part off in the "off" variant (and
//!   checks only its family), to tell what each costs. Beside the rate:
//!   both agents' CPU time and their eBPF programs' run time (the
//!   kernel's BPF statistics) per connection, steadier than the rate on a
//!   noisy machine.
//! - [`THROUGHPUT`]: the same for one iperf3 stream, cross-node, with the
//!   eBPF run time per GB.
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
use crate::bench::options::KernelTelemetry;
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

/// The run time of every eBPF program of both agents (the kernel's BPF
/// statistics, `weft_agent_ebpf_program_run_seconds_total`), per new
/// connection and per GB: what the programs cost, without the noise of a
/// rate.
const EBPF_PER_CONNECTION: Metric = lower("eBPF run time per connection", "µs");
const EBPF_PER_GB: Metric = lower("eBPF run time per GB", "ms/GB");

/// The family only TCP health writes, and the one only mesh waits do.
const TCP_HEALTH: &str = "weft_tcp_connections_established_total";
const MESH_WAITS: &str = "weft_mesh_wait_seconds_count";

pub fn run(run: &mut Run, testbed: &Testbed) {
    let s = run.settings.clone();
    let part = match s.kernel_telemetry {
        KernelTelemetry::Both => None,
        KernelTelemetry::TcpHealth => Some("TCP health"),
        KernelTelemetry::MeshWaits => Some("mesh waits"),
    };
    if let Some(part) = part
        && (s.selected(CONNECTIONS) || s.selected(THROUGHPUT))
    {
        run.note(format!(
            "kernel telemetry: \"off\" turns off {part} only (--kernel-telemetry); the 97% targets are for both"
        ));
    }
    if s.selected(CONNECTIONS) {
        run.metrics_pair(
            testbed,
            CONNECTIONS,
            false,
            Telemetry::Kernel(s.kernel_telemetry),
            |testbed, variant| {
                measure(testbed, variant, s.kernel_telemetry, |t| {
                    // The client reports the agents' CPU per connection.
                    let ebpf = ebpf_seconds(t)?;
                    let mut samples = connrate::measure(t, variant, Placement::CrossNode, &s)?;
                    let ebpf = ebpf_seconds(t)? - ebpf;
                    // Connections over the warm-up and the measured window alike.
                    let rate = samples.iter().find(|(m, _)| m.name == "connections");
                    if let Some(ops) = rate.map(|(_, r)| r * (s.seconds + s.warmup))
                        && ops > 0.0
                    {
                        samples.push((EBPF_PER_CONNECTION, ebpf * 1e6 / ops));
                    }
                    Ok(samples)
                })
            },
        );
    }
    if s.selected(THROUGHPUT) {
        run.metrics_pair(
            testbed,
            THROUGHPUT,
            false,
            Telemetry::Kernel(s.kernel_telemetry),
            |testbed, variant| {
                measure(testbed, variant, s.kernel_telemetry, |t| {
                    let ebpf = ebpf_seconds(t)?;
                    let mut samples =
                        throughput::measure(t, variant, Placement::CrossNode, 1, s.seconds)?;
                    let ebpf = ebpf_seconds(t)? - ebpf;
                    // Over the whole seconds iperf3 ran.
                    let ran = super::whole_seconds(s.seconds).parse::<f64>()?;
                    let rate = samples.iter().find(|(m, _)| m.name == "throughput");
                    if let Some(gigabytes) = rate.map(|(_, gbps)| gbps * ran / 8.0)
                        && gigabytes > 0.0
                    {
                        samples.push((EBPF_PER_GB, ebpf * 1e3 / gigabytes));
                    }
                    Ok(samples)
                })
            },
        );
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

/// Runs `load` on agents the runner restarted with `part` of the kernel
/// telemetry as `variant` says, and checks that the agents recorded that part if
/// and only if it was on.
fn measure(
    testbed: &Testbed,
    variant: Variant,
    part: KernelTelemetry,
    load: impl FnOnce(&Testbed) -> Result<Vec<Sample>>,
) -> Result<Vec<Sample>> {
    let on = variant.telemetry_on();
    let samples = load(testbed)?;
    let (families, what): (&[&str], _) = match part {
        KernelTelemetry::Both => (&[TCP_HEALTH, MESH_WAITS], "TCP health and mesh waits"),
        KernelTelemetry::TcpHealth => (&[TCP_HEALTH], "TCP health"),
        KernelTelemetry::MeshWaits => (&[MESH_WAITS], "mesh waits"),
    };
    for family in families {
        for (node, found) in testbed.traffic_recorded(family)? {
            if found != on {
                bail!(
                    "{what} {}, but the agent of {node} {} {family}",
                    if on { "on" } else { "off" },
                    if on { "recorded no" } else { "recorded" }
                );
            }
        }
    }
    Ok(samples)
}

/// The run time of both agents' eBPF programs so far, in seconds.
fn ebpf_seconds(testbed: &Testbed) -> Result<f64> {
    const FAMILY: &str = "weft_agent_ebpf_program_run_seconds_total";
    let mut total = 0.0;
    for node in testbed.cluster.nodes() {
        let mut samples = 0;
        for line in node.agent_metrics()?.lines() {
            if let Some(rest) = line.strip_prefix(FAMILY).and_then(|r| r.strip_prefix('{')) {
                // `{program="..."} VALUE`: no timestamps in the agent's text.
                let value = rest.rsplit(' ').next().unwrap_or_default();
                total += value
                    .parse::<f64>()
                    .with_context(|| format!("{}: a sample of {FAMILY}: {line}", node.name()))?;
                samples += 1;
            }
        }
        // Without the kernel's BPF statistics, no figure rather than 0.
        ensure!(
            samples > 0,
            "the agent of {} serves no {FAMILY} (are BPF statistics on?)",
            node.name()
        );
    }
    Ok(total)
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
