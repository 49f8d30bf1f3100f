//! The mesh's own cost per pod, `weft_mesh_wait_seconds{stage}`, on a
//! 2-node simulated cluster running weft's real binaries against the real
//! kernel. A client on node-1 talks to servers that wait 100 ms before
//! they answer: over HBONE to node-2 (L4), through an HTTP Service (L7),
//! and to a pod on its own node that answers at once. Each stage must
//! count every connection (or request) and hold the time where it was
//! spent: the servers' 100 ms in `first_byte` only, never in `capture`
//! (the app's SYN, stamped by `weft_sockops`, to the proxy's accept) or
//! `upstream_connect`. Needs root and the binaries (`cargo xtask test`
//! builds them); fails, never skips, without them.

mod common;

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, ensure};
use common::*;
use weft_sim::{Cluster, Node, PodSpec, ServicePort, httpapp, wait_for};

const SLOW_PORT: u16 = 7000;
const FAST_PORT: u16 = 7001;
const HTTP_PORT: u16 = 8080;
/// How long the slow servers wait before they answer.
const DELAY: Duration = Duration::from_millis(100);
/// Connections (or requests) per phase.
const ROUNDS: u64 = 12;

/// Count and sum (seconds) of one pod's histogram, by stage.
type Waits = BTreeMap<String, (u64, f64)>;

/// The client pod's `weft_mesh_wait_seconds` on `node`, by stage.
fn waits(node: &Node, pod: &str) -> Result<Waits> {
    let text = node.agent_metrics()?;
    let mut by_stage = Waits::new();
    for line in text
        .lines()
        .filter(|l| l.contains(&format!("pod=\"{pod}\"")))
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let stage = series
            .split("stage=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .with_context(|| format!("a stage label in {line}"))?
            .to_string();
        let value: f64 = value
            .parse()
            .with_context(|| format!("the value of {line}"))?;
        let entry = by_stage.entry(stage).or_default();
        if series.starts_with("weft_mesh_wait_seconds_count{") {
            entry.0 = value as u64;
        } else if series.starts_with("weft_mesh_wait_seconds_sum{") {
            entry.1 = value;
        }
    }
    ensure!(
        ["capture", "upstream_connect", "first_byte"]
            .iter()
            .all(|s| by_stage.contains_key(*s)),
        "node's scrape has {pod}'s weft_mesh_wait_seconds for the three stages: {by_stage:?}\n{text}"
    );
    Ok(by_stage)
}

/// What one phase added to a stage: (count, mean in ms).
fn grown(before: &Waits, after: &Waits, stage: &str) -> (u64, f64) {
    let (c0, s0) = before[stage];
    let (c1, s1) = after[stage];
    let count = c1 - c0;
    let mean_ms = if count == 0 {
        0.0
    } else {
        (s1 - s0) / count as f64 * 1e3
    };
    (count, mean_ms)
}

/// Runs `phase`, then checks what it added to `client`'s waits on node-1:
/// at least `ROUNDS` in each stage, and whether the first byte waited
/// for a slow server.
fn check_phase(
    node: &Node,
    what: &str,
    slow_server: bool,
    phase: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let before = waits(node, "client")?;
    phase()?;
    // A scrape right after the last answer may precede the proxy's record
    // of it by a moment.
    let mut after = waits(node, "client")?;
    wait_for(&format!("{what}: every wait recorded"), TIMEOUT, || {
        after = waits(node, "client")?;
        Ok(["capture", "upstream_connect", "first_byte"]
            .iter()
            .all(|s| grown(&before, &after, s).0 >= ROUNDS)
            .then_some(()))
    })
    .with_context(|| format!("{what}: before {before:?}, after {after:?}"))?;
    let capture = grown(&before, &after, "capture");
    let upstream = grown(&before, &after, "upstream_connect");
    let first = grown(&before, &after, "first_byte");
    println!(
        "{what}: capture {} × {:.3} ms, upstream_connect {} × {:.3} ms, first_byte {} × {:.3} ms",
        capture.0, capture.1, upstream.0, upstream.1, first.0, first.1
    );
    let delay_ms = DELAY.as_secs_f64() * 1e3;
    ensure!(
        capture.1 < delay_ms / 2.0 && upstream.1 < delay_ms / 2.0,
        "{what}: the server's {delay_ms} ms belongs to no stage before first_byte: {capture:?} {upstream:?}"
    );
    if slow_server {
        ensure!(
            first.1 >= delay_ms * 0.9,
            "{what}: first_byte holds the server's {delay_ms} ms wait: {first:?}"
        );
    } else {
        ensure!(
            first.1 < delay_ms / 2.0,
            "{what}: a server that answers at once shows no {delay_ms} ms first-byte wait: {first:?}"
        );
    }
    Ok(())
}

