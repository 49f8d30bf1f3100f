//! Request latency: a 100-byte ping-pong on one persistent connection, and
//! HTTP/1.1 keep-alive requests with 1 KiB bodies at a fixed rate below
//! saturation, coordinated omission corrected; same-node and cross-node.

use anyhow::Result;

use super::{PerOp, check_errors, run_counted, us};
use crate::bench::report::{Metric, Sample, higher, lower};
use crate::bench::runner::Run;
use crate::bench::testbed::{ECHO_PORT, HTTP_PORT, Placement, Testbed, Variant, load_args};

const P50: Metric = lower("p50", "µs");
const P90: Metric = lower("p90", "µs");
const P99: Metric = lower("p99", "µs");
const P999: Metric = lower("p99.9", "µs");
const ROUND_TRIPS: Metric = higher("round trips", "1/s");
const RATE: Metric = higher("requests", "1/s");
const LAG: Metric = lower("client send lag p99", "µs");
const SWITCHES: Metric = lower("agent context switches per op", "1/op");
const CPU: Metric = lower("agent CPU per op", "µs");

pub fn run(run: &mut Run, testbed: &Testbed) {
    let s = run.settings.clone();
    for placement in [Placement::CrossNode, Placement::SameNode] {
        run.paired(
            testbed,
            &format!("latency/tcp-pingpong/{placement}"),
            |testbed, variant| {
                let server = testbed.server(variant, placement).addr(ECHO_PORT);
                let args = load_args(
                    "pingpong",
                    server,
                    &[
                        ("size", &s.message.to_string()),
                        ("seconds", &s.seconds.to_string()),
                        ("warmup", &s.warmup.to_string()),
                    ],
                );
                let (r, per_op) = run_counted(testbed, variant, &args, &s)?;
                check_errors(&r, "ping-pong")?;
                let mut samples = vec![
                    (P50, us(r.latency.p50)),
                    (P90, us(r.latency.p90)),
                    (P99, us(r.latency.p99)),
                    (ROUND_TRIPS, r.rate()),
                ];
                samples.extend(PerOp::samples(per_op, CPU, SWITCHES));
                Ok(samples)
            },
        );
    }
    for placement in [Placement::CrossNode, Placement::SameNode] {
        run.paired(
            testbed,
            &format!("latency/http-{}rps/{placement}", s.http_rate),
            |testbed, variant| http(testbed, variant, placement, &s),
        );
    }
}

fn http(
    testbed: &Testbed,
    variant: Variant,
    placement: Placement,
    s: &crate::bench::options::Settings,
) -> Result<Vec<Sample>> {
    let server = testbed.server(variant, placement).addr(HTTP_PORT);
    let args = load_args(
        "http",
        server,
        &[
            ("rate", &s.http_rate.to_string()),
            ("connections", &s.http_connections.to_string()),
            ("body", &s.body.to_string()),
            ("seconds", &s.seconds.to_string()),
            ("warmup", &s.warmup.to_string()),
        ],
    );
    let (r, per_op) = run_counted(testbed, variant, &args, s)?;
    check_errors(&r, "HTTP")?;
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
    samples.extend(PerOp::samples(per_op, CPU, SWITCHES));
    Ok(samples)
}
