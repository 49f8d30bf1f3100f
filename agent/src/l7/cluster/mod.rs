//! A destination's DestinationRule (`weft.route.v1.DestinationPolicy`)
//! applied: load balancing, connection-pool limits, outlier detection.
//!
//! Per request, once a route has chosen a destination (service key,
//! subset, port):
//!
//! 1. [`Policies::effective`] gives the [`EffectivePolicy`] for the
//!    client's namespace, the subset and the port ([`Policies::compile`]
//!    turned the service's DestinationPolicy into [`Policies`] once).
//! 2. The [`Cluster`] for (service, subset, port, policy), shared by every
//!    client pod on the node, checks the circuit breakers
//!    ([`Cluster::try_request`] and friends), then [`Cluster::pick`]s an
//!    endpoint, passing over the ones outlier detection ejected. For a
//!    consistent-hash policy, [`request_hash`] hashes the request first.
//! 3. Each attempt's outcome goes back through [`Cluster::report`].
//!
//! Semantics are Envoy's as Istio configures it; where this differs, the
//! item says so. The differences, in short:
//!
//! * Weights count for every balancer (Envoy's random ignores them), and
//!   weighted least request compares `(active + 1) / weight` of two
//!   weighted draws instead of running Envoy's scheduler.
//! * The ring hash gives each unit of weight `minimum_ring_size` points
//!   (within a 65,536-point budget), so an endpoint's points do not depend
//!   on the others: removing one moves only its keys.
//! * What Envoy does on its `interval` timer (returning ejected endpoints,
//!   decaying the ejection multiplier) happens lazily at the next look.
//!
//! Nothing here does I/O or reads the clock: the caller passes `now` and a
//! random `roll`, so tests are deterministic.

#![warn(missing_docs)]

mod balance;
mod compile;
mod hash;
mod limits;
mod outlier;
mod policy;

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

pub use hash::{SetCookie, ip_hash, request_hash};
pub use limits::{LimitGuard, LimitUsage};
pub use policy::{
    DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MINIMUM_RING_SIZE,
    EffectivePolicy, H2Upgrade, HashAlgorithm, HashKey, LbPolicy, MAX_MAGLEV_TABLE_SIZE,
    MAX_RING_SIZE, OutlierConfig, Policies, PolicyError, PoolLimits, TcpProxySettings, TlsMode,
    TlsOrigination, UNLIMITED,
};

use balance::Rng;
use hash::HashTable;
use limits::Limits;
use outlier::HostOutlier;

/// One endpoint a request may go to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Where to connect (the outlier and balancer state's key).
    pub addr: SocketAddr,
    /// The workload behind it, when known.
    pub workload: Option<Arc<crate::state::Workload>>,
    /// Relative share of picks; 0 counts as 1.
    pub weight: u32,
}

/// The outcome of one attempt on an endpoint, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The endpoint answered with this status.
    Status(u16),
    /// Connect failure, reset or timeout: the endpoint never answered.
    LocalOriginFailure,
    /// The attempt succeeded (same as a non-5xx status).
    Success,
}

/// The endpoint [`Cluster::pick`] chose. Counts as one active request on
/// it (what least request balances on) until dropped.
#[derive(Debug)]
pub struct Picked {
    /// The chosen endpoint, as passed to `pick`.
    pub endpoint: Endpoint,
    /// `None` for [`Picked::passthrough`].
    _active: Option<ActiveRequest>,
}

impl Picked {
    /// `endpoint`, chosen by no balancer (the original destination of a
    /// `PASSTHROUGH` cluster): nothing counts its requests.
    pub fn passthrough(endpoint: Endpoint) -> Picked {
        Picked {
            endpoint,
            _active: None,
        }
    }
}

#[derive(Debug)]
struct ActiveRequest(Arc<AtomicU64>);

/// What a request holds at its cluster while it is in flight: one unit of
/// `max_requests` ([`Cluster::try_request`]) and one active request on its
/// endpoint (what least request compares). Envoy counts both until the
/// stream is done, so the request keeps this until its response's body
/// has ended or been dropped, not only until the response's head.
#[derive(Debug)]
pub struct InFlight {
    _request: LimitGuard,
    _endpoint: Picked,
}

