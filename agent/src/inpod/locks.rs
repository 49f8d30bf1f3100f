//! One lock per pod: a CNI ADD, a DEL and the reconciler's work on a pod
//! wait for each other, and for nothing else. Setting a pod up takes a
//! certificate from the CA and netlink calls; with one lock for every
//! pod, 100 pods started at once on a node would each wait behind all
//! the others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A pod's namespace and name.
pub type PodKey = (String, String);

/// The locks of the pods being worked on (an entry lives while someone
/// holds or waits for it).
#[derive(Default)]
pub struct PodLocks {
    locks: Mutex<HashMap<PodKey, Arc<AsyncMutex<()>>>>,
}

/// Held while working on one pod.
pub struct PodGuard<'a> {
    locks: &'a PodLocks,
    key: PodKey,
    lock: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl PodLocks {
    /// Waits for the pod's lock.
    pub async fn lock(&self, key: &PodKey) -> PodGuard<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        PodGuard {
            locks: self,
            key: key.clone(),
            lock,
            guard: Some(guard),
        }
    }

    /// How many pods have a lock entry (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else holds or waits.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(name: &str) -> PodKey {
        ("ns".into(), name.into())
    }

    #[tokio::test]
    async fn pods_wait_only_for_themselves() {
        let locks = PodLocks::default();
        let a = locks.lock(&key("a")).await;
        // Another pod goes ahead while `a` is held.
        let b = tokio::time::timeout(Duration::from_secs(1), locks.lock(&key("b")))
            .await
            .expect("pod b waited for pod a");
        drop(b);
        // The same pod waits.
        let again = tokio::time::timeout(Duration::from_millis(50), locks.lock(&key("a"))).await;
        assert!(again.is_err(), "a second lock of pod a did not wait");
        drop(a);
        let again = tokio::time::timeout(Duration::from_secs(1), locks.lock(&key("a")))
            .await
            .expect("pod a's lock was not released");
        drop(again);
        assert_eq!(locks.len(), 0, "entries outlive their guards");
    }
}
