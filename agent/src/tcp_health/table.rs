//! From the kernel's per-(pod, remote address) counters to per-workload
//! totals: each refresh reads the whole map, takes what grew since the
//! last read, and adds it to the (reporter, source workload, destination
//! workload) it belongs to. Totals only grow, as Prometheus counters must,
//! even when the kernel's LRU evicts an entry and starts it again from
//! zero.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use weft_ebpf_common::{TCP_BUCKET_SHIFT, TCP_BUCKETS, TCP_INBOUND, TcpHealth, TcpPeerKey};

/// A workload as the labels name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct WorkloadName {
    pub workload: String,
    pub namespace: String,
}

impl WorkloadName {
    pub fn unknown() -> WorkloadName {
        WorkloadName {
            workload: "unknown".into(),
            namespace: "unknown".into(),
        }
    }
}

/// Whose figures: the side that reports (`source`: the pod opened the
/// connections; `destination`: it accepted them) and both workloads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pair {
    pub reporter: &'static str,
    pub source: WorkloadName,
    pub destination: WorkloadName,
}

/// A histogram in microseconds over the kernel's log2 buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Micros {
    pub count: u64,
    pub sum_us: u64,
    /// Per bucket, not cumulative; see [`bucket_bounds_seconds`].
    pub buckets: Vec<u64>,
}

impl Micros {
    fn add(&mut self, count: u64, sum_us: u64, buckets: &[u64; TCP_BUCKETS]) {
        self.buckets.resize(TCP_BUCKETS, 0);
        self.count += count;
        self.sum_us += sum_us;
        for (total, n) in self.buckets.iter_mut().zip(buckets) {
            *total += n;
        }
    }

    /// The mean, in microseconds (0 when empty).
    pub fn mean_us(&self) -> u64 {
        self.sum_us.checked_div(self.count).unwrap_or(0)
    }
}

/// The upper bounds of the buckets, in seconds; the last is `+Inf`.
pub fn bucket_bounds_seconds() -> [f64; TCP_BUCKETS] {
    let mut bounds = [f64::INFINITY; TCP_BUCKETS];
    for (i, bound) in bounds.iter_mut().take(TCP_BUCKETS - 1).enumerate() {
        *bound = (1u64 << (i as u32 + TCP_BUCKET_SHIFT)) as f64 / 1e6;
    }
    bounds
}

/// One pair's totals since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub established: u64,
    pub closed: u64,
    pub retransmits: u64,
    pub rtos: u64,
    pub zero_windows: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Smoothed RTT, after each RTT sample.
    pub rtt: Micros,
    /// `connect()` to established (reporter `source` only).
    pub setup: Micros,
}

impl Totals {
    fn add(&mut self, d: &TcpHealth) {
        self.established += d.established;
        self.closed += d.closed;
        self.retransmits += d.retransmits;
        self.rtos += d.rtos;
        self.zero_windows += d.zero_windows;
        self.bytes_sent += d.bytes_sent;
        self.bytes_received += d.bytes_received;
        self.rtt.add(d.rtt_count, d.rtt_sum_us, &d.rtt_buckets);
        self.setup
            .add(d.setup_count, d.setup_sum_us, &d.setup_buckets);
    }
}

