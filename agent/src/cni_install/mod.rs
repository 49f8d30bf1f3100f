//! Installs `weft-cni` on the node and keeps it chained into the primary
//! CNI's network config, as istio-cni does (`--cni-install`); removes both
//! again on `weft-agent cni-uninstall`.
//!
//! * The binary is copied into `--cni-bin-dir` (skipped when identical).
//! * The primary config is the one the runtime reads: the bytewise first
//!   `.conflist`, `.conf` or `.json` in `--cni-net-dir`. weft-cni is
//!   appended to a network list's `plugins`; a single-plugin file is
//!   converted to `<stem>.conflist`. Every other key stays, in its place.
//! * A watcher on the directory (inotify, plus a periodic re-check) puts
//!   the entry back when the primary CNI rewrites its config, and chains
//!   into a new first config when one appears.
//!
//! The binary is installed before any chaining, and chaining happens only
//! while it is there: a chained plugin the runtime cannot find fails every
//! pod start on the node. That is also what lets `cni-uninstall` run while
//! the agent still does: it removes the binary first, so the agent's
//! watcher leaves the config alone.

mod files;
pub mod json;
pub mod netconf;
mod watch;

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

pub use netconf::{PLUGIN_TYPE, PluginEntry};
pub use watch::RECHECK_INTERVAL;

use files::Perms;
use json::Json;
use netconf::{Edit, Format};

/// How long a pod ADD waits for the agent (`weft-cni`'s `timeout_seconds`).
/// Longer than `--workload-wait`, so the agent's own answer comes first.
pub const PLUGIN_TIMEOUT_SECONDS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum CniInstallError {
    #[error(
        "cannot read the weft-cni binary to install, {path}: {source}; it ships next to weft-agent, or set --cni-binary"
    )]
    Source { path: PathBuf, source: io::Error },
    #[error(
        "cannot install weft-cni into {dir}: {source}; is the node's CNI binary directory mounted read-write (--cni-bin-dir)?"
    )]
    Install { dir: PathBuf, source: io::Error },
    #[error(
        "weft-cni is not in {dir} (removed by `weft-agent cni-uninstall`?): not chaining it, or every pod start on this node would fail; restart the agent to install it again"
    )]
    BinaryMissing { dir: PathBuf },
    #[error(
        "no CNI network config in {dir} yet: waiting for the primary CNI to write one (.conflist, .conf or .json)"
    )]
    NoConfig { dir: PathBuf },
    #[error(
        "cannot parse the CNI config {file}: {source}; left it untouched, will try again when it changes"
    )]
    Parse {
        file: PathBuf,
        source: serde_json::Error,
    },
    #[error("CNI config {file}: {reason}; left it untouched, will try again when it changes")]
    Invalid { file: PathBuf, reason: String },
    #[error("CNI config {file} changed while weft-cni was being chained into it; trying again")]
    Changed { file: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot watch {dir} for CNI config changes: {source}")]
    Watch { dir: PathBuf, source: notify::Error },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CniInstallError {
    let path = path.to_path_buf();
    move |source| CniInstallError::Io { what, path, source }
}

/// What to install, and where.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `weft-cni` binary to copy.
    pub binary: PathBuf,
    /// The node's CNI binary directory.
    pub bin_dir: PathBuf,
    /// The node's CNI config directory.
    pub net_dir: PathBuf,
    /// weft-cni's entry in the plugin list.
    pub entry: PluginEntry,
    /// How often the config is checked besides on changes.
    pub recheck: Duration,
}

impl Settings {
    /// From the agent's flags; the binary defaults to the `weft-cni` next
    /// to the running executable.
    pub fn from_config(config: &crate::Config) -> Result<Settings, CniInstallError> {
        let binary = match &config.cni_binary {
            Some(path) => path.clone(),
            None => {
                let exe = std::env::current_exe().map_err(|source| CniInstallError::Source {
                    path: PathBuf::from("(next to weft-agent, whose path is unknown)"),
                    source,
                })?;
                exe.with_file_name(PLUGIN_TYPE)
            }
        };
        Ok(Settings {
            binary,
            bin_dir: config.cni_bin_dir.clone(),
            net_dir: config.cni_net_dir.clone(),
            entry: PluginEntry {
                agent_socket: config.cni_socket.display().to_string(),
                timeout_seconds: PLUGIN_TIMEOUT_SECONDS,
            },
            recheck: RECHECK_INTERVAL,
        })
    }
}

