//! The agent's eBPF map gauges, on a 1-node simulated cluster running
//! weft's real binaries against the real kernel: every map the agent loads
//! is scraped as `weft_agent_ebpf_map_entries{map}` and
//! `weft_agent_ebpf_map_capacity{map}`, capacity being the kernel's
//! `max_entries`, and the per-pod maps count exactly the enrolled pods as
//! pods come and go (the counts are refreshed every 10 s in the background,
//! so the test polls). The kernel's run statistics of each eBPF program
//! grow with the connections that run it. Needs root and the binaries
//! (`cargo xtask test` builds them); fails, never skips, without them.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use weft_sim::{Cluster, PodSpec, wait_for};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
/// Two counting intervals and then some.
const TIMEOUT: Duration = Duration::from_secs(35);

/// Every map the agent loads, and its `max_entries` in the programs.
const MAPS: [(&str, u64); 7] = [
    ("WEFT_ENROLLED", 16_384),
    ("WEFT_DST_COOKIE", 65_536),
    ("WEFT_DST_PORT", 65_536),
    ("WEFT_IN_PODS", 16_384),
    ("WEFT_INBOUND", 16_384),
    ("WEFT_DELIVERY", 65_536),
    ("WEFT_HOST_SRC", 64),
];
/// The maps with one entry per enrolled pod.
const PER_POD: [&str; 3] = ["WEFT_ENROLLED", "WEFT_IN_PODS", "WEFT_INBOUND"];

/// `map` label → value of the unlabelled-otherwise samples of `name`.
fn by_map(text: &str, name: &str) -> Result<BTreeMap<String, u64>> {
    by_label(text, name, "map")
}

/// `label` → value of the samples of `name` with that one label.
fn by_label<T: std::str::FromStr>(
    text: &str,
    name: &str,
    label: &str,
) -> Result<BTreeMap<String, T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let mut values = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(&format!("{name}{{{label}=\"")) else {
            continue;
        };
        let (map, value) = rest
            .split_once("\"} ")
            .with_context(|| format!("a `{name}{{{label}=...}} value` sample: {line}"))?;
        let value = value
            .parse()
            .with_context(|| format!("the value of {line}"))?;
        values.insert(map.to_string(), value);
    }
    Ok(values)
}

/// The one unlabelled sample of `name`.
fn plain(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

/// Scrapes node-1 until the per-pod maps count `pods`, then checks every
/// map's pair of gauges; returns the last scrape.
fn scrape_until_per_pod(cluster: &Cluster, pods: u64) -> Result<String> {
    let node = cluster.node("node-1")?;
    let text = wait_for(
        &format!("{PER_POD:?} to count {pods} pods in the scrape"),
        TIMEOUT,
        || {
            let text = node.agent_metrics()?;
            let entries = by_map(&text, "weft_agent_ebpf_map_entries")?;
            let counted = PER_POD.iter().all(|map| entries.get(*map) == Some(&pods));
            let enrolled = plain(&text, "weft_agent_pods_enrolled") == Some(pods);
            Ok((counted && enrolled).then_some(text))
        },
    )?;
    let entries = by_map(&text, "weft_agent_ebpf_map_entries")?;
    let capacity = by_map(&text, "weft_agent_ebpf_map_capacity")?;
    let names: Vec<&str> = MAPS.iter().map(|(name, _)| *name).collect();
    ensure!(
        entries.keys().map(String::as_str).eq(sorted(&names)),
        "one entries gauge per map {names:?}: {entries:?}"
    );
    ensure!(
        capacity.keys().map(String::as_str).eq(sorted(&names)),
        "one capacity gauge per map {names:?}: {capacity:?}"
    );
    for (map, max_entries) in MAPS {
        let (n, cap) = (entries[map], capacity[map]);
        ensure!(
            cap == max_entries,
            "{map}: capacity {cap}, the programs declare {max_entries}"
        );
        ensure!(n <= cap, "{map}: {n} entries above its capacity {cap}");
    }
    // The node's own addresses (at least its IP) are exempt from steering.
    ensure!(
        entries["WEFT_HOST_SRC"] >= 1,
        "WEFT_HOST_SRC holds the node's addresses: {entries:?}"
    );
    Ok(text)
}

fn sorted<'a>(names: &[&'a str]) -> impl Iterator<Item = &'a str> {
    let mut names = names.to_vec();
    names.sort_unstable();
    names.into_iter()
}

