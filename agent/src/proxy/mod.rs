//! The node proxy. Per enrolled pod, inside the pod's network namespace:
//!
//! * `127.0.0.1:15001` ([`outbound`]): connections the eBPF programs
//!   captured; each goes to its original destination, over HBONE when the
//!   destination is in the mesh, in plaintext otherwise.
//! * `<pod IP>:15008` ([`inbound`]): HBONE from peers; each CONNECT is
//!   delivered to the app with the client's real source IP.
//!
//! [`hbone`] is the tunnel itself (HTTP/2 CONNECT over mutual TLS).

pub mod hbone;
pub mod inbound;
pub mod outbound;

use std::{net::SocketAddr, sync::Arc};

use rustls::RootCertStore;

use crate::{
    identity::SecretManager,
    state::{Identity, Workload, WorkloadStore},
    sys::Netns,
};

/// Finds the destination a captured connection asked for; implemented by
/// the eBPF redirector, faked in tests.
pub trait OriginalDst: Send + Sync {
    /// `netns_cookie`: the pod's namespace; `source_port`: the app's port,
    /// as seen by the proxy on accept. Consumes the record.
    fn take(&self, netns_cookie: u64, source_port: u16) -> Option<SocketAddr>;
}

impl OriginalDst for crate::redirect::Redirector {
    fn take(&self, netns_cookie: u64, source_port: u16) -> Option<SocketAddr> {
        self.take_original_dst(netns_cookie, source_port)
    }
}

/// What every proxy task shares.
pub struct ProxyContext {
    pub store: Arc<WorkloadStore>,
    pub secrets: Arc<SecretManager>,
    pub roots: Arc<RootCertStore>,
    pub original_dst: Arc<dyn OriginalDst>,
}

/// One enrolled pod, as its listeners see it.
#[derive(Debug)]
pub struct PodContext {
    pub workload: Arc<Workload>,
    pub netns: Netns,
    pub netns_cookie: u64,
}

impl PodContext {
    pub fn identity(&self) -> &Identity {
        &self.workload.identity
    }

    /// `namespace/name`, for logs.
    pub fn name(&self) -> String {
        format!("{}/{}", self.workload.namespace, self.workload.name)
    }
}
