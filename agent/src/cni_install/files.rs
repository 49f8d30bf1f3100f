//! Files in the node's CNI directories: which config the runtime reads,
//! and writes that a reader never sees half done.

use std::{
    ffi::OsString,
    fs,
    io::{self, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Temporary files end in this (and start with a dot): neither the
/// runtime nor our own config lookup ever reads one.
pub const TEMP_SUFFIX: &str = ".weft-tmp";

/// The config files the container runtime considers, in the order it
/// does (containerd and CRI-O through libcni): names ending in
/// `.conflist`, `.conf` or `.json`, sorted bytewise; the first is the
/// network pods get. Hidden files and directories are skipped.
pub fn candidates(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names: Vec<OsString> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(text) = name.to_str() else {
            continue;
        };
        if text.starts_with('.') || super::netconf::Format::of(text).is_none() {
            continue;
        }
        // Follows symlinks: a link to a file is a config, as for libcni.
        match fs::metadata(entry.path()) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => names.push(name),
            // A dangling link, or removed since the listing.
            Err(_) => continue,
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// The hidden temporary file next to `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}{TEMP_SUFFIX}"))
}

/// Mode and owner a written file gets.
#[derive(Debug, Clone, Copy)]
pub struct Perms {
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
}

impl Perms {
    /// Those of an existing file.
    pub fn of(meta: &fs::Metadata) -> Perms {
        Perms {
            mode: meta.permissions().mode() & 0o7777,
            owner: Some((meta.uid(), meta.gid())),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same
/// directory (renamed over it), so a reader sees the old content or the
/// new, never a part. `still_wanted` runs just before the rename: `false`
/// cancels the write, and so does an error; returns whether it was done.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    perms: Perms,
    still_wanted: impl FnOnce() -> io::Result<bool>,
) -> io::Result<bool> {
    let temp = temp_path(path);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        if let Some((uid, gid)) = perms.owner {
            let meta = file.metadata()?;
            if (meta.uid(), meta.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
            }
        }
        // After chown, which may clear set-id bits.
        file.set_permissions(fs::Permissions::from_mode(perms.mode))?;
        file.sync_all()?;
        if !still_wanted()? {
            return Ok(false);
        }
        fs::rename(&temp, path)?;
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Whether `path` holds exactly `bytes` and is executable by everyone.
pub fn same_executable(path: &Path, bytes: &[u8]) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    meta.permissions().mode() & 0o111 == 0o111
        && meta.len() == bytes.len() as u64
        && fs::read(path).is_ok_and(|old| old == bytes)
}
