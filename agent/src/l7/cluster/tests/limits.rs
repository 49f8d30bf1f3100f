use super::*;

fn limited(f: impl FnOnce(&mut PoolLimits)) -> Cluster {
    let mut policy = EffectivePolicy::defaults();
    f(&mut policy.limits);
    cluster_with(policy)
}

/// Takes `try_take` until it fails: how many it allowed, with the guards.
fn fill(try_take: impl Fn() -> Option<LimitGuard>, most: usize) -> Vec<LimitGuard> {
    std::iter::from_fn(try_take).take(most).collect()
}

#[test]
fn each_breaker_stops_at_its_limit_and_releases_on_drop() {
    type Set = fn(&mut PoolLimits);
    type Take = fn(&Cluster) -> Option<LimitGuard>;
    let cases: [(&str, Set, Take); 4] = [
        ("requests", |l| l.max_requests = 2, Cluster::try_request),
        (
            "pending",
            |l| l.max_pending_requests = 2,
            Cluster::try_pending,
        ),
        ("retries", |l| l.max_retries = 2, Cluster::try_retry),
        (
            "connections",
            |l| l.max_connections = 2,
            Cluster::try_connection,
        ),
    ];
    for (name, set, take) in cases {
        let c = limited(set);
        let mut held = fill(|| take(&c), 10);
        assert_eq!(held.len(), 2, "{name}");
        assert!(take(&c).is_none(), "{name}: at the limit");
        held.pop();
        let again = take(&c);
        assert!(again.is_some(), "{name}: released on drop");
        assert!(take(&c).is_none(), "{name}: at the limit again");
        drop(again);
        drop(held);
        assert_eq!(c.limit_usage(), LimitUsage::default(), "{name}");
    }
}

#[test]
fn breakers_are_independent_and_counted() {
    let c = limited(|l| {
        l.max_requests = 1;
        l.max_connections = 1;
    });
    let r = c.try_request().expect("request");
    let conn = c.try_connection().expect("connection");
    let p = c.try_pending().expect("pending: unlimited");
    let retry = c.try_retry().expect("retry: unlimited");
    assert_eq!(
        c.limit_usage(),
        LimitUsage {
            requests: 1,
            pending: 1,
            retries: 1,
            connections: 1
        }
    );
    assert!(c.try_request().is_none());
    assert!(c.try_connection().is_none());
    drop((r, conn, p, retry));
    assert_eq!(c.limit_usage(), LimitUsage::default());
}

#[test]
fn defaults_are_effectively_unlimited() {
    let c = cluster(LbPolicy::RoundRobin);
    let held: Vec<_> = (0..10_000)
        .map(|_| {
            (
                c.try_request().expect("request"),
                c.try_pending().expect("pending"),
                c.try_retry().expect("retry"),
                c.try_connection().expect("connection"),
            )
        })
        .collect();
    assert_eq!(c.limit_usage().requests, 10_000);
    drop(held);
}

#[test]
fn guards_are_shared_across_threads() {
    let c = Arc::new(limited(|l| l.max_requests = 8));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    if let Some(g) = c.try_request() {
                        assert!(c.limit_usage().requests <= 8);
                        drop(g);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(c.limit_usage().requests, 0);
}
