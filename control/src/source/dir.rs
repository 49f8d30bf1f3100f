//! Directory mode: every `*.yaml` / `*.yml` under a directory (recursively,
//! skipping dot-files such as editor swap files and ConfigMap `..data`
//! links), watched with inotify and re-read on change.
//!
//! Each object keeps its last good version: an object that stops
//! validating is reported, and what it was before keeps serving until it
//! is fixed or deleted; the other objects of the file apply. A file that
//! is not YAML at all (syntax error, not UTF-8, over the size limit) keeps
//! all of its last good objects.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    FileError, Snapshot,
    parse::{Outcome, parse_outcomes},
};
use crate::kinds::Object;

/// Quiet time after the last file event before re-reading: an editor's
/// save or `kubectl`-style rewrite is a burst of events.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(40);
/// A burst that never quiets down is still applied after this long.
const DEBOUNCE_MAX: Duration = Duration::from_millis(200);
/// Re-read even without events, in case inotify missed one (queue
/// overflow, a directory replaced under the watch).
const RESYNC_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot read config directory {}: {source} (check --config-dir)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch config directory {}: {source}; is the inotify watch limit (fs.inotify.max_user_watches) reached?", path.display())]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// Files larger than this are refused unread (the Kubernetes API
/// refuses objects over 1.5 MiB; a file may hold many).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// What the source remembers about one file.
#[derive(Debug)]
struct FileState {
    /// Hash of the content, to skip unchanged files cheaply.
    digest: [u8; 32],
    /// The objects that apply: this version's good ones, and the last
    /// good version of each rejected one.
    good: Vec<Object>,
    errors: Vec<FileError>,
}

/// The files of a config directory, parsed.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

impl DirSource {
    /// Reads the directory once. Fails only if the directory itself cannot
    /// be read; bad files are recorded in the snapshot.
    pub fn load(root: &Path) -> Result<Self, DirError> {
        let mut source = DirSource {
            root: root.to_path_buf(),
            files: BTreeMap::new(),
        };
        source.rescan()?;
        Ok(source)
    }

    /// Re-reads changed, new and deleted files. Returns whether anything
    /// changed.
    pub fn rescan(&mut self) -> Result<bool, DirError> {
        let mut paths = Vec::new();
        collect_yaml_files(&self.root, &mut paths).map_err(|source| DirError::Read {
            path: self.root.clone(),
            source,
        })?;
        let mut changed = false;

        let before = self.files.len();
        self.files.retain(|path, _| paths.contains(path));
        if self.files.len() != before {
            changed = true;
        }

        for path in paths {
            let relative = path.strip_prefix(&self.root).unwrap_or(&path).to_path_buf();
            let content = match read_bounded(&path) {
                Ok(Some(content)) => content,
                // Deleted between listing and reading: the next event
                // brings the listing up to date.
                Ok(None) => continue,
                Err(message) => {
                    let digest = [0xff; 32];
                    if self.files.get(&path).is_some_and(|f| f.digest == digest) {
                        continue;
                    }
                    changed = true;
                    let error = whole_file_error(&relative, 1, 1, message);
                    let previous = self.files.remove(&path).map(|f| f.good).unwrap_or_default();
                    let mut state = reject_file(previous, error);
                    state.digest = digest;
                    self.files.insert(path, state);
                    continue;
                }
            };
            let digest = sha256(&content);
            if self.files.get(&path).is_some_and(|f| f.digest == digest) {
                continue;
            }
            changed = true;
            let previous = self.files.remove(&path).map(|f| f.good).unwrap_or_default();
            let outcomes = match std::str::from_utf8(&content) {
                Ok(text) => parse_outcomes(&relative, text),
                Err(err) => {
                    let line = content[..err.valid_up_to()]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1;
                    Err(whole_file_error(
                        &relative,
                        line,
                        1,
                        format!(
                            "the file is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
                            err.valid_up_to()
                        ),
                    ))
                }
            };
            let mut state = match outcomes {
                Ok(outcomes) => apply_outcomes(previous, outcomes),
                Err(error) => reject_file(previous, error),
            };
            state.digest = digest;
            for error in &state.errors {
                tracing::warn!(
                    file = %error.file.display(),
                    line = error.line,
                    column = error.column,
                    object = error.object.as_deref().unwrap_or(""),
                    path = error.path,
                    reason = error.message,
                    "config rejected; the last good version keeps serving"
                );
            }
            self.files.insert(path, state);
        }
        Ok(changed)
    }

