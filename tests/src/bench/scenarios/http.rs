//! HTTP/1.1 and gRPC over three paths, in the same invocation: direct (the
//! server pod's IP, no mesh), weft L4 (the VIP of a Service declaring the
//! port TCP: bytes relayed over HBONE) and weft L7 (the VIP of a Service
//! declaring it HTTP or gRPC, with a VirtualService: each request
//! terminated, matched, retried if it must be, and sent over pooled HBONE).
//!
//! - `http/max-rps/*`: 16 keep-alive connections, `POST /bench` with
//!   100-byte bodies each way, each connection as fast as it goes.
//! - `http/latency-2000rps/*`: the fixed-rate, coordinated-omission
//!   corrected client of `latency/http-*` (1 KiB bodies, 4 connections).
//! - `grpc/unary-max-rps/*`: `weft.test.Echo/Unary` over h2c, 32 calls in
//!   flight on 2 connections, as fast as they go.
//! - `grpc/unary-latency/*`: the same, one call at a time on one connection.
//!
//! Besides the client's figures: the agents' CPU time and context switches
//! per request (both agents, warm-up included), and the client's own CPU
//! (a closed-loop client near one CPU per thread may be what limits).

use anyhow::Result;

use super::{PerOp, check_errors, run_counted, us};
use crate::bench::options::Settings;
use crate::bench::report::{Metric, Sample, higher, lower};
use crate::bench::runner::Run;
use crate::bench::stats::LoadReport;
use crate::bench::testbed::{
    GRPC_PORT, HTTP_PORT, HTTP_SMALL_PORT, Placement, Testbed, Variant, load_args,
};

const RATE: Metric = higher("requests", "1/s");
const P50: Metric = lower("p50", "µs");
const P90: Metric = lower("p90", "µs");
const P99: Metric = lower("p99", "µs");
const P999: Metric = lower("p99.9", "µs");
const LAG: Metric = lower("client send lag p99", "µs");
const AGENT_CPU: Metric = lower("agent CPU per request", "µs");
const SWITCHES: Metric = lower("agent context switches per request", "1/op");
const CLIENT_CPU: Metric = lower("client CPU", "CPUs");

pub fn run(run: &mut Run, testbed: &Testbed) {
    let s = run.settings.clone();
    let placements = [Placement::CrossNode, Placement::SameNode];
    for placement in placements {
        run.three_paths(
            testbed,
            &format!("http/max-rps/{placement}"),
            |testbed, variant| max_rps(testbed, variant, placement, &s),
        );
    }
    for placement in placements {
        run.three_paths(
            testbed,
            &format!("http/latency-{}rps/{placement}", s.http_rate),
            |testbed, variant| fixed_rate(testbed, variant, placement, &s),
        );
    }
    for placement in placements {
        run.three_paths(
            testbed,
            &format!("grpc/unary-max-rps/{placement}"),
            |testbed, variant| {
                grpc(
                    testbed,
                    variant,
                    placement,
                    s.grpc_connections,
                    s.grpc_concurrency,
                    &s,
                )
            },
        );
    }
    for placement in placements {
        run.three_paths(
            testbed,
            &format!("grpc/unary-latency/{placement}"),
            |testbed, variant| grpc(testbed, variant, placement, 1, 1, &s),
        );
    }
}

pub(super) fn max_rps(
    testbed: &Testbed,
    variant: Variant,
    placement: Placement,
    s: &Settings,
) -> Result<Vec<Sample>> {
    let addr = target(testbed, variant, placement, HTTP_SMALL_PORT)?;
    let args = load_args(
        "http",
        addr,
        &[
            ("connections", &s.http_max_connections.to_string()),
            ("body", &s.message.to_string()),
            ("seconds", &s.seconds.to_string()),
            ("warmup", &s.warmup.to_string()),
        ],
    );
    let (r, agents) = run_with_agents(testbed, variant, &args, s)?;
    check_errors(&r, "HTTP")?;
    let mut samples = vec![
        (RATE, r.rate()),
        (P50, us(r.latency.p50)),
        (P99, us(r.latency.p99)),
    ];
    samples.extend(agents);
    samples.extend(r.client_cpu.map(|c| (CLIENT_CPU, c)));
    Ok(samples)
}

fn fixed_rate(
    testbed: &Testbed,
    variant: Variant,
    placement: Placement,
    s: &Settings,
) -> Result<Vec<Sample>> {
    let addr = target(testbed, variant, placement, HTTP_PORT)?;
    let args = load_args(
        "http",
        addr,
        &[
            ("rate", &s.http_rate.to_string()),
            ("connections", &s.http_connections.to_string()),
            ("body", &s.body.to_string()),
            ("seconds", &s.seconds.to_string()),
            ("warmup", &s.warmup.to_string()),
        ],
    );
    let (r, agents) = run_with_agents(testbed, variant, &args, s)?;
    check_errors(&r, "HTTP")?;
    let mut samples = fixed_rate_samples(&r);
    samples.extend(agents);
    Ok(samples)
}

/// A fixed-rate run's latency percentiles, achieved rate and the client's
/// own send lag.
pub(super) fn fixed_rate_samples(r: &LoadReport) -> Vec<Sample> {
    let mut samples = vec![
        (P50, us(r.latency.p50)),
        (P90, us(r.latency.p90)),
        (P99, us(r.latency.p99)),
        (P999, us(r.latency.p999)),
        (RATE, r.rate()),
    ];
    if let Some(lag) = r.send_lag {
        samples.push((LAG, us(lag.p99)));
    }
    samples
}

fn grpc(
    testbed: &Testbed,
    variant: Variant,
    placement: Placement,
    connections: usize,
    concurrency: usize,
    s: &Settings,
) -> Result<Vec<Sample>> {
    let addr = target(testbed, variant, placement, GRPC_PORT)?;
    let args = load_args(
        "grpc",
        addr,
        &[
            ("connections", &connections.to_string()),
            ("concurrency", &concurrency.to_string()),
            ("size", &s.message.to_string()),
            ("seconds", &s.seconds.to_string()),
            ("warmup", &s.warmup.to_string()),
        ],
    );
    let (r, agents) = run_with_agents(testbed, variant, &args, s)?;
    check_errors(&r, "gRPC")?;
    let mut samples = vec![
        (RATE, r.rate()),
        (P50, us(r.latency.p50)),
        (P99, us(r.latency.p99)),
    ];
    samples.extend(agents);
    samples.extend(r.client_cpu.map(|c| (CLIENT_CPU, c)));
    Ok(samples)
}

/// The address to load for `variant`; through the mesh, once the Services
/// are known to work as declared.
fn target(
    testbed: &Testbed,
    variant: Variant,
    placement: Placement,
    port: u16,
) -> Result<std::net::SocketAddr> {
    if variant.meshed() {
        testbed.services_ready()?;
    }
    Ok(testbed.service_addr(variant, placement, port))
}

/// Runs a client and, through the mesh, the agents' CPU time (µs) and
/// context switches per request, over warm-up and measured window alike.
fn run_with_agents(
    testbed: &Testbed,
    variant: Variant,
    args: &[String],
    s: &Settings,
) -> Result<(LoadReport, Vec<Sample>)> {
    let (report, per_op) = run_counted(testbed, variant, args, s)?;
    Ok((report, PerOp::samples(per_op, AGENT_CPU, SWITCHES)))
}
