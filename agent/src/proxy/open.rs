//! The connections this agent delivers to its pods, authorized again when
//! a policy changes, as ztunnel does: a connection that an
//! AuthorizationPolicy or PeerAuthentication now denies is closed, and
//! its end logged with the reason and counted
//! (`weft_agent_connections_denied_total{reason="policy_revoked"}`).
//!
//! Every connection the agent authorized as a destination registers here
//! for its life ([`OpenConnections::register`]): L4 connections over
//! HBONE, plaintext, and from a pod of the same node; plaintext HTTP
//! connections too, for their PeerAuthentication (their requests are
//! authorized one by one). [`revalidate`] runs for the life of the agent:
//! on every change to the store it evaluates each open connection with
//! its pod's current policies and signals those now denied; their task
//! drops both sides.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

use super::{PodContext, ProxyContext};
use crate::policy::{Connection, Decision, DenyReason};

/// What the connections registered here are checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every policy: an L4 connection.
    Connection,
    /// PeerAuthentication only: an HTTP connection, whose requests are
    /// authorized one by one.
    PeerAuthentication,
}

struct Open {
    pod: Arc<PodContext>,
    conn: Connection,
    scope: Scope,
    revoked: Arc<Revoked>,
}

/// Set, with its reason, when a policy change denies the connection.
#[derive(Default)]
struct Revoked {
    notify: Notify,
    reason: Mutex<Option<DenyReason>>,
}

/// The open connections, by a number of their own.
#[derive(Default)]
pub struct OpenConnections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open, foldhash::fast::RandomState>>,
}

/// One registered connection: unregistered when dropped.
pub struct Tracked {
    id: u64,
    revoked: Arc<Revoked>,
    registry: Arc<OpenConnections>,
}

impl Tracked {
    /// Resolves when a policy change denies the connection, with the
    /// reason.
    pub async fn revoked(&self) -> DenyReason {
        loop {
            if let Some(reason) = self.revoked.reason.lock().expect("revoked lock").clone() {
                return reason;
            }
            self.revoked.notify.notified().await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        open.remove(&self.id);
        // A burst of connections grows the table; once it is mostly empty
        // it shrinks (to twice what is open), so the burst's memory does
        // not stay with the agent.
        if open.capacity() > SHRINK_ABOVE && open.len() < open.capacity() / 8 {
            let keep = open.len() * 2;
            open.shrink_to(keep);
        }
    }
}

/// Table capacity below which [`Tracked`]'s drop never shrinks it.
const SHRINK_ABOVE: usize = 1024;

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open, foldhash::fast::RandomState>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection to `pod` that was just authorized.
    pub fn register(
        self: &Arc<Self>,
        pod: &Arc<PodContext>,
        conn: Connection,
        scope: Scope,
    ) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let revoked = Arc::new(Revoked::default());
        self.lock().insert(
            id,
            Open {
                pod: pod.clone(),
                conn,
                scope,
                revoked: revoked.clone(),
            },
        );
        Tracked {
            id,
            revoked,
            registry: self.clone(),
        }
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Authorizes every open connection again with its pod's current
    /// policies; signals those now denied. Returns how many were.
    pub fn revalidate(&self, ctx: &ProxyContext) -> usize {
        // A snapshot: policies are evaluated without the lock held.
        let open: Vec<(Arc<PodContext>, Connection, Scope, Arc<Revoked>)> = self
            .lock()
            .values()
            .map(|o| (o.pod.clone(), o.conn.clone(), o.scope, o.revoked.clone()))
            .collect();
        // One policy lookup per pod and scope, not per connection.
        let mut policies = HashMap::new();
        let mut denied = 0;
        for (pod, conn, scope, revoked) in open {
            if revoked.reason.lock().expect("revoked lock").is_some() {
                continue;
            }
            let applied = policies
                .entry((Arc::as_ptr(&pod), scope))
                .or_insert_with(|| {
                    let mut all = pod.policies(ctx);
                    if scope == Scope::PeerAuthentication {
                        all.retain(|p| p.is_peer_authentication());
                    }
                    all
                });
            let Decision::Deny(reason) = crate::policy::evaluate(applied, &conn) else {
                continue;
            };
            denied += 1;
            ctx.metrics.deny(crate::metrics::Denial::PolicyRevoked);
            tracing::info!(
                reason = %reason,
                src.identity = %conn.src_identity.as_ref().map(ToString::to_string).unwrap_or_else(|| "(plaintext)".into()),
                src.ip = %conn.src_ip,
                dst.identity = %pod.identity(),
                dst = %std::net::SocketAddr::new(conn.dst_ip, conn.dst_port),
                "closing an open connection: a policy change denies it"
            );
            *revoked.reason.lock().expect("revoked lock") = Some(reason);
            revoked.notify.notify_one();
        }
        denied
    }
}

