//! The mesh's trust bundle (root certificates), reloaded when its file
//! changes: that is how a new root is introduced and an old one retired
//! without restarting anything. Both roots are trusted while the file
//! holds both. A file that does not parse is reported and ignored: the last
//! good bundle keeps serving.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{RootCertStore, pki_types::CertificateDer};
use tokio::sync::watch;

use super::IdentityError;

/// A parsed bundle: the PEM (for the control-plane channel) and the roots.
#[derive(Debug, Clone)]
pub struct Roots {
    pub pem: Vec<u8>,
    pub store: Arc<RootCertStore>,
}

fn parse(path: &Path, pem: Vec<u8>) -> Result<Roots, IdentityError> {
    let mut store = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
        let _ = store.add(CertificateDer::from(cert.to_vec()));
    }
    if store.is_empty() {
        return Err(IdentityError::EmptyBundle(path.to_path_buf()));
    }
    Ok(Roots {
        pem,
        store: Arc::new(store),
    })
}

/// The current trust bundle; subscribers hear of every change.
pub struct TrustBundle {
    path: PathBuf,
    current: RwLock<Roots>,
    changes: watch::Sender<u64>,
}

impl TrustBundle {
    /// Reads the bundle; failing here is fatal (there is no last good one).
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let pem = std::fs::read(path).map_err(|source| IdentityError::ReadBundle {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(parse(path, pem)?),
            changes: watch::Sender::new(0),
        })
    }

    /// The roots to verify against now.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.current.read().expect("bundle lock").store.clone()
    }

    pub fn current(&self) -> Roots {
        self.current.read().expect("bundle lock").clone()
    }

    /// Changes whenever a new bundle is in effect.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Checks the file every `interval` until the process ends.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut last = self.current().pem;
        loop {
            tokio::time::sleep(interval).await;
            let pem = match std::fs::read(&self.path) {
                Ok(pem) => pem,
                Err(err) => {
                    tracing::warn!(path = %self.path.display(), error = %err, "cannot read the trust bundle; keeping the last good one");
                    continue;
                }
            };
            if pem == last {
                continue;
            }
            last = pem.clone();
            match parse(&self.path, pem) {
                Ok(roots) => {
                    let count = roots.store.len();
                    *self.current.write().expect("bundle lock") = roots;
                    self.changes.send_modify(|generation| *generation += 1);
                    tracing::info!(path = %self.path.display(), roots = count, "trust bundle changed");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "ignoring an unusable trust bundle; keeping the last good one");
                }
            }
        }
    }
}
