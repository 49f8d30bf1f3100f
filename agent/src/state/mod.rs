//! The agent's view of the mesh: workloads and services as received from
//! the control plane (Istio's Workload API), indexed for the proxy's
//! lookups, plus the answer to "where does this connection go?".

mod convert;
mod store;

pub use convert::{ConvertError, Converted, from_address};
pub use store::{Resolved, WorkloadStore};

use std::{collections::HashMap, fmt, net::IpAddr, str::FromStr, sync::Arc};

use crate::metrics::traffic::{PeerLabels, ServiceLabels};

/// A workload's SPIFFE identity, `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a workload SPIFFE ID (expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)"
)]
pub struct IdentityParseError(pub String);

impl FromStr for Identity {
    type Err = IdentityParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || IdentityParseError(text.to_string());
        let rest = text.strip_prefix("spiffe://").ok_or_else(err)?;
        let mut parts = rest.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None)
                if !td.is_empty() && !ns.is_empty() && !sa.is_empty() =>
            {
                Ok(Self {
                    trust_domain: td.to_string(),
                    namespace: ns.to_string(),
                    service_account: sa.to_string(),
                })
            }
            _ => Err(err()),
        }
    }
}

/// A pod (or other workload) as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub ips: Vec<IpAddr>,
    pub node: String,
    pub identity: Identity,
    /// Captured by the mesh (`tunnel_protocol: HBONE`): its traffic is
    /// carried in HBONE and it accepts HBONE on 15008.
    pub hbone: bool,
    /// Shares its node's network (`network_mode: HOST_NETWORK`): its
    /// addresses are the node's, shared with every other such pod there,
    /// so it is never found by address (see `WorkloadStore`).
    pub host_network: bool,
    /// Services this workload backs: service key (`ns/hostname`) →
    /// service port → target port.
    pub services: HashMap<String, HashMap<u16, u16>>,
    /// Selector-scoped authorization policies (`ns/name`) that apply to it.
    pub policies: Vec<String>,
    /// How metrics and access logs name it.
    pub names: WorkloadNames,
    /// `names` as the traffic metrics' labels, built once (by
    /// [`Workload::labelled`]) and shared by every series that names it.
    #[serde(skip)]
    pub telemetry: Arc<PeerLabels>,
}

impl Workload {
    /// With [`Workload::telemetry`] built from its names and identity.
    pub fn labelled(mut self) -> Workload {
        self.telemetry = Arc::new(PeerLabels::of(&self, Some(&self.identity)));
        self
    }
}

/// A workload's names in Istio's telemetry (`source_workload`,
/// `source_canonical_service`, ...), as the control plane sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkloadNames {
    /// The Deployment (or other controller) the pod belongs to.
    pub workload: String,
    /// `service.istio.io/canonical-name`, `app`, ...: also `*_app`.
    pub canonical_service: String,
    /// `service.istio.io/canonical-revision`, `version`, ...: also
    /// `*_version`.
    pub canonical_revision: String,
    pub cluster: String,
    /// The Workload API's `workload_type` as Istio's peer metadata names
    /// it: `deployment`, `cronjob`, `pod`, `job`.
    pub workload_type: &'static str,
}

/// A Kubernetes Service as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<IpAddr>,
    /// Service port → target port (0: the same as the service port, or a
    /// named port that each endpoint resolves).
    pub ports: HashMap<u16, u16>,
    /// The ports declared HTTP (`appProtocol` or port name, Istio's
    /// protocol selection, decided by the control plane); any other port
    /// is opaque TCP.
    pub http_ports: HashMap<u16, AppProtocol>,
    /// Its load balancing mode is the Workload API's `PASSTHROUGH` (a
    /// ServiceEntry with `resolution: NONE`): its addresses are the
    /// destinations, so a connection or request goes to the address the
    /// client dialed, endpoints or not, as Envoy's `ORIGINAL_DST` cluster
    /// sends it ([`Service::original_dst_addr`]).
    pub original_dst: bool,
    /// Its names as the traffic metrics' `destination_service*` labels.
    #[serde(skip)]
    pub telemetry: Arc<ServiceLabels>,
}

/// What a service port speaks, when it is HTTP (the Workload API's
/// `AppProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AppProtocol {
    /// `http`: HTTP/1.1 upstream (clients may still speak HTTP/2).
    Http1,
    /// `http2`, `h2c`: HTTP/2 upstream.
    Http2,
    /// `grpc`: HTTP/2 upstream; local replies carry a `grpc-status`.
    Grpc,
}

impl Service {
    /// The key workloads use in their `services` map (and the xDS resource
    /// name): `namespace/hostname`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }

    /// Where a connection to `dialed` goes when the service sends to the
    /// address dialed ([`Service::original_dst`]): that IP, at the port's
    /// `targetPort` (Istio's `upstream_port_override`), else the port
    /// dialed.
    pub fn original_dst_addr(&self, dialed: std::net::SocketAddr) -> std::net::SocketAddr {
        match self.ports.get(&dialed.port()) {
            Some(&target) if target != 0 => std::net::SocketAddr::new(dialed.ip(), target),
            _ => dialed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trip() {
        let id: Identity = "spiffe://cluster.local/ns/default/sa/sleep"
            .parse()
            .unwrap();
        assert_eq!(id.namespace, "default");
        assert_eq!(id.service_account, "sleep");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
    }

    #[test]
    fn identity_rejects_other_shapes() {
        for bad in [
            "spiffe://cluster.local/ns/default",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad}");
        }
    }
}