    /// The files read (absolute paths).
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.keys()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            objects: self
                .files
                .values()
                .flat_map(|f| f.good.iter().cloned())
                .collect(),
            errors: self
                .files
                .values()
                .flat_map(|f| f.errors.iter().cloned())
                .collect(),
        }
    }

    /// Starts watching the directory. The returned future re-reads it on
    /// every change and publishes a new snapshot, until `shutdown`.
    pub fn watch(
        mut self,
        snapshots: watch::Sender<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> Result<impl Future<Output = ()> + Send + 'static, DirError> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let watch_error = |source| DirError::Watch {
            path: self.root.clone(),
            source,
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Any event, or a watch error, means: look again.
                let _ = events_tx.send(event.is_ok());
            })
            .map_err(watch_error)?;
        notify::Watcher::watch(&mut watcher, &self.root, notify::RecursiveMode::Recursive)
            .map_err(watch_error)?;

        Ok(async move {
            // Owned by the task: dropping it stops the inotify watch.
            let _watcher = watcher;
            // Catch what changed between the first load and the watch.
            let mut pending = true;
            let mut resync = tokio::time::interval(RESYNC_INTERVAL);
            resync.tick().await;
            loop {
                if !pending {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        event = events.recv() => {
                            if event.is_none() {
                                return;
                            }
                            debounce(&mut events).await;
                        }
                        _ = resync.tick() => {}
                    }
                }
                pending = false;
                match self.rescan() {
                    Ok(true) => {
                        let snapshot = self.snapshot();
                        tracing::info!(
                            objects = snapshot.objects.len(),
                            file_errors = snapshot.errors.len(),
                            "config reloaded"
                        );
                        snapshots.send_replace(Arc::new(snapshot));
                    }
                    Ok(false) => {}
                    // The directory may be mid-replacement; keep serving.
                    Err(err) => tracing::warn!(error = %err, "config directory rescan failed"),
                }
            }
        })
    }
}

/// A file rejected as a whole keeps all its last good objects.
fn reject_file(previous: Vec<Object>, error: FileError) -> FileState {
    FileState {
        digest: [0; 32],
        good: previous,
        errors: vec![error],
    }
}

/// The new version's objects; a rejected object that the previous version
/// of the file had keeps that version.
fn apply_outcomes(previous: Vec<Object>, outcomes: Vec<Outcome>) -> FileState {
    let mut good = Vec::new();
    let mut errors = Vec::new();
    let mut kept = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Object(o) => good.push(o),
            Outcome::Skipped => {}
            Outcome::Rejected { key, error } => {
                if let Some(key) = key {
                    kept.push(key);
                }
                errors.push(error);
            }
        }
    }
    for old in previous {
        let key = old.key();
        if kept.contains(&key) && !good.iter().any(|o| o.key() == key) {
            good.push(old);
        }
    }
    FileState {
        digest: [0; 32],
        good,
        errors,
    }
}

fn whole_file_error(file: &Path, line: usize, column: usize, message: String) -> FileError {
    FileError {
        file: file.to_path_buf(),
        line,
        column,
        object: None,
        path: String::new(),
        message,
    }
}

/// The file's bytes, `None` if it vanished, or why it is refused.
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the file: {e}")),
    };
    let mut content = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "the file is larger than {} MiB; split it into smaller files",
            MAX_FILE_BYTES / (1024 * 1024)
        ));
    }
    Ok(Some(content))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Waits until events stop for [`DEBOUNCE_QUIET`], or [`DEBOUNCE_MAX`].
async fn debounce(events: &mut mpsc::UnboundedReceiver<bool>) {
    let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = tokio::time::Instant::now() + DEBOUNCE_QUIET;
        match tokio::time::timeout_at(quiet.min(deadline), events.recv()).await {
            Ok(Some(_)) if tokio::time::Instant::now() < deadline => continue,
            _ => return,
        }
    }
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if (file_type.is_file() || file_type.is_symlink()) && is_yaml(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
    const SA: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: a}\n";

    #[test]
    fn bad_file_keeps_its_last_good_objects_and_others_apply() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/sa.yml"), SA).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "kind:x").unwrap();
        let mut source = DirSource::load(dir.path()).unwrap();
        assert_eq!(source.snapshot().objects.len(), 2);

        std::fs::write(
            dir.path().join("ns.yaml"),
            "apiVersion: v1\nkind:Namespace\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sub/sa.yml"),
            format!("{SA}---\n{}", NS.replace("name: a", "name: b")),
        )
        .unwrap();
        assert!(source.rescan().unwrap());
        let snapshot = source.snapshot();
        let keys: Vec<String> = snapshot
            .objects
            .iter()
            .map(|o| o.key().to_string())
            .collect();
        assert_eq!(keys, ["Namespace a", "ServiceAccount a/sa", "Namespace b"]);
        assert_eq!(snapshot.errors.len(), 1);
        assert_eq!(snapshot.errors[0].file, Path::new("ns.yaml"));
        assert_eq!(snapshot.errors[0].line, 2);

        assert!(!source.rescan().unwrap(), "nothing changed");
        std::fs::remove_file(dir.path().join("ns.yaml")).unwrap();
        assert!(source.rescan().unwrap());
        let snapshot = source.snapshot();
        assert_eq!(snapshot.objects.len(), 2);
        assert!(snapshot.errors.is_empty());
    }
}
