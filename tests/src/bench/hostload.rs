//! How much of the machine other work took during a measurement: the CPU
//! time the host spent outside this run's cluster cgroup and this process.
//! The benchmarks share 2 vCPUs with whatever else runs on the machine; a
//! compile in the background halves a throughput figure, so every
//! measurement says how quiet the machine was, and busy ones are retried.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    /// Non-idle CPU seconds of the whole machine (`/proc/stat`).
    busy: f64,
    /// CPU seconds of the cluster's cgroup tree (agents, control plane,
    /// pods: everything the benchmark runs).
    cluster: f64,
    /// CPU seconds of this process.
    own: f64,
}

/// Reads snapshots for one cluster.
#[derive(Debug, Clone)]
pub struct HostLoad {
    cpu_stat: PathBuf,
    cpus: f64,
}

impl HostLoad {
    /// `run_cgroup`: the cluster's cgroup directory.
    pub fn new(run_cgroup: &Path) -> HostLoad {
        HostLoad {
            cpu_stat: run_cgroup.join("cpu.stat"),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        }
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let cgroup = std::fs::read_to_string(&self.cpu_stat)
            .with_context(|| format!("reading {}", self.cpu_stat.display()))?;
        let own = super::procstat::ProcStat::read(std::process::id())?.cpu_seconds;
        Ok(Snapshot {
            at: Instant::now(),
            busy: machine_busy_seconds(&stat)?,
            cluster: cgroup_usage_seconds(&cgroup)?,
            own,
        })
    }

    /// The share of the machine's CPU capacity (0 to 1) that other work
    /// used between two snapshots.
    pub fn foreign_share(&self, before: &Snapshot, after: &Snapshot) -> f64 {
        let wall = (after.at - before.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        let foreign = (after.busy - before.busy)
            - (after.cluster - before.cluster)
            - (after.own - before.own);
        (foreign / (wall * self.cpus)).clamp(0.0, 1.0)
    }
}

impl HostLoad {
    /// Waits, up to `max_wait`, until other work took at most `threshold`
    /// of the machine over one second. Returns the last second's share.
    pub fn wait_quiet(&self, threshold: f64, max_wait: Duration) -> Result<f64> {
        let deadline = Instant::now() + max_wait;
        loop {
            let before = self.snapshot()?;
            std::thread::sleep(Duration::from_secs(1));
            let share = self.foreign_share(&before, &self.snapshot()?);
            if share <= threshold || Instant::now() >= deadline || super::stopped() {
                return Ok(share);
            }
        }
    }
}

/// user + nice + system + steal of the `cpu` line, seconds. Interrupt and
/// softirq time is left out on both sides: the network stack's work for the
/// benchmark's own packets lands there (and in ksoftirqd, accounted as
/// softirq), not in the cluster's cgroup.
fn machine_busy_seconds(stat: &str) -> Result<f64> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no `cpu` line in /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    let ticks = at(0) + at(1) + at(2) + at(7);
    // SAFETY: sysconf has no pointer arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks / hz)
}

fn cgroup_usage_seconds(cpu_stat: &str) -> Result<f64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|us| us / 1e6)
        .context("no usage_usec in cpu.stat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters() {
        let stat = "cpu  600 0 50 300 2 0 10 40 0 0\ncpu0 1 2 3\n";
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(machine_busy_seconds(stat).unwrap(), 690.0 / hz);
        assert_eq!(
            cgroup_usage_seconds("usage_usec 2500000\nuser_usec 1\n").unwrap(),
            2.5
        );
    }

    #[test]
    fn the_share_is_what_others_used_of_the_capacity() {
        let load = HostLoad {
            cpu_stat: PathBuf::new(),
            cpus: 2.0,
        };
        let at = Instant::now();
        let before = Snapshot {
            at,
            busy: 10.0,
            cluster: 5.0,
            own: 1.0,
        };
        let after = Snapshot {
            at: at + std::time::Duration::from_secs(10),
            busy: 25.0,
            cluster: 14.0,
            own: 2.0,
        };
        // 15 busy - 9 cluster - 1 own = 5 s of 20 s capacity.
        assert!((load.foreign_share(&before, &after) - 0.25).abs() < 1e-9);
    }
}
