//! Run ids, and removing everything a run created: on drop, and for runs
//! whose process died without dropping its cluster.
//!
//! Every named thing a run creates carries its run id `w<pid>n<seq>`:
//! network namespaces `<run>-*`, the cgroup tree `<cgroup2>/weft-sim-<run>`,
//! bpffs pins `/sys/fs/bpf/weft-sim-<run>-*` and the directory
//! `$TMPDIR/weft-sim-<run>`. Nothing is added to the host's own network
//! namespace.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cgroup;
use crate::netns;
use crate::preflight::BPFFS;

/// Orders clusters built by one process.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// How long teardown waits for a killed cgroup tree to empty.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A cluster's unique id, `w<pid>n<seq>`: short, and it names the process
/// that owns the run so leftovers of a dead one can be recognised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(String);

// === impl RunId ===

impl RunId {
    /// A fresh id for a cluster of this process.
    pub fn new() -> RunId {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        RunId(format!("w{}n{seq}", std::process::id()))
    }

    /// Parses a run id from the start of `name` (e.g. a netns name
    /// `w123n0-node-1` or a directory `weft-sim-w123n0`).
    pub fn from_prefix(name: &str) -> Option<RunId> {
        let name = name.strip_prefix("weft-sim-").unwrap_or(name);
        let rest = name.strip_prefix('w')?;
        let pid_len = rest.find(|c: char| !c.is_ascii_digit())?;
        let after_pid = rest[pid_len..].strip_prefix('n')?;
        let seq_len = after_pid
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_pid.len());
        if pid_len == 0 || seq_len == 0 {
            return None;
        }
        let tail = &after_pid[seq_len..];
        if !(tail.is_empty() || tail.starts_with('-')) {
            return None;
        }
        Some(RunId(format!(
            "w{}n{}",
            &rest[..pid_len],
            &after_pid[..seq_len]
        )))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pid of the process that created the run.
    pub fn pid(&self) -> u32 {
        let digits: String = self.0[1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap_or(0)
    }

    /// Name of one of the run's network namespaces.
    pub fn netns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.0)
    }

    /// The run's cgroup tree.
    pub fn cgroup_dir(&self, cgroup2_root: &Path) -> PathBuf {
        cgroup2_root.join(format!("weft-sim-{}", self.0))
    }

    /// The bpffs directory for one node's agent.
    pub fn bpffs_dir(&self, node: &str) -> PathBuf {
        Path::new(BPFFS).join(format!("weft-sim-{}-{node}", self.0))
    }

    /// The run's working directory (config, state, logs, sockets).
    pub fn temp_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("weft-sim-{}", self.0))
    }

    /// Whether the process that created the run is still alive: its pid
    /// exists and, if the run recorded it, has the same start time.
    pub fn owner_alive(&self) -> bool {
        let pid = self.pid();
        let Some(start) = process_start_time(pid) else {
            return false;
        };
        match std::fs::read_to_string(self.temp_dir().join("owner")) {
            Ok(recorded) => recorded.split_whitespace().nth(1) == Some(start.as_str()),
            Err(_) => true,
        }
    }

    /// Records the owning process (pid and start time) in the run directory.
    pub(crate) fn record_owner(&self) -> Result<()> {
        let pid = std::process::id();
        let start = process_start_time(pid).unwrap_or_default();
        // Written aside and renamed into place: another cluster starting
        // in the same process reads either no file (alive) or the whole of
        // it, never the empty file a plain write passes through (which
        // read as a dead owner, and got this run removed under its feet).
        let path = self.temp_dir().join("owner");
        let partial = self.temp_dir().join(".owner.partial");
        std::fs::write(&partial, format!("{pid} {start}\n"))
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("writing {}", path.display()))
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
fn process_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// Removes everything run `run` created, processes first. Keeps going past
/// failures and returns them all.
pub fn remove_run(run: &RunId, cgroup2_root: &Path) -> Vec<anyhow::Error> {
    let mut errors = Vec::new();
    let cg = run.cgroup_dir(cgroup2_root);
    if let Err(e) = cgroup::kill_all(&cg, KILL_TIMEOUT) {
        errors.push(e.context(format!("killing the processes of run {run}")));
    }
    match netns::list_netns() {
        Ok(names) => {
            let prefix = run.netns("");
            // Pods first, then nodes, the control plane and the fabric:
            // deleting in reverse creation order keeps veth peers tidy.
            let mut mine: Vec<String> = names
                .into_iter()
                .filter(|n| n.starts_with(&prefix))
                .collect();
            mine.sort_by_key(|n| std::cmp::Reverse(teardown_rank(&n[prefix.len()..])));
            for name in mine {
                if let Err(e) = netns::delete_netns(&name) {
                    errors.push(e);
                }
            }
        }
        Err(e) => errors.push(e),
    }
    if let Err(e) = cgroup::remove_tree(&cg) {
        errors.push(e);
    }
    match bpffs_dirs(run) {
        Ok(dirs) => {
            for dir in dirs {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    errors
                        .push(anyhow::Error::new(e).context(format!("removing {}", dir.display())));
                }
            }
        }
        Err(e) => errors.push(e),
    }
    let tmp = run.temp_dir();
    if let Err(e) = std::fs::remove_dir_all(&tmp)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errors.push(anyhow::Error::new(e).context(format!("removing {}", tmp.display())));
    }
    errors
}

