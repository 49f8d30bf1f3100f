//! Pooled HBONE connections: one TLS + HTTP/2 connection carries many
//! CONNECT streams, as ztunnel does, so a new app connection to a mesh
//! workload costs a stream, not a TCP and TLS handshake.
//!
//! Connections are pooled per (source pod, destination identity,
//! destination HBONE address): per source pod rather than per source
//! identity, because the connection leaves from the pod's own namespace and
//! address. A connection carries at most [`hbone::MAX_STREAMS`] streams; a
//! full or closed one is passed over. The first connection of a key that
//! is kept is closed after [`IDLE_TIMEOUT`] with no stream; the others,
//! which a burst opened beside it, after [`SPARE_IDLE_TIMEOUT`], so that a
//! burst's connections (about 140 KiB each once used: HTTP/2's slabs and
//! TLS buffers) do not stay a minute after it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use h2::client::SendRequest;

use super::hbone;
use crate::state::Identity;

/// How long a key's first connection with no stream is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a key's other connections with no stream are kept.
pub const SPARE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a pooled connection is shared by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub src_netns_cookie: u64,
    pub dst_identity: Identity,
    pub dst: SocketAddr,
}

/// One pooled connection.
pub struct Pooled {
    send: SendRequest<Bytes>,
    /// Its TCP connection's local address (the client pod's IP and an
    /// ephemeral port): the access log's `%UPSTREAM_LOCAL_ADDRESS%`.
    local: Option<SocketAddr>,
    streams: AtomicUsize,
    closed: Arc<AtomicBool>,
    idle_since: Mutex<Instant>,
}

impl Pooled {
    fn usable(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && self.streams.load(Ordering::Acquire) < hbone::MAX_STREAMS as usize
    }

    /// The connection failed under us: never hand it out again.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// A stream's claim on its connection; released on drop.
pub struct Lease(Arc<Pooled>);

impl Lease {
    pub fn send_request(&self) -> SendRequest<Bytes> {
        self.0.send.clone()
    }

    pub fn connection(&self) -> &Arc<Pooled> {
        &self.0
    }

    /// The connection's local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.0.local
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().expect("idle lock") = Instant::now();
        }
    }
}

