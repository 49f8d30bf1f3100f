//! Where configuration comes from: a directory of YAML ([`dir`]) or the
//! Kubernetes API ([`k8s`]). Both produce the same [`Snapshot`]s, decoded
//! and validated by the same code ([`parse`]).

pub mod dir;
pub mod k8s;
pub mod parse;

use std::path::PathBuf;

use serde::Serialize;

use crate::kinds::{Object, ObjectKey};

/// Everything a source currently holds: the objects that apply, and the
/// files that were rejected (their last good objects are still in
/// `objects`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub objects: Vec<Object>,
    pub errors: Vec<FileError>,
    /// Increases by one per snapshot of a source.
    pub seq: u64,
    /// The source has read everything once (directory mode: always;
    /// Kubernetes mode: every resource listed). A snapshot that is not
    /// synced is never served.
    pub synced: bool,
    /// The objects that changed since snapshot `seq - 1` (new version, or
    /// `None` when deleted), when the source knows.
    pub changes: Option<Vec<(ObjectKey, Option<Object>)>>,
}

/// A rejected object or file: where, which object, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// `Kind namespace/name` when the object could be identified.
    pub object: Option<String>,
    /// The field at fault (`spec.http[0].route`), empty for the document.
    pub path: String,
    /// The reason.
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}
