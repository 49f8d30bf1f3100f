//! Network namespaces. A socket keeps the namespace it was created in, so
//! the agent creates each pod's sockets by briefly switching the calling
//! thread into the pod's namespace ([`Netns::run`]) and back.

use std::{
    fs::File,
    io,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use nix::sched::{CloneFlags, setns};

use super::sockopt;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "cannot enter network namespace {path} (setns): {source}; the agent needs CAP_SYS_ADMIN"
    )]
    Enter { path: PathBuf, source: nix::Error },
    #[error("cannot return to the agent's own network namespace (setns): {0}")]
    Return(nix::Error),
    #[error("cannot read the cookie of network namespace {path}: {source}")]
    Cookie { path: PathBuf, source: io::Error },
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

/// The namespace the agent itself runs in, captured once at first use (from
/// the main thread, before any thread switched).
fn home() -> &'static Netns {
    static HOME: OnceLock<Netns> = OnceLock::new();
    HOME.get_or_init(|| {
        Netns::open("/proc/self/ns/net").expect("the agent's own network namespace is readable")
    })
}

impl AsFd for Netns {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Netns {
    /// Opens the namespace bound at `path` (e.g. `/var/run/netns/cni-…`, the
    /// path a container runtime passes as `CNI_NETNS`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self { file, path })
    }

    /// Captures the agent's own namespace. Call once at start, before any
    /// pod namespace is entered.
    pub fn init_home() {
        let _ = home();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the calling thread inside this namespace, then switches
    /// back. `f` must not block on async work: it runs on whatever thread
    /// calls this, typically a tokio worker.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: self.path.clone(),
            source,
        })?;
        let out = f();
        setns(home().file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(NetnsError::Return)?;
        Ok(out)
    }

    /// The kernel's cookie for this namespace: what the eBPF programs see
    /// as `bpf_get_netns_cookie()`.
    pub fn cookie(&self) -> Result<u64, NetnsError> {
        let cookie = self
            .run(|| {
                let probe =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
                sockopt::netns_cookie(&probe)
            })?
            .map_err(|source| NetnsError::Cookie {
                path: self.path.clone(),
                source,
            })?;
        Ok(cookie)
    }
}
