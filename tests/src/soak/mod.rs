//! `weft-soak` (`cargo xtask soak`): the simulated cluster kept busy for a
//! long time, with the events of a cluster's life on a schedule, to find
//! what drops, leaks or grows.
//!
//! Load, through two nodes: long-lived connections (`tcp-hold`, each
//! replaced after `--lifetime` with the ages staggered, so that there is a
//! steady trickle of replacements), a new connection every 50 ms
//! (`tcp-churn`) and HTTP requests on keep-alive connections
//! (`http-keepalive`). Every `--every`: one agent upgrade (the nodes in
//! turn), a control-plane restart a third of the way later, and a config
//! change (an AuthorizationPolicy that denies a path nobody asks for, in
//! and out) two thirds of the way.
//!
//! Every `--sample`, each node's agents (the current one and those an
//! upgrade retired, still finishing their connections) are read from
//! `/proc`: RSS, open descriptors, CPU time. Written to `--out`
//! (`target/soak/`): `samples.csv`, `events.csv`, `report.json`, and
//! `rss.svg` / `fds.svg` (per node, all its agents summed).

mod plot;

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::{
    Cluster, PodSpec, ServicePort,
    bench::procstat::{ProcStat, open_fds},
    wait_for,
};

#[derive(Debug, Parser)]
#[command(
    name = "weft-soak",
    about = "weft's simulated cluster under load for a long time"
)]
pub struct SoakArgs {
    /// How long to run (e.g. `1h`, `10m`, `90s`).
    #[arg(long, default_value = "1h", value_parser = weft_proto::duration::parse)]
    duration: Duration,
    /// Long-lived connections held through the whole run.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// How long a long-lived connection lives before it is replaced.
    #[arg(long, default_value = "120s", value_parser = weft_proto::duration::parse)]
    lifetime: Duration,
    /// The period of the events (upgrade, control-plane restart, config
    /// change); `0s` for none.
    #[arg(long, default_value = "60s", value_parser = weft_proto::duration::parse)]
    every: Duration,
    /// How often the agents are sampled.
    #[arg(long, default_value = "5s", value_parser = weft_proto::duration::parse)]
    sample: Duration,
    /// Samples before this are the warm-up: the targets compare the end
    /// with the first sample after it.
    #[arg(long, default_value = "120s", value_parser = weft_proto::duration::parse)]
    warmup: Duration,
    /// Where the results go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

/// One reading of one agent process.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    at_s: f64,
    node: String,
    pid: u32,
    current: bool,
    rss_kib: u64,
    fds: usize,
    cpu_s: f64,
}

/// Something that happened to the cluster.
#[derive(Debug, Clone, serde::Serialize)]
struct Event {
    at_s: f64,
    what: String,
    took_ms: u128,
}

const TIMEOUT: Duration = Duration::from_secs(60);
const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const DENY_POLICY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: soak-deny-unused-path
  namespace: soak