#[test]
fn map_gauges_count_the_enrolled_pods_against_the_kernels_capacity() -> Result<()> {
    let cluster = Cluster::builder().nodes(1).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("meshed", &[AMBIENT])?;
        cluster.add_namespace("plain", &[])?;
        let mut pods = Vec::new();
        for name in ["a", "b", "c"] {
            pods.push(
                cluster.add_pod(PodSpec::new("node-1", "meshed", name).service_account(name))?,
            );
        }
        // Not enrolled: counted nowhere.
        let _outside = cluster
            .add_pod(PodSpec::new("node-1", "plain", "outside").service_account("outside"))?;

        let text = scrape_until_per_pod(cluster, 3)?;
        let shown: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("weft_agent_ebpf_map_") || l.contains("pods_enrolled"))
            .collect();
        println!("{}", shown.join("\n"));

        // A pod that goes is counted out.
        let Some(gone) = pods.pop() else {
            bail!("three pods were added");
        };
        cluster.delete_pod(&gone)?;
        scrape_until_per_pod(cluster, 2)?;
        Ok(())
    })
}

/// The programs the agent loads at start (`weft_profile` only while a
/// profile runs).
const PROGRAMS: [&str; 5] = [
    "weft_connect4",
    "weft_connect6",
    "weft_sk_lookup",
    "weft_sockops",
    "weft_tcp_health",
];

#[test]
fn program_statistics_grow_with_the_connections_that_run_them() -> Result<()> {
    const CONNECTIONS: u64 = 10;
    let cluster = Cluster::builder().nodes(1).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("meshed", &[AMBIENT])?;
        cluster.add_namespace("plain", &[])?;
        let server = cluster.add_pod(
            PodSpec::new("node-1", "meshed", "server")
                .service_account("server")
                .port("tcp-echo", 7000),
        )?;
        let _echo = server.spawn_app(&["tcp-echo", "--port", "7000"])?;
        let meshed =
            cluster.add_pod(PodSpec::new("node-1", "meshed", "client").service_account("client"))?;
        let outside =
            cluster.add_pod(PodSpec::new("node-1", "plain", "outside").service_account("outside"))?;
        let target = server.addr(7000).to_string();
        let send = |pod: &weft_sim::Pod| -> Result<()> {
            let out = pod.run_app(&["tcp-send", &target, "hello"], TIMEOUT)?;
            ensure!(
                out.success() && out.stdout.contains("hello"),
                "{} could not reach the echo server: {}",
                pod.name(),
                out.stderr
            );
            Ok(())
        };
        wait_for("the echo server to answer", TIMEOUT, || {
            Ok(send(&meshed).is_ok().then_some(()))
        })?;
        let node = cluster.node("node-1")?;
        let scrape = || -> Result<(BTreeMap<String, u64>, BTreeMap<String, f64>)> {
            let text = node.agent_metrics()?;
            Ok((
                by_label(&text, "weft_agent_ebpf_program_runs_total", "program")?,
                by_label(&text, "weft_agent_ebpf_program_run_seconds_total", "program")?,
            ))
        };
        let (runs_before, time_before) = scrape()?;
        ensure!(
            runs_before.keys().map(String::as_str).eq(PROGRAMS),
            "one run counter per program {PROGRAMS:?}: {runs_before:?} (does the kernel keep eBPF statistics? the agent's log says)"
        );
        // Outbound from an enrolled pod: its connect() runs
        // weft_connect4 and its socket events weft_sockops; inbound from
        // outside the mesh: the lookup of the listening socket runs
        // weft_sk_lookup, which steers it to the proxy, and the proxy's
        // socket accepted for the pod runs weft_tcp_health.
        for _ in 0..CONNECTIONS {
            send(&meshed)?;
            send(&outside)?;
        }
        let (runs_after, time_after) = scrape()?;
        println!("runs before {runs_before:?}\nruns after {runs_after:?}\nseconds after {time_after:?}");
        for program in [
            "weft_connect4",
            "weft_sockops",
            "weft_sk_lookup",
            "weft_tcp_health",
        ] {
            let grew = runs_after[program] - runs_before[program];
            let spent = time_after[program] - time_before[program];
            println!(
                "{program}: {grew} runs, {:.2} µs per run",
                spent * 1e6 / grew.max(1) as f64
            );
            ensure!(
                grew >= CONNECTIONS,
                "{program} ran {grew} times for {CONNECTIONS} connections"
            );
            ensure!(
                time_after[program] > time_before[program],
                "{program}'s run time did not grow: {} s then {} s",
                time_before[program],
                time_after[program]
            );
        }
        Ok(())
    })
}
