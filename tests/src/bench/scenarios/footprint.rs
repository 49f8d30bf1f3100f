//! Footprint of the agents: RSS when idle with 10 enrolled pods, and RSS
//! and CPU time with 1,000 and 10,000 concurrent idle connections through
//! the mesh (client on node-1, server on node-2: each connection costs the
//! client's agent an accepted socket and an HBONE stream, the server's agent
//! a stream and a delivery socket, plus a share of a pooled TLS connection
//! each, or a whole one without pooling). Agent CPU per GB is measured by
//! the throughput scenarios.
//!
//! `footprint/http-connections`: idle HTTP/1.1 keep-alive connections,
//! each having completed one request, through weft L7 (a Service port
//! declared HTTP: the client node's agent terminates each connection and
//! sends the requests over pooled upstream connections) and weft L4 (the
//! same port declared TCP); the client node's agent's memory per
//! connection.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bench::procstat::{ProcStat, nofile_limit, open_fds};
use crate::bench::report::{Metric, Sample, lower};
use crate::bench::runner::Run;
use crate::bench::testbed::{HOLD_PORT, HTTP_SMALL_PORT, Placement, Testbed, Variant, load_args};
use crate::wait_for;

const OPEN_TIME: Metric = lower("time to open all", "s");
const RSS_BEFORE: Metric = lower("agent RSS before, client node", "MiB");
const RSS_CLIENT: Metric = lower("agent RSS, client node", "MiB");
const RSS_SERVER: Metric = lower("agent RSS, server node", "MiB");
const PER_CONN: Metric = lower("agent memory per connection", "KiB");
const FDS: Metric = lower("agent descriptors per connection", "fds");
const CPU_OPEN: Metric = lower("agent CPU to open all", "s");
const CPU_IDLE: Metric = lower("agent CPU while idle", "s/min");

/// The idle RSS of node-1's agent with its enrolled pods, before any
/// traffic (the first scenario of a run).
pub fn idle(run: &mut Run, testbed: &Testbed) {
    let pods = testbed.enrolled_on_node_1();
    let rss_node_1 = Metric {
        name: "agent RSS, node-1",
        ..RSS_CLIENT
    };
    let rss_node_2 = Metric {
        name: "agent RSS, node-2",
        ..RSS_CLIENT
    };
    let scenario = format!("footprint/idle-{pods}-pods");
    if !run.settings.selected(&scenario) {
        return;
    }
    let variants = testbed.l4_variants();
    run.once_with(testbed, &scenario, &variants, |testbed, variant| {
        match variant {
            Variant::Direct => Ok(Vec::new()),
            // One ztunnel per pod: the one of server-remote, the only pod
            // node-2's agent serves, is the like for like.
            Variant::Ztunnel => {
                let proxies = testbed.proxies(variant)?;
                let (_, pid) = proxies
                    .iter()
                    .find(|(name, _)| name.ends_with("server-remote"))
                    .context("no ztunnel for server-remote")?;
                Ok(vec![(rss_node_2, ProcStat::read(*pid)?.rss_mib())])
            }
            _ => {
                let agents = testbed.agents()?;
                let rss = |i: usize| -> Result<f64> { Ok(ProcStat::read(agents[i].1)?.rss_mib()) };
                Ok(vec![(rss_node_1, rss(0)?), (rss_node_2, rss(1)?)])
            }
        }
    });
    let node_2 = match testbed.authz_selected() {
        true => "2 (server-remote, server-authz)",
        false => "1 (server-remote)",
    };
    run.note(format!(
        "idle footprint: node-1's agent serves {pods} enrolled pods (client, server-local, \
         idle-*), node-2's serves {node_2}; read before any traffic; with --peer ztunnel, \
         ztunnel's is server-remote's own proxy, serving that pod alone (after one check \
         connection)"
    ));
}

/// Descriptors an agent needs besides those of the held connections
/// (listeners of its pods, eBPF maps and links, logs, sockets to the
/// control plane), with room to spare.
const FD_MARGIN: usize = 300;

