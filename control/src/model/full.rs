//! A type's whole state as response bodies, encoded once per model
//! version: the first sync of a wildcard client that holds nothing is the
//! same for every client (but for its nonce), so hundreds of agents
//! connecting together share these buffers instead of each assembling and
//! copying tens of megabytes.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use super::Resources;

/// Resources per chunk: a response carries at most this many (about 3 MB
/// of workloads), so no stream's buffers grow to the size of the mesh.
pub const CHUNK: usize = 2_000;

/// Every resource of one type, as ready-made `resources` fields of
/// `DeltaDiscoveryResponse`s.
#[derive(Debug)]
pub struct FullState {
    /// Concatenated framed resources, at most [`CHUNK`] each, with how
    /// many they hold.
    pub chunks: Vec<(Bytes, usize)>,
}

impl FullState {
    fn build(resources: &Resources) -> Self {
        let mut chunks = Vec::new();
        let mut buf = BytesMut::new();
        let mut count = 0;
        for r in resources.values() {
            if count == CHUNK {
                chunks.push((std::mem::take(&mut buf).freeze(), count));
                count = 0;
            }
            buf.extend_from_slice(&r.framed);
            count += 1;
        }
        if count > 0 || chunks.is_empty() {
            chunks.push((buf.freeze(), count));
        }
        FullState { chunks }
    }
}

/// One lazily built [`FullState`] per served type. A model's clone (the
/// next version) starts empty.
#[derive(Debug, Default)]
pub struct FullStates([OnceLock<Arc<FullState>>; weft_proto::TYPE_URLS.len()]);

impl Clone for FullStates {
    fn clone(&self) -> Self {
        FullStates::default()
    }
}

impl FullStates {
    /// The full state of type number `i` (its place in the served
    /// types), built from `resources` the first time.
    pub fn get(&self, i: usize, resources: &Resources) -> Arc<FullState> {
        Arc::clone(self.0[i].get_or_init(|| Arc::new(FullState::build(resources))))
    }
}