/// The agent's HBONE connections.
#[derive(Default)]
pub struct Pool {
    connections: Mutex<HashMap<PoolKey, Vec<Arc<Pooled>>>>,
    /// Per key, held by the one task opening a new connection.
    opening: Mutex<HashMap<PoolKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Pool {
    /// A lease on an existing connection for `key` with room for a stream.
    pub fn checkout(&self, key: &PoolKey) -> Option<Lease> {
        let connections = self.connections.lock().expect("pool lock");
        let pooled = connections.get(key)?.iter().find(|c| c.usable())?.clone();
        pooled.streams.fetch_add(1, Ordering::AcqRel);
        Some(Lease(pooled))
    }

    /// The lock a task holds while it opens a new connection for `key`:
    /// the others wait, then take streams on that connection. Without it
    /// a cold or full pool starts a handshake per app connection at once,
    /// and the peer refuses those over its per-source handshake limit.
    pub fn opening(&self, key: &PoolKey) -> Arc<tokio::sync::Mutex<()>> {
        self.opening
            .lock()
            .expect("pool lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Adds a new connection (`closed` turns true when its driver ends;
    /// `local`: its local address) and returns a lease on it.
    pub fn insert(
        &self,
        key: PoolKey,
        send: SendRequest<Bytes>,
        closed: Arc<AtomicBool>,
        local: Option<SocketAddr>,
    ) -> Lease {
        let pooled = Arc::new(Pooled {
            send,
            local,
            streams: AtomicUsize::new(1),
            closed,
            idle_since: Mutex::new(Instant::now()),
        });
        self.connections
            .lock()
            .expect("pool lock")
            .entry(key)
            .or_default()
            .push(pooled.clone());
        Lease(pooled)
    }

    /// Drops closed connections, and those without a stream for longer
    /// than `idle` (a key's first connection kept, in the order
    /// [`Pool::checkout`] tries them) or `spare` (the others); dropping
    /// the last handle lets the connection close.
    pub fn sweep(&self, idle: Duration, spare: Duration) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        let mut connections = self.connections.lock().expect("pool lock");
        connections.retain(|_, list| {
            let mut kept_one = false;
            list.retain(|c| {
                let keep = !c.closed.load(Ordering::Acquire)
                    && (c.streams.load(Ordering::Acquire) > 0 || {
                        let since = *c.idle_since.lock().expect("idle lock");
                        now.duration_since(since) < if kept_one { spare } else { idle }
                    });
                kept_one |= keep;
                removed += usize::from(!keep);
                keep
            });
            !list.is_empty()
        });
        // Locks nobody holds or waits for, of keys with no connection.
        self.opening
            .lock()
            .expect("pool lock")
            .retain(|key, lock| Arc::strong_count(lock) > 1 || connections.contains_key(key));
        removed
    }

    /// Number of pooled connections.
    pub fn len(&self) -> usize {
        self.connections
            .lock()
            .expect("pool lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sweeps every few seconds until the process ends.
    pub async fn run_sweeper(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let removed = self.sweep(IDLE_TIMEOUT, SPARE_IDLE_TIMEOUT);
            if removed > 0 {
                tracing::debug!(removed, left = self.len(), "closed idle HBONE connections");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's sending half, its peer served by a task of its own.
    async fn connection() -> (SendRequest<Bytes>, Arc<AtomicBool>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut server = h2::server::handshake(server)
                .await
                .expect("server handshake");
            while server.accept().await.is_some() {}
        });
        let (send, driver) = h2::client::handshake(client)
            .await
            .expect("client handshake");
        tokio::spawn(driver);
        (send, Arc::default())
    }

    fn key(n: u64) -> PoolKey {
        PoolKey {
            src_netns_cookie: n,
            dst_identity: "spiffe://cluster.local/ns/ns/sa/sa"
                .parse()
                .expect("identity"),
            dst: "10.0.0.1:15008".parse().expect("address"),
        }
    }

    /// Backdates when `lease`'s connection went idle, once released.
    fn idle_for(lease: Lease, for_: Duration) {
        let pooled = lease.connection().clone();
        drop(lease);
        *pooled.idle_since.lock().expect("idle lock") = Instant::now() - for_;
    }

    #[tokio::test]
    async fn a_bursts_spare_connections_close_before_the_first_one() {
        let pool = Pool::default();
        // A burst opened three connections for one key and one for another.
        let mut leases = Vec::new();
        for _ in 0..3 {
            let (send, closed) = connection().await;
            leases.push(pool.insert(key(1), send, closed, None));
        }
        let (send, closed) = connection().await;
        let other = pool.insert(key(2), send, closed, None);
        assert_eq!(pool.len(), 4);

        // All idle for 30 s: each key's first connection stays, the two
        // spares of key 1 go.
        let third = leases.pop().expect("third");
        let second = leases.pop().expect("second");
        let first = leases.pop().expect("first");
        let first_conn = first.connection().clone();
        for lease in [first, second, third] {
            idle_for(lease, Duration::from_secs(30));
        }
        idle_for(other, Duration::from_secs(30));
        assert_eq!(pool.sweep(IDLE_TIMEOUT, SPARE_IDLE_TIMEOUT), 2);
        assert_eq!(pool.len(), 2);
        let lease = pool
            .checkout(&key(1))
            .expect("the first connection is kept");
        assert!(Arc::ptr_eq(lease.connection(), &first_conn));

        // Past the idle timeout, it goes too.
        idle_for(lease, IDLE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(pool.sweep(IDLE_TIMEOUT, SPARE_IDLE_TIMEOUT), 1);
        assert!(pool.checkout(&key(1)).is_none());
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn a_spare_behind_a_busy_connection_closes_and_a_busy_one_never_does() {
        let pool = Pool::default();
        let (send, closed) = connection().await;
        let busy = pool.insert(key(1), send, closed, None);
        let (send, closed) = connection().await;
        let spare = pool.insert(key(1), send, closed, None);
        idle_for(spare, SPARE_IDLE_TIMEOUT + Duration::from_secs(1));
        // The busy one has been open for as long, with a stream.
        *busy.connection().idle_since.lock().expect("idle lock") =
            Instant::now() - IDLE_TIMEOUT * 2;
        assert_eq!(pool.sweep(IDLE_TIMEOUT, SPARE_IDLE_TIMEOUT), 1);
        assert_eq!(pool.len(), 1);
        // A closed connection goes whatever its streams.
        busy.connection().mark_closed();
        assert_eq!(pool.sweep(IDLE_TIMEOUT, SPARE_IDLE_TIMEOUT), 1);
        assert!(pool.is_empty());
    }
}
