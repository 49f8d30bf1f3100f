//! Loads and attaches the programs, and gives the rest of the agent typed
//! access to their maps.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError, SockHash},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SkLookup, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use weft_ebpf_common::{
    DeliveryKey, GLOBAL_CAPTURE_TIMES, MAP_DELIVERY, MAP_DST_BY_PORT, MAP_ENROLLED,
    MAP_HOST_SOURCES, MAP_INBOUND_LISTENERS, MAP_INBOUND_PODS, MAP_RETIRED_CAPTURED_AT, OrigDst,
    PodRedirect, PortKey,
};

use crate::sys::mounts::{self, MountError};

/// The compiled programs (`ebpf/programs`), built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft"));

/// On kernels with BPF links (5.7+), aya attaches with `bpf_link_create`,
/// whose cgroup attachments always allow several programs and which
/// refuses any flag (EINVAL): so no `AllowMultiple` here, even though an
/// agent upgrade briefly has two copies attached.
const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

const CGROUP_PROGRAMS: [&str; 2] = ["weft_connect4", "weft_connect6"];
const SOCKOPS_PROGRAM: &str = "weft_sockops";
pub(super) const SK_LOOKUP_PROGRAM: &str = "weft_sk_lookup";

#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    #[error(
        "weft-agent must run as root (it loads eBPF programs and enters pod network namespaces)"
    )]
    NotRoot,
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "cannot open cgroup {path}: {source}; pass the node's pod cgroup (a cgroup v2 directory) with --cgroup"
    )]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no program `{0}`; the agent binary is broken")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map `{0}`; the agent binary is broken")]
    MissingMap(&'static str),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("program `{name}`: {source}")]
    Link {
        name: &'static str,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinning `{name}` at {path}: {detail}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("starting the thread that counts the maps' entries: {source}")]
    Thread { source: io::Error },
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

/// Where to pin and attach.
#[derive(Debug, Clone)]
pub struct RedirectConfig {
    pub bpffs_dir: PathBuf,
    /// cgroup v2 directory; `None`: the cgroup2 mount root.
    pub cgroup: Option<PathBuf>,
    /// Record when each captured connection's SYN left the app
    /// (`OrigDst::syn_sent`), for the proxy's wait histograms.
    pub capture_times: bool,
}

/// The loaded programs and their maps. Dropping it leaves the pinned links
/// (and so the redirection) in place.
///
/// The methods are by direction: `outbound.rs` (capture of a pod's
/// connections) and `inbound.rs` (steering of plaintext to the pod).
pub struct Redirector {
    pub(super) enrolled: Mutex<HashMap<MapData, u64, PodRedirect>>,
    /// Read and removed with one syscall per accept, so no lock: see
    /// `take_capture`.
    pub(super) dst_by_port: HashMap<MapData, PortKey, OrigDst>,
    pub(super) inbound_pods: Mutex<HashMap<MapData, u32, u8>>,
    pub(super) inbound_listeners: Mutex<SockHash<MapData, u32>>,
    pub(super) delivery: Mutex<HashMap<MapData, DeliveryKey, u8>>,
    pub(super) host_sources: Mutex<HashMap<MapData, u32, u8>>,
    pub(super) links_dir: PathBuf,
    /// The loaded programs; the sk_lookup one is attached per pod.
    pub(super) ebpf: Mutex<Ebpf>,
    cgroup: PathBuf,
    /// The maps' entries and capacity, as last counted.
    pub(super) occupancy: super::occupancy::Cache,
    _counter: super::occupancy::Counter,
    /// Holds the kernel's run statistics on (see `stats`).
    pub(super) stats: Option<std::os::fd::OwnedFd>,
    /// The eBPF log reader; it ends with the `Redirector`.
    _logger: Option<tokio_util::task::AbortOnDropHandle<()>>,
}

impl std::fmt::Debug for Redirector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirector")
            .field("cgroup", &self.cgroup)
            .finish_non_exhaustive()
    }
}