/// What grew from `last` to `now`; all of `now` when any counter went
/// down (the entry was evicted and created again).
fn growth(last: Option<&TcpHealth>, now: &TcpHealth) -> TcpHealth {
    let Some(last) = last else {
        return *now;
    };
    let scalars = |h: &TcpHealth| {
        [
            h.established,
            h.closed,
            h.retransmits,
            h.rtos,
            h.zero_windows,
            h.bytes_sent,
            h.bytes_received,
            h.rtt_count,
            h.rtt_sum_us,
            h.setup_count,
            h.setup_sum_us,
        ]
    };
    let restarted = scalars(now).iter().zip(scalars(last)).any(|(n, l)| *n < l)
        || now
            .rtt_buckets
            .iter()
            .zip(&last.rtt_buckets)
            .any(|(n, l)| n < l)
        || now
            .setup_buckets
            .iter()
            .zip(&last.setup_buckets)
            .any(|(n, l)| n < l);
    if restarted {
        return *now;
    }
    let mut d = TcpHealth::ZERO;
    d.established = now.established - last.established;
    d.closed = now.closed - last.closed;
    d.retransmits = now.retransmits - last.retransmits;
    d.rtos = now.rtos - last.rtos;
    d.zero_windows = now.zero_windows - last.zero_windows;
    d.bytes_sent = now.bytes_sent - last.bytes_sent;
    d.bytes_received = now.bytes_received - last.bytes_received;
    d.rtt_count = now.rtt_count - last.rtt_count;
    d.rtt_sum_us = now.rtt_sum_us - last.rtt_sum_us;
    d.setup_count = now.setup_count - last.setup_count;
    d.setup_sum_us = now.setup_sum_us - last.setup_sum_us;
    for i in 0..TCP_BUCKETS {
        d.rtt_buckets[i] = now.rtt_buckets[i] - last.rtt_buckets[i];
        d.setup_buckets[i] = now.setup_buckets[i] - last.setup_buckets[i];
    }
    d
}

/// Names the two ends of a kernel entry: the local pod (by network
/// namespace) and the remote address.
pub trait Resolve {
    /// The enrolled pod with this network namespace.
    fn local(&self, netns_cookie: u64) -> Option<WorkloadName>;
    /// The workload at this address.
    fn remote(&self, ip: std::net::IpAddr) -> Option<WorkloadName>;
}

/// The remote address of a kernel key.
pub fn remote_ip(key: &TcpPeerKey) -> std::net::IpAddr {
    if key.family == weft_ebpf_common::FAMILY_INET6 {
        std::net::IpAddr::from(key.remote)
    } else {
        let [a, b, c, d, ..] = key.remote;
        std::net::IpAddr::from([a, b, c, d])
    }
}

/// The per-workload totals, and the last read of the kernel's map.
#[derive(Debug, Default)]
pub struct Table {
    last: HashMap<TcpPeerKey, TcpHealth>,
    totals: BTreeMap<Pair, Totals>,
}

impl Table {
    /// Adds what grew since the last read. A local pod that is gone
    /// (unenrolled since) is named `unknown`.
    pub fn update(&mut self, read: Vec<(TcpPeerKey, TcpHealth)>, resolve: &impl Resolve) {
        // A walk of a map the kernel changes meanwhile can see a key twice
        // (the walk restarts when its current key is deleted): keep the
        // last value of each, so that nothing is added twice.
        let seen: HashMap<TcpPeerKey, TcpHealth> = read.into_iter().collect();
        for (key, now) in &seen {
            let (key, now) = (*key, *now);
            let grown = growth(self.last.get(&key), &now);
            if grown == TcpHealth::ZERO {
                continue;
            }
            let local = resolve
                .local(key.netns_cookie)
                .unwrap_or_else(WorkloadName::unknown);
            let remote = resolve
                .remote(remote_ip(&key))
                .unwrap_or_else(WorkloadName::unknown);
            let pair = if key.direction == TCP_INBOUND {
                Pair {
                    reporter: "destination",
                    source: remote,
                    destination: local,
                }
            } else {
                Pair {
                    reporter: "source",
                    source: local,
                    destination: remote,
                }
            };
            self.totals.entry(pair).or_default().add(&grown);
        }
        self.last = seen;
    }

    /// Every pair's totals, in label order.
    pub fn totals(&self) -> impl Iterator<Item = (&Pair, &Totals)> {
        self.totals.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use weft_ebpf_common::{FAMILY_INET, TCP_OUTBOUND, tcp_bucket};

    use super::*;

    struct Names;

    impl Resolve for Names {
        fn local(&self, netns_cookie: u64) -> Option<WorkloadName> {
            (netns_cookie == 7).then(|| name("client"))
        }
        fn remote(&self, ip: IpAddr) -> Option<WorkloadName> {
            (ip == IpAddr::from([10, 0, 2, 5])).then(|| name("server"))
        }
    }

    fn name(workload: &str) -> WorkloadName {
        WorkloadName {
            workload: workload.into(),
            namespace: "shop".into(),
        }
    }

    fn key(netns_cookie: u64, remote: [u8; 4], direction: u8) -> TcpPeerKey {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&remote);
        TcpPeerKey {
            netns_cookie,
            remote: bytes,
            family: FAMILY_INET,
            direction,
            _pad: [0; 5],
        }
    }

