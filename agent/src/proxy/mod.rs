//! The node proxy. Per enrolled pod, inside the pod's network namespace:
//!
//! * `127.0.0.1:15001` ([`outbound`]): connections the eBPF programs
//!   captured; each goes to its original destination, over HBONE when the
//!   destination is in the mesh, in plaintext otherwise.
//! * `<pod IP>:15008` ([`inbound`]): HBONE from peers; each CONNECT is
//!   delivered to the app with the client's real source IP.
//! * `127.0.0.1:15006` ([`inbound_plain`]): plaintext to the pod's other
//!   ports, steered here by eBPF (sk_lookup), so that policy applies to it.
//!
//! All three share one accept loop ([`accept`]) and write what a
//! connection leaves behind (metrics, log, access log, span) from one
//! record ([`record`]). [`hbone`] is the tunnel itself (HTTP/2 CONNECT
//! over mutual TLS); [`delivery`] the last hop to the app.

pub mod accept;
pub mod delivery;
pub mod hbone;
pub mod inbound;
pub mod inbound_plain;
pub mod limits;
pub mod open;
pub mod outbound;
mod plain;
pub mod pool;
pub mod record;
pub mod same_node;
pub mod tunnel_io;
mod waited;

use std::sync::Arc;

use weft_ebpf_common::DeliveryKey;

use crate::{
    identity::SecretManager,
    metrics::traffic::{Peer, Reporter, RequestProtocol, SecurityPolicy, TrafficLabels},
    state::{Identity, Workload, WorkloadStore},
    sys::Netns,
};

/// What the proxy asks of the redirection layer on the connection path;
/// implemented by the eBPF redirector, faked in tests.
pub trait Redirection: Send + Sync {
    /// What was recorded of a captured connection: the destination it
    /// asked for and, when `accepted_ns` (the accept's monotonic time) is
    /// not 0, when it was captured. `netns_cookie`: the pod's namespace;
    /// `source_port`: the app's port, as seen by the proxy on accept.
    /// Consumes the records.
    fn take_capture(
        &self,
        netns_cookie: u64,
        source_port: u16,
        accepted_ns: u64,
    ) -> Option<crate::redirect::Capture>;
    /// Exempts a delivery connection from inbound steering.
    fn register_delivery(&self, key: DeliveryKey) -> Result<(), crate::redirect::RedirectError>;
    fn unregister_delivery(&self, key: &DeliveryKey);
}

impl Redirection for crate::redirect::Redirector {
    fn take_capture(
        &self,
        netns_cookie: u64,
        source_port: u16,
        accepted_ns: u64,
    ) -> Option<crate::redirect::Capture> {
        crate::redirect::Redirector::take_capture(self, netns_cookie, source_port, accepted_ns)
    }

    fn register_delivery(&self, key: DeliveryKey) -> Result<(), crate::redirect::RedirectError> {
        crate::redirect::Redirector::register_delivery(self, key)
    }

    fn unregister_delivery(&self, key: &DeliveryKey) {
        crate::redirect::Redirector::unregister_delivery(self, key)
    }
}