/// Concurrent idle connections, cross-node, smallest count first: the
/// descriptors per connection it shows size the next ones.
pub fn connections(run: &mut Run, testbed: &Testbed) {
    let counts = run.settings.hold_counts.clone();
    let idle = if run.settings.quick { 2.0 } else { 10.0 };
    let limit: Option<usize> = testbed
        .agents()
        .ok()
        .and_then(|agents| nofile_limit(agents.first()?.1).ok())
        .and_then(|l| l.parse().ok());
    // Until measured: a socket accepted from the app and one to the peer.
    let mut per_conn = 2.0;
    for wanted in counts {
        let count = fitting(wanted, limit, per_conn);
        let scenario = format!("footprint/{count}-idle-connections");
        // `--only footprint/10000` selects the 10,000 asked for, also when
        // the descriptor limit cuts it (and the name) down.
        let asked = format!("footprint/{wanted}-idle-connections");
        if !(run.settings.selected(&scenario) || run.settings.selected(&asked)) {
            continue;
        }
        if count < wanted {
            run.note(format!(
                "{wanted} held connections need about {} descriptors in an agent ({per_conn:.2} \
                 per connection), more than its RLIMIT_NOFILE of {}; measured {count} instead",
                (per_conn * wanted as f64) as usize + FD_MARGIN,
                limit.unwrap_or(0)
            ));
        }
        let variants = testbed.l4_variants();
        run.once_with(testbed, &scenario, &variants, |testbed, variant| {
            hold(testbed, variant, count, idle)
        });
        if let Some(measured) = run
            .rows
            .iter()
            .find(|r| r.scenario == scenario && r.metric == FDS.name)
            .and_then(|r| r.weft)
        {
            per_conn = measured;
        }
    }
}

/// The largest count up to `wanted` (in whole thousands when cut) whose
/// descriptors fit an agent's limit at `per_conn` each.
fn fitting(wanted: usize, limit: Option<usize>, per_conn: f64) -> usize {
    let Some(limit) = limit else {
        return wanted;
    };
    let fits = (limit.saturating_sub(FD_MARGIN) as f64 / per_conn.max(0.01)) as usize;
    if fits >= wanted {
        wanted
    } else if fits >= 1000 {
        fits / 1000 * 1000
    } else {
        fits
    }
}

fn hold(testbed: &Testbed, variant: Variant, count: usize, idle: f64) -> Result<Vec<Sample>> {
    // The client node's proxy first, then the server's: weft's agents, or
    // the client's and server-remote's ztunnels.
    let agents = match variant {
        Variant::Ztunnel => testbed.cross_node_proxies(variant)?,
        _ => testbed.agents()?,
    };
    let before: Vec<ProcStat> = agents
        .iter()
        .map(|(_, pid)| ProcStat::read(*pid))
        .collect::<Result<_>>()?;
    let fds_before: Vec<usize> = agents
        .iter()
        .map(|(_, pid)| open_fds(*pid))
        .collect::<Result<_>>()?;
    let server = testbed
        .server(variant, Placement::CrossNode)
        .addr(HOLD_PORT);
    let args = load_args("hold", server, &[("count", &count.to_string())]);
    let mut holder = testbed.client(variant).spawn(testbed.load(&args))?;
    let timeout = Duration::from_secs(60 + count as u64 / 50);
    let open_seconds = wait_for(&format!("{count} connections to open"), timeout, || {
        if let Some(status) = holder.try_status() {
            bail!(
                "the holding client exited ({status}):\n{}",
                holder.log_tail(20)
            );
        }
        Ok(holder
            .log()
            .lines()
            .find_map(|l| l.strip_prefix("ready "))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<f64>().ok()))
    })?;
    let mut samples = vec![(OPEN_TIME, open_seconds)];
    if variant.meshed() {
        let opened = read_all(&agents)?;
        let mut fds = 0.0f64;
        for ((_, pid), baseline) in agents.iter().zip(&fds_before) {
            let held = open_fds(*pid)?.saturating_sub(*baseline);
            fds = fds.max(held as f64 / count as f64);
        }
        std::thread::sleep(Duration::from_secs_f64(idle));
        let after = read_all(&agents)?;
        let cpu = |a: &[ProcStat], b: &[ProcStat]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(a, b)| a.cpu_seconds - b.cpu_seconds)
                .sum()
        };
        let grown: f64 = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.rss as f64 - b.rss as f64)
            .sum();
        samples.extend([
            (RSS_BEFORE, before[0].rss_mib()),
            (RSS_CLIENT, after[0].rss_mib()),
            (RSS_SERVER, after[1].rss_mib()),
            (PER_CONN, grown / count as f64 / 1024.0),
            (CPU_OPEN, cpu(&opened, &before)),
            (CPU_IDLE, cpu(&after, &opened) * 60.0 / idle),
            (FDS, fds),
        ]);
    }
    drop(holder);
    // Wait until the agents have let go of the connections, so the next
    // scenario starts from a quiet agent.
    for ((node, pid), baseline) in agents.iter().zip(fds_before) {
        wait_for(
            &format!("the node proxy {node} to close the held connections"),
            Duration::from_secs(120),
            || Ok((open_fds(*pid)? <= baseline + 64).then_some(())),
        )?;
    }
    Ok(samples)
}

