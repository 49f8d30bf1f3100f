//! The simple load balancers: round robin, least request, random. Each
//! chooses among `cands`, indices into the cluster's hosts (those not
//! ejected, or all of them in panic mode), and returns the host index.
//!
//! Weights are honoured by all three (Envoy's random balancer ignores
//! them; here an endpoint with twice the weight gets twice the picks).

use std::sync::atomic::Ordering;

use super::Host;

/// The caller's `roll`, stretched into as many random numbers as a pick
/// needs (SplitMix64): deterministic for a given roll, which tests use.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(roll: u64) -> Rng {
        Rng(roll)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias worth the name.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

fn weight(hosts: &[Host], i: usize) -> u64 {
    u64::from(hosts[i].weight.max(1))
}

fn equal_weights(hosts: &[Host], cands: &[usize]) -> bool {
    let first = hosts[cands[0]].weight;
    cands.iter().all(|&i| hosts[i].weight == first)
}

/// Weighted round robin. With equal weights, plain rotation; otherwise
/// smooth weighted round robin (each pick, every candidate gains its
/// weight and the one with the most credit is picked and pays the total),
/// which interleaves endpoints rather than sending runs to the heavy ones,
/// like Envoy's weighted scheduler.
pub(super) fn round_robin(next: &mut u64, hosts: &mut [Host], cands: &[usize]) -> usize {
    if equal_weights(hosts, cands) {
        let k = (*next % cands.len() as u64) as usize;
        *next = next.wrapping_add(1);
        return cands[k];
    }
    let total: i64 = cands.iter().map(|&i| weight(hosts, i) as i64).sum();
    let mut best = cands[0];
    for &i in cands {
        hosts[i].rr_credit += weight(hosts, i) as i64;
        if hosts[i].rr_credit > hosts[best].rr_credit {
            best = i;
        }
    }
    hosts[best].rr_credit -= total;
    best
}

/// Weighted random.
pub(super) fn random(hosts: &[Host], cands: &[usize], rng: &mut Rng) -> usize {
    weighted(hosts, cands, rng, None)
}

/// A weighted random candidate other than `skip`.
fn weighted(hosts: &[Host], cands: &[usize], rng: &mut Rng, skip: Option<usize>) -> usize {
    let total: u64 = cands
        .iter()
        .filter(|&&i| Some(i) != skip)
        .map(|&i| weight(hosts, i))
        .sum();
    let mut r = rng.below(total.max(1));
    for &i in cands.iter().filter(|&&i| Some(i) != skip) {
        let w = weight(hosts, i);
        if r < w {
            return i;
        }
        r -= w;
    }
    cands[0]
}

/// Least request, Envoy's power of two choices: two distinct random
/// candidates, the one with fewer active requests wins (the first on a
/// tie). With unequal weights the two are drawn by weight and compared on
/// active requests per unit of weight, `(active + 1) / weight` (Envoy
/// instead runs its weighted scheduler with weight / (active + 1); both
/// favour heavy and idle endpoints).
pub(super) fn least_request(hosts: &[Host], cands: &[usize], rng: &mut Rng) -> usize {
    if cands.len() == 1 {
        return cands[0];
    }
    let active = |i: usize| hosts[i].active.load(Ordering::Relaxed);
    if equal_weights(hosts, cands) {
        let n = cands.len() as u64;
        let a = rng.below(n);
        let mut b = rng.below(n - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (cands[a as usize], cands[b as usize]);
        return if active(b) < active(a) { b } else { a };
    }
    let a = weighted(hosts, cands, rng, None);
    let b = weighted(hosts, cands, rng, Some(a));
    let load =
        |i: usize, other: usize| u128::from(active(i) + 1) * u128::from(weight(hosts, other));
    if load(b, a) < load(a, b) { b } else { a }
}
