//! Where configuration comes from. Directory mode ([`dir`]) is the only
//! source for now; a Kubernetes source will produce the same [`Snapshot`].

pub mod dir;
pub mod parse;

use std::path::PathBuf;

use serde::Serialize;

use crate::kinds::Object;

/// Everything a source currently holds: the objects that apply, and the
/// files that were rejected (their last good objects are still in
/// `objects`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub objects: Vec<Object>,
    pub errors: Vec<FileError>,
}

/// A rejected configuration file: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    pub message: String,
}
