use std::collections::HashSet;

use super::*;

/// Istio's defaults with outlier detection set, but every endpoint may be
/// ejected.
fn config() -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: Some(5),
        consecutive_gateway: None,
        consecutive_local_origin: None,
        split_local_origin: false,
        interval: secs(10),
        base_ejection_time: secs(30),
        max_ejection_time: secs(300),
        max_ejection_percent: 100,
        min_health_percent: 0,
    }
}

fn detecting(cfg: OutlierConfig) -> Cluster {
    cluster_with(EffectivePolicy {
        lb: LbPolicy::RoundRobin,
        outlier: Some(cfg),
        ..EffectivePolicy::defaults()
    })
}

fn report_n(c: &Cluster, addr: SocketAddr, result: AttemptResult, n: usize, now: Instant) {
    for _ in 0..n {
        c.report(addr, result, now);
    }
}

/// Which endpoints picks reach at `now`.
fn reachable(c: &Cluster, e: &[Endpoint], now: Instant) -> HashSet<SocketAddr> {
    (0..(e.len() as u64 * 4))
        .filter_map(|r| c.pick(e, None, r, now).map(|p| p.endpoint.addr))
        .collect()
}

/// A cluster that has seen `e` (reports only count for listed endpoints).
fn seen(cfg: OutlierConfig, e: &[Endpoint], now: Instant) -> Cluster {
    let c = detecting(cfg);
    drop(c.pick(e, None, 0, now));
    c
}

#[test]
fn consecutive_5xx_eject_until_the_ejection_time() {
    let t0 = Instant::now();
    let e = eps(3);
    let c = seen(config(), &e, t0);
    let bad = e[1].addr;
    report_n(&c, bad, AttemptResult::Status(500), 4, t0);
    assert!(c.ejected(t0).is_empty(), "4 of 5");
    c.report(bad, AttemptResult::Status(503), t0);
    assert_eq!(c.ejected(t0), [bad]);
    let rest: HashSet<_> = [e[0].addr, e[2].addr].into();
    assert_eq!(reachable(&c, &e, t0), rest);
    let nearly = t0 + secs(30) - Duration::from_millis(1);
    assert_eq!(c.ejected(nearly), [bad]);
    assert_eq!(reachable(&c, &e, nearly), rest);
    // Back at the first look at or after 30 s.
    assert!(c.ejected(t0 + secs(30)).is_empty());
    assert_eq!(reachable(&c, &e, t0 + secs(30)).len(), 3);
}

#[test]
fn a_success_resets_the_count() {
    let t0 = Instant::now();
    let e = eps(2);
    let c = seen(config(), &e, t0);
    let a = e[0].addr;
    report_n(&c, a, AttemptResult::Status(500), 4, t0);
    c.report(a, AttemptResult::Status(404), t0);
    report_n(&c, a, AttemptResult::Status(500), 4, t0);
    c.report(a, AttemptResult::Success, t0);
    report_n(&c, a, AttemptResult::Status(502), 4, t0);
    assert!(c.ejected(t0).is_empty());
    c.report(a, AttemptResult::Status(500), t0);
    assert_eq!(c.ejected(t0), [a]);
}

#[test]
fn ejection_time_grows_and_is_capped() {
    let e = eps(2);
    let mut now = Instant::now();
    let c = seen(config(), &e, now);
    let a = e[0].addr;
    // Ejected again as soon as it returns: 30 s, 60 s, ... capped at 300 s.
    for n in 1..=12u64 {
        report_n(&c, a, AttemptResult::Status(500), 5, now);
        let time = secs(30 * n.min(10));
        assert_eq!(
            c.ejected(now + time - Duration::from_millis(1)),
            [a],
            "ejection {n}"
        );
        now += time;
        assert!(c.ejected(now).is_empty(), "ejection {n} lasts {time:?}");
    }
}

