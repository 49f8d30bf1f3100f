//! Tokens whose signature verified, kept so that a client sending the same
//! token on every request costs a hash lookup instead of a signature
//! verification (Envoy's per-provider `jwt_cache_config`; here one cache
//! serves every rule, and each hit is checked again against the rule).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use super::{Authenticated, jwks::PublicKey};

/// What a verified token yields, and what a later request needs to
/// re-check it without its signature.
#[derive(Debug)]
pub(crate) struct Verified {
    pub auth: Arc<Authenticated>,
    /// The key that verified the signature: a hit counts only while the
    /// rule's key set still holds it.
    pub key: Arc<PublicKey>,
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
    /// The payload as it was in the token (`outputPayloadToHeader`).
    pub payload_b64: Box<str>,
}

/// A bounded map from token to [`Verified`]. When full, tokens past their
/// `exp` go first, then the oldest entry.
#[derive(Debug)]
pub(crate) struct TokenCache {
    capacity: usize,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Box<str>, Entry>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry {
    verified: Arc<Verified>,
    /// Insertion order, for evicting the oldest.
    seq: u64,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            inner: RwLock::default(),
        }
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<Verified>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.entries.get(token).map(|e| e.verified.clone())
    }

    /// Keeps `verified` for `token`; `now` (Unix seconds) decides which
    /// entries have expired when room is needed.
    pub(crate) fn insert(&self, token: &str, verified: Arc<Verified>, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(token) {
            inner
                .entries
                .retain(|_, e| e.verified.exp.is_none_or(|exp| exp > now));
            if inner.entries.len() >= self.capacity {
                let oldest = inner
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.seq)
                    .map(|(token, _)| token.clone());
                if let Some(oldest) = oldest {
                    inner.entries.remove(&oldest);
                }
            }
        }
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner.entries.insert(token.into(), Entry { verified, seq });
    }

    pub(crate) fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.entries.len()
    }
}