impl InFlight {
    /// The request's `max_requests` unit and its endpoint.
    pub fn new(request: LimitGuard, endpoint: Picked) -> InFlight {
        InFlight {
            _request: request,
            _endpoint: endpoint,
        }
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-endpoint state.
#[derive(Debug)]
struct Host {
    addr: SocketAddr,
    weight: u32,
    /// Shared with the [`Picked`] guards, which may outlive this entry.
    active: Arc<AtomicU64>,
    /// Smooth weighted round robin's running credit.
    rr_credit: i64,
    outlier: HostOutlier,
}

impl Host {
    fn new(addr: SocketAddr, weight: u32) -> Host {
        Host {
            addr,
            weight,
            active: Arc::new(AtomicU64::new(0)),
            rr_credit: 0,
            outlier: HostOutlier::default(),
        }
    }
}

/// The hosts, in the order of the endpoint list last passed to `pick`.
#[derive(Debug, Default)]
struct Hosts {
    hosts: Vec<Host>,
    by_addr: HashMap<SocketAddr, usize>,
    rr_next: u64,
}

impl Hosts {
    /// Follows a new endpoint list, keeping the state of addresses that
    /// stay (so per-endpoint state survives list changes, keyed by addr).
    fn sync(&mut self, endpoints: &[Endpoint]) {
        let same = endpoints.len() == self.hosts.len()
            && endpoints
                .iter()
                .zip(&self.hosts)
                .all(|(e, h)| e.addr == h.addr && e.weight.max(1) == h.weight);
        if same {
            return;
        }
        let mut old: HashMap<SocketAddr, Host> =
            self.hosts.drain(..).map(|h| (h.addr, h)).collect();
        self.by_addr.clear();
        for (i, e) in endpoints.iter().enumerate() {
            let weight = e.weight.max(1);
            let mut host = old
                .remove(&e.addr)
                .unwrap_or_else(|| Host::new(e.addr, weight));
            if host.weight != weight {
                host.weight = weight;
                host.rr_credit = 0;
            }
            self.by_addr.insert(e.addr, i);
            self.hosts.push(host);
        }
    }
}

/// Per (service key, subset, port, policy) state shared by every request
/// of every client pod on this node: balancer state, per-endpoint active
/// requests, outlier state, circuit breakers.
pub struct Cluster {
    name: String,
    policy: Arc<EffectivePolicy>,
    limits: Limits,
    hosts: Mutex<Hosts>,
    /// The consistent-hash table for the last candidate list. Built
    /// outside the hosts lock (a Maglev table takes a while).
    table: Mutex<Option<Arc<HashTable>>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("limits", &self.limits.usage())
            .finish_non_exhaustive()
    }
}

/// What one look at the hosts decided.
enum Attempt {
    Picked(Picked),
    Nothing,
    /// The consistent-hash table for these candidates must be built.
    NeedTable(Vec<(SocketAddr, u32)>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// A cluster with fresh state.
    pub fn new(name: String, policy: Arc<EffectivePolicy>) -> Cluster {
        Cluster {
            name,
            limits: Limits::new(&policy.limits),
            policy,
            hosts: Mutex::new(Hosts::default()),
            table: Mutex::new(None),
        }
    }

    /// Its name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy it applies.
    pub fn policy(&self) -> &Arc<EffectivePolicy> {
        &self.policy
    }

    /// Picks an endpoint among `endpoints` (the destination's current
    /// list, in a stable order; per-endpoint state follows `addr` across
    /// changes), passing over ejected ones unless fewer than
    /// `min_health_percent` are healthy (panic: all of them). `hash` is the
    /// request's hash for a consistent-hash policy (`None`: random, as
    /// Envoy does); `roll` is a random number from the caller. `None` only
    /// when `endpoints` is empty, or all are ejected and no panic applies.
    ///
    /// [`LbPolicy::Passthrough`] picks at random; the caller is expected to
    /// send such requests to the original destination instead.
    pub fn pick(
        &self,
        endpoints: &[Endpoint],
        hash: Option<u64>,
        roll: u64,
        now: Instant,
    ) -> Option<Picked> {
        self.pick_attempt(endpoints, hash, 0, roll, now)
    }

    /// [`Cluster::pick`] as host selection attempt `attempt` of one
    /// request: for a consistent hash, attempt `n > 0` moves off the host
    /// the hash lands on, as Envoy's does when the host was already tried
    /// (a ring hash takes the `n`th point after the hash's, Maglev looks
    /// the hash up with its bits flipped), so that a retry can reach a
    /// neighbour instead of the host that just failed.
    pub fn pick_attempt(
        &self,
        endpoints: &[Endpoint],
        hash: Option<u64>,
        attempt: u32,
        roll: u64,
        now: Instant,
    ) -> Option<Picked> {
        if endpoints.is_empty() {
            return None;
        }
        let hash = hash.map(|hash| (hash, attempt));
        match self.look(endpoints, hash, roll, now, None) {
            Attempt::Picked(p) => Some(p),
            Attempt::Nothing => None,
            Attempt::NeedTable(key) => {
                let LbPolicy::ConsistentHash { algorithm, .. } = &self.policy.lb else {
                    return None;
                };
                let table = Arc::new(HashTable::build(algorithm, key));
                *lock(&self.table) = Some(table.clone());
                match self.look(endpoints, hash, roll, now, Some(&table)) {
                    Attempt::Picked(p) => Some(p),
                    Attempt::Nothing | Attempt::NeedTable(_) => None,
                }
            }
        }
    }

    /// One pick under the hosts lock. Without a matching consistent-hash
    /// table, asks for one to be built outside the lock; `fresh` is the one
    /// just built (used even if another thread replaced the cached one
    /// since), and if the candidates changed meanwhile (an ejection ended),
    /// this second look builds under the lock rather than loop.
    fn look(
        &self,
        endpoints: &[Endpoint],
        hash: Option<(u64, u32)>,
        roll: u64,
        now: Instant,
        fresh: Option<&Arc<HashTable>>,
    ) -> Attempt {
        let mut guard = lock(&self.hosts);
        let state = &mut *guard;
        state.sync(endpoints);
        let cands = self.candidates(&mut state.hosts, now);
        if cands.is_empty() {
            return Attempt::Nothing;
        }
        let mut rng = Rng::new(roll);
        let chosen = match (&self.policy.lb, hash) {
            (LbPolicy::RoundRobin, _) => {
                balance::round_robin(&mut state.rr_next, &mut state.hosts, &cands)
            }
            (LbPolicy::LeastRequest, _) => balance::least_request(&state.hosts, &cands, &mut rng),
            (LbPolicy::ConsistentHash { algorithm, .. }, Some(hash)) => {
                let key = || {
                    cands
                        .iter()
                        .map(|&i| (state.hosts[i].addr, state.hosts[i].weight))
                };
                let cached = lock(&self.table).clone();
                let table = [fresh.cloned(), cached]
                    .into_iter()
                    .flatten()
                    .find(|t| t.built_for(key()));
                let (hash, attempt) = hash;
                match table {
                    Some(t) => cands[t.lookup(hash, attempt).min(cands.len() - 1)],
                    None if fresh.is_some() => {
                        let t = HashTable::build(algorithm, key().collect());
                        let i = cands[t.lookup(hash, attempt).min(cands.len() - 1)];
                        *lock(&self.table) = Some(Arc::new(t));
                        i
                    }
                    None => return Attempt::NeedTable(key().collect()),
                }
            }
            (LbPolicy::Random | LbPolicy::Passthrough | LbPolicy::ConsistentHash { .. }, _) => {
                balance::random(&state.hosts, &cands, &mut rng)
            }
        };
        let host = &state.hosts[chosen];
        host.active.fetch_add(1, Ordering::Relaxed);
        Attempt::Picked(Picked {
            endpoint: endpoints[chosen].clone(),
            _active: Some(ActiveRequest(host.active.clone())),
        })
    }

    /// Indices of the hosts a pick may choose: those not ejected, or all
    /// in panic mode.
    fn candidates(&self, hosts: &mut [Host], now: Instant) -> Vec<usize> {
        let n = hosts.len();
        let all = || (0..n).collect();
        let Some(cfg) = &self.policy.outlier else {
            return all();
        };
        let healthy: Vec<usize> = (0..n)
            .filter(|&i| !hosts[i].outlier.is_ejected(cfg, now))
            .collect();
        if healthy.len() < n && outlier::panics(cfg, healthy.len(), n) {
            return all();
        }
        healthy
    }

    /// Feeds one attempt's result to outlier detection. Results for
    /// addresses not in the last endpoint list are ignored.
    pub fn report(&self, addr: SocketAddr, result: AttemptResult, now: Instant) {
        let Some(cfg) = &self.policy.outlier else {
            return;
        };
        let mut state = lock(&self.hosts);
        let Some(&i) = state.by_addr.get(&addr) else {
            return;
        };
        let host = &mut state.hosts[i].outlier;
        // Late results from an ejected endpoint change nothing: its
        // counters restart when it returns.
        if host.is_ejected(cfg, now) {
            return;
        }
        let Some(detector) = host.record(cfg, result) else {
            return;
        };
        host.reset(detector);
        let total = state.hosts.len();
        let ejected = state
            .hosts
            .iter_mut()
            .filter_map(|h| h.outlier.is_ejected(cfg, now).then_some(()))
            .count();
        if outlier::may_eject(cfg, ejected, total) {
            state.hosts[i].outlier.eject(cfg, now);
            tracing::debug!(cluster = %self.name, endpoint = %addr, ?detector, "outlier ejected");
        }
    }

    /// Takes one active request (`max_requests`), if under the limit.
    pub fn try_request(&self) -> Option<LimitGuard> {
        self.limits.request()
    }

    /// Takes one request waiting for a connection (`max_pending_requests`).
    pub fn try_pending(&self) -> Option<LimitGuard> {
        self.limits.pending()
    }

    /// Takes one active retry (`max_retries`).
    pub fn try_retry(&self) -> Option<LimitGuard> {
        self.limits.retry()
    }

    /// Takes one open upstream connection (`max_connections`).
    pub fn try_connection(&self) -> Option<LimitGuard> {
        self.limits.connection()
    }

    /// How much of each circuit breaker is in use.
    pub fn limit_usage(&self) -> LimitUsage {
        self.limits.usage()
    }

    /// The endpoints ejected at `now`, for logs and the admin API.
    pub fn ejected(&self, now: Instant) -> Vec<SocketAddr> {
        let Some(cfg) = &self.policy.outlier else {
            return Vec::new();
        };
        let mut state = lock(&self.hosts);
        state
            .hosts
            .iter_mut()
            .filter_map(|h| h.outlier.is_ejected(cfg, now).then_some(h.addr))
            .collect()
    }

    /// Active requests (picked and not yet dropped) on an endpoint.
    pub fn active_requests(&self, addr: SocketAddr) -> u64 {
        let state = lock(&self.hosts);
        state
            .by_addr
            .get(&addr)
            .map_or(0, |&i| state.hosts[i].active.load(Ordering::Relaxed))
    }
}
