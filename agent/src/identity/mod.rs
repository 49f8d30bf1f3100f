//! Workload identities: certificates for the pods on this node, fetched
//! from the control plane's CA and kept fresh, and the TLS configurations
//! built from them.

mod ca_client;
mod manager;
pub mod spiffe;
pub mod tls;

pub use manager::{SecretManager, WorkloadCert};

use std::path::{Path, PathBuf};

use rustls::{RootCertStore, pki_types::CertificateDer};

use crate::state::Identity;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the trust bundle {path}: {source}")]
    ReadBundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the trust bundle {0} holds no usable certificate")]
    EmptyBundle(PathBuf),
    #[error("generating a key or CSR for {identity}: {source}")]
    Csr {
        identity: Identity,
        source: rcgen::Error,
    },
    #[error("the CA refused a certificate for {identity}: {status}")]
    Refused {
        identity: Identity,
        status: Box<tonic::Status>,
    },
    #[error("the CA's answer for {identity} is unusable: {reason}")]
    BadResponse { identity: Identity, reason: String },
    #[error("building TLS for {identity}: {source}")]
    Tls {
        identity: Identity,
        source: Box<rustls::Error>,
    },
}

/// Reads the mesh's root certificates.
pub fn load_trust_bundle(path: &Path) -> Result<RootCertStore, IdentityError> {
    let pem = std::fs::read(path).map_err(|source| IdentityError::ReadBundle {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
        let _ = roots.add(CertificateDer::from(cert.to_vec()));
    }
    if roots.is_empty() {
        return Err(IdentityError::EmptyBundle(path.to_path_buf()));
    }
    Ok(roots)
}
