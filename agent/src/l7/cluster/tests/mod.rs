//! Tests of the cluster module through its public API. Time and
//! randomness are inputs (`now`, `roll`), so everything is deterministic.

mod balance;
mod compile;
mod hash;
mod limits;
mod outlier;
mod policy;
mod proto;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;

/// `10.0.0.<i>:8080`, weight 1.
fn ep(i: u8) -> Endpoint {
    Endpoint {
        addr: SocketAddr::from((Ipv4Addr::new(10, 0, 0, i), 8080)),
        workload: None,
        weight: 1,
    }
}

/// Endpoints 1..=n.
fn eps(n: u8) -> Vec<Endpoint> {
    (1..=n).map(ep).collect()
}

fn weighted(i: u8, weight: u32) -> Endpoint {
    Endpoint { weight, ..ep(i) }
}

fn cluster_with(policy: EffectivePolicy) -> Cluster {
    Cluster::new(
        "default/svc.default.svc.cluster.local".into(),
        Arc::new(policy),
    )
}

fn cluster(lb: LbPolicy) -> Cluster {
    cluster_with(EffectivePolicy {
        lb,
        ..EffectivePolicy::defaults()
    })
}

/// Picks and drops the guard at once; the chosen address.
fn pick_addr(
    c: &Cluster,
    endpoints: &[Endpoint],
    hash: Option<u64>,
    roll: u64,
    now: Instant,
) -> SocketAddr {
    c.pick(endpoints, hash, roll, now)
        .expect("an endpoint")
        .endpoint
        .addr
}

/// A well-mixed 64-bit value for key `i` (stands in for request hashes).
fn key(i: u64) -> u64 {
    xxhash_rust::xxh64::xxh64(&i.to_le_bytes(), 7)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn shared_across_tasks() {
    fn check<T: Send + Sync>() {}
    check::<Policies>();
    check::<Cluster>();
    check::<Picked>();
    check::<LimitGuard>();
}
