//! Per-workload TCP health from the agent's `sockops` program, on a 2-node
//! simulated cluster running weft's real binaries against the real kernel.
//! Two meshed clients on node-1 ping an echo server on node-2 through
//! HBONE; one of them has its link impaired the way `tc netem` would (this
//! kernel has no `sch_netem`: `weft_sim::impair` delays or drops the
//! packets leaving the pod's namespace with an NFQUEUE reader). Random loss
//! raises that pod's retransmitted segments and not its neighbour's, and
//! `weftctl top` puts it first; 30 ms of added latency raises its smoothed
//! RTT by about 30 ms and not its neighbour's. The figures are read from
//! the agents' `/tcp` and scraped as `weft_tcp_*`. Needs root and the
//! binaries (`cargo xtask test` builds them); fails, never skips, without
//! them.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use weft_sim::{
    Cluster, Node, Pod, PodSpec,
    impair::{Impairment, impair},
    wait_for,
};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const TIMEOUT: Duration = Duration::from_secs(60);
const ECHO_PORT: u16 = 7000;
const DELAY: Duration = Duration::from_millis(30);

/// The totals of one (reporter, source workload, destination workload)
/// in an agent's `/tcp`.
fn totals(node: &Node, reporter: &str, source: &str, destination: &str) -> Result<Value> {
    let all = node.admin_json("/tcp")?;
    let found = all.as_array().and_then(|pairs| {
        pairs.iter().find(|p| {
            p["reporter"] == reporter
                && p["source"]["workload"] == source
                && p["destination"]["workload"] == destination
        })
    });
    Ok(found.map_or(Value::Null, |p| p["totals"].clone()))
}

fn number(totals: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(totals, |v, key| &v[*key])
        .as_u64()
        .unwrap_or(0)
}

/// Mean smoothed RTT of the samples taken between two reads, in ms.
fn mean_rtt_ms(before: &Value, after: &Value) -> Option<f64> {
    let count = number(after, &["rtt", "count"]) - number(before, &["rtt", "count"]);
    let sum = number(after, &["rtt", "sum_us"]) - number(before, &["rtt", "sum_us"]);
    (count > 0).then(|| sum as f64 / count as f64 / 1e3)
}

/// `count` pings from `pod` to the echo server, `interval` apart, in the
/// background.
fn ping(pod: &Pod, server: &Pod, count: u32, interval: Duration) -> Result<weft_sim::Process> {
    pod.spawn_app(&[
        "tcp-ping",
        &server.addr(ECHO_PORT).to_string(),
        "--count",
        &count.to_string(),
        "--interval-ms",
        &interval.as_millis().to_string(),
        "--timeout",
        "30",
    ])
}

fn finish(mut ping: weft_sim::Process, who: &str) -> Result<()> {
    let status = ping.wait_exit(TIMEOUT)?;
    ensure!(
        status.success(),
        "{who}'s pings did not all come back ({status}):\n{}",
        ping.log_tail(10)
    );
    Ok(())
}