fn create_dir(path: &Path) -> Result<(), RedirectError> {
    std::fs::create_dir_all(path).map_err(|source| RedirectError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

impl Redirector {
    /// Loads the programs, reusing maps pinned by a previous agent, attaches
    /// them to the cgroup, and replaces a previous agent's links.
    pub fn load(config: &RedirectConfig) -> Result<Self, RedirectError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(RedirectError::NotRoot);
        }
        mounts::check_bpffs(&config.bpffs_dir)?;
        let maps_dir = config.bpffs_dir.join("maps");
        let links_dir = config.bpffs_dir.join("links");
        create_dir(&maps_dir)?;
        create_dir(&links_dir)?;
        let cgroup = match &config.cgroup {
            Some(path) => path.clone(),
            None => mounts::cgroup2_root()?,
        };
        let cgroup_dir = File::open(&cgroup).map_err(|source| RedirectError::Cgroup {
            path: cgroup.clone(),
            source,
        })?;

        let log_level = aya_log::Level::Info as u8;
        let capture_times = u8::from(config.capture_times);
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global(aya_log::LEVEL, &log_level, false)
            .override_global(GLOBAL_CAPTURE_TIMES, &capture_times, true)
            .load(EBPF_OBJECT)
            .map_err(|err| RedirectError::Load(Box::new(err)))?;
        // A map an older agent pinned and no program uses now: its pin
        // alone keeps it (and its memory) alive.
        let retired = maps_dir.join(MAP_RETIRED_CAPTURED_AT);
        if retired.exists()
            && let Err(err) = std::fs::remove_file(&retired)
        {
            tracing::warn!(path = %retired.display(), error = %err, "cannot remove a retired map's pin");
        }
        let logger = super::logger::spawn(&mut ebpf);

        for name in CGROUP_PROGRAMS {
            let program: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            let prog_err = |source| RedirectError::Program {
                name,
                source: Box::new(source),
            };
            program.load().map_err(prog_err)?;
            let id = program.attach(&cgroup_dir, LINK_MODE).map_err(prog_err)?;
            let link = program.take_link(id).map_err(prog_err)?;
            let link =
                FdLink::try_from(link).map_err(|source| RedirectError::Link { name, source })?;
            replace_pinned_link(name, link, &links_dir)?;
        }
        {
            let name = SOCKOPS_PROGRAM;
            let program: &mut SockOps = program(&mut ebpf, name)?;
            let prog_err = |source| RedirectError::Program {
                name,
                source: Box::new(source),
            };
            program.load().map_err(prog_err)?;
            let id = program.attach(&cgroup_dir, LINK_MODE).map_err(prog_err)?;
            let link = program.take_link(id).map_err(prog_err)?;
            let link =
                FdLink::try_from(link).map_err(|source| RedirectError::Link { name, source })?;
            replace_pinned_link(name, link, &links_dir)?;
        }

        {
            // Attached per pod, by `steer_inbound`.
            let program: &mut SkLookup = program(&mut ebpf, SK_LOOKUP_PROGRAM)?;
            program.load().map_err(|source| RedirectError::Program {
                name: SK_LOOKUP_PROGRAM,
                source: Box::new(source),
            })?;
        }

        // Second handles on the maps, for counting (before they are taken).
        let (counter, occupancy) = super::occupancy::start(&ebpf)?;
        let inbound_listeners = ebpf
            .take_map(MAP_INBOUND_LISTENERS)
            .ok_or(RedirectError::MissingMap(MAP_INBOUND_LISTENERS))?;
        let inbound_listeners =
            SockHash::try_from(inbound_listeners).map_err(|source| RedirectError::Map {
                map: MAP_INBOUND_LISTENERS,
                source: Box::new(source),
            })?;
        let redirector = Self {
            enrolled: Mutex::new(take_map(&mut ebpf, MAP_ENROLLED)?),
            dst_by_port: take_map(&mut ebpf, MAP_DST_BY_PORT)?,
            inbound_pods: Mutex::new(take_map(&mut ebpf, MAP_INBOUND_PODS)?),
            inbound_listeners: Mutex::new(inbound_listeners),
            delivery: Mutex::new(take_map(&mut ebpf, MAP_DELIVERY)?),
            host_sources: Mutex::new(take_map(&mut ebpf, MAP_HOST_SOURCES)?),
            links_dir,
            ebpf: Mutex::new(ebpf),
            cgroup,
            occupancy,
            _counter: counter,
            stats: super::stats::enable(),
            _logger: logger.map(tokio_util::task::AbortOnDropHandle::new),
        };
        tracing::info!(cgroup = %redirector.cgroup.display(), bpffs = %config.bpffs_dir.display(), "eBPF redirection attached");
        Ok(redirector)
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }
}

pub(super) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, RedirectError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(RedirectError::MissingProgram(name))?;
    program.try_into().map_err(|source| RedirectError::Program {
        name,
        source: Box::new(source),
    })
}

fn take_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, RedirectError> {
    let map = ebpf.take_map(name).ok_or(RedirectError::MissingMap(name))?;
    HashMap::try_from(map).map_err(|source| RedirectError::Map {
        map: name,
        source: Box::new(source),
    })
}

/// Pins the new link, then removes the previous agent's link of the same
/// program (if any), so that there is never a moment without capture. While
/// both are attached the second one is a no-op: it sees the already
/// rewritten loopback destination.
fn replace_pinned_link(
    name: &'static str,
    link: FdLink,
    links_dir: &Path,
) -> Result<(), RedirectError> {
    replace_pinned_link_at(name, link, links_dir, name)
}

/// [`replace_pinned_link`] with a pin name of its own.
pub(super) fn replace_pinned_link_at(
    name: &'static str,
    link: FdLink,
    links_dir: &Path,
    pin: &str,
) -> Result<(), RedirectError> {
    let current = links_dir.join(pin);
    // bpffs refuses names with a dot.
    let staged = links_dir.join(format!("{pin}_new"));
    let pin_error = |path: &Path, detail: String| RedirectError::Pin {
        name,
        path: path.to_path_buf(),
        detail,
    };
    let chain = |err: &dyn std::error::Error| {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        text
    };
    if staged.exists() {
        // Left over from an agent that died mid-replacement.
        std::fs::remove_file(&staged).map_err(|err| pin_error(&staged, err.to_string()))?;
    }
    link.pin(&staged)
        .map_err(|err| pin_error(&staged, chain(&err)))?;
    if current.exists() {
        let previous =
            PinnedLink::from_pin(&current).map_err(|err| pin_error(&current, chain(&err)))?;
        // Unpinning and dropping the last reference detaches it.
        drop(
            previous
                .unpin()
                .map_err(|err| pin_error(&current, err.to_string()))?,
        );
        tracing::info!(program = name, "replaced the previous agent's link");
    }
    std::fs::rename(&staged, &current).map_err(|err| pin_error(&current, err.to_string()))?;
    Ok(())
}