spec:
  selector:
    matchLabels:
      app: web
  action: DENY
  rules:
  - to:
    - operation:
        paths: [\"/soak-never-asked\"]
";

pub fn main() -> Result<()> {
    let args = SoakArgs::parse();
    if args.sample.is_zero() {
        bail!("--sample must be positive");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // The old agent keeps its connections until they end: longer than
    // their lifetime and a round.
    let drain = format!("{}s", args.lifetime.as_secs() + 60);
    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--drain-timeout", &drain])
        .build()?;
    cluster.with_logs(|cluster| run(cluster, &args))
}

fn run(cluster: &Cluster, args: &SoakArgs) -> Result<()> {
    cluster.add_namespace("soak", &[AMBIENT])?;
    let echo = cluster.add_pod(
        PodSpec::new("node-2", "soak", "echo")
            .service_account("echo")
            .port("tcp-echo", 7000),
    )?;
    let _echo = echo.spawn_app(&["tcp-echo", "--port", "7000"])?;
    let web = cluster.add_pod(
        PodSpec::new("node-2", "soak", "web")
            .service_account("web")
            .label("app", "web")
            .port("http", 8080),
    )?;
    let _web = web.spawn_http(&["serve", "--port", "8080"])?;
    let vip = cluster.add_service(
        "soak",
        "web",
        &[("app", "web")],
        &[ServicePort::http("http", 80, 8080)],
    )?;
    let caller =
        cluster.add_pod(PodSpec::new("node-1", "soak", "caller").service_account("caller"))?;
    let target = echo.addr(7000).to_string();
    let url = format!("http://{vip}/soak");
    wait_for("the echo server and the web service", TIMEOUT, || {
        let tcp = caller.run_app(&["tcp-send", &target, "hello"], TIMEOUT)?;
        let http = caller.run_app(&["http-get", &url], TIMEOUT)?;
        Ok((tcp.success() && http.success()).then_some(()))
    })?;

    let done = cluster.dir().join("soak-done");
    let done = done.to_string_lossy().into_owned();
    let connections = args.connections.to_string();
    let lifetime = args.lifetime.as_secs().to_string();
    println!("weft-soak: opening {connections} long-lived connections");
    let mut clients = vec![
        (
            "long-lived connections",
            caller.spawn_app(&[
                "tcp-hold",
                &target,
                "--connections",
                &connections,
                "--interval-ms",
                "10000",
                "--lifetime-s",
                &lifetime,
                "--until-file",
                &done,
                "--timeout",
                "30",
            ])?,
        ),
        (
            "new connections",
            caller.spawn_app(&[
                "tcp-churn",
                &target,
                "--interval-ms",
                "50",
                "--until-file",
                &done,
            ])?,
        ),
        (
            "HTTP requests",
            caller.spawn_app(&[
                "http-keepalive",
                &url,
                "--interval-ms",
                "50",
                "--until-file",
                &done,
            ])?,
        ),
    ];
    let opened = Duration::from_secs(300).max(Duration::from_millis(args.connections as u64 * 20));
    wait_for("the long-lived connections to be open", opened, || {
        let (_, hold) = &mut clients[0];
        if !hold.is_running() {
            let log = hold.log_tail(20);
            return Ok(Some(Err(anyhow::anyhow!("tcp-hold exited:\n{log}"))));
        }
        Ok(hold.log().contains("holding").then_some(Ok(())))
    })??;
    println!(
        "weft-soak: running for {:?}: events every {:?}, samples every {:?}",
        args.duration, args.every, args.sample
    );

    let start = Instant::now();
    let mut samples = Vec::new();
    let mut events = Vec::new();
    let mut schedule = Schedule::new(args.every);
    let mut next_sample = Duration::ZERO;
    let mut agent_exits = Vec::new();
    while start.elapsed() < args.duration {
        let now = start.elapsed();
        if now >= next_sample {
            samples.extend(sample(cluster, now, &mut agent_exits));
            next_sample += args.sample;
        }
        if let Some(step) = schedule.due(now) {
            let began = Instant::now();
            let what = step.run(cluster)?;
            events.push(Event {
                at_s: now.as_secs_f64(),
                what,
                took_ms: began.elapsed().as_millis(),
            });
        }
        for (what, client) in &mut clients {
            if !client.is_running() {
                bail!("{what} stopped early:\n{}", client.log_tail(20));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    samples.extend(sample(cluster, start.elapsed(), &mut agent_exits));

    std::fs::write(&done, "")?;
    let mut failures = Vec::new();
    let mut summaries = Vec::new();
    for (what, client) in &mut clients {
        client.wait_exit(Duration::from_secs(120))?;
        let log = client.log();
        failures.extend(
            log.lines()
                .filter(|l| l.contains("failed:") || l.contains(" failed in round "))
                .map(|l| format!("{what}: {l}")),
        );
        summaries.push(format!(
            "{what}: {}",
            log.lines().last().unwrap_or_default()
        ));
    }
    let report = Report::new(args, &samples, &events, failures, summaries, agent_exits);
    report.write(&args.out, &samples, &events)?;
    report.print();
    if !report.ok() {
        bail!(
            "the soak missed its targets (see above and {})",
            args.out.display()
        );
    }
    Ok(())
}

/// Every agent of every node, now.
fn sample(cluster: &Cluster, at: Duration, exits: &mut Vec<String>) -> Vec<Sample> {
    let mut samples = Vec::new();
    for node in cluster.nodes() {
        let (retired, exited) = node.retired_agents();
        exits.extend(
            exited
                .iter()
                .filter(|s| !s.success())
                .map(|s| format!("a retired agent of {} exited with {s}", node.name())),
        );
        let current = node.agent_pid();
        for (pid, is_current) in current
            .map(|p| (p, true))
            .into_iter()
            .chain(retired.into_iter().map(|p| (p, false)))
        {
            let (Ok(stat), Ok(fds)) = (ProcStat::read(pid), open_fds(pid)) else {
                continue; // exited meanwhile
            };
            samples.push(Sample {
                at_s: at.as_secs_f64(),
                node: node.name().to_string(),
                pid,
                current: is_current,
                rss_kib: stat.rss / 1024,
                fds,
                cpu_s: stat.cpu_seconds,
            });
        }
    }
    samples
}

/// The events, in order, on the `--every` period.
struct Schedule {
    every: Duration,
    next: u64,
}

enum Step {
    Upgrade(usize),
    RestartControl,
    Config(bool),
}

impl Schedule {
    fn new(every: Duration) -> Self {
        Self { every, next: 3 }
    }

    /// The step due at `now`, if any: step k is at k/3 of a period.
    fn due(&mut self, now: Duration) -> Option<Step> {
        if self.every.is_zero() || now < self.every.mul_f64(self.next as f64 / 3.0) {
            return None;
        }
        let k = self.next;
        self.next += 1;
        let period = k / 3;
        Some(match k % 3 {
            0 => Step::Upgrade((period as usize + 1) % 2),
            1 => Step::RestartControl,
            _ => Step::Config(period % 2 == 1),
        })
    }
}

impl Step {
    fn run(&self, cluster: &Cluster) -> Result<String> {
        match self {
            Step::Upgrade(n) => {
                let node = &cluster.nodes()[*n];
                node.upgrade_agent()?;
                Ok(format!("upgraded the agent of {}", node.name()))
            }
            Step::RestartControl => {
                cluster.control().restart()?;
                Ok("restarted weft-control".into())
            }
            Step::Config(add) => {
                if *add {
                    cluster.write_config_file("soak-policy.yaml", DENY_POLICY)?;
                    Ok("added an AuthorizationPolicy".into())
                } else {
                    cluster.remove_config_file("soak-policy.yaml")?;
                    Ok("removed an AuthorizationPolicy".into())
                }
            }
        }
    }
}

/// Per node: all its agents summed, at a moment.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct NodeTotal {
    at_s: f64,
    rss_kib: u64,
    fds: usize,
    agents: usize,
}

fn totals(samples: &[Sample], node: &str) -> Vec<NodeTotal> {
    let mut out: Vec<NodeTotal> = Vec::new();
    for s in samples.iter().filter(|s| s.node == node) {
        match out.last_mut() {
            Some(t) if t.at_s == s.at_s => {
                t.rss_kib += s.rss_kib;
                t.fds += s.fds;
                t.agents += 1;
            }
            _ => out.push(NodeTotal {
                at_s: s.at_s,
                rss_kib: s.rss_kib,
                fds: s.fds,
                agents: 1,
            }),
        }
    }
    out
}

/// The mean of `totals` (its time, the window's start).
fn mean<'a>(totals: impl Iterator<Item = &'a NodeTotal>) -> Option<NodeTotal> {
    let window: Vec<&NodeTotal> = totals.collect();
    let first = window.first()?;
    let n = window.len();
    Some(NodeTotal {
        at_s: first.at_s,
        rss_kib: window.iter().map(|t| t.rss_kib).sum::<u64>() / n as u64,
        fds: window.iter().map(|t| t.fds).sum::<usize>() / n,
        agents: window.iter().map(|t| t.agents).sum::<usize>() / n,
    })
}

#[derive(Debug, serde::Serialize)]
struct NodeReport {
    node: String,
    after_warmup: NodeTotal,
    end: NodeTotal,
    rss_change: f64,
    fds_change: f64,
    /// CPU seconds used by the node's agents over the run, per second.
    cpu_share: f64,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    command: String,
    seconds: f64,
    connections: usize,
    events: usize,
    nodes: Vec<NodeReport>,
    clients: Vec<String>,
    failures: Vec<String>,
    agent_exits: Vec<String>,
}

/// RSS over the last cycle within 5% of the first cycle after warm-up;
/// descriptors no more than 5% above (connections come and go).
const RSS_TOLERANCE: f64 = 0.05;
const FDS_TOLERANCE: f64 = 0.05;

impl Report {
    fn new(
        args: &SoakArgs,
        samples: &[Sample],
        events: &[Event],
        failures: Vec<String>,
        clients: Vec<String>,
        agent_exits: Vec<String>,
    ) -> Self {
        let seconds = samples.last().map_or(0.0, |s| s.at_s);
        let warmup = args.warmup.as_secs_f64();
        let mut nodes = Vec::new();
        for node in ["node-1", "node-2"] {
            let totals = totals(samples, node);
            // Means over whole cycles of the events (each node upgraded
            // once: two periods), so that both windows hold the same mix of
            // moments (an upgrade leaves two agents on the node for a
            // while): the first cycles after the warm-up, and the last.
            // As many cycles as fit in a sixth of the measured run (one at
            // least): a single cycle's mean swings by several percent with
            // where the upgrades' overlaps fall (a 1 h run read -10% on
            // one cycle where 4-cycle means read -1%).
            let window = if args.every.is_zero() {
                args.warmup.as_secs_f64()
            } else {
                let cycle = (args.every * 2).as_secs_f64();
                let cycles = ((seconds - warmup) / 6.0 / cycle).floor().max(1.0);
                cycle * cycles
            };
            let (Some(after), Some(end)) = (
                mean(
                    totals
                        .iter()
                        .filter(|t| t.at_s >= warmup && t.at_s < warmup + window),
                ),
                mean(totals.iter().filter(|t| t.at_s > seconds - window)),
            ) else {
                continue;
            };
            // CPU: the sum over processes of their last reading less their
            // first, over the run.
            let mut cpu = 0.0;
            let mut pids: Vec<u32> = samples
                .iter()
                .filter(|s| s.node == node)
                .map(|s| s.pid)
                .collect();
            pids.sort_unstable();
            pids.dedup();
            for pid in pids {
                let mine: Vec<&Sample> = samples.iter().filter(|s| s.pid == pid).collect();
                if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
                    cpu += last.cpu_s - first.cpu_s;
                }
            }
            let change = |a: f64, b: f64| if a > 0.0 { (b - a) / a } else { 0.0 };
            nodes.push(NodeReport {
                node: node.to_string(),
                rss_change: change(after.rss_kib as f64, end.rss_kib as f64),
                fds_change: change(after.fds as f64, end.fds as f64),
                cpu_share: if seconds > 0.0 { cpu / seconds } else { 0.0 },
                after_warmup: after,
                end,
            });
        }
        Report {
            command: std::env::var("WEFT_SOAK_COMMAND").unwrap_or_else(|_| "weft-soak".into()),
            seconds,
            connections: args.connections,
            events: events.len(),
            nodes,
            clients,
            failures,
            agent_exits,
        }
    }

    fn ok(&self) -> bool {
        self.failures.is_empty()
            && self.agent_exits.is_empty()
            && self
                .nodes
                .iter()
                .all(|n| n.rss_change.abs() <= RSS_TOLERANCE && n.fds_change <= FDS_TOLERANCE)
    }

    fn write(&self, out: &std::path::Path, samples: &[Sample], events: &[Event]) -> Result<()> {
        let mut csv = String::from("at_s,node,pid,current,rss_kib,fds,cpu_s\n");
        for s in samples {
            let _ = writeln!(
                csv,
                "{:.1},{},{},{},{},{},{:.2}",
                s.at_s, s.node, s.pid, s.current, s.rss_kib, s.fds, s.cpu_s
            );
        }
        std::fs::write(out.join("samples.csv"), csv)?;
        let mut csv = String::from("at_s,took_ms,what\n");
        for e in events {
            let _ = writeln!(csv, "{:.1},{},{}", e.at_s, e.took_ms, e.what);
        }
        std::fs::write(out.join("events.csv"), csv)?;
        std::fs::write(out.join("report.json"), serde_json::to_string_pretty(self)?)?;
        let series = |f: fn(&NodeTotal) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
            ["node-1", "node-2"]
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        totals(samples, n).iter().map(|t| (t.at_s, f(t))).collect(),
                    )
                })
                .collect()
        };
        let marks: Vec<f64> = events
            .iter()
            .filter(|e| e.what.starts_with("upgraded"))
            .map(|e| e.at_s)
            .collect();
        std::fs::write(
            out.join("rss.svg"),
            plot::svg(
                "agents' RSS per node (MiB), upgrades marked",
                &series(|t| t.rss_kib as f64 / 1024.0),
                &marks,
            ),
        )?;
        std::fs::write(
            out.join("fds.svg"),
            plot::svg(
                "agents' open descriptors per node, upgrades marked",
                &series(|t| t.fds as f64),
                &marks,
            ),
        )?;
        Ok(())
    }

    fn print(&self) {
        println!(
            "\nweft-soak: {:.0} s, {} long-lived connections, {} events",
            self.seconds, self.connections, self.events
        );
        println!(
            "| node | RSS after warm-up (MiB) | RSS at the end (MiB) | change | fds after warm-up | fds at the end | change | agent CPU (% of a core) |"
        );
        println!(
            "(means over the first whole cycles of events after the warm-up and over the last, a sixth of the run each; all of a node's agents summed)"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        for n in &self.nodes {
            println!(
                "| {} | {:.1} | {:.1} | {:+.1}% | {} | {} | {:+.1}% | {:.1} |",
                n.node,
                n.after_warmup.rss_kib as f64 / 1024.0,
                n.end.rss_kib as f64 / 1024.0,
                n.rss_change * 100.0,
                n.after_warmup.fds,
                n.end.fds,
                n.fds_change * 100.0,
                n.cpu_share * 100.0
            );
        }
        for c in &self.clients {
            println!("{c}");
        }
        println!("failed requests: {}", self.failures.len());
        for f in self.failures.iter().take(20) {
            println!("  {f}");
        }
        for e in &self.agent_exits {
            println!("  {e}");
        }
    }
}
