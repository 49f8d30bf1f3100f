//! Pooled HBONE connections: one TLS + HTTP/2 connection carries many
//! CONNECT streams, as ztunnel does, so a new app connection to a mesh
//! workload costs a stream, not a TCP and TLS handshake.
//!
//! Connections are pooled per (source pod, destination identity,
//! destination HBONE address): per source pod rather than per source
//! identity, because the connection leaves from the pod's own namespace and
//! address. A connection carries at most [`hbone::MAX_STREAMS`] streams; a
//! full or closed one is passed over. Idle connections are closed after
//! [`IDLE_TIMEOUT`].

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

/// How long a connection with no stream is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

    /// Adds a new connection (`closed` turns true when its driver ends) and
    /// returns a lease on it.
    pub fn insert(&self, key: PoolKey, send: SendRequest<Bytes>, closed: Arc<AtomicBool>) -> Lease {
        let pooled = Arc::new(Pooled {
            send,
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

    /// Drops closed connections and those idle for longer than `idle`;
    /// dropping the last handle lets the connection close.
    pub fn sweep(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        let mut connections = self.connections.lock().expect("pool lock");
        connections.retain(|_, list| {
            list.retain(|c| {
                let keep = !c.closed.load(Ordering::Acquire)
                    && (c.streams.load(Ordering::Acquire) > 0
                        || now.duration_since(*c.idle_since.lock().expect("idle lock")) < idle);
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
            let removed = self.sweep(IDLE_TIMEOUT);
            if removed > 0 {
                tracing::debug!(removed, left = self.len(), "closed idle HBONE connections");
            }
        }
    }
}