#[test]
fn each_pods_waits_in_the_mesh_are_recorded_stage_by_stage() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("meshed", &[AMBIENT])?;
        let slow = cluster.add_pod(
            PodSpec::new("node-2", "meshed", "slow")
                .service_account("slow")
                .port("tcp-echo", SLOW_PORT),
        )?;
        let _slow_echo = slow.spawn_app(&[
            "tcp-echo",
            "--port",
            &SLOW_PORT.to_string(),
            "--delay-ms",
            &DELAY.as_millis().to_string(),
        ])?;
        let fast = cluster.add_pod(
            PodSpec::new("node-1", "meshed", "fast")
                .service_account("fast")
                .port("tcp-echo", FAST_PORT),
        )?;
        let _fast_echo = fast.spawn_app(&["tcp-echo", "--port", &FAST_PORT.to_string()])?;
        let delay_ms = DELAY.as_millis().to_string();
        let _api = backend(
            cluster,
            "node-2",
            "meshed",
            "api",
            &[("app", "api")],
            HTTP_PORT,
            &["--delay-ms", &delay_ms],
        )?;
        let vip = cluster.add_service(
            "meshed",
            "api",
            &[("app", "api")],
            &[ServicePort::http("http", HTTP_PORT, HTTP_PORT)],
        )?;
        let client = client(cluster, "node-1", "meshed", "client")?;
        let send = |to: std::net::SocketAddr| -> Result<()> {
            let out = client.run_app(&["tcp-send", &to.to_string(), "hello"], TIMEOUT)?;
            ensure!(
                out.success() && out.stdout.contains("hello"),
                "tcp-send to {to}: {out:?}"
            );
            Ok(())
        };
        let url = format!("http://{vip}:{HTTP_PORT}/");
        wait_for("the client to reach every server", TIMEOUT, || {
            let l4 = send(slow.addr(SLOW_PORT)).and(send(fast.addr(FAST_PORT)));
            let l7 = httpapp::get_one(&client, &url, &[]).map(|r| r.status == 200);
            Ok((l4.is_ok() && l7.is_ok_and(|ok| ok)).then_some(()))
        })?;
        let node1 = cluster.node("node-1")?;

        check_phase(node1, "HBONE to a slow server", true, || {
            (0..ROUNDS).try_for_each(|_| send(slow.addr(SLOW_PORT)))
        })?;
        check_phase(
            node1,
            "same node, to a server that answers at once",
            false,
            || (0..ROUNDS).try_for_each(|_| send(fast.addr(FAST_PORT))),
        )?;
        // One connection per `get` run: a capture per request too.
        check_phase(
            node1,
            "HTTP through a Service to a slow server",
            true,
            || {
                (0..ROUNDS).try_for_each(|_| {
                    let reply = httpapp::get_one(&client, &url, &[])?;
                    ensure!(reply.status == 200, "GET {url}: {}", reply.status);
                    Ok(())
                })
            },
        )?;

        // A histogram per stage, with the wait buckets.
        let text = node1.agent_metrics()?;
        ensure!(
            text.contains("# TYPE weft_mesh_wait_seconds histogram")
                && text
                    .lines()
                    .any(|l| l.starts_with("weft_mesh_wait_seconds_bucket{")
                        && l.contains("pod=\"client\"")
                        && l.contains("stage=\"capture\"")
                        && l.contains("le=\"0.0001\"")),
            "weft_mesh_wait_seconds is a histogram with buckets from 10 µs:\n{text}"
        );
        Ok(())
    })
}
