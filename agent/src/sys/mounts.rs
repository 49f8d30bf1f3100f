//! Finding the cgroup v2 and bpffs mounts from `/proc/self/mountinfo`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Read(std::io::Error),
    #[error(
        "no cgroup2 filesystem is mounted; weft attaches its eBPF programs to a cgroup v2 (mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`)"
    )]
    NoCgroup2,
    #[error(
        "{0} is not on a bpffs mount; mount one with `mount -t bpf bpf /sys/fs/bpf` (or run `cargo xtask setup`)"
    )]
    NoBpffs(PathBuf),
}

/// `(mount point, filesystem type)` of every mount.
fn mounts() -> Result<Vec<(PathBuf, String)>, MountError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::Read)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            // `id parent maj:min root mountpoint opts [optional...] - fstype src superopts`
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let fs_type = right.split(' ').next()?;
            Some((PathBuf::from(unescape(mount_point)), fs_type.to_string()))
        })
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The first cgroup2 mount point.
pub fn cgroup2_root() -> Result<PathBuf, MountError> {
    mounts()?
        .into_iter()
        .find(|(_, fs)| fs == "cgroup2")
        .map(|(path, _)| path)
        .ok_or(MountError::NoCgroup2)
}

/// Checks that `dir` (which may not exist yet) is below a bpffs mount.
pub fn check_bpffs(dir: &std::path::Path) -> Result<(), MountError> {
    let on_bpffs = mounts()?
        .into_iter()
        .any(|(mount, fs)| fs == "bpf" && dir.starts_with(&mount));
    if on_bpffs {
        Ok(())
    } else {
        Err(MountError::NoBpffs(dir.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(super::unescape("/a\\040b"), "/a b");
    }
}
