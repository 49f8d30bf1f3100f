//! What each connected agent was sent and acknowledged, for
//! `/debug/syncz` (like istiod's `istioctl proxy-status`).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

/// One xDS stream's state.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// Unique per stream within this process.
    pub connection: u64,
    /// The node the bootstrap token was issued to.
    pub node: String,
    /// `node.id` as the client sent it.
    pub node_id: String,
    pub peer: Option<String>,
    pub connected_at_unix: u64,
    /// Per subscribed type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// One type's subscription on a stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// Subscribed to every resource (`*`).
    pub wildcard: bool,
    /// Resources the client holds, as far as the server knows.
    pub resources: usize,
    pub responses_sent: u64,
    /// The type's version (`system_version_info`) in the last response.
    pub last_sent_version: String,
    pub last_sent_nonce: String,
    /// The version of the newest response the client ACKed: in sync when
    /// equal to `last_sent_version`.
    pub last_acked_version: String,
    pub last_acked_nonce: String,
    pub acks: u64,
    pub nacks: u64,
    /// The last rejection, kept until the stream ends.
    pub last_nack: Option<Nack>,
}

/// A rejected response.
#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    pub nonce: String,
    pub code: i32,
    pub message: String,
    pub at_unix: u64,
}

/// All live streams.
#[derive(Debug, Default)]
pub struct SyncRegistry {
    streams: Mutex<BTreeMap<u64, StreamStatus>>,
    next_id: AtomicU64,
}

/// Keeps a stream registered; unregisters it when dropped.
#[derive(Debug)]
pub struct StreamGuard {
    registry: Arc<SyncRegistry>,
    id: u64,
}

impl SyncRegistry {
    pub fn register(
        self: &Arc<Self>,
        node: &str,
        node_id: &str,
        peer: Option<String>,
    ) -> StreamGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let status = StreamStatus {
            connection: id,
            node: node.to_string(),
            node_id: node_id.to_string(),
            peer,
            connected_at_unix: unix_now(),
            types: BTreeMap::new(),
        };
        self.lock().insert(id, status);
        StreamGuard {
            registry: Arc::clone(self),
            id,
        }
    }

    /// Every live stream, oldest first.
    pub fn list(&self) -> Vec<StreamStatus> {
        self.lock().values().cloned().collect()
    }

    /// How many streams are live, and how many of them `f` accepts
    /// (without copying them, for callers that poll).
    pub fn count(&self, f: impl Fn(&StreamStatus) -> bool) -> (usize, usize) {
        let streams = self.lock();
        (streams.len(), streams.values().filter(|s| f(s)).count())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, StreamStatus>> {
        // The map stays consistent even if a holder panicked.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StreamGuard {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn update(&self, f: impl FnOnce(&mut StreamStatus)) {
        if let Some(status) = self.registry.lock().get_mut(&self.id) {
            f(status);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
