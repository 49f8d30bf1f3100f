//! Throughput: one TCP stream and 8 parallel streams for 10 s, same-node
//! and cross-node, with iperf3; with weft, the agents' CPU time per GB
//! carried.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{agents_cpu, whole_seconds};
use crate::bench::report::{Metric, Sample, higher, lower};
use crate::bench::runner::Run;
use crate::bench::testbed::{IPERF_PORT, Placement, Testbed, Variant};

const THROUGHPUT: Metric = higher("throughput", "Gbit/s");
const CPU_PER_GB: Metric = lower("agent CPU per GB", "s/GB");

pub fn run(run: &mut Run, testbed: &Testbed) {
    let seconds = run.settings.seconds;
    for placement in [Placement::CrossNode, Placement::SameNode] {
        for streams in [1, run.settings.streams] {
            let name = format!(
                "throughput/{placement}/{streams}-stream{}",
                if streams > 1 { "s" } else { "" }
            );
            run.paired(testbed, &name, |testbed, variant| {
                measure(testbed, variant, placement, streams, seconds)
            });
        }
    }
}

/// One iperf3 run of `streams` streams to the server at `placement`.
pub(super) fn measure(
    testbed: &Testbed,
    variant: Variant,
    placement: Placement,
    streams: usize,
    seconds: f64,
) -> Result<Vec<Sample>> {
    let server = testbed.server(variant, placement);
    let mut iperf = Command::new("iperf3");
    iperf
        .args([
            "-c",
            &server.ip().to_string(),
            "-p",
            &IPERF_PORT.to_string(),
        ])
        .args(["-t", &whole_seconds(seconds), "-P", &streams.to_string()])
        .args(["--connect-timeout", "10000", "-J"]);
    let cpu_before = agents_cpu(testbed, variant)?;
    let out = testbed
        .client(variant)
        .run(iperf, Duration::from_secs_f64(seconds + 60.0))?
        .check("iperf3 -c")?;
    let cpu = agents_cpu(testbed, variant)? - cpu_before;
    let (bits_per_second, bytes) = parse_iperf(&out.stdout)?;
    let mut samples = vec![(THROUGHPUT, bits_per_second / 1e9)];
    if variant.meshed() && bytes > 0.0 {
        samples.push((CPU_PER_GB, cpu / (bytes / 1e9)));
    }
    Ok(samples)
}

/// `end.sum_received`: bits per second and bytes, as the receiver counted.
fn parse_iperf(json: &str) -> Result<(f64, f64)> {
    let v: serde_json::Value = serde_json::from_str(json).context("parsing iperf3 -J output")?;
    if let Some(error) = v.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("iperf3: {error}");
    }
    let sum = &v["end"]["sum_received"];
    let bps = sum["bits_per_second"]
        .as_f64()
        .with_context(|| format!("no end.sum_received.bits_per_second in {json}"))?;
    Ok((bps, sum["bytes"].as_f64().unwrap_or(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_receiver_sum() {
        let json = r#"{"end":{"sum_sent":{"bits_per_second":2e10},
            "sum_received":{"bits_per_second":1.9e10,"bytes":23750000000}}}"#;
        assert_eq!(parse_iperf(json).unwrap(), (1.9e10, 2.375e10));
        assert!(parse_iperf(r#"{"error":"unable to connect"}"#).is_err());
    }
}
