//! `weft-control-bench`: the control plane at scale. Writes a config
//! directory (pods, services, VirtualServices and DestinationRules),
//! starts weft-control in this process, and starts the agents in a child
//! process (so that this process's RSS and CPU are the control plane's):
//! each agent is a delta ADS client over real TLS gRPC on loopback,
//! subscribed (wildcard) to every type weft serves (workloads and
//! services, authorizations, route configs, destination policies), ACKing
//! every response. Measures:
//!
//! - first sync: from starting the agents until every one has ACKed the
//!   current version of every type;
//! - one change: from rewriting one pod's file on disk until every agent
//!   has ACKed the version that contains it (p50, p99);
//! - the control plane's peak RSS and CPU seconds.
//!
//! With `--kubernetes`, weft-control watches an API server instead: the
//! stand-in `weft-apiserver` (its own process, next to this executable),
//! loaded with the same objects through the API by a child process; a
//! change is a merge patch of the pod's `/status` (its IP), and "config
//! load to ready" runs until every resource is listed and `/ready` is 200.
//!
//! Prints a table and writes JSON to `$WEFT_BENCH_DIR/control-plane.json`
//! (`control-plane-kubernetes.json` with `--kubernetes`; default
//! `target/bench/`). Build with `--release`.
//!
//! The agents read each response's type, nonce and every resource's name
//! and version but skip the resource bodies (a real agent would convert
//! them; that cost is the agent's, on its own node).

// The crate root is a file, so its modules need a path.
#[path = "weft-control-bench/agents.rs"]
mod agents;
#[path = "weft-control-bench/config.rs"]
mod config;
#[path = "weft-control-bench/k8s.rs"]
mod k8s;
#[path = "weft-control-bench/report.rs"]
mod report;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use weft_control::{
    Config, Server, ServerHandle,
    config::ConfigSource,
    xds::{SERVED_TYPES, SyncRegistry},
};

use crate::{
    config::{PODS_PER_FILE, rewrite_pod_file, write_config},
    k8s::StandIn,
    report::{ApiFigures, Figures},
};

#[derive(Parser, Debug, Clone)]
#[command(about = "weft-control at scale: first sync, one-change latency, RSS, CPU")]
struct Args {
    /// Small sizes for a CI smoke run (under a minute).
    #[arg(long)]
    quick: bool,
    /// Watch the API server stand-in (weft-apiserver, built next to this
    /// binary), loaded through the API, instead of a config directory.
    #[arg(long)]
    kubernetes: bool,
    #[arg(long)]
    pods: Option<usize>,
    #[arg(long)]
    services: Option<usize>,
    /// VirtualServices, and as many DestinationRules.
    #[arg(long)]
    routes: Option<usize>,
    #[arg(long)]
    agents: Option<usize>,
    /// One-pod changes to time.
    #[arg(long)]
    changes: Option<usize>,
    /// Internal: run the agents (the child process).
    #[arg(long, hide = true)]
    agents_for: Option<String>,
    /// Internal: create the config's objects through the API (the child
    /// process).
    #[arg(long, hide = true)]
    load_into: Option<String>,
}

pub struct Sizes {
    pub pods: usize,
    pub services: usize,
    pub routes: usize,
    pub agents: usize,
    pub changes: usize,
    pub namespaces: usize,
}

/// How long weft-control may take to list the API server.
const READY_LIMIT: Duration = Duration::from_secs(600);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(spec) = &args.agents_for {
        return runtime.block_on(agents::run(spec));
    }
    if let Some(spec) = &args.load_into {
        return runtime.block_on(k8s::run_loader(spec));
    }
    let sizes = if args.quick {
        Sizes {
            pods: args.pods.unwrap_or(10_000),
            services: args.services.unwrap_or(1_000),
            routes: args.routes.unwrap_or(200),
            agents: args.agents.unwrap_or(20),
            changes: args.changes.unwrap_or(10),
            namespaces: 20,
        }
    } else {
        Sizes {
            pods: args.pods.unwrap_or(100_000),
            services: args.services.unwrap_or(10_000),
            routes: args.routes.unwrap_or(2_000),
            agents: args.agents.unwrap_or(200),
            changes: args.changes.unwrap_or(50),
            namespaces: 100,
        }
    };
    runtime.block_on(bench(sizes, args.quick, args.kubernetes))
}

