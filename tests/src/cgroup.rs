//! cgroup v2 directories for nodes and pods: found, created, emptied, removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::wait::wait_until;

/// The cgroup v2 mount point, read from `/proc/self/mountinfo`
/// (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid).
pub fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    find_cgroup2(&mountinfo).ok_or_else(|| {
        anyhow::anyhow!(
            "no cgroup2 filesystem is mounted (checked /proc/self/mountinfo); mount one with \
             `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified` \
             or run `cargo xtask setup`"
        )
    })
}

/// Parses mountinfo lines: `id parent maj:min root mountpoint opts... - fstype src superopts`.
fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates a cgroup directory (and its parents).
pub fn create(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating cgroup {}", path.display()))
}

/// Kills every process in the cgroup and its descendants (`cgroup.kill`)
/// and waits until the subtree is empty.
pub fn kill_all(path: &Path, timeout: Duration) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let kill = path.join("cgroup.kill");
    std::fs::write(&kill, "1").with_context(|| {
        format!(
            "writing 1 to {} (needs Linux 5.14 or newer)",
            kill.display()
        )
    })?;
    wait_until(
        &format!("cgroup {} to have no processes left", path.display()),
        timeout,
        || !is_populated(path).unwrap_or(false),
    )
}

/// Whether any process lives in the cgroup or below (`cgroup.events`).
pub fn is_populated(path: &Path) -> Result<bool> {
    let events = std::fs::read_to_string(path.join("cgroup.events"))
        .with_context(|| format!("reading {}/cgroup.events", path.display()))?;
    Ok(events.lines().any(|l| l.trim() == "populated 1"))
}

/// Pids in the cgroup and all its descendants.
pub fn pids_recursive(path: &Path) -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    if !path.exists() {
        return Ok(pids);
    }
    let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            pids.extend(pids_recursive(&entry.path())?);
        }
    }
    Ok(pids)
}

/// Removes a cgroup directory tree, leaves first. The subtree must be empty
/// of processes (see [`kill_all`]); cgroupfs only allows `rmdir`.
pub fn remove_tree(path: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context(format!("listing cgroup {}", path.display())),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => bail!(
            "removing cgroup {}: {e} (pids still inside: {:?})",
            path.display(),
            pids_recursive(path).unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_cgroup2(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(find_cgroup2("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape_octal(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_octal(r"/plain"), "/plain");
    }
}