#[test]
fn loss_and_latency_on_one_pods_link_show_in_its_tcp_health_and_not_its_neighbours() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("meshed", &[AMBIENT])?;
        let server = cluster.add_pod(
            PodSpec::new("node-2", "meshed", "server")
                .service_account("server")
                .port("tcp-echo", ECHO_PORT),
        )?;
        let _echo = server.spawn_app(&["tcp-echo", "--port", &ECHO_PORT.to_string()])?;
        let lossy =
            cluster.add_pod(PodSpec::new("node-1", "meshed", "lossy").service_account("lossy"))?;
        let steady =
            cluster.add_pod(PodSpec::new("node-1", "meshed", "steady").service_account("steady"))?;
        let target = server.addr(ECHO_PORT).to_string();
        for pod in [&lossy, &steady] {
            wait_for(&format!("{} to reach the echo server", pod.name()), TIMEOUT, || {
                let out = pod.run_app(&["tcp-send", &target, "hello"], TIMEOUT)?;
                Ok((out.success() && out.stdout.contains("hello")).then_some(()))
            })?;
        }
        let node1 = cluster.node("node-1")?;
        let node2 = cluster.node("node-2")?;
        let read = || -> Result<(Value, Value)> {
            Ok((
                totals(node1, "source", "lossy", "server")?,
                totals(node1, "source", "steady", "server")?,
            ))
        };
        // Both clients' HBONE connections are followed, and timed.
        let (lossy0, steady0) = read()?;
        for (who, t) in [("lossy", &lossy0), ("steady", &steady0)] {
            ensure!(
                number(t, &["established"]) >= 1 && number(t, &["setup", "count"]) >= 1,
                "{who} -> server: node-1's agent saw no established connection with its setup time: {t}"
            );
        }
        let inbound = totals(node2, "destination", "lossy", "server")?;
        ensure!(
            number(&inbound, &["established"]) >= 1,
            "node-2's agent reports lossy's connection to the server (reporter destination): {inbound}"
        );

        // Loss: 10% of the packets leaving lossy's namespace.
        let (before_lossy, before_steady) = read()?;
        let top = {
            let _impaired = impair(
                lossy.netns(),
                Impairment {
                    delay: Duration::ZERO,
                    loss: 0.1,
                },
            )?;
            let pings = [
                ping(&lossy, &server, 300, Duration::from_millis(10))?,
                ping(&steady, &server, 300, Duration::from_millis(10))?,
            ];
            std::thread::sleep(Duration::from_secs(1));
            let mut cmd = Command::new(cluster.bin_dir().join("weftctl"));
            cmd.args(["top", "meshed", "--count", "1", "--interval", "2s"]);
            let top = node1
                .run(cmd, TIMEOUT)?
                .check("weftctl top meshed --count 1 --interval 2s")?
                .stdout;
            let [a, b] = pings;
            finish(a, "lossy")?;
            finish(b, "steady")?;
            top
        };
        println!("weftctl top during the loss:\n{top}");
        let (after_lossy, after_steady) = read()?;
        let grown = |after: &Value, before: &Value| {
            number(after, &["retransmits"]) - number(before, &["retransmits"])
        };
        let (lossy_rtx, steady_rtx) = (
            grown(&after_lossy, &before_lossy),
            grown(&after_steady, &before_steady),
        );
        println!("retransmitted segments: lossy {lossy_rtx}, steady {steady_rtx}");
        ensure!(
            lossy_rtx >= 10,
            "10% loss on lossy's link should retransmit many of its ~300 exchanges' segments; counted {lossy_rtx}"
        );
        ensure!(
            steady_rtx <= 2,
            "steady's link was not impaired, yet {steady_rtx} segments were retransmitted"
        );
        let first_row = top
            .lines()
            .find(|l| l.starts_with("meshed/"))
            .context("a row in weftctl top's output")?;
        let cells: Vec<&str> = first_row.split_whitespace().collect();
        ensure!(
            cells[..3] == ["meshed/lossy", "meshed/server", "source"],
            "weftctl top sorts by retransmits: lossy first\n{top}"
        );
        let rate: f64 = cells[4].parse().context("RETRANS/S")?;
        ensure!(rate > 0.0, "lossy's RETRANS/S is above 0\n{top}");

        // The same figures are scraped.
        let scrape = node1.agent_metrics()?;
        let sample = scrape
            .lines()
            .find(|l| {
                l.starts_with("weft_tcp_retransmitted_segments_total{")
                    && l.contains("reporter=\"source\"")
                    && l.contains("source_workload=\"lossy\"")
                    && l.contains("destination_workload=\"server\"")
            })
            .with_context(|| format!("lossy's weft_tcp_retransmitted_segments_total in:\n{scrape}"))?;
        let scraped: u64 = sample
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("the value of {sample}"))?;
        ensure!(
            scraped >= number(&after_lossy, &["retransmits"]),
            "scraped {sample}, /tcp said {after_lossy}"
        );
        ensure!(
            scrape.contains("# TYPE weft_tcp_smoothed_rtt_seconds histogram")
                && scrape.contains("# TYPE weft_tcp_connect_seconds histogram"),
            "the RTT and setup histograms are scraped"
        );

        // Latency: 30 ms on every packet leaving lossy's namespace. The
        // smoothed RTT moves an eighth of the way per sample: read after
        // 40 exchanges, then measure over the next 60.
        let _impaired = impair(
            lossy.netns(),
            Impairment {
                delay: DELAY,
                loss: 0.0,
            },
        )?;
        let warm = [
            ping(&lossy, &server, 40, Duration::from_millis(5))?,
            ping(&steady, &server, 40, Duration::from_millis(5))?,
        ];
        let [a, b] = warm;
        finish(a, "lossy")?;
        finish(b, "steady")?;
        let (before_lossy, before_steady) = read()?;
        let measured = [
            ping(&lossy, &server, 60, Duration::from_millis(5))?,
            ping(&steady, &server, 60, Duration::from_millis(5))?,
        ];
        let [a, b] = measured;
        finish(a, "lossy")?;
        finish(b, "steady")?;
        let (after_lossy, after_steady) = read()?;
        let lossy_rtt = mean_rtt_ms(&before_lossy, &after_lossy)
            .context("RTT samples of lossy's connection while delayed")?;
        let steady_rtt = mean_rtt_ms(&before_steady, &after_steady)
            .context("RTT samples of steady's connection")?;
        println!("mean smoothed RTT with {DELAY:?} added to lossy: lossy {lossy_rtt:.2} ms, steady {steady_rtt:.2} ms");
        let added = DELAY.as_secs_f64() * 1e3;
        ensure!(
            lossy_rtt >= added * 0.8 && lossy_rtt <= added + 20.0,
            "lossy's smoothed RTT should be about {added} ms more than without delay; measured {lossy_rtt:.2} ms"
        );
        ensure!(
            steady_rtt < 10.0,
            "steady's link was not delayed, yet its smoothed RTT is {steady_rtt:.2} ms"
        );
        Ok(())
    })
}