/// What every proxy task shares.
pub struct ProxyContext {
    pub store: Arc<WorkloadStore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub secrets: Arc<SecretManager>,
    /// The mesh's roots; reloaded when the bundle file changes.
    pub trust: Arc<crate::identity::TrustBundle>,
    pub redirection: Arc<dyn Redirection>,
    /// TLS configs, reused while certificate and roots are unchanged.
    pub tls: crate::identity::tls::ConfigCache,
    /// The enrolled pods of this node, by IP: same-node traffic skips HBONE.
    pub local_pods: LocalPods,
    /// Outbound HBONE connections, shared by streams.
    pub pool: Arc<pool::Pool>,
    /// The L7 proxy: routes, clusters, upstream HTTP connections.
    pub l7: crate::l7::L7,
    /// JWT validation (RequestAuthentication) at HTTP ports.
    pub authn: crate::authn::Authn,
    /// CUSTOM policies' external authorization providers.
    pub ext_authz: crate::l7::ext_authz::Providers,
    /// Tracing policies and span export.
    pub tracer: Arc<crate::trace::Tracer>,
    /// Bounds on handshakes and connects.
    pub limits: limits::Limits,
    /// Handshakes in progress on 15008, by source.
    pub handshakes: limits::Handshakes,
    /// The connections delivered to this node's pods, authorized again
    /// when policies change.
    pub open: Arc<open::OpenConnections>,
    /// Fires when the agent winds down (SIGTERM, or a newer agent took the
    /// node over): connections finish what they carry and close, HBONE
    /// with a GOAWAY, HTTP with `Connection: close` or a GOAWAY.
    pub drain: tokio_util::sync::CancellationToken,
    /// The agent's tasks: every connection is a unit of its work.
    pub tasks: crate::lifecycle::Tasks,
    /// This context itself, for tasks started where only a borrow is at
    /// hand (built with `Arc::new_cyclic`).
    pub me: std::sync::Weak<ProxyContext>,
}

impl ProxyContext {
    /// A shared handle to this context.
    pub fn shared(&self) -> Arc<ProxyContext> {
        self.me.upgrade().expect("a ProxyContext lives in an Arc")
    }
}

/// The pods enrolled on this node, by IP.
#[derive(Default)]
pub struct LocalPods(
    std::sync::RwLock<std::collections::HashMap<std::net::IpAddr, Arc<PodContext>>>,
);

impl LocalPods {
    pub fn get(&self, ip: std::net::IpAddr) -> Option<Arc<PodContext>> {
        self.0.read().expect("local pods lock").get(&ip).cloned()
    }

    /// The pod with this network namespace.
    pub fn by_netns_cookie(&self, netns_cookie: u64) -> Option<Arc<PodContext>> {
        let pods = self.0.read().expect("local pods lock");
        pods.values()
            .find(|p| p.netns_cookie == netns_cookie)
            .cloned()
    }

    /// Every pod, once (a pod with two addresses is under both).
    pub fn all(&self) -> Vec<Arc<PodContext>> {
        let pods = self.0.read().expect("local pods lock");
        let mut all: Vec<Arc<PodContext>> = pods.values().cloned().collect();
        all.sort_by_key(|p| p.netns_cookie);
        all.dedup_by_key(|p| p.netns_cookie);
        all
    }

    pub fn insert(&self, pod: Arc<PodContext>) {
        let mut pods = self.0.write().expect("local pods lock");
        for ip in &pod.workload.ips {
            pods.insert(*ip, pod.clone());
        }
    }

    pub fn remove(&self, pod: &PodContext) {
        let mut pods = self.0.write().expect("local pods lock");
        for ip in &pod.workload.ips {
            if pods
                .get(ip)
                .is_some_and(|p| p.netns_cookie == pod.netns_cookie)
            {
                pods.remove(ip);
            }
        }
    }
}

/// One enrolled pod, as its listeners see it.
#[derive(Debug)]
pub struct PodContext {
    pub workload: Arc<Workload>,
    pub netns: Netns,
    pub netns_cookie: u64,
    /// How long this pod's connections waited in the mesh.
    pub waits: crate::metrics::waits::Waits,
}

impl PodContext {
    pub fn identity(&self) -> &Identity {
        &self.workload.identity
    }

    /// `namespace/name`, for logs.
    pub fn name(&self) -> String {
        format!("{}/{}", self.workload.namespace, self.workload.name)
    }

    /// This pod's workload as the control plane describes it now.
    pub fn current(&self, ctx: &ProxyContext) -> Arc<Workload> {
        ctx.store
            .workload_by_pod(&self.workload.namespace, &self.workload.name)
            .unwrap_or_else(|| self.workload.clone())
    }

    /// The authorization policies that apply to this pod now.
    pub fn policies(&self, ctx: &ProxyContext) -> Vec<Arc<crate::policy::Policy>> {
        ctx.store.policies_for(&self.current(ctx))
    }