    fn health(retransmits: u64, rtt_us: &[u64]) -> TcpHealth {
        let mut h = TcpHealth::ZERO;
        h.established = 1;
        h.retransmits = retransmits;
        for rtt in rtt_us {
            h.rtt_count += 1;
            h.rtt_sum_us += rtt;
            h.rtt_buckets[tcp_bucket(*rtt)] += 1;
        }
        h
    }

    #[test]
    fn the_kernel_buckets_are_log2_microseconds_with_inclusive_bounds() {
        assert_eq!(tcp_bucket(0), 0);
        assert_eq!(tcp_bucket(16), 0);
        assert_eq!(tcp_bucket(17), 1);
        assert_eq!(tcp_bucket(20_000), 11); // ≤ 32,768 µs
        assert_eq!(tcp_bucket(u64::MAX), TCP_BUCKETS - 1);
        let bounds = bucket_bounds_seconds();
        assert_eq!(bounds[0], 16e-6);
        assert_eq!(bounds[11], 32_768e-6);
        assert!(bounds[TCP_BUCKETS - 1].is_infinite());
    }

    #[test]
    fn reads_add_what_grew_under_both_workloads_names() {
        let mut table = Table::default();
        let out = key(7, [10, 0, 2, 5], TCP_OUTBOUND);
        let inb = key(7, [10, 0, 9, 9], TCP_INBOUND);
        table.update(
            vec![(out, health(2, &[100, 200])), (inb, health(0, &[50]))],
            &Names,
        );
        table.update(
            vec![(out, health(5, &[100, 200, 300])), (inb, health(0, &[50]))],
            &Names,
        );
        let totals: Vec<_> = table.totals().collect();
        assert_eq!(totals.len(), 2, "{totals:#?}");
        let (pair, sent) = totals.iter().find(|(p, _)| p.reporter == "source").unwrap();
        assert_eq!(pair.source, name("client"));
        assert_eq!(pair.destination, name("server"));
        assert_eq!(sent.retransmits, 5);
        assert_eq!(sent.established, 1);
        assert_eq!(sent.rtt.count, 3);
        assert_eq!(sent.rtt.mean_us(), 200);
        let (pair, _) = totals
            .iter()
            .find(|(p, _)| p.reporter == "destination")
            .unwrap();
        assert_eq!(pair.source, WorkloadName::unknown());
        assert_eq!(pair.destination, name("client"));
    }

    #[test]
    fn a_key_seen_twice_in_one_walk_is_counted_once() {
        let mut table = Table::default();
        let out = key(7, [10, 0, 2, 5], TCP_OUTBOUND);
        table.update(
            vec![(out, health(4, &[100])), (out, health(4, &[100]))],
            &Names,
        );
        let (_, totals) = table.totals().next().unwrap();
        assert_eq!(totals.retransmits, 4);
        assert_eq!(totals.established, 1);
    }

    #[test]
    fn an_evicted_entry_that_starts_again_never_makes_a_total_go_down() {
        let mut table = Table::default();
        let out = key(7, [10, 0, 2, 5], TCP_OUTBOUND);
        table.update(vec![(out, health(10, &[100]))], &Names);
        // Evicted, then created again by a new connection.
        table.update(vec![], &Names);
        table.update(vec![(out, health(3, &[100]))], &Names);
        let (_, totals) = table.totals().next().unwrap();
        assert_eq!(totals.retransmits, 13);
        assert_eq!(totals.established, 2);
        assert_eq!(totals.rtt.count, 2);
    }
}