/// Kubernetes mode's side of a run.
struct Kubernetes {
    standin: StandIn,
    client: ::kube::Client,
    loaded: k8s::Loaded,
    standin_load_cpu: f64,
    _dir: tempfile::TempDir,
}

impl Kubernetes {
    /// Starts the stand-in and loads `config_dir` into it.
    async fn load(config_dir: &Path) -> anyhow::Result<Kubernetes> {
        let dir = tempfile::tempdir()?;
        let standin = StandIn::start(dir.path()).await?;
        eprintln!("API server stand-in at {}", standin.url);
        let loaded = k8s::load(&standin.kubeconfig, config_dir).await?;
        let standin_load_cpu = standin.cpu_seconds();
        eprintln!(
            "created {} objects through the API in {:.2} s (stand-in CPU {standin_load_cpu:.1} s; parsing the files took {:.1} s before)",
            loaded.objects, loaded.seconds, loaded.parse_seconds
        );
        let client = k8s::client(&standin.kubeconfig).await?;
        Ok(Kubernetes {
            standin,
            client,
            loaded,
            standin_load_cpu,
            _dir: dir,
        })
    }
}

async fn bench(sizes: Sizes, quick: bool, kubernetes: bool) -> anyhow::Result<()> {
    let config_dir = tempfile::tempdir()?;
    let state_dir = tempfile::tempdir()?;
    let t = Instant::now();
    write_config(config_dir.path(), &sizes)?;
    eprintln!("wrote the config in {:.1?}", t.elapsed());
    let mut cluster = match kubernetes {
        true => Some(Kubernetes::load(config_dir.path()).await?),
        false => None,
    };
    let mut config = Config::for_tests(config_dir.path(), state_dir.path());
    if let Some(cluster) = &cluster {
        config.source = ConfigSource::Kubernetes {
            kubeconfig: Some(cluster.standin.kubeconfig.clone()),
        };
    }

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let handle = Server::start(config).await?;
    if let Some(cluster) = &mut cluster {
        let bound = started.elapsed();
        wait_ready(&handle, &mut cluster.standin).await?;
        eprintln!(
            "servers bound in {bound:.1?}, every resource listed and /ready in {:.1?}",
            started.elapsed()
        );
    }
    let load = started.elapsed();
    let standin_ready_cpu = cluster.as_ref().map_or(0.0, |k| k.standin.cpu_seconds());
    let model = handle.model();
    let (addresses, authorizations, routes, destinations) = {
        let m = model.borrow();
        (
            m.resources.len(),
            m.authorizations.len(),
            m.routes.len(),
            m.destinations.len(),
        )
    };
    eprintln!(
        "control plane up in {load:.1?}: {addresses} addresses, {authorizations} authorizations, {routes} route configs, {destinations} destination policies"
    );

    // The agents, in a child process.
    let spec = format!(
        "{}|{}|{}|{}",
        handle.xds_addr(),
        handle.trust_bundle_path().display(),
        state_dir.path().display(),
        sizes.agents
    );
    let t0 = Instant::now();
    let cpu_at_start = cpu_seconds();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--agents-for", &spec])
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the agents process")?;
    let syncz = handle.syncz();
    let first_sync = wait_all_acked(
        &handle,
        &syncz,
        sizes.agents,
        &mut child,
        Duration::from_secs(600),
    )
    .await?;
    let first_sync = first_sync.duration_since(t0);
    // CPU time is what the sync costs whatever else runs on the machine.
    let sync_cpu = cpu_seconds() - cpu_at_start;
    let agents_cpu = child
        .id()
        .map_or(0.0, |pid| cpu_seconds_of(&format!("/proc/{pid}/stat")));
    eprintln!(
        "first sync: {first_sync:.2?} (CPU: control plane {sync_cpu:.1} s, agents {agents_cpu:.1} s)"
    );

    // One-pod changes: a file rewritten, or a pod's status patched.
    let mut latencies = Vec::new();
    for i in 0..sizes.changes {
        let file = (i * 7919) % sizes.pods.div_ceil(PODS_PER_FILE);
        let before = model.borrow().version.clone();
        let t = Instant::now();
        match &cluster {
            Some(cluster) => k8s::change_pod(&cluster.client, &sizes, file, i + 1).await?,
            None => rewrite_pod_file(config_dir.path(), &sizes, file, i + 1)?,
        }
        // The new version, then every agent's ACK of it.
        let deadline = t + Duration::from_secs(30);
        loop {
            if model.borrow().version != before {
                break;
            }
            if Instant::now() > deadline {
                bail!("change {i} never reached the model");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let done = wait_all_acked(
            &handle,
            &syncz,
            sizes.agents,
            &mut child,
            Duration::from_secs(30),
        )
        .await?;
        latencies.push(done.duration_since(t));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    let cpu = cpu_seconds() - cpu_before;
    let rss = peak_rss_bytes();
    let api = match &cluster {
        Some(cluster) => {
            let lists = k8s::lists(handle.debug_addr()).await?;
            let relists: u64 = lists.iter().map(|(_, n)| n.saturating_sub(1)).sum();
            for (resource, n) in lists.iter().filter(|(_, n)| *n > 1) {
                eprintln!(
                    "{resource} was listed {n} times (relisted after a 410 or a failed watch)"
                );
            }
            Some(ApiFigures {
                objects: cluster.loaded.objects,
                load: Duration::from_secs_f64(cluster.loaded.seconds),
                standin_load_cpu: cluster.standin_load_cpu,
                standin_list_cpu: standin_ready_cpu - cluster.standin_load_cpu,
                relists,
            })
        }
        None => None,
    };
    child.kill().await.ok();
    handle.shutdown().await;
    drop(cluster);

    let figures = Figures {
        quick,
        api,
        addresses,
        authorizations,
        routes,
        destinations,
        load,
        first_sync,
        sync_cpu,
        agents_cpu,
        latencies,
        rss,
        cpu,
    };
    print!("{}", figures.table(&sizes)?);
    let out = figures.write(&sizes)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Kubernetes mode: waits until the source has listed every resource,
/// the first model is built and `/ready` answers 200.
async fn wait_ready(handle: &ServerHandle, standin: &mut StandIn) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_LIMIT;
    let mut model = handle.model();
    loop {
        // The first model is published once the source is synced; `/ready`
        // turns 200 right after.
        let changed = tokio::time::timeout(Duration::from_secs(1), model.changed()).await;
        if matches!(changed, Ok(Err(_))) {
            bail!("weft-control stopped before it was ready");
        }
        for _ in 0..if changed.is_ok() { 100 } else { 1 } {
            if k8s::debug_get(handle.debug_addr(), "/ready").await?.0 == 200 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        standin.check_running()?;
        if Instant::now() > deadline {
            let unlisted: Vec<String> = k8s::lists(handle.debug_addr())
                .await?
                .into_iter()
                .filter(|(_, n)| *n == 0)
                .map(|(r, _)| r)
                .collect();
            bail!(
                "weft-control not ready within {READY_LIMIT:?}; not listed yet: {}",
                unlisted.join(", ")
            );
        }
    }
}

/// Waits until `agents` streams are connected and each has ACKed the
/// current version of every type; returns when.
async fn wait_all_acked(
    handle: &ServerHandle,
    syncz: &Arc<SyncRegistry>,
    agents: usize,
    child: &mut tokio::process::Child,
    limit: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    let model = handle.model();
    loop {
        let versions: Vec<(&str, String)> = {
            let m = model.borrow();
            SERVED_TYPES
                .iter()
                .map(|t| (*t, m.type_version(t)))
                .collect()
        };
        let (streams, synced) = syncz.count(|s| {
            versions.iter().all(|(t, v)| {
                s.types
                    .get(*t)
                    .is_some_and(|status| status.last_acked_version == *v)
            })
        });
        let done = streams >= agents && synced == streams;
        if done {
            return Ok(Instant::now());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the agents process exited: {status}");
        }
        if Instant::now() > deadline {
            bail!(
                "not all agents ACKed within {limit:?}: {streams} streams connected, {synced} in sync"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// === process figures ===

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// User + system CPU seconds from a `/proc/<pid>/stat` file.
pub fn cpu_seconds_of(stat_file: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_file).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after `)`.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Peak resident set size (VmHWM) of this process.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