/// Idle HTTP/1.1 connections through weft L7 and L4, cross-node. The
/// client node's agent is restarted before each path is measured, so that
/// heap freed by earlier scenarios (or by the other path) does not hide
/// what the connections cost; only that agent is measured (the server
/// node's sees the L7 requests on a few pooled connections).
pub fn http_connections(run: &mut Run, testbed: &Testbed) {
    let count = run.settings.http_hold_count;
    let body = run.settings.message;
    let settle = if run.settings.quick { 1.0 } else { 5.0 };
    run.once_with(
        testbed,
        "footprint/http-connections",
        &[Variant::WeftL7, Variant::Weft],
        |testbed, variant| {
            testbed.services_ready()?;
            testbed.restart_client_agent()?;
            hold_http(testbed, variant, count, body, settle)
        },
    );
}

const HTTP_CONNS: Metric = lower("connections held", "conns");
const HTTP_OPEN_TIME: Metric = lower("time to open all (one request each)", "s");
const HTTP_RSS_BEFORE: Metric = lower("agent RSS before, client node", "MiB");
const HTTP_RSS_WITH: Metric = lower("agent RSS with them, client node", "MiB");
const HTTP_PER_CONN: Metric = lower("agent memory per connection, client node", "KiB");
const HTTP_FDS: Metric = lower("agent descriptors per connection, client node", "fds");

fn hold_http(
    testbed: &Testbed,
    variant: Variant,
    count: usize,
    body: usize,
    settle: f64,
) -> Result<Vec<Sample>> {
    let (node, pid) = testbed
        .agents()?
        .into_iter()
        .next()
        .context("no agent on the client's node")?;
    let before = ProcStat::read(pid)?;
    let fds_before = open_fds(pid)?;
    let server = testbed.service_addr(variant, Placement::CrossNode, HTTP_SMALL_PORT);
    let args = load_args(
        "hold",
        server,
        &[
            ("count", &count.to_string()),
            ("http-body", &body.to_string()),
        ],
    );
    let mut holder = testbed.client(variant).spawn(testbed.load(&args))?;
    let timeout = Duration::from_secs(60 + count as u64 / 50);
    let open_seconds = wait_for(
        &format!("{count} HTTP connections to open"),
        timeout,
        || {
            if let Some(status) = holder.try_status() {
                bail!(
                    "the holding client exited ({status}):\n{}",
                    holder.log_tail(20)
                );
            }
            Ok(holder
                .log()
                .lines()
                .find_map(|l| l.strip_prefix("ready "))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<f64>().ok()))
        },
    )?;
    // Let the agent settle (pooled upstream connections, buffers).
    std::thread::sleep(Duration::from_secs_f64(settle));
    let with = ProcStat::read(pid).with_context(|| format!("the agent of {node}"))?;
    let fds = open_fds(pid)?.saturating_sub(fds_before);
    let samples = vec![
        (HTTP_CONNS, count as f64),
        (HTTP_OPEN_TIME, open_seconds),
        (HTTP_RSS_BEFORE, before.rss_mib()),
        (HTTP_RSS_WITH, with.rss_mib()),
        (
            HTTP_PER_CONN,
            (with.rss as f64 - before.rss as f64) / count as f64 / 1024.0,
        ),
        (HTTP_FDS, fds as f64 / count as f64),
    ];
    drop(holder);
    wait_for(
        &format!("the agent of {node} to close the held HTTP connections"),
        Duration::from_secs(120),
        || Ok((open_fds(pid)? <= fds_before + 64).then_some(())),
    )?;
    Ok(samples)
}

fn read_all(agents: &[(String, u32)]) -> Result<Vec<ProcStat>> {
    agents
        .iter()
        .map(|(node, pid)| ProcStat::read(*pid).with_context(|| format!("the node proxy {node}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_connections_fit_the_descriptor_limit() {
        assert_eq!(fitting(10_000, None, 2.0), 10_000);
        assert_eq!(fitting(10_000, Some(1 << 20), 2.0), 10_000);
        assert_eq!(fitting(10_000, Some(20_000), 2.0), 9_000);
        assert_eq!(fitting(10_000, Some(20_000), 1.01), 10_000);
        assert_eq!(fitting(1_000, Some(20_000), 2.0), 1_000);
        assert_eq!(fitting(1_000, Some(1_024), 2.0), 362);
    }
}
