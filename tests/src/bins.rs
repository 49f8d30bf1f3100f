//! Finding the binaries the cluster runs: weft's own, `weft-sim-app` and
//! `weft-sim-http`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// weft's control plane.
pub const CONTROL: &str = "weft-control";
/// weft's node agent.
pub const AGENT: &str = "weft-agent";
/// weft's chained CNI plugin.
pub const CNI: &str = "weft-cni";
/// The test application run inside pods.
pub const APP: &str = "weft-sim-app";
/// The HTTP/1.1, HTTP/2 and gRPC test application run inside pods.
pub const HTTP_APP: &str = "weft-sim-http";

/// The directory holding the binaries.
#[derive(Debug, Clone)]
pub struct BinDir {
    dir: PathBuf,
}

// === impl BinDir ===

impl BinDir {
    /// An explicit directory.
    pub fn at(dir: PathBuf) -> BinDir {
        BinDir { dir }
    }

    /// `$WEFT_BIN_DIR` if set, else the cargo profile directory of the
    /// running executable (`target/<profile>/`, also when it runs from
    /// `target/<profile>/deps/` as test executables do).
    pub fn locate() -> Result<BinDir> {
        if let Some(dir) = std::env::var_os("WEFT_BIN_DIR") {
            return Ok(BinDir { dir: dir.into() });
        }
        let exe = std::env::current_exe().context("finding the current executable")?;
        let mut dir = exe
            .parent()
            .context("the current executable has no parent directory")?
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        Ok(BinDir { dir })
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of binary `name`, checked to exist.
    pub fn get(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.is_file() {
            bail!(
                "binary `{name}` not found at {} (looked in {}, set by {}); \
                 run `cargo build --workspace` first, or point WEFT_BIN_DIR at the directory \
                 holding weft-control, weft-agent, weft-cni, weft-sim-app and weft-sim-http",
                path.display(),
                self.dir.display(),
                if std::env::var_os("WEFT_BIN_DIR").is_some() {
                    "$WEFT_BIN_DIR"
                } else {
                    "the running executable's target directory"
                }
            );
        }
        Ok(path)
    }

    /// Checks that every binary named exists.
    pub fn require(&self, names: &[&str]) -> Result<()> {
        names.iter().try_for_each(|n| self.get(n).map(drop))
    }
}
