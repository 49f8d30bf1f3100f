//! What the host must offer before a cluster can be built. Each check fails
//! with one message naming what is missing and how to get it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where the agents pin their eBPF objects.
pub const BPFFS: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Checks root, `ip` and cgroup v2; returns the cgroup2 mount point.
pub fn check_host() -> Result<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the simulated cluster needs root (network namespaces, veths, cgroups, eBPF); \
             run the tests as root, e.g. `sudo -E cargo test -p weft-sim`"
        );
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        _ => bail!(
            "the `ip` tool (iproute2) is missing or broken; install it with \
             `apt-get install -y iproute2` or run `cargo xtask setup`"
        ),
    }
    crate::cgroup::cgroup2_root()
}

/// Makes sure bpffs is mounted at `/sys/fs/bpf`, mounting it if not (and
/// saying so on stderr).
pub fn ensure_bpffs() -> Result<()> {
    let path = Path::new(BPFFS);
    if is_bpffs(path)? {
        return Ok(());
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {BPFFS}"))?;
    nix::mount::mount(
        Some("bpf"),
        path,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "bpffs is not mounted and `mount -t bpf bpf {BPFFS}` failed; run `cargo xtask setup`"
        )
    })?;
    eprintln!(
        "weft-sim: bpffs was not mounted; mounted it at {BPFFS} (`mount -t bpf bpf {BPFFS}`)"
    );
    Ok(())
}

fn is_bpffs(path: &Path) -> Result<bool> {
    match nix::sys::statfs::statfs(path) {
        Ok(fs) => Ok(fs.filesystem_type().0 == BPF_FS_MAGIC),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => bail!("statfs {}: {e}", path.display()),
    }
}