#[test]
fn staying_healthy_decays_the_multiplier() {
    let e = eps(2);
    let mut now = Instant::now();
    let c = seen(config(), &e, now);
    let a = e[0].addr;
    for n in 1..=3 {
        report_n(&c, a, AttemptResult::Status(500), 5, now);
        now += secs(30 * n);
    }
    // Returned at `now` after ejections of 30, 60 and 90 s (multiplier 3).
    // Two healthy intervals bring it down to 1: the next ejection is 60 s.
    now += secs(20);
    assert!(c.ejected(now).is_empty());
    report_n(&c, a, AttemptResult::Status(500), 5, now);
    assert_eq!(c.ejected(now + secs(59)), [a]);
    assert!(c.ejected(now + secs(60)).is_empty());
    // Long healthy: back to the base time.
    now += secs(60) + secs(3600);
    assert!(c.ejected(now).is_empty());
    report_n(&c, a, AttemptResult::Status(500), 5, now);
    assert_eq!(c.ejected(now + secs(29)), [a]);
    assert!(c.ejected(now + secs(30)).is_empty());
}

#[test]
fn max_ejection_percent_caps_ejections() {
    let now = Instant::now();
    let e = eps(4);
    let c = seen(
        OutlierConfig {
            max_ejection_percent: 50,
            ..config()
        },
        &e,
        now,
    );
    for ep in &e {
        report_n(&c, ep.addr, AttemptResult::Status(500), 5, now);
    }
    assert_eq!(c.ejected(now), [e[0].addr, e[1].addr], "2 of 4 is 50 %");
    // The refused one needs a full new run of errors, once there is room.
    let later = now + secs(30);
    assert!(c.ejected(later).is_empty());
    report_n(&c, e[2].addr, AttemptResult::Status(500), 4, later);
    assert!(c.ejected(later).is_empty());
    c.report(e[2].addr, AttemptResult::Status(500), later);
    assert_eq!(c.ejected(later), [e[2].addr]);
}

#[test]
fn default_ten_percent_needs_ten_endpoints() {
    // Envoy's rule: the share after ejecting must stay within the
    // percentage, so with 10 % nothing is ejected below 10 endpoints.
    let now = Instant::now();
    let cfg = OutlierConfig {
        max_ejection_percent: 10,
        ..config()
    };
    let e = eps(9);
    let c = seen(cfg.clone(), &e, now);
    report_n(&c, e[0].addr, AttemptResult::Status(500), 5, now);
    assert!(c.ejected(now).is_empty());
    let e = eps(10);
    let c = seen(cfg, &e, now);
    report_n(&c, e[0].addr, AttemptResult::Status(500), 5, now);
    report_n(&c, e[1].addr, AttemptResult::Status(500), 5, now);
    assert_eq!(c.ejected(now), [e[0].addr]);
}

#[test]
fn below_min_health_picks_ignore_ejections() {
    let now = Instant::now();
    let e = eps(4);
    let c = seen(
        OutlierConfig {
            min_health_percent: 50,
            ..config()
        },
        &e,
        now,
    );
    report_n(&c, e[0].addr, AttemptResult::Status(500), 5, now);
    report_n(&c, e[1].addr, AttemptResult::Status(500), 5, now);
    // 2 of 4 healthy: 50 %, not below.
    assert_eq!(
        reachable(&c, &e, now),
        HashSet::from([e[2].addr, e[3].addr])
    );
    report_n(&c, e[2].addr, AttemptResult::Status(500), 5, now);
    // 1 of 4: panic, every endpoint is a candidate; still listed ejected.
    assert_eq!(reachable(&c, &e, now).len(), 4);
    assert_eq!(c.ejected(now).len(), 3);
}

#[test]
fn all_ejected_without_panic_picks_nothing() {
    let now = Instant::now();
    let e = eps(2);
    let c = seen(config(), &e, now);
    for ep in &e {
        report_n(&c, ep.addr, AttemptResult::Status(500), 5, now);
    }
    assert!(c.pick(&e, None, 0, now).is_none());
    assert!(c.pick(&e, None, 0, now + secs(30)).is_some());
}

#[test]
fn gateway_errors() {
    let now = Instant::now();
    let e = eps(2);
    let c = seen(
        OutlierConfig {
            consecutive_5xx: None,
            consecutive_gateway: Some(3),
            ..config()
        },
        &e,
        now,
    );
    let a = e[0].addr;
    for s in [502, 504, 500, 503, 503] {
        c.report(a, AttemptResult::Status(s), now);
    }
    assert!(c.ejected(now).is_empty(), "a 500 breaks the run");
    report_n(&c, a, AttemptResult::Status(500), 20, now);
    assert!(c.ejected(now).is_empty(), "5xx detection is off");
    c.report(a, AttemptResult::Status(502), now);
    c.report(a, AttemptResult::LocalOriginFailure, now);
    assert!(c.ejected(now).is_empty());
    c.report(a, AttemptResult::Status(504), now);
    assert_eq!(c.ejected(now), [a], "a connect failure is a gateway error");
}