/// `--cni-install` at agent start: installs the binary, then returns the
/// task that keeps weft-cni chained (see [`Installer::keep_chained`]).
pub fn start(
    config: &crate::Config,
    on_state: impl Fn(bool) + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, CniInstallError> {
    let installer = Installer::new(Settings::from_config(config)?);
    let Settings {
        binary, bin_dir, ..
    } = installer.settings();
    if installer.install_binary()? {
        tracing::info!(from = %binary.display(), dir = %bin_dir.display(), "installed weft-cni");
    } else {
        tracing::info!(dir = %bin_dir.display(), "weft-cni already installed");
    }
    installer.keep_chained(on_state, stop)
}

/// The outcome of a chaining pass that left weft-cni chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chained {
    /// It already was; nothing written.
    Unchanged { file: PathBuf },
    /// Added to the file, or its entry updated.
    Written { file: PathBuf },
    /// A single-plugin config replaced by a network list chaining it.
    Converted { from: PathBuf, to: PathBuf },
}

/// Installs and chains weft-cni.
#[derive(Debug, Clone)]
pub struct Installer {
    settings: Settings,
}

impl Installer {
    pub fn new(settings: Settings) -> Installer {
        Installer { settings }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Copies the binary into the bin dir (write, chmod 0755, rename);
    /// whether it was copied (`false`: the same file was already there).
    pub fn install_binary(&self) -> Result<bool, CniInstallError> {
        let Settings {
            binary, bin_dir, ..
        } = &self.settings;
        let bytes = fs::read(binary).map_err(|source| CniInstallError::Source {
            path: binary.clone(),
            source,
        })?;
        let dest = bin_dir.join(PLUGIN_TYPE);
        if files::same_executable(&dest, &bytes) {
            return Ok(false);
        }
        let perms = Perms {
            mode: 0o755,
            owner: None,
        };
        files::write_atomically(&dest, &bytes, perms, || Ok(true)).map_err(|source| {
            CniInstallError::Install {
                dir: bin_dir.clone(),
                source,
            }
        })?;
        Ok(true)
    }

    /// One pass: chains weft-cni into the primary config unless it is
    /// there as wanted. Blocking (small files).
    pub fn chain(&self) -> Result<Chained, CniInstallError> {
        let Settings {
            bin_dir,
            net_dir,
            entry,
            ..
        } = &self.settings;
        if !bin_dir.join(PLUGIN_TYPE).is_file() {
            return Err(CniInstallError::BinaryMissing {
                dir: bin_dir.clone(),
            });
        }
        let candidates =
            files::candidates(net_dir).map_err(io_error("listing CNI configs in", net_dir))?;
        // Only the first: the runtime uses it, or fails on it, and never
        // falls back to the next.
        let Some(file) = candidates.into_iter().next() else {
            return Err(CniInstallError::NoConfig {
                dir: net_dir.clone(),
            });
        };
        let (bytes, doc) = read_config(&file)?;
        let format = Format::of(&file.to_string_lossy()).expect("a candidate's name has a format");
        let edit =
            netconf::chain(doc, format, entry).map_err(|reason| CniInstallError::Invalid {
                file: file.clone(),
                reason,
            })?;
        match edit {
            Edit::None => Ok(Chained::Unchanged { file }),
            Edit::Rewrite(doc) => {
                replace(&file, &bytes, &doc)?;
                Ok(Chained::Written { file })
            }
            Edit::Convert(doc) => {
                let to = file.with_extension("conflist");
                convert(&file, &bytes, &to, &doc)?;
                Ok(Chained::Converted { from: file, to })
            }
        }
    }
}

/// Reads and parses a config; its bytes too, to see later whether it
/// changed meanwhile.
fn read_config(file: &Path) -> Result<(Vec<u8>, Json), CniInstallError> {
    let bytes = fs::read(file).map_err(io_error("reading", file))?;
    let doc = serde_json::from_slice(&bytes).map_err(|source| CniInstallError::Parse {
        file: file.to_path_buf(),
        source,
    })?;
    Ok((bytes, doc))
}

/// Rewrites `file` (which held `read`) with `doc`, keeping its mode and
/// owner. A symlink's target is written, so the link stays.
fn replace(file: &Path, read: &[u8], doc: &Json) -> Result<(), CniInstallError> {
    let target = fs::canonicalize(file).map_err(io_error("resolving", file))?;
    let meta = fs::metadata(&target).map_err(io_error("reading", file))?;
    // Still what we read? Else the primary CNI wrote it meanwhile, and
    // ours would lose that.
    let unchanged = || Ok(fs::read(&target)? == read);
    let written = files::write_atomically(&target, &doc.to_pretty(), Perms::of(&meta), unchanged)
        .map_err(io_error("writing", file))?;
    if written {
        Ok(())
    } else {
        Err(CniInstallError::Changed {
            file: file.to_path_buf(),
        })
    }
}

/// Writes the network list `doc` as `to`, then removes the single-plugin
/// `from` (which held `read`). `to` is overwritten only if it is ours (it
/// chains weft-cni): a `.conflist` of the same stem from someone else is
/// never lost.
fn convert(from: &Path, read: &[u8], to: &Path, doc: &Json) -> Result<(), CniInstallError> {
    match fs::read(to) {
        Ok(existing) => {
            let ours =
                serde_json::from_slice::<Json>(&existing).is_ok_and(|d| netconf::is_chained(&d));
            if !ours {
                return Err(CniInstallError::Invalid {
                    file: from.to_path_buf(),
                    reason: format!(
                        "it is a single-plugin config to convert to {}, which exists and does not chain weft-cni",
                        to.display()
                    ),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("reading", to)(e)),
    }
    let meta = fs::metadata(from).map_err(io_error("reading", from))?;
    let unchanged = || Ok(fs::read(from)? == read);
    let written = files::write_atomically(to, &doc.to_pretty(), Perms::of(&meta), unchanged)
        .map_err(io_error("writing", to))?;
    if !written {
        return Err(CniInstallError::Changed {
            file: from.to_path_buf(),
        });
    }
    // Not the file the runtime reads any more, but the first name still:
    // gone, so that the new list is.
    fs::remove_file(from).map_err(io_error("removing the converted", from))
}

/// What `uninstall` removed, and what it could not.
#[derive(Debug, Default)]
pub struct Uninstalled {
    /// Whether the binary was there and is now gone.
    pub binary_removed: bool,
    /// Configs weft-cni was removed from.
    pub unchained: Vec<PathBuf>,
    pub errors: Vec<CniInstallError>,
}

/// Removes what `--cni-install` added: first the binary (so that a
/// running agent's watcher stops chaining), then weft-cni's entry from
/// every network list in `net_dir` that has one (not only the first: the
/// first may have changed since it was chained), then leftover temporary
/// files of ours. A config converted from a single-plugin file stays a
/// network list (the same network to the runtime).
pub fn uninstall(bin_dir: &Path, net_dir: &Path) -> Uninstalled {
    let mut out = Uninstalled::default();
    let binary = bin_dir.join(PLUGIN_TYPE);
    match fs::remove_file(&binary) {
        Ok(()) => out.binary_removed = true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => out.errors.push(io_error("removing", &binary)(e)),
    }
    let candidates = match files::candidates(net_dir) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            out.errors
                .push(io_error("listing CNI configs in", net_dir)(e));
            Vec::new()
        }
    };
    for file in candidates {
        match unchain_file(&file) {
            Ok(true) => out.unchained.push(file),
            Ok(false) => {}
            Err(e) => out.errors.push(e),
        }
    }
    for dir in [bin_dir, net_dir] {
        remove_temp_files(dir);
    }
    out
}

fn unchain_file(file: &Path) -> Result<bool, CniInstallError> {
    let (bytes, mut doc) = read_config(file)?;
    if netconf::unchain(&mut doc) == 0 {
        return Ok(false);
    }
    replace(file, &bytes, &doc)?;
    Ok(true)
}

fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(files::TEMP_SUFFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
