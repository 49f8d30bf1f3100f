//! Enrolment at scale on the simulated cluster: pods started at once on
//! one node are set up side by side, each waiting only for its own
//! certificate and netlink calls, never behind the other pods. Needs root
//! and the built binaries (`cargo xtask test` builds them).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use weft_sim::{Cluster, PodSpec};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

/// Pods started at once.
const PODS: usize = 100;

/// The bound this test states for all of them to be ready (their CNI
/// ADDs returned, each pod enrolled with an identity of its own, so each
/// ADD took a certificate from the CA): generous for a busy 2-CPU
/// machine, where it takes a few seconds. The test cannot slow the CA
/// down to show the difference one lock across every pod's setup made
/// (this kernel has no `sch_netem`); `inpod/locks.rs`'s unit test shows
/// that a pod waits only for itself.
const ALL_READY_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn a_hundred_pods_started_at_once_are_enrolled_side_by_side() -> Result<()> {
    let cluster = Cluster::builder().nodes(1).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("crowd", &[AMBIENT])?;
        let started = Instant::now();
        // Every ADD's start and end, from when all were started.
        let spans: Vec<Result<(Duration, Duration)>> = std::thread::scope(|scope| {
            let adds: Vec<_> = (0..PODS)
                .map(|i| {
                    scope.spawn(move || {
                        let begun = started.elapsed();
                        cluster
                            .add_pod(
                                PodSpec::new("node-1", "crowd", &format!("pod-{i}"))
                                    .service_account(&format!("sa-{i}")),
                            )
                            .with_context(|| format!("pod-{i}"))?;
                        Ok((begun, started.elapsed()))
                    })
                })
                .collect();
            adds.into_iter()
                .map(|add| add.join().expect("an ADD thread panicked"))
                .collect()
        });
        let spans: Vec<(Duration, Duration)> = spans.into_iter().collect::<Result<_>>()?;
        let all_ready = spans.iter().map(|(_, end)| *end).max().unwrap_or_default();
        ensure!(
            all_ready <= ALL_READY_WITHIN,
            "{PODS} pods took {all_ready:?} to be ready, over the {ALL_READY_WITHIN:?} this test allows"
        );
        // The test's own check: the ADDs did run at once (at some instant,
        // many were in progress).
        let most_at_once = spans
            .iter()
            .map(|(_, end)| {
                spans
                    .iter()
                    .filter(|(begun, other_end)| begun <= end && other_end >= end)
                    .count()
            })
            .max()
            .unwrap_or(0);
        ensure!(
            most_at_once >= 10,
            "at most {most_at_once} ADDs were in progress at once"
        );

        // Each has its own identity and is enrolled.
        let node = cluster.node("node-1")?;
        let dump = node.admin_json("/config_dump")?;
        let pods = dump["pods"].as_array().context("no pods in /config_dump")?;
        let enrolled: Vec<&serde_json::Value> = pods
            .iter()
            .filter(|p| p["namespace"] == "crowd" && p["enrolled"] == true)
            .collect();
        ensure!(
            enrolled.len() == PODS,
            "{} of {PODS} pods enrolled: {dump}",
            enrolled.len()
        );
        for i in 0..PODS {
            let identity = format!("spiffe://cluster.local/ns/crowd/sa/sa-{i}");
            ensure!(
                enrolled.iter().any(|p| p["identity"] == identity.as_str()),
                "no pod enrolled with {identity}"
            );
        }
        println!(
            "{PODS} pods ready in {all_ready:?}, up to {most_at_once} ADDs in progress at once"
        );
        Ok(())
    })
}
