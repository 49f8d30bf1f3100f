//! The kernel half: loads `weft_tcp_health` (`ebpf/programs/src/tcp_health.rs`),
//! attaches it to the agent's own cgroup and reads its counters. The link
//! and the maps belong to this process: they go when it exits (nothing is
//! pinned but the capture object's `WEFT_ENROLLED`, which the program
//! reads from its pin).

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::{CgroupAttachMode, SockOps},
};
use weft_ebpf_common::{MAP_TCP_HEALTH, TcpHealth, TcpPeerKey};

/// The compiled program, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft-tcp-health"));

const PROGRAM: &str = "weft_tcp_health";

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "cannot find the agent's own cgroup: {0}; pass it with --agent-cgroup (a cgroup v2 directory holding the agent's processes and no pod's)"
    )]
    OwnCgroup(String),
    #[error(
        "the agent's cgroup {agent} holds the pods' cgroup {pods} too: the program would count the apps' sockets; run the agent in a cgroup of its own or pass --agent-cgroup"
    )]
    SharedCgroup { agent: PathBuf, pods: PathBuf },
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the TCP health program's maps: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the TCP health object has no `{0}`; the agent binary is broken")]
    Missing(&'static str),
    #[error(
        "the kernel refused the sockops program (needs BPF_PROG_TYPE_SOCK_OPS with the RTT, retransmit, state and header callbacks, Linux 5.10+): {0}"
    )]
    Program(#[source] Box<aya::programs::ProgramError>),
    #[error("the TCP health map: {0}")]
    Map(#[source] Box<aya::maps::MapError>),
}

/// The program attached, and its counters.
pub struct Probe {
    health: Mutex<HashMap<MapData, TcpPeerKey, TcpHealth>>,
    cgroup: PathBuf,
    /// Holds the program and its link: dropping it detaches.
    ebpf: Ebpf,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("cgroup", &self.cgroup)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// Loads and attaches to `agent_cgroup` (default: the agent's own),
    /// after the capture programs pinned `WEFT_ENROLLED` under
    /// `bpffs_dir/maps`. `pods_cgroup` is where the capture programs
    /// attach: the agent's cgroup must not hold it.
    pub fn attach(
        bpffs_dir: &Path,
        agent_cgroup: Option<&Path>,
        pods_cgroup: &Path,
    ) -> Result<Probe, ProbeError> {
        let cgroup = match agent_cgroup {
            Some(path) => path.to_path_buf(),
            None => own_cgroup()?,
        };
        if pods_cgroup.starts_with(&cgroup) {
            return Err(ProbeError::SharedCgroup {
                agent: cgroup,
                pods: pods_cgroup.to_path_buf(),
            });
        }
        let dir = File::open(&cgroup).map_err(|source| ProbeError::Cgroup {
            path: cgroup.clone(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(bpffs_dir.join("maps"))
            .load(OBJECT)
            .map_err(|err| ProbeError::Load(Box::new(err)))?;
        let program: &mut SockOps = ebpf
            .program_mut(PROGRAM)
            .ok_or(ProbeError::Missing(PROGRAM))?
            .try_into()
            .map_err(|err| ProbeError::Program(Box::new(err)))?;
        program
            .load()
            .map_err(|err| ProbeError::Program(Box::new(err)))?;
        // The link lives in the program (inside `ebpf`) until it drops.
        program
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(|err| ProbeError::Program(Box::new(err)))?;
        let map = ebpf
            .take_map(MAP_TCP_HEALTH)
            .ok_or(ProbeError::Missing(MAP_TCP_HEALTH))?;
        let health = HashMap::try_from(map).map_err(|err| ProbeError::Map(Box::new(err)))?;
        tracing::info!(cgroup = %cgroup.display(), "TCP health program attached to the agent's cgroup");
        Ok(Probe {
            health: Mutex::new(health),
            cgroup,
            ebpf,
        })
    }

    /// The program's run count and run time (see `redirect::stats`).
    pub fn program_stats(&self) -> Vec<crate::redirect::ProgramStats> {
        crate::redirect::stats::of(&self.ebpf)
    }

    /// Every entry of the counters map (two `bpf()` calls per entry;
    /// entries that vanish while the map is walked are skipped).
    pub fn read(&self) -> Vec<(TcpPeerKey, TcpHealth)> {
        let map = self.health.lock().expect("TCP health map lock");
        map.iter().filter_map(Result::ok).collect()
    }
}

/// The cgroup v2 directory this process is in: `/proc/self/cgroup`'s
/// `0::PATH` below the cgroup2 mount, checked by finding this process in
/// its `cgroup.procs`. In a cgroup namespace that path is relative to the
/// namespace, so when the check fails the mounted hierarchy is searched
/// for the directory that lists this process.
pub fn own_cgroup() -> Result<PathBuf, ProbeError> {
    let root =
        crate::sys::mounts::cgroup2_root().map_err(|e| ProbeError::OwnCgroup(e.to_string()))?;
    let pid = std::process::id();
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| ProbeError::OwnCgroup(format!("reading /proc/self/cgroup: {e}")))?;
    let relative = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| ProbeError::OwnCgroup("/proc/self/cgroup has no cgroup v2 line".into()))?;
    let candidate = root.join(relative.trim_start_matches('/'));
    if holds(&candidate, pid) {
        return Ok(candidate);
    }
    find(&root, pid, 8).ok_or_else(|| {
        ProbeError::OwnCgroup(format!(
            "no directory under {} lists pid {pid} in cgroup.procs",
            root.display()
        ))
    })
}

fn holds(dir: &Path, pid: u32) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.lines().any(|l| l.trim().parse() == Ok(pid)))
}

fn find(dir: &Path, pid: u32, depth: u32) -> Option<PathBuf> {
    if holds(dir, pid) {
        return Some(dir.to_path_buf());
    }
    if depth == 0 {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| find(&e.path(), pid, depth - 1))
}
