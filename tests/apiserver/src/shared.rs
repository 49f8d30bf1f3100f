//! The state every connection shares: store, registry, tokens, counters,
//! and the change signal open watches wait on. All writes, from the HTTP
//! API and from `ApiServer`'s test helpers alike, go through `Shared::write`
//! so they have the same effects (rv bump, watch events, CRD registration,
//! namespace cascade).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::meta::meta_str;
use crate::registry::{Registry, Resource, resource_from_crd};
use crate::status::ApiError;
use crate::store::{EventType, Store};

/// State shared by the listener, every connection and every `ApiServer` clone.
pub struct Shared {
    store: Mutex<Store>,
    registry: RwLock<Registry>,
    tokens: Mutex<Tokens>,
    counts: Mutex<HashMap<String, u64>>,
    /// Bumped after every write, compaction or watch drop; watches wait on it.
    changes: watch::Sender<u64>,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: std::time::Duration,
}

impl Shared {
    /// Empty state serving `registry`.
    pub fn new(registry: Registry, bookmark_interval: std::time::Duration) -> Self {
        Shared {
            store: Mutex::new(Store::default()),
            registry: RwLock::new(registry),
            tokens: Mutex::new(Tokens::default()),
            counts: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
            bookmark_interval,
        }
    }

    /// The store, for reads and for the watch loop.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the store consistent enough for a test double.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource types, for lookups.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource types, to register or unregister.
    pub fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The known bearer tokens.
    pub fn tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes every open watch.
    pub fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Counts one request with this verb.
    pub fn count(&self, verb: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(verb.to_string()).or_default() += 1;
    }

    /// Requests seen with this verb.
    pub fn request_count(&self, verb: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(verb).copied().unwrap_or(0)
    }

    /// Runs one write against the store under its lock, then applies its
    /// side effects (CRD (un)registration, namespace cascade) and wakes watches.
    pub fn write(
        &self,
        resource: &Resource,
        dry_run: bool,
        operation: impl FnOnce(&mut Store) -> Result<(Arc<Value>, EventType), ApiError>,
    ) -> Result<(Arc<Value>, EventType), ApiError> {
        let mut store = self.store();
        let (object, event) = operation(&mut store)?;
        if !dry_run {
            if resource.group.is_empty()
                && resource.plural == "namespaces"
                && event == EventType::Deleted
            {
                store.delete_namespace_contents(meta_str(&object, "name"));
            }
            if resource.group == "apiextensions.k8s.io"
                && resource.plural == "customresourcedefinitions"
            {
                self.sync_crd(&object, event);
            }
        }
        drop(store);
        self.notify();
        Ok((object, event))
    }

    /// Serves (or stops serving) the resource a CRD object declares.
    fn sync_crd(&self, crd: &Value, event: EventType) {
        let Some(resource) = resource_from_crd(crd) else {
            tracing::warn!(
                name = meta_str(crd, "name"),
                "CRD object without group, names or served versions; not serving it"
            );
            return;
        };
        let mut registry = self.registry_mut();
        if event == EventType::Deleted {
            registry.remove(&resource.group, &resource.plural);
        } else {
            registry.insert(resource);
        }
    }
}