/// Authorizes the open connections again after every change to the
/// store's policies, for the life of the agent.
pub async fn revalidate(ctx: Arc<ProxyContext>) {
    let mut changes = ctx.store.subscribe();
    while changes.changed().await.is_ok() {
        if ctx.open.is_empty() {
            continue;
        }
        ctx.open.revalidate(&ctx);
    }
}

/// The error a connection closed by [`Tracked::revoked`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("closed: a policy change denies it ({0})")]
pub struct RevokedError(pub DenyReason);

impl Tracked {
    /// Runs `relay` (a connection's copy loop) until it ends, or until a
    /// policy change denies the connection: then it is dropped, which
    /// closes both sides, and the error is a [`RevokedError`]. A future of
    /// its own rather than an `async fn`, which would keep `relay` twice
    /// (see [`super::limits::UntilIdle`]).
    pub fn relay<'a, T, F>(
        &'a self,
        relay: F,
    ) -> impl std::future::Future<Output = std::io::Result<T>> + 'a
    where
        F: std::future::Future<Output = std::io::Result<T>> + 'a,
    {
        Revocable {
            relay,
            revoked: self.revoked(),
        }
    }
}

pin_project_lite::pin_project! {
    /// `relay` until it ends or `revoked` resolves ([`Tracked::relay`]).
    struct Revocable<F, R> {
        #[pin]
        relay: F,
        #[pin]
        revoked: R,
    }
}

impl<T, F, R> std::future::Future for Revocable<F, R>
where
    F: std::future::Future<Output = std::io::Result<T>>,
    R: std::future::Future<Output = DenyReason>,
{
    type Output = std::io::Result<T>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(moved) = this.relay.poll(cx) {
            return std::task::Poll::Ready(moved);
        }
        this.revoked.poll(cx).map(|reason| {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                RevokedError(reason),
            ))
        })
    }
}

/// Whether a connection ended because a policy change denied it, and the
/// access log's flag for how it ended otherwise.
pub fn end_flag(err: &std::io::Error) -> crate::l7::reply::Flag {
    if err
        .get_ref()
        .is_some_and(|inner| inner.is::<RevokedError>())
    {
        crate::l7::reply::Flag::RbacDenied
    } else {
        crate::l7::reply::Flag::UpstreamTerminated
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        state::{Identity, Workload, WorkloadNames},
        sys::Netns,
    };

    fn pod() -> Arc<PodContext> {
        let identity = Identity {
            trust_domain: "cluster.local".into(),
            namespace: "demo".into(),
            service_account: "client".into(),
        };
        Arc::new(PodContext {
            workload: Arc::new(Workload {
                uid: "Kubernetes//Pod/demo/client-1".into(),
                name: "client-1".into(),
                namespace: "demo".into(),
                ips: vec![[10, 0, 0, 1].into()],
                node: "node-1".into(),
                identity,
                hbone: true,
                host_network: false,
                services: HashMap::new(),
                policies: vec![],
                names: WorkloadNames::default(),
                telemetry: Default::default(),
            }),
            netns: Netns::open("/proc/self/ns/net").expect("this process's netns"),
            netns_cookie: 0,
            waits: Default::default(),
        })
    }

    #[test]
    fn the_table_shrinks_once_a_burst_has_closed() {
        let (pod, registry) = (pod(), Arc::new(OpenConnections::default()));
        let conn = Connection {
            src_identity: None,
            src_ip: [10, 0, 0, 2].into(),
            dst_ip: [10, 0, 0, 1].into(),
            dst_port: 8080,
        };
        let mut burst: Vec<Tracked> = (0..10_000)
            .map(|_| registry.register(&pod, conn.clone(), Scope::Connection))
            .collect();
        let grown = registry.lock().capacity();
        assert!(grown >= 10_000, "capacity {grown}");
        // Ten stay open; the rest close.
        let staying = burst.split_off(burst.len() - 10);
        drop(burst);
        let capacity = registry.lock().capacity();
        assert_eq!(registry.len(), 10);
        assert!(
            capacity <= 2 * SHRINK_ABOVE,
            "capacity {capacity} after the burst (was {grown})"
        );
        drop(staying);
        assert!(registry.is_empty());
    }
}