/// A server that stops reading closes its window: the proxy's socket that
/// carries the pod's connection to it receives zero-window segments, and
/// the pod's TCP health counts them.
#[test]
fn a_receiver_that_stops_reading_shows_as_zero_windows() -> Result<()> {
    const SINK_PORT: u16 = 7100;
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("meshed", &[AMBIENT])?;
        cluster.add_namespace("legacy", &[])?;
        let sink = cluster.add_pod(
            PodSpec::new("node-2", "legacy", "sink")
                .service_account("sink")
                .port("tcp-sink", SINK_PORT),
        )?;
        let _stall = sink.spawn_app(&["tcp-stall", "--port", &SINK_PORT.to_string()])?;
        let writer = cluster
            .add_pod(PodSpec::new("node-1", "meshed", "writer").service_account("writer"))?;
        let node1 = cluster.node("node-1")?;
        let target = sink.addr(SINK_PORT).to_string();
        let mut written = String::new();
        wait_for("the writer to fill the sink's window", TIMEOUT, || {
            let out = writer.run_app(&["tcp-flood", &target, "--seconds", "5"], TIMEOUT)?;
            written = out.stdout.clone();
            let zero = number(
                &totals(node1, "source", "writer", "sink")?,
                &["zero_windows"],
            );
            Ok((out.success() && zero > 0).then_some(()))
        })
        .with_context(|| format!("tcp-flood said: {written}"))?;
        let found = totals(node1, "source", "writer", "sink")?;
        println!("{written}writer -> sink: {found}");
        let scrape = node1.agent_metrics()?;
        ensure!(
            scrape.lines().any(|l| {
                l.starts_with("weft_tcp_zero_window_segments_received_total{")
                    && l.contains("source_workload=\"writer\"")
                    && l.contains("destination_workload=\"sink\"")
                    && !l.ends_with(" 0")
            }),
            "the zero windows are scraped:\n{scrape}"
        );
        Ok(())
    })
}
