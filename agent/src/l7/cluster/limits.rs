//! Envoy's circuit breakers for one cluster: counters of what is in use,
//! each with its limit. Taking one past its limit fails (the caller
//! answers 503 with flag UO); a [`LimitGuard`] gives it back when dropped.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use super::PoolLimits;

/// One unit of a circuit breaker's budget, released on drop.
#[derive(Debug)]
#[must_use = "the limit is released as soon as the guard is dropped"]
pub struct LimitGuard {
    used: Arc<AtomicU32>,
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How much of each circuit breaker is in use, for the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitUsage {
    /// Active requests.
    pub requests: u32,
    /// Requests waiting for a connection.
    pub pending: u32,
    /// Active retries.
    pub retries: u32,
    /// Open upstream connections.
    pub connections: u32,
}

/// A counter with its limit. The counter is shared with the guards so that
/// a guard can outlive the borrow of its cluster.
#[derive(Debug)]
struct Breaker {
    used: Arc<AtomicU32>,
    max: u32,
}

impl Breaker {
    fn new(max: u32) -> Breaker {
        Breaker {
            used: Arc::new(AtomicU32::new(0)),
            max,
        }
    }

    fn try_take(&self) -> Option<LimitGuard> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| LimitGuard {
                used: self.used.clone(),
            })
    }

    fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }
}

/// The four circuit breakers Istio configures.
#[derive(Debug)]
pub(super) struct Limits {
    requests: Breaker,
    pending: Breaker,
    retries: Breaker,
    connections: Breaker,
}

impl Limits {
    pub(super) fn new(l: &PoolLimits) -> Limits {
        Limits {
            requests: Breaker::new(l.max_requests),
            pending: Breaker::new(l.max_pending_requests),
            retries: Breaker::new(l.max_retries),
            connections: Breaker::new(l.max_connections),
        }
    }

    pub(super) fn request(&self) -> Option<LimitGuard> {
        self.requests.try_take()
    }

    pub(super) fn pending(&self) -> Option<LimitGuard> {
        self.pending.try_take()
    }

    pub(super) fn retry(&self) -> Option<LimitGuard> {
        self.retries.try_take()
    }

    pub(super) fn connection(&self) -> Option<LimitGuard> {
        self.connections.try_take()
    }

    pub(super) fn usage(&self) -> LimitUsage {
        LimitUsage {
            requests: self.requests.used(),
            pending: self.pending.used(),
            retries: self.retries.used(),
            connections: self.connections.used(),
        }
    }
}
