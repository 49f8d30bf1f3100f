//! DestinationPolicy protos for the policy tests.

use weft_proto::route::{
    self as pb,
    load_balancer_settings::{
        ConsistentHashLb, LbPolicy as PbLb, SimpleLb,
        consistent_hash_lb::{HashAlgorithm as PbAlg, HashKey as PbKey},
    },
};

use super::*;

pub(super) const NAME: &str = "bookinfo/reviews.bookinfo.svc.cluster.local";

pub(super) fn pd(s: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s as i64,
        nanos: 0,
    })
}

pub(super) fn simple(lb: SimpleLb) -> Option<pb::LoadBalancerSettings> {
    Some(pb::LoadBalancerSettings {
        lb_policy: Some(PbLb::Simple(lb as i32)),
        ..Default::default()
    })
}

pub(super) fn hashing(
    key: PbKey,
    alg: Option<PbAlg>,
    deprecated_ring: u64,
) -> Option<pb::LoadBalancerSettings> {
    Some(pb::LoadBalancerSettings {
        lb_policy: Some(PbLb::ConsistentHash(ConsistentHashLb {
            hash_key: Some(key),
            hash_algorithm: alg,
            minimum_ring_size: deprecated_ring,
        })),
        ..Default::default()
    })
}

pub(super) fn lb_policy(lb: Option<pb::LoadBalancerSettings>) -> pb::TrafficPolicy {
    pb::TrafficPolicy {
        load_balancer: lb,
        ..Default::default()
    }
}

pub(super) fn entry(
    ns: &str,
    export_to: &[&str],
    tp: Option<pb::TrafficPolicy>,
) -> pb::ScopedPolicy {
    pb::ScopedPolicy {
        namespace: ns.into(),
        export_to: export_to.iter().map(|s| s.to_string()).collect(),
        host: "reviews.bookinfo.svc.cluster.local".into(),
        traffic_policy: tp,
        ..Default::default()
    }
}

pub(super) fn policy(entries: Vec<pb::ScopedPolicy>) -> pb::DestinationPolicy {
    pb::DestinationPolicy {
        name: NAME.into(),
        hostname: "reviews.bookinfo.svc.cluster.local".into(),
        namespace: "bookinfo".into(),
        policies: entries,
    }
}

pub(super) fn compile(entries: Vec<pb::ScopedPolicy>) -> Policies {
    Policies::compile(&policy(entries)).expect("compiles")
}

/// The effective policy of a single-entry policy with this traffic policy.
pub(super) fn effective(tp: pb::TrafficPolicy) -> EffectivePolicy {
    compile(vec![entry("bookinfo", &[], Some(tp))])
        .effective("bookinfo", "", 9080)
        .as_ref()
        .clone()
}

pub(super) fn compile_err(tp: pb::TrafficPolicy) -> PolicyError {
    Policies::compile(&policy(vec![entry("bookinfo", &[], Some(tp))])).expect_err("refused")
}