/// Higher ranks are deleted first.
fn teardown_rank(suffix: &str) -> u8 {
    if suffix.starts_with("pod-") {
        3
    } else if suffix.starts_with("node-") {
        2
    } else if suffix == "fabric" {
        0
    } else {
        1
    }
}

/// The run's bpffs directories (`/sys/fs/bpf/weft-sim-<run>-*`).
fn bpffs_dirs(run: &RunId) -> Result<Vec<PathBuf>> {
    let prefix = format!("weft-sim-{run}-");
    let entries = match std::fs::read_dir(BPFFS) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("listing {BPFFS}")),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Every run id that has something on this host (netns, cgroup, bpffs,
/// temp dir), alive or not.
pub fn runs_on_host(cgroup2_root: &Path) -> Vec<RunId> {
    let mut names: Vec<String> = netns::list_netns().unwrap_or_default();
    for dir in [cgroup2_root, Path::new(BPFFS), &std::env::temp_dir()] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            names.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("weft-sim-w")),
            );
        }
    }
    let mut runs: Vec<RunId> = names.iter().filter_map(|n| RunId::from_prefix(n)).collect();
    runs.sort();
    runs.dedup();
    runs
}

/// Removes the leftovers of every run whose owning process is dead.
/// Returns the runs removed. Called at every cluster start.
pub fn cleanup_stale(cgroup2_root: &Path) -> Result<Vec<RunId>> {
    let mut removed = Vec::new();
    for run in runs_on_host(cgroup2_root) {
        if run.owner_alive() {
            continue;
        }
        let errors = remove_run(&run, cgroup2_root);
        if let Some(first) = errors.into_iter().next() {
            return Err(first.context(format!("removing leftovers of dead run {run}")));
        }
        removed.push(run);
    }
    Ok(removed)
}

/// What of a run still exists on the host, one line per thing; empty when
/// the run left nothing behind.
pub fn leftovers(run: &RunId, cgroup2_root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let prefix = run.netns("");
    for name in netns::list_netns().unwrap_or_default() {
        if name.starts_with(&prefix) {
            found.push(format!("netns {name}"));
        }
    }
    let cg = run.cgroup_dir(cgroup2_root);
    if cg.exists() {
        found.push(format!("cgroup {}", cg.display()));
    }
    for dir in bpffs_dirs(run).unwrap_or_default() {
        found.push(format!("bpffs {}", dir.display()));
    }
    if run.temp_dir().exists() {
        found.push(format!("dir {}", run.temp_dir().display()));
    }
    let marker = format!("weft-sim-{run}");
    for pid in pids_in_cgroups_named(&marker) {
        found.push(format!("process {pid} in a cgroup of the run"));
    }
    found
}

/// Pids of live (not zombie) processes whose `/proc/<pid>/cgroup`
/// mentions `marker`. A zombie has released its cgroup; it lingers only
/// until its parent (a [`crate::Process`] handle still held) reaps it.
fn pids_in_cgroups_named(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(marker))
                && !is_zombie(*pid)
        })
        .collect()
}

/// Whether `/proc/<pid>/stat` says state `Z` (or the process is gone).
fn is_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_round_trip() {
        let run = RunId::new();
        assert_eq!(run.pid(), std::process::id());
        assert_eq!(RunId::from_prefix(&run.netns("node-1")), Some(run.clone()));
        assert_eq!(
            RunId::from_prefix(&format!("weft-sim-{run}")),
            Some(run.clone())
        );
        assert_eq!(
            RunId::from_prefix(&format!("weft-sim-{run}-node-1")),
            Some(run.clone())
        );
    }

    #[test]
    fn foreign_names_are_not_runs() {
        for name in [
            "wlan0",
            "w12",
            "w12n",
            "wn1",
            "w12x3-a",
            "w12n3x",
            "weft-sim-",
            "docker",
        ] {
            assert_eq!(RunId::from_prefix(name), None, "{name}");
        }
    }

    #[test]
    fn this_process_owns_its_runs() {
        assert!(RunId::new().owner_alive());
        // pid_max is at most 2^22; this pid cannot exist.
        assert!(!RunId::from_prefix("w99999999n0").unwrap().owner_alive());
    }
}
