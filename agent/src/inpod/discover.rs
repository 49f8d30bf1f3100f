//! Finding the network namespace of a pod that was running before the
//! agent heard of it: weft was installed (and `weft-cni` chained) after the
//! pod started, so no CNI ADD ever reached the agent. As Istio's CNI node
//! agent does, the agent looks at the processes of the node's pods (every
//! process below its `--cgroup`, which a pod's pause container always
//! provides), takes their network namespaces, and picks the one that holds
//! the pod's IP. Where the runtime also bind-mounted that namespace
//! (`/var/run/netns/cni-…`, as containerd and CRI-O do), that stable path
//! is used instead of `/proc/<pid>/ns/net`, which dies with the process.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::sys::Netns;

/// Where container runtimes bind-mount pod network namespaces.
const BIND_DIRS: &[&str] = &["/var/run/netns", "/run/netns"];

/// A network namespace found on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// A path that opens it: a runtime's bind mount, else a process's
    /// `/proc/<pid>/ns/net`.
    pub path: PathBuf,
    /// Its inode in nsfs: what identifies it, whatever the path.
    pub inode: u64,
}

/// Looks for pods' network namespaces below one cgroup.
#[derive(Debug, Clone)]
pub struct NetnsFinder {
    cgroup: PathBuf,
    bind_dirs: Vec<PathBuf>,
}

/// One look at the node: every pod namespace and the addresses in it.
#[derive(Debug, Default)]
pub struct Scan {
    namespaces: Vec<(Found, Vec<IpAddr>)>,
}

/// The nsfs inode of the namespace at `path`, if it opens.
pub fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl NetnsFinder {
    /// Pods' processes below `cgroup` (the agent's `--cgroup`); runtime bind
    /// mounts in the usual directories.
    pub fn new(cgroup: &Path) -> Self {
        Self {
            cgroup: cgroup.to_path_buf(),
            bind_dirs: BIND_DIRS.iter().map(PathBuf::from).collect(),
        }
    }

    /// Only `/proc` paths, no runtime bind mounts (tests of the fallback).
    pub fn without_bind_mounts(mut self) -> Self {
        self.bind_dirs.clear();
        self
    }

    /// Every namespace of a process below the cgroup except the agent's
    /// own, the host's and those in `known` (inodes of pods already known),
    /// with its addresses. Blocking (enters each namespace); processes
    /// that exit meanwhile are skipped.
    pub fn scan(&self, known: &HashSet<u64>) -> Scan {
        let mut skip: HashSet<u64> = ["/proc/self/ns/net", "/proc/1/ns/net"]
            .iter()
            .filter_map(|p| inode(Path::new(p)))
            .collect();
        skip.extend(known);
        let mut by_inode: HashMap<u64, PathBuf> = HashMap::new();
        for pid in pids_below(&self.cgroup) {
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if let Some(ino) = inode(&path).filter(|ino| !skip.contains(ino)) {
                by_inode.entry(ino).or_insert(path);
            }
        }
        for dir in &self.bind_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if let Some(slot) = inode(&path).and_then(|ino| by_inode.get_mut(&ino)) {
                    *slot = path;
                }
            }
        }
        let namespaces = by_inode
            .into_iter()
            .filter_map(|(inode, path)| {
                let addresses = addresses_in(&path)
                    .inspect_err(|err| {
                        tracing::debug!(netns = %path.display(), error = %err, "ignoring a namespace that cannot be read")
                    })
                    .ok()?;
                Some((Found { path, inode }, addresses))
            })
            .collect();
        Scan { namespaces }
    }
}

impl Scan {
    /// The namespace holding one of `ips`. None when no namespace does, or
    /// when more than one does: guessing could capture the wrong pod.
    pub fn find(&self, ips: &[IpAddr]) -> Option<&Found> {
        let mut matches = self
            .namespaces
            .iter()
            .filter(|(_, addresses)| addresses.iter().any(|a| ips.contains(a)))
            .map(|(found, _)| found);
        let first = matches.next()?;
        if let Some(second) = matches.next() {
            tracing::warn!(?ips, first = %first.path.display(), second = %second.path.display(), "two network namespaces hold the pod's address; not guessing");
            return None;
        }
        Some(first)
    }

    pub fn len(&self) -> usize {
        self.namespaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }
}

/// Every pid in `cgroup.procs` files at or below `dir`.
pub(crate) fn pids_below(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    pids
}

/// The addresses of every interface in the namespace at `path`, loopback
/// excluded.
fn addresses_in(path: &Path) -> Result<Vec<IpAddr>, Box<dyn std::error::Error>> {
    let netns = Netns::open(path)?;
    let addresses = netns.run(|| {
        nix::ifaddrs::getifaddrs().map(|list| {
            list.filter_map(|ifa| {
                let addr = ifa.address?;
                let ip = if let Some(v4) = addr.as_sockaddr_in() {
                    IpAddr::V4(v4.ip())
                } else {
                    IpAddr::V6(addr.as_sockaddr_in6()?.ip())
                };
                (!ip.is_loopback()).then_some(ip)
            })
            .collect::<Vec<_>>()
        })
    })??;
    Ok(addresses)
}
