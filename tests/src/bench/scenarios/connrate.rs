//! Connection rate: a new TCP connection per request (connect, 100-byte
//! request, 100-byte answer, close), a few in flight at once; connections
//! per second and the connect + request time.

use anyhow::Result;

use super::{PerOp, check_errors, run_counted, us};
use crate::bench::options::Settings;
use crate::bench::report::{Metric, Sample, higher, lower};
use crate::bench::runner::Run;
use crate::bench::testbed::{Placement, RR_PORT, Testbed, Variant, load_args};

const RATE: Metric = higher("connections", "1/s");
const P50: Metric = lower("p50 connect+request", "µs");
const P99: Metric = lower("p99 connect+request", "µs");
const SWITCHES: Metric = lower("agent context switches per op", "1/op");
const CPU: Metric = lower("agent CPU per connection", "µs");

pub fn run(run: &mut Run, testbed: &Testbed) {
    let s = run.settings.clone();
    for placement in [Placement::CrossNode, Placement::SameNode] {
        run.paired(
            testbed,
            &format!("connections/{placement}"),
            |testbed, variant| measure(testbed, variant, placement, &s),
        );
    }
}

/// One run of the connection-rate client against the server at
/// `placement`.
pub(super) fn measure(
    testbed: &Testbed,
    variant: Variant,
    placement: Placement,
    s: &Settings,
) -> Result<Vec<Sample>> {
    let server = testbed.server(variant, placement).addr(RR_PORT);
    let args = load_args(
        "connrate",
        server,
        &[
            ("concurrency", &s.conn_concurrency.to_string()),
            ("size", &s.message.to_string()),
            ("seconds", &s.seconds.to_string()),
            ("warmup", &s.warmup.to_string()),
        ],
    );
    let (r, per_op) = run_counted(testbed, variant, &args, s)?;
    check_errors(&r, "connection rate")?;
    if r.errors > 0 {
        println!(
            "    note: {variant}: {} of {} connections failed (first: {})",
            r.errors,
            r.count + r.errors,
            r.first_error.as_deref().unwrap_or("?")
        );
    }
    let mut samples = vec![
        (RATE, r.rate()),
        (P50, us(r.latency.p50)),
        (P99, us(r.latency.p99)),
    ];
    samples.extend(PerOp::samples(per_op, CPU, SWITCHES));
    Ok(samples)
}
