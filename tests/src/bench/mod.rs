//! `cargo xtask bench`: weft against no mesh, side by side, on one
//! simulated cluster, in one invocation.
//!
//! Every scenario runs twice per round, once between pods of the `direct`
//! namespace (not in the mesh) and once between identical pods of the
//! `mesh` namespace (through weft), alternating which goes first; the
//! report gives both medians and `weft / direct`. See
//! `docs/PERFORMANCE.md` for what runs where and the latest results.
//!
//! - [`testbed`]: the cluster and its pods; [`scenarios`]: what is measured;
//!   [`runner`]: rounds, alternation, profiling; [`report`] and
//!   [`targets`]: the table, the JSON file and the targets.
//! - [`load`]: `weft-bench-load`, the load generators and servers run in
//!   the pods; [`stats`]: latency percentiles.

pub mod load;
pub mod stats;

mod dma;
mod hostload;
mod options;
pub mod procstat;
mod profile;
mod report;
mod runner;
mod scenarios;
mod targets;
mod testbed;
mod wakeup;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;

pub use options::{Options, Settings};

use runner::Run;
use scenarios::{authz, connrate, footprint, http, kernel, latency, metrics, throughput};
use testbed::Testbed;

/// Set by SIGINT/SIGTERM: finish nothing new, tear down, exit.
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether the run was interrupted.
pub(crate) fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Entry point of the `weft-bench` binary.
pub fn main() -> Result<()> {
    let options = Options::parse();
    let settings = Settings::from(&options);
    for (key, value) in &options.agent_env {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var(key, value) };
    }
    catch_signals()?;
    // The agents and every pod process inherit this limit: 10,000 held
    // connections need some 20,000 descriptors in each agent.
    let nofile = raise_nofile_limit(1 << 20)?;
    let target_dir = target_dir()?;
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| target_dir.join("bench/latest.json"));
    let dma = match options.no_dma_latency {
        true => Err(anyhow::anyhow!("--no-dma-latency was given")),
        false => dma::DmaLatency::hold_zero(),
    };
    let dma_state = match &dma {
        Ok(_) => "held at 0 for the whole run (every variant alike)".to_string(),
        Err(e) => format!("not held ({e:#})"),
    };
    let git = report::git_revision();
    let machine = report::machine();
    println!(
        "weft-bench: {} run, {} build, git {}{}",
        if settings.quick {
            "quick (smoke)"
        } else {
            "full"
        },
        build_profile(),
        git["revision"].as_str().unwrap_or("unknown"),
        if git["dirty"] == json!(true) {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    println!(
        "weft-bench: {} vCPUs ({}), kernel {}; /dev/cpu_dma_latency {dma_state}",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
    );
    let wakeup = wakeup::measure();
    println!(
        "weft-bench: a thread blocked on CPU 1 runs {:.1} µs after a wake-up from CPU 0 \
         (median; p10 {:.1}, p90 {:.1}): {} wake-ups",
        wakeup.median_us, wakeup.p10_us, wakeup.p90_us, wakeup.kind
    );
    let peer = settings.ztunnel.as_ref().map(|path| {
        let version = std::process::Command::new(path)
            .arg("version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| format!("({e})"));
        println!(
            "weft-bench: ztunnel {} beside weft in the L4 scenarios: {version}",
            path.display()
        );
        json!({ "name": "ztunnel", "path": path, "version": version })
    });
    println!("weft-bench: RLIMIT_NOFILE {nofile}, inherited by the agents and the pods' processes");
    for (key, value) in &options.agent_env {
        println!(
            "weft-bench: {key}={value} in the environment of the agents (and of all the cluster runs)"
        );
    }
    if settings.quick {
        println!("weft-bench: --quick checks that every scenario runs; its figures mean little");
    }

    let date = report::utc_now();
    let started = Instant::now();
    println!(
        "weft-bench: building the cluster (2 nodes, namespaces direct and mesh{})",
        if settings.ztunnel.is_some() {
            ", and ztunnel"
        } else {
            ""
        }
    );
    let testbed = Testbed::build(&settings, options.bin_dir.clone())?;
    let agent_nofile = testbed
        .agents()?
        .first()
        .map(|(_, pid)| procstat::nofile_limit(*pid))
        .transpose()?;
    let mut run = Run::new(settings.clone(), target_dir.join("bench/profile"));
    run.hostload = Some(hostload::HostLoad::new(testbed.cluster.run_cgroup()));
    // Footprint first: the agents' memory then reflects only the
    // connections held, not what earlier traffic left in their heaps.
    footprint::idle(&mut run, &testbed);
    footprint::connections(&mut run, &testbed);
    // Restarts node-1's agent before each of its measurements: last of
    // the footprints, so the ones above see the agents as they were.
    footprint::http_connections(&mut run, &testbed);
    throughput::run(&mut run, &testbed);
    latency::run(&mut run, &testbed);
    http::run(&mut run, &testbed);
    authz::run(&mut run, &testbed);
    connrate::run(&mut run, &testbed);
    // Last: these restart both agents before each of their measurements.
    metrics::run(&mut run, &testbed);
    kernel::run(&mut run, &testbed);
    println!("weft-bench: tearing the cluster down");
    drop(testbed);
    drop(dma);

    let outcomes = targets::evaluate(&run.rows);
    println!("\n{}", report::table(&run.rows));
    if !outcomes.is_empty() {
        println!(
            "First targets (weft against direct; HTTP L7 against weft L4; L7 authz against L7; \
             telemetry on against off; weft against ztunnel):\n{}",
            targets::text(&outcomes)
        );
    }
    let command = std::env::var("WEFT_BENCH_COMMAND").unwrap_or_else(|_| {
        std::iter::once("weft-bench".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let value = json!({
        "schema": 1,
        "command": command,
        "mode": if settings.quick { "quick" } else { "full" },
        "profiled": settings.profile,
        "date": date,
        "duration_seconds": started.elapsed().as_secs_f64().round(),
        "git": git,
        "machine": machine,
        "build": { "profile": build_profile() },
        "conditions": {
            "cpu_dma_latency": dma_state,
            "idle_wakeup": wakeup,
            "agent_rlimit_nofile": agent_nofile,
            "agent_env": options.agent_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "pod_sysctls": {
                "net.ipv4.ip_local_port_range": "16000 65535",
                "net.ipv4.tcp_tw_reuse": "1",
            },
        },
        "settings": settings,
        "peer": peer,
        "scenarios": run.rows,
        "targets": outcomes,
        "failures": run.failures.iter().map(|(s, e)| json!({"scenario": s, "error": e})).collect::<Vec<_>>(),
        "notes": run.notes,
        "agent_rss_mib_after_scenario": run.rss_trace.iter().map(|(s, rss)| {
            json!({"scenario": s, "agents": rss.iter().map(|(n, m)| json!({"node": n, "rss_mib": m})).collect::<Vec<_>>()})
        }).collect::<Vec<_>>(),
    });
    report::write_json(&out, &value)?;
    let history = target_dir.join(format!(
        "bench/history/{}-{}.json",
        date.replace(':', ""),
        git["revision"]
            .as_str()
            .map_or("unknown", |r| &r[..r.len().min(12)])
    ));
    report::write_json(&history, &value)?;
    println!(
        "weft-bench: results in {} (and {})",
        out.display(),
        history.display()
    );
    if stopped() {
        bail!("interrupted");
    }
    if !run.failures.is_empty() {
        let names: Vec<&str> = run.failures.iter().map(|(s, _)| s.as_str()).collect();
        bail!(
            "{} scenario(s) could not run: {}",
            names.len(),
            names.join(", ")
        );
    }
    Ok(())
}

fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

/// `target/`: this executable lives in `target/<profile>/`.
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding weft-bench's own path")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("weft-bench is not inside a cargo target directory")
}

/// Raises `RLIMIT_NOFILE` to `n`, or, without `CAP_SYS_RESOURCE` (some
/// containers), the soft limit to the hard one. Returns the limit set.
fn raise_nofile_limit(n: u64) -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            return Ok(n);
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("reading RLIMIT_NOFILE");
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("raising RLIMIT_NOFILE");
        }
    }
    Ok(limit.rlim_cur)
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_signals() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.context("installing the signal handler")?;
    }
    Ok(())
}
