//! Named network namespaces (`/var/run/netns/<name>`), the `ip` tool run
//! inside them, and running code of this process inside one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` puts the namespace files.
pub const NETNS_DIR: &str = "/var/run/netns";

/// `ip netns add` mounts `/var/run/netns` on first use; two threads doing
/// that at once race, so creation is serialised within the process.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// A named network namespace created by the harness.
///
/// Dropping the handle does not delete the namespace: the cluster deletes
/// its namespaces in order during teardown (see [`delete_netns`]).
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

// === impl Netns ===

impl Netns {
    /// Creates `/var/run/netns/<name>` with its loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        {
            let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            ip(&["netns", "add", name])?;
        }
        let ns = Netns::named(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle to namespace `name`, which may not exist yet.
    pub(crate) fn named(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
        }
    }

    /// Names of all named network namespaces on the host.
    pub fn list() -> Result<Vec<String>> {
        list_netns()
    }

    /// The namespace's name (the file name under `/var/run/netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, as given to `CNI_NETNS` and `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Opens the namespace file (for `setns` in a child before exec).
    pub fn open(&self) -> Result<File> {
        let path = self.path();
        File::open(&path).with_context(|| {
            format!(
                "opening network namespace {} (was it deleted?)",
                path.display()
            )
        })
    }

    /// Runs `ip -n <name> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its
    /// result. Sockets created there stay in this namespace for life, so
    /// this is how the test process gets sockets "inside" a node or pod.
    /// (The thread does not join any cgroup.)
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = self.open()?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into network namespace {}", self.name))?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("closure panicked in network namespace {}", self.name))?
        })
    }

    /// Writes a sysctl under `/proc/sys/net` as seen from this namespace,
    /// e.g. `set_sysctl("ipv4/ip_forward", "1")`.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/net/{key}");
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("writing {value} to {path} in netns {}", self.name))
    }
}

/// Deletes a named namespace the way `ip netns del` does (detach the bind
/// mount, remove the file). A namespace still referenced by a process or a
/// socket lives on, unnamed, until that reference goes.
pub fn delete_netns(name: &str) -> Result<()> {
    let path = Path::new(NETNS_DIR).join(name);
    match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => bail!("unmounting {}: {e}", path.display()),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Names of all named network namespaces on the host.
pub fn list_netns() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("listing {NETNS_DIR}")),
    };
    let mut names = Vec::new();
    for entry in dir {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Runs the `ip` tool; the error quotes the command line and its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (is iproute2 installed? `apt-get install -y iproute2`)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
