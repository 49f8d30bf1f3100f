//! Directory mode: every `*.yaml` / `*.yml` under a directory (recursively,
//! leaving out dot-files such as editor swap files and ConfigMap `..data`
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
use crate::{
    kinds::{Object, ObjectKey},
    metrics::{ConfigEvent, Metrics},
};

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
    /// Size and modification time when last read: unchanged means the
    /// file is not even read again.
    stamp: Option<(u64, std::time::SystemTime)>,
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
    /// Snapshots published so far.
    seq: u64,
    /// Object changes since the last snapshot.
    pending: Vec<(ObjectKey, Option<Object>)>,
    /// Where object changes are counted.
    metrics: Option<Arc<Metrics>>,
}

impl DirSource {
    /// Reads the directory once. Fails only if the directory itself cannot
    /// be read; bad files are recorded in the snapshot.
    pub fn load(root: &Path) -> Result<Self, DirError> {
        Self::load_counting(root, None)
    }

    /// As [`DirSource::load`], counting object changes (the first read's
    /// objects as added) in `metrics`.
    pub fn load_counting(root: &Path, metrics: Option<Arc<Metrics>>) -> Result<Self, DirError> {
        let mut source = DirSource {
            root: root.to_path_buf(),
            files: BTreeMap::new(),
            seq: 0,
            pending: Vec::new(),
            metrics,
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
        let listed: std::collections::BTreeSet<&PathBuf> = paths.iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !listed.contains(p))
            .cloned()
            .collect();
        let mut changed = false;
        for path in gone {
            changed |= self.refresh(&path);
        }
        for path in &paths {
            changed |= self.refresh(path);
        }
        Ok(changed)
    }

    /// Re-reads only these paths (from file events); a directory among
    /// them means a full rescan.
    pub fn rescan_paths(
        &mut self,
        paths: &std::collections::BTreeSet<PathBuf>,
    ) -> Result<bool, DirError> {
        if paths.iter().any(|p| p.is_dir()) {
            return self.rescan();
        }
        let mut changed = false;
        for path in paths {
            let hidden = path
                .strip_prefix(&self.root)
                .unwrap_or(path)
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
            if is_yaml(path) && !hidden {
                changed |= self.refresh(path);
            }
        }
        Ok(changed)
    }

