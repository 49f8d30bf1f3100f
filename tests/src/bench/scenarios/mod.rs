//! The scenarios, one file per kind; each measures one variant at a time
//! and returns its samples to the runner.
//!
//! | scenario | client side (pod `client`, node-1) | server side (`server-local` on node-1, `server-remote` on node-2) |
//! | --- | --- | --- |
//! | `throughput/*` | `iperf3 -c -t <s> [-P 8]` | `iperf3 -s` |
//! | `latency/tcp-pingpong/*` | `weft-bench-load pingpong` (100 B each way, one connection) | `serve --echo` |
//! | `latency/http/*` | `weft-bench-load http` (fixed rate, 4 keep-alive connections, 1 KiB bodies, CO-corrected) | `serve --http` |
//! | `connections/*` | `weft-bench-load connrate` (connect, 100 B request, 100 B answer, server closes) | `serve --rr` |
//! | `footprint/*` | `weft-bench-load hold` (cross-node) | `serve --hold` |
//! | `footprint/http-connections` | `weft-bench-load hold --http-body 100` (cross-node, through weft L4 and L7) | `serve --http` |
//! | `http/max-rps/*` | `weft-bench-load http` (16 keep-alive connections, 100 B bodies, closed loop), direct, weft L4, weft L7 | `serve --http` |
//! | `http/latency-2000rps/*` | `weft-bench-load http` (as `latency/http/*`), direct, weft L4, weft L7 | `serve --http` |
//! | `grpc/*` | `weft-bench-load grpc` (tonic, h2c, unary calls), direct, weft L4, weft L7 | `weft-sim-http serve` |
//! | `http/authz-latency/cross-node` | `weft-bench-load http` (as `latency/http/*`, with a JWT), weft L7 without and with a RequestAuthentication and a 10-rule ALLOW policy | `serve --http` (`server-remote`, `server-authz`) |
//! | `metrics/connection-rate/cross-node` | as `connections/*`, through weft L4 with the agents' traffic metrics on and off | `serve --rr` |
//! | `metrics/http-l7-max-rps/cross-node` | as `http/max-rps/*`, through weft L7 with the agents' traffic metrics on and off | `serve --http` |
//! | `kernel-telemetry/connection-rate/cross-node` | as `connections/*`, through weft L4 with TCP health and mesh waits on and off | `serve --rr` |
//! | `kernel-telemetry/throughput/cross-node` | as `throughput/cross-node/1-stream`, with TCP health and mesh waits on and off | `iperf3 -s` |
//! | `profiling/pod-99hz` | `weft-sim-burn cpu` in `mesh/client`, profiled by node-1's agent at 99 Hz | - |

pub mod authz;
pub mod connrate;
pub mod footprint;
pub mod http;
pub mod kernel;
pub mod latency;
pub mod metrics;
pub mod throughput;

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::procstat::{ProcStat, context_switches};
use super::report::{Metric, Sample};
use super::stats::LoadReport;
use super::testbed::{Testbed, Variant};
use crate::Pod;

/// Runs `weft-bench-load <args>` in `pod` and parses its report.
fn run_load(testbed: &Testbed, pod: &Pod, args: &[String], seconds: f64) -> Result<LoadReport> {
    let timeout = Duration::from_secs_f64(seconds * 3.0 + 30.0);
    let out = pod
        .run(testbed.load(args), timeout)?
        .check(&format!("weft-bench-load {}", args.join(" ")))?;
    LoadReport::parse(&out.stdout)
}

/// Fails if a client saw errors on more than 1% of its operations (a few
/// are tolerated and reported; a run that mostly failed measures nothing).
fn check_errors(report: &LoadReport, what: &str) -> Result<()> {
    if report.count == 0 || report.errors * 100 > report.count {
        bail!(
            "{what}: {} operations succeeded, {} failed (first error: {})",
            report.count,
            report.errors,
            report.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// CPU seconds used so far by the variant's node proxies (weft's agents,
/// or ztunnel's proxies), summed; 0 for the direct variant, whose path has
/// none.
fn agents_cpu(testbed: &Testbed, variant: Variant) -> Result<f64> {
    testbed
        .proxies(variant)?
        .iter()
        .map(|(node, pid)| {
            ProcStat::read(*pid)
                .map(|s| s.cpu_seconds)
                .with_context(|| format!("the node proxy {node}"))
        })
        .sum()
}

/// Context switches of the variant's node proxies so far, summed (0 for
/// the direct variant, whose path has none).
fn agents_switches(testbed: &Testbed, variant: Variant) -> Result<u64> {
    testbed
        .proxies(variant)?
        .iter()
        .map(|(_, pid)| context_switches(*pid))
        .sum()
}

/// What the node proxies spent per operation of a client run, over
/// warm-up and measured window alike.
struct PerOp {
    /// The proxies' CPU time, in µs.
    cpu_us: f64,
    /// Context switches of the proxies.
    switches: f64,
}

impl PerOp {
    /// The samples, under the scenario's names for them; none without a
    /// mesh.
    fn samples(per_op: Option<PerOp>, cpu: Metric, switches: Metric) -> Vec<Sample> {
        per_op.map_or_else(Vec::new, |p| vec![(cpu, p.cpu_us), (switches, p.switches)])
    }
}

/// Runs a client and, with a mesh, also counts the node proxies' CPU time
/// and context switches per operation (`None` for the direct variant).
fn run_counted(
    testbed: &Testbed,
    variant: Variant,
    args: &[String],
    s: &super::options::Settings,
) -> Result<(LoadReport, Option<PerOp>)> {
    let (cpu_before, switches_before) = (
        agents_cpu(testbed, variant)?,
        agents_switches(testbed, variant)?,
    );
    let report = run_load(testbed, testbed.client(variant), args, s.seconds)?;
    let cpu = agents_cpu(testbed, variant)? - cpu_before;
    let switches = agents_switches(testbed, variant)? - switches_before;
    let ops = report.count as f64 * (s.seconds + s.warmup) / s.seconds;
    let per_op = (variant.meshed() && ops > 0.0).then(|| PerOp {
        cpu_us: cpu * 1e6 / ops,
        switches: switches as f64 / ops,
    });
    Ok((report, per_op))
}

/// A duration in seconds as an integer argument (iperf3 takes whole seconds).
fn whole_seconds(seconds: f64) -> String {
    (seconds.round() as u64).max(1).to_string()
}

/// Nanoseconds to microseconds.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}
