//! A pod → the cgroup its processes share, which the profiling program
//! filters on (`bpf_get_current_ancestor_cgroup_id`).
//!
//! The pod's network namespace is the one holding its IP (found as
//! discovery finds pods that predate the agent: the namespaces of the
//! processes below `--cgroup`); its processes are those in that
//! namespace; its cgroup is the deepest cgroup that contains all of them
//! (in Kubernetes `…/pod<uid>`, above the pause and app containers'
//! cgroups). That cgroup must be below `--cgroup`, so a profile never
//! reaches beyond the pods.

use std::{
    collections::HashSet,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::inpod::discover::{self, NetnsFinder};

/// The cgroup of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// Its path in the cgroup2 hierarchy (`/kubepods/…/pod<uid>`).
    pub path: PathBuf,
    /// The cgroup id (its directory's inode in cgroupfs).
    pub id: u64,
    /// How deep it is: the cgroup2 root is level 0.
    pub level: u32,
    /// How many processes were in the pod's namespace.
    pub processes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the control plane has no IP address for it yet")]
    NoAddress,
    #[error("{0}")]
    Mount(#[from] crate::sys::mounts::MountError),
    #[error(
        "no network namespace below the agent's cgroup {} holds its address {ips:?}: is it running on this node?",
        cgroup.display()
    )]
    NoNetns { cgroup: PathBuf, ips: Vec<IpAddr> },
    #[error("no process runs in its network namespace any more")]
    NoProcess,
    #[error(
        "its processes share no cgroup below the agent's cgroup {} (their deepest common cgroup is {}): profiling it would sample other pods too",
        below.display(),
        common.display()
    )]
    NoOwnCgroup { below: PathBuf, common: PathBuf },
    #[error("cannot read cgroup {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Finds the cgroup of the pod whose IPs are `ips`; `below` is the
/// agent's `--cgroup` (default: the cgroup2 root). Blocking: enters each
/// pod's network namespace.
pub fn pod_cgroup(ips: &[IpAddr], below: Option<&Path>) -> Result<PodCgroup, TargetError> {
    if ips.is_empty() {
        return Err(TargetError::NoAddress);
    }
    let root = crate::sys::mounts::cgroup2_root()?;
    let below = below.map_or_else(|| root.clone(), Path::to_path_buf);
    let scan = NetnsFinder::new(&below).scan(&HashSet::new());
    let netns = scan.find(ips).ok_or_else(|| TargetError::NoNetns {
        cgroup: below.clone(),
        ips: ips.to_vec(),
    })?;
    let paths: Vec<PathBuf> = discover::pids_below(&below)
        .into_iter()
        .filter(|pid| {
            discover::inode(Path::new(&format!("/proc/{pid}/ns/net"))) == Some(netns.inode)
        })
        .filter_map(cgroup_of)
        .collect();
    if paths.is_empty() {
        return Err(TargetError::NoProcess);
    }
    let common = common_ancestor(&paths);
    let below_rel = Path::new("/").join(below.strip_prefix(&root).unwrap_or(Path::new("")));
    if !common.starts_with(&below_rel) || common == below_rel {
        return Err(TargetError::NoOwnCgroup {
            below: below_rel,
            common,
        });
    }
    let dir = root.join(common.strip_prefix("/").unwrap_or(&common));
    let id = std::fs::metadata(&dir)
        .map_err(|source| TargetError::Read {
            path: dir.clone(),
            source,
        })?
        .ino();
    Ok(PodCgroup {
        level: common.components().count() as u32 - 1,
        path: common,
        id,
        processes: paths.len(),
    })
}

/// A process's cgroup v2 path (`0::/a/b` in `/proc/<pid>/cgroup`).
fn cgroup_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup(&text)
}

fn parse_cgroup(text: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim()))
}

/// The deepest path every one of `paths` is at or below.
fn common_ancestor(paths: &[PathBuf]) -> PathBuf {
    let mut common: Vec<_> = paths[0].components().collect();
    for path in &paths[1..] {
        let shared = common
            .iter()
            .zip(path.components())
            .take_while(|(a, b)| **a == *b)
            .count();
        common.truncate(shared);
    }
    common.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_v2_line() {
        let text = "12:pids:/x\n1:name=systemd:/y\n0::/kubepods/pod1/abc\n";
        assert_eq!(
            parse_cgroup(text),
            Some(PathBuf::from("/kubepods/pod1/abc"))
        );
        assert_eq!(parse_cgroup("1:cpu:/a\n"), None);
    }

    #[test]
    fn the_pod_cgroup_is_above_its_containers() {
        let paths = [
            PathBuf::from("/kubepods/burstable/pod1/pause"),
            PathBuf::from("/kubepods/burstable/pod1/app"),
        ];
        assert_eq!(
            common_ancestor(&paths),
            PathBuf::from("/kubepods/burstable/pod1")
        );
        assert_eq!(
            common_ancestor(&paths[..1]),
            PathBuf::from("/kubepods/burstable/pod1/pause")
        );
        // Levels count from the root: `/` is 0.
        assert_eq!(
            Path::new("/kubepods/burstable/pod1").components().count() - 1,
            3
        );
    }
}
