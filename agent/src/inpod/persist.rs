//! The pods this agent has been told about, one JSON file per pod under
//! `<state-dir>/pods/`, written atomically.

use std::path::{Path, PathBuf};

use crate::cni::PodEvent;

/// Where pod files live.
pub struct PodFiles {
    dir: PathBuf,
}

impl PodFiles {
    pub fn new(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("pods");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, namespace: &str, name: &str) -> PathBuf {
        // Kubernetes names never contain `_`, so this is unambiguous.
        self.dir.join(format!("{namespace}_{name}.json"))
    }

    pub fn save(&self, event: &PodEvent) -> std::io::Result<()> {
        let path = self.path(&event.pod_namespace, &event.pod_name);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(event).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        let _ = std::fs::remove_file(self.path(namespace, name));
    }

    /// Every saved pod; unreadable files are reported and skipped.
    pub fn load_all(&self) -> Vec<PodEvent> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut pods = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            match std::fs::read(&path).map(|bytes| serde_json::from_slice::<PodEvent>(&bytes)) {
                Ok(Ok(event)) => pods.push(event),
                Ok(Err(err)) => {
                    tracing::warn!(file = %path.display(), error = %err, "ignoring unreadable pod state")
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "ignoring unreadable pod state")
                }
            }
        }
        pods
    }
}