#[test]
fn local_origin_failures_count_as_5xx_unless_split() {
    let now = Instant::now();
    let e = eps(2);
    let c = seen(config(), &e, now);
    let a = e[0].addr;
    report_n(&c, a, AttemptResult::LocalOriginFailure, 3, now);
    report_n(&c, a, AttemptResult::Status(500), 2, now);
    assert_eq!(c.ejected(now), [a]);
}

#[test]
fn split_local_origin_failures() {
    let now = Instant::now();
    let e = eps(2);
    let cfg = OutlierConfig {
        split_local_origin: true,
        consecutive_local_origin: Some(2),
        ..config()
    };
    let c = seen(cfg, &e, now);
    let a = e[0].addr;
    // A response (even a 5xx) means the connection worked.
    c.report(a, AttemptResult::LocalOriginFailure, now);
    c.report(a, AttemptResult::Status(500), now);
    c.report(a, AttemptResult::LocalOriginFailure, now);
    assert!(c.ejected(now).is_empty());
    // Local failures neither count as nor break a run of 5xx.
    report_n(&c, a, AttemptResult::Status(500), 3, now);
    assert!(c.ejected(now).is_empty(), "4 5xx");
    c.report(a, AttemptResult::Status(500), now);
    assert_eq!(c.ejected(now), [a], "5 5xx, local failures aside");

    let b = e[1].addr;
    report_n(&c, b, AttemptResult::LocalOriginFailure, 2, now);
    assert_eq!(c.ejected(now).len(), 2, "2 local failures in a row");
}

#[test]
fn returning_restarts_the_counts() {
    let now = Instant::now();
    let e = eps(2);
    let c = seen(config(), &e, now);
    let a = e[0].addr;
    report_n(&c, a, AttemptResult::Status(500), 5, now);
    // Errors from requests still in flight while ejected change nothing.
    report_n(&c, a, AttemptResult::Status(500), 4, now + secs(1));
    let back = now + secs(30);
    report_n(&c, a, AttemptResult::Status(500), 4, back);
    assert!(c.ejected(back).is_empty());
    c.report(a, AttemptResult::Status(500), back);
    assert_eq!(c.ejected(back), [a]);
}

#[test]
fn round_robin_skips_ejected_and_hashing_moves_only_their_keys() {
    let now = Instant::now();
    let e = eps(5);
    let rr = seen(config(), &e, now);
    report_n(&rr, e[3].addr, AttemptResult::Status(500), 5, now);
    let got: Vec<_> = (0..8).map(|r| pick_addr(&rr, &e, None, r, now)).collect();
    assert!(!got.contains(&e[3].addr));
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 4);

    let c = cluster_with(EffectivePolicy {
        lb: LbPolicy::ConsistentHash {
            key: HashKey::SourceIp,
            algorithm: HashAlgorithm::RingHash {
                minimum_ring_size: 1024,
            },
        },
        outlier: Some(config()),
        ..EffectivePolicy::defaults()
    });
    let before: Vec<_> = (0..2000)
        .map(|k| pick_addr(&c, &e, Some(key(k)), 0, now))
        .collect();
    report_n(&c, e[3].addr, AttemptResult::Status(500), 5, now);
    for (k, was) in before.iter().enumerate() {
        let now_at = pick_addr(&c, &e, Some(key(k as u64)), 0, now);
        if *was == e[3].addr {
            assert_ne!(now_at, e[3].addr);
        } else {
            assert_eq!(now_at, *was);
        }
    }
}

#[test]
fn no_detection_without_config_and_unknown_addresses_ignored() {
    let now = Instant::now();
    let e = eps(2);
    let c = cluster(LbPolicy::RoundRobin);
    drop(c.pick(&e, None, 0, now));
    report_n(&c, e[0].addr, AttemptResult::Status(500), 50, now);
    assert!(c.ejected(now).is_empty());
    assert_eq!(reachable(&c, &e, now).len(), 2);

    let c = seen(config(), &e, now);
    report_n(&c, ep(9).addr, AttemptResult::Status(500), 50, now);
    assert!(c.ejected(now).is_empty());
}
