use std::collections::HashMap;

use super::*;

fn counts(addrs: impl IntoIterator<Item = SocketAddr>) -> HashMap<SocketAddr, usize> {
    let mut out = HashMap::new();
    for a in addrs {
        *out.entry(a).or_default() += 1;
    }
    out
}

#[test]
fn no_endpoints_no_pick() {
    for lb in [
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::Random,
    ] {
        assert!(cluster(lb).pick(&[], None, 0, Instant::now()).is_none());
    }
}

#[test]
fn round_robin_rotates_in_list_order() {
    let c = cluster(LbPolicy::RoundRobin);
    let e = eps(3);
    let now = Instant::now();
    let got: Vec<_> = (0..7).map(|r| pick_addr(&c, &e, None, r, now)).collect();
    let want: Vec<_> = [0, 1, 2, 0, 1, 2, 0].iter().map(|&i| e[i].addr).collect();
    assert_eq!(got, want);
}

#[test]
fn weighted_round_robin_interleaves_by_weight() {
    let c = cluster(LbPolicy::RoundRobin);
    let e = [weighted(1, 3), weighted(2, 1)];
    let now = Instant::now();
    let got: Vec<_> = (0..8).map(|r| pick_addr(&c, &e, None, r, now)).collect();
    let (a, b) = (e[0].addr, e[1].addr);
    // Smooth weighted round robin: never a run of all three `a` before `b`.
    assert_eq!(got, [a, a, b, a, a, a, b, a]);

    let e = [weighted(1, 5), weighted(2, 3), weighted(3, 2)];
    let got = counts((0..1000).map(|r| pick_addr(&c, &e, None, r, now)));
    assert_eq!(got[&e[0].addr], 500);
    assert_eq!(got[&e[1].addr], 300);
    assert_eq!(got[&e[2].addr], 200);
}

#[test]
fn least_request_prefers_the_less_loaded() {
    let c = cluster(LbPolicy::LeastRequest);
    let e = eps(2);
    let now = Instant::now();
    let held = c.pick(&e, None, 0, now).expect("a pick");
    let busy = held.endpoint.addr;
    assert_eq!(c.active_requests(busy), 1);
    // With two endpoints both are always the two choices: the idle one wins.
    for roll in 0..100 {
        assert_ne!(pick_addr(&c, &e, None, roll, now), busy, "roll {roll}");
    }
    drop(held);
    assert_eq!(c.active_requests(busy), 0);
    let got = counts((0..200).map(|r| pick_addr(&c, &e, None, r, now)));
    assert_eq!(got.len(), 2, "idle again, both get picks");
}

#[test]
fn least_request_balances_held_requests() {
    let c = cluster(LbPolicy::LeastRequest);
    let e = eps(4);
    let now = Instant::now();
    let held: Vec<Picked> = (0..400)
        .map(|r| c.pick(&e, None, r, now).expect("a pick"))
        .collect();
    let loads: Vec<u64> = e.iter().map(|e| c.active_requests(e.addr)).collect();
    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    assert!(
        max - min <= 4,
        "power of two choices keeps loads close: {loads:?}"
    );
    drop(held);
    assert!(e.iter().all(|e| c.active_requests(e.addr) == 0));
}

#[test]
fn least_request_weighs_load_by_weight() {
    let c = cluster(LbPolicy::LeastRequest);
    let e = [weighted(1, 1), weighted(2, 3)];
    let now = Instant::now();
    let held: Vec<Picked> = (0..400)
        .map(|r| c.pick(&e, None, r, now).expect("a pick"))
        .collect();
    let (light, heavy) = (c.active_requests(e[0].addr), c.active_requests(e[1].addr));
    assert!((95..=105).contains(&light), "{light} vs {heavy}");
    assert_eq!(light + heavy, 400);
    drop(held);
}

#[test]
fn random_covers_all_and_follows_weights() {
    let c = cluster(LbPolicy::Random);
    let now = Instant::now();
    let e = eps(5);
    let got = counts((0..200).map(|r| pick_addr(&c, &e, None, r, now)));
    assert_eq!(got.len(), 5);

    let e = [weighted(1, 1), weighted(2, 3)];
    let got = counts((0..4000).map(|r| pick_addr(&c, &e, None, r, now)));
    let light = got[&e[0].addr];
    assert!((900..=1100).contains(&light), "{got:?}");
}

#[test]
fn random_is_a_function_of_the_roll() {
    let (a, b) = (cluster(LbPolicy::Random), cluster(LbPolicy::Random));
    let e = eps(7);
    let now = Instant::now();
    for roll in 0..50 {
        assert_eq!(
            pick_addr(&a, &e, None, roll, now),
            pick_addr(&b, &e, None, roll, now)
        );
    }
}

#[test]
fn passthrough_is_visible_and_still_picks() {
    let c = cluster(LbPolicy::Passthrough);
    assert_eq!(c.policy().lb, LbPolicy::Passthrough);
    let e = eps(3);
    let got = counts((0..100).map(|r| pick_addr(&c, &e, None, r, Instant::now())));
    assert_eq!(got.len(), 3);
}

#[test]
fn state_follows_addresses_across_list_changes() {
    let c = cluster(LbPolicy::LeastRequest);
    let now = Instant::now();
    let e = eps(2);
    let held = c.pick(&e, None, 0, now).expect("a pick");
    let busy = held.endpoint.addr;
    // The list changes: reordered, one more endpoint.
    let mut e2 = vec![ep(3)];
    e2.extend(e.iter().rev().cloned());
    assert_eq!(c.active_requests(busy), 1, "count kept by address");
    for roll in 0..100 {
        let p = c.pick(&e2, None, roll, now).expect("a pick");
        assert!(e2.iter().any(|e| e.addr == p.endpoint.addr));
        assert_ne!(p.endpoint.addr, busy, "roll {roll}");
    }
    // The busy endpoint leaves while its request is in flight.
    let e3 = vec![ep(3)];
    assert_eq!(pick_addr(&c, &e3, None, 0, now), ep(3).addr);
    drop(held);
    assert_eq!(c.active_requests(busy), 0);
}

#[test]
fn picked_carries_the_endpoint() {
    let c = cluster(LbPolicy::RoundRobin);
    let mut e = eps(1);
    e[0].weight = 0;
    let p = c.pick(&e, None, 0, Instant::now()).expect("a pick");
    assert_eq!(p.endpoint.addr, e[0].addr);
    assert_eq!(p.endpoint.weight, 0, "the caller's endpoint, as given");
}
