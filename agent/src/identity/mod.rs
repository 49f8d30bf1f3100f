//! Workload identities: certificates for the pods on this node, fetched
//! from the control plane's CA and kept fresh, and the TLS configurations
//! built from them.

mod bundle;
mod ca_client;
mod manager;
pub mod spiffe;
pub mod tls;

pub use bundle::{Roots, TrustBundle};
pub use manager::{SecretManager, WorkloadCert};

use std::path::PathBuf;

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