    /// Brings one file up to date; whether its objects or errors changed.
    fn refresh(&mut self, path: &Path) -> bool {
        let relative = path.strip_prefix(&self.root).unwrap_or(path).to_path_buf();
        let stamp = std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)));
        let Some(stamp) = stamp else {
            // Gone (or no longer a file).
            return match self.files.remove(path) {
                Some(old) => {
                    self.record(old.good, Vec::new().as_slice());
                    true
                }
                None => false,
            };
        };
        if self.files.get(path).is_some_and(|f| f.stamp == Some(stamp)) {
            return false;
        }
        let content = match read_bounded(path) {
            Ok(Some(content)) => content,
            Ok(None) => return false,
            Err(message) => {
                let digest = [0xff; 32];
                if self.files.get(path).is_some_and(|f| f.digest == digest) {
                    return false;
                }
                let error = whole_file_error(&relative, 1, 1, message);
                tracing::warn!(file = %relative.display(), reason = error.message, "config file refused; its last good objects keep serving");
                let previous = self.files.remove(path).map(|f| f.good).unwrap_or_default();
                let mut state = reject_file(previous, error);
                state.digest = digest;
                state.stamp = Some(stamp);
                self.files.insert(path.to_path_buf(), state);
                return true;
            }
        };
        let digest = sha256(&content);
        if let Some(f) = self.files.get_mut(path)
            && f.digest == digest
        {
            f.stamp = Some(stamp);
            return false;
        }
        let previous = self.files.remove(path).map(|f| f.good).unwrap_or_default();
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
            Ok(outcomes) => apply_outcomes(previous.clone(), outcomes),
            Err(error) => reject_file(previous.clone(), error),
        };
        state.digest = digest;
        state.stamp = Some(stamp);
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
        let new = state.good.clone();
        self.files.insert(path.to_path_buf(), state);
        self.record(previous, &new);
        true
    }

    /// Records the object changes of one file going from `old` to `new`.
    fn record(&mut self, old: Vec<Object>, new: &[Object]) {
        let old: std::collections::HashMap<ObjectKey, Object> =
            old.into_iter().map(|o| (o.key(), o)).collect();
        let new_keys: std::collections::HashMap<ObjectKey, &Object> =
            new.iter().map(|o| (o.key(), o)).collect();
        for key in old.keys() {
            if !new_keys.contains_key(key) {
                // Still defined by another file?
                let elsewhere = self
                    .files
                    .values()
                    .flat_map(|f| f.good.iter())
                    .find(|x| &x.key() == key)
                    .cloned();
                let event = match elsewhere {
                    Some(_) => ConfigEvent::Update,
                    None => ConfigEvent::Delete,
                };
                self.count(key.kind, event);
                self.pending.push((key.clone(), elsewhere));
            }
        }
        for (key, o) in new_keys {
            let previous = old.get(&key);
            if previous != Some(o) {
                let event = match previous {
                    Some(_) => ConfigEvent::Update,
                    None => ConfigEvent::Add,
                };
                self.count(key.kind, event);
                self.pending.push((key, Some(o.clone())));
            }
        }
    }

    fn count(&self, kind: &'static str, event: ConfigEvent) {
        if let Some(metrics) = &self.metrics {
            metrics.config_event(kind, event);
        }
    }

    /// The files read (absolute paths).
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.keys()
    }

    /// The current objects and errors, with the changes since the last
    /// snapshot.
    pub fn snapshot(&mut self) -> Snapshot {
        self.seq += 1;
        Snapshot {
            seq: self.seq,
            synced: true,
            changes: Some(std::mem::take(&mut self.pending)),
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
        let (events_tx, mut events) = mpsc::unbounded_channel::<Option<Vec<PathBuf>>>();
        let watch_error = |source| DirError::Watch {
            path: self.root.clone(),
            source,
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reads change nothing (and the rescan's own reads would
                // otherwise wake it again, forever).
                if let Ok(e) = &event
                    && is_read(&e.kind)
                {
                    return;
                }
                // The paths to look at again; a watch error means all.
                let _ = events_tx.send(event.ok().map(|e| e.paths));
            })
            .map_err(watch_error)?;
        notify::Watcher::watch(&mut watcher, &self.root, notify::RecursiveMode::Recursive)
            .map_err(watch_error)?;

        Ok(async move {
            // Owned by the task: dropping it stops the inotify watch.
            let _watcher = watcher;
            // Catch what changed between the first load and the watch.
            let mut full = true;
            let mut resync = tokio::time::interval(RESYNC_INTERVAL);
            resync.tick().await;
            loop {
                let mut paths = std::collections::BTreeSet::new();
                if !full {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        event = events.recv() => {
                            let Some(event) = event else { return };
                            full |= collect(&mut paths, event);
                            full |= debounce(&mut events, &mut paths).await;
                        }
                        _ = resync.tick() => full = true,
                    }
                }
                let result = if full {
                    self.rescan()
                } else {
                    self.rescan_paths(&paths)
                };
                full = false;
                match result {
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
        stamp: None,
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
        stamp: None,
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

/// An event for opening or reading a file or directory (inotify reports
/// those too), not for changing one.
fn is_read(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(kind, notify::EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

/// Adds an event's paths; whether it asks for a full rescan.
fn collect(paths: &mut std::collections::BTreeSet<PathBuf>, event: Option<Vec<PathBuf>>) -> bool {
    match event {
        Some(p) if !p.is_empty() => {
            paths.extend(p);
            false
        }
        _ => true,
    }
}

/// Collects events until they stop for [`DEBOUNCE_QUIET`], or
/// [`DEBOUNCE_MAX`]; whether one asked for a full rescan.
async fn debounce(
    events: &mut mpsc::UnboundedReceiver<Option<Vec<PathBuf>>>,
    paths: &mut std::collections::BTreeSet<PathBuf>,
) -> bool {
    let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
    let mut full = false;
    loop {
        let quiet = tokio::time::Instant::now() + DEBOUNCE_QUIET;
        match tokio::time::timeout_at(quiet.min(deadline), events.recv()).await {
            Ok(Some(event)) => {
                full |= collect(paths, event);
                if tokio::time::Instant::now() >= deadline {
                    return full;
                }
            }
            _ => return full,
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
    fn reads_are_not_changes() {
        use notify::{
            EventKind,
            event::{AccessKind, AccessMode, CreateKind, ModifyKind},
        };
        assert!(is_read(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(is_read(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_read(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_read(&EventKind::Modify(ModifyKind::Any)));
        assert!(!is_read(&EventKind::Create(CreateKind::File)));
    }

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