    /// Istio's labels for a connection this pod accepted on `port`
    /// (`reporter="destination"`): the client is the workload at its
    /// address, if its proven identity (when it has one) agrees.
    pub fn inbound_labels(
        &self,
        ctx: &ProxyContext,
        client_ip: std::net::IpAddr,
        client: Option<&Identity>,
        port: u16,
        protocol: RequestProtocol,
        security: SecurityPolicy,
    ) -> TrafficLabels {
        let me = self.current(ctx);
        let source = ctx
            .store
            .workload_by_ip(client_ip)
            .filter(|w| client.is_none_or(|id| *id == w.identity));
        let service = ctx.store.service_for_target(&me, port);
        TrafficLabels::new(
            Reporter::destination,
            Peer {
                workload: source.as_deref(),
                identity: client,
            },
            Peer::workload(&me),
            service.as_deref(),
            protocol,
            security,
        )
    }

    /// Istio's TCP metrics for a connection this pod accepted from
    /// `client_addr`, opened now (`None` when traffic metrics are off).
    pub fn inbound_record(
        &self,
        ctx: &ProxyContext,
        client_addr: std::net::SocketAddr,
        client: Option<&Identity>,
        port: u16,
        security: SecurityPolicy,
    ) -> Option<crate::metrics::traffic::TcpRecord> {
        let traffic = &ctx.metrics.traffic;
        traffic.enabled().then(|| {
            let labels = self.inbound_labels(
                ctx,
                client_addr.ip(),
                client,
                port,
                RequestProtocol::tcp,
                security,
            );
            // Values for a Telemetry's added labels, when there are any
            // (the pod's address is looked up only then).
            let labels = if labels.view().is_some_and(|v| !v.expressions.is_empty()) {
                let local = self
                    .current(ctx)
                    .ips
                    .first()
                    .map(|ip| std::net::SocketAddr::new(*ip, port));
                let mtls = security == SecurityPolicy::mutual_tls;
                labels.with_connection_values(local, Some(client_addr), mtls)
            } else {
                labels
            };
            traffic.tcp_open(&labels)
        })
    }

    /// What `port` of this pod speaks, when a Service it backs declares it
    /// HTTP: connections to it are then authorized per request.
    pub fn http_port(&self, ctx: &ProxyContext, port: u16) -> Option<crate::state::AppProtocol> {
        ctx.store.http_target_port(&self.current(ctx), port)
    }

    /// Decides on an inbound connection to this pod with the policies that
    /// apply to it now; refusals are logged and counted.
    pub fn authorize(
        &self,
        ctx: &ProxyContext,
        conn: &crate::policy::Connection,
    ) -> Result<(), crate::policy::DenyReason> {
        self.authorize_with(ctx, conn, &self.policies(ctx))
    }

    /// [`Self::authorize`] with the given policies.
    pub fn authorize_with(
        &self,
        ctx: &ProxyContext,
        conn: &crate::policy::Connection,
        policies: &[Arc<crate::policy::Policy>],
    ) -> Result<(), crate::policy::DenyReason> {
        match crate::policy::evaluate(policies, conn) {
            crate::policy::Decision::Allow { .. } => Ok(()),
            crate::policy::Decision::Deny(reason) => {
                let counter = match reason {
                    crate::policy::DenyReason::DeniedBy { .. } => {
                        crate::metrics::Denial::PolicyDeny
                    }
                    crate::policy::DenyReason::NoAllowMatch => crate::metrics::Denial::NoAllowMatch,
                };
                ctx.metrics.deny(counter);
                tracing::warn!(
                    reason = %reason,
                    src.identity = %conn.src_identity.as_ref().map(ToString::to_string).unwrap_or_else(|| "(plaintext)".into()),
                    src.ip = %conn.src_ip,
                    dst.identity = %self.identity(),
                    dst = %std::net::SocketAddr::new(conn.dst_ip, conn.dst_port),
                    "connection denied"
                );
                Err(reason)
            }
        }
    }
}
