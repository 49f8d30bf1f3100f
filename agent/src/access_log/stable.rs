//! The text of a format's connection-stable operators, kept per thread.
//!
//! Most of what a line says about where a request went seldom changes
//! from one request of a connection to the next: the addresses, the
//! upstream cluster, the SNI, the route, the protocol (the upstream ones
//! can, with the route or the endpoint a request gets). Envoy's default
//! format ends with seven of them (`"%UPSTREAM_HOST%" %UPSTREAM_CLUSTER%
//! … %ROUTE_NAME%`), and writing them was about a third of a line's cost.
//! A run of such operators (two or more in a row, with the literals
//! between them) is rendered once and its text kept in a small table of
//! the thread's; the next line whose entry has the same values for what
//! the run reads copies the text instead. The values are compared, never
//! assumed: a request that went elsewhere renders its own text. An L4
//! line, its connection's only one, is rendered without the table.

use std::{cell::RefCell, net::SocketAddr};

use super::entry::Entry;

/// Slots in each thread's table (a power of two). A node proxy's busy
/// connections at any moment are a few dozen; a slot two connections
/// share just renders more often.
const SLOTS: usize = 64;

/// A run whose text, or whose values read, are longer than this is
/// rendered every time (a huge SNI or route name, even cut by the
/// format, should not stay in every thread's table).
const MAX_KEPT: usize = 1024;

const _: () = assert!(SLOTS.is_power_of_two() && SLOTS > 1);

/// What of an entry a stable run reads, one bit per field:
/// [`Entry`]'s four addresses, then its four connection-stable strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads(u8);

impl Reads {
    pub const UPSTREAM_HOST: Reads = Reads(1);
    pub const UPSTREAM_LOCAL: Reads = Reads(1 << 1);
    pub const DOWNSTREAM_LOCAL: Reads = Reads(1 << 2);
    pub const DOWNSTREAM_REMOTE: Reads = Reads(1 << 3);
    pub const PROTOCOL: Reads = Reads(1 << 4);
    pub const UPSTREAM_CLUSTER: Reads = Reads(1 << 5);
    pub const SNI: Reads = Reads(1 << 6);
    pub const ROUTE: Reads = Reads(1 << 7);
    /// Nothing of the entry (the node's hostname).
    pub const NOTHING: Reads = Reads(0);

    pub fn with(self, other: Reads) -> Reads {
        Reads(self.0 | other.0)
    }

    fn has(self, bit: usize) -> bool {
        self.0 & (1 << bit) != 0
    }
}

/// The entry's values a run may read, in [`Reads`]' bit order.
fn addresses(e: &Entry<'_>) -> [Option<SocketAddr>; 4] {
    [
        e.upstream_host,
        e.upstream_local,
        e.downstream_local,
        e.downstream_remote,
    ]
}

fn strings<'e>(e: &'e Entry<'_>) -> [&'e str; 4] {
    [e.protocol, e.upstream_cluster, e.sni, e.route]
}

/// One kept text: the run it is of, the values it was rendered from (the
/// ones the run reads), and the text.
#[derive(Default)]
struct Slot {
    /// 0: empty.
    run: u64,
    addresses: [Option<SocketAddr>; 4],
    strings: [String; 4],
    text: Vec<u8>,
}

impl Slot {
    fn holds(&self, run: u64, reads: Reads, e: &Entry<'_>) -> bool {
        if self.run != run {
            return false;
        }
        let addresses = addresses(e);
        let strings = strings(e);
        (0..4).all(|i| !reads.has(i) || self.addresses[i] == addresses[i])
            && (0..4).all(|i| !reads.has(4 + i) || self.strings[i] == strings[i])
    }

    fn keep(&mut self, run: u64, reads: Reads, e: &Entry<'_>, text: &[u8]) {
        self.run = run;
        self.addresses = addresses(e);
        for (i, (kept, value)) in self.strings.iter_mut().zip(strings(e)).enumerate() {
            kept.clear();
            if reads.has(4 + i) {
                kept.push_str(value);
            }
        }
        self.text.clear();
        self.text.extend_from_slice(text);
    }
}

/// Appends the text of run `run` (an id no other run has) for `e`:
/// copied when this thread rendered it for the same values last time its
/// slot was used, otherwise rendered by `render` and kept.
pub fn append(
    run: u64,
    reads: Reads,
    e: &Entry<'_>,
    out: &mut Vec<u8>,
    render: impl FnOnce(&mut Vec<u8>),
) {
    thread_local! {
        static KEPT: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
    }
    KEPT.with_borrow_mut(|slots| {
        if slots.is_empty() {
            slots.resize_with(SLOTS, Slot::default);
        }
        let slot = &mut slots[slot_of(run, e)];
        if slot.holds(run, reads, e) {
            out.extend_from_slice(&slot.text);
            return;
        }
        let start = out.len();
        render(out);
        let text = &out[start..];
        let values: usize = strings(e)
            .iter()
            .enumerate()
            .filter(|(i, _)| reads.has(4 + i))
            .map(|(_, s)| s.len())
            .sum();
        if text.len() <= MAX_KEPT && values <= MAX_KEPT {
            slot.keep(run, reads, e, text);
        } else {
            slot.run = 0;
        }
    });
}

/// The slot for this run and connection: the ports tell connections
/// apart (the client's port above all), the run id formats.
fn slot_of(run: u64, e: &Entry<'_>) -> usize {
    let port = |a: Option<SocketAddr>| a.map_or(0, |a| u64::from(a.port()));
    let key = run
        ^ (port(e.downstream_remote) << 16)
        ^ (port(e.upstream_local) << 32)
        ^ port(e.upstream_host);
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// A new run id (never 0).
pub fn next_run_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn kept_text_is_copied_for_the_same_values_and_rendered_again_for_others() {
        let run = next_run_id();
        let reads = Reads::UPSTREAM_HOST.with(Reads::ROUTE);
        let mut e = Entry::new(SystemTime::UNIX_EPOCH, Duration::ZERO);
        e.upstream_host = Some("10.0.0.1:80".parse().unwrap());
        e.downstream_remote = Some("10.0.0.9:40000".parse().unwrap());
        e.route = "r1";
        let mut out = Vec::new();
        append(run, reads, &e, &mut out, |o| o.extend_from_slice(b"first "));
        append(run, reads, &e, &mut out, |_| panic!("rendered again"));
        // What the run does not read changes nothing.
        e.sni = "not read";
        append(run, reads, &e, &mut out, |_| panic!("rendered again"));
        assert_eq!(out, b"first first first ");
        // What it reads does.
        e.route = "r2";
        append(run, reads, &e, &mut out, |o| {
            o.extend_from_slice(b"second ")
        });
        e.upstream_host = Some("10.0.0.2:80".parse().unwrap());
        append(run, reads, &e, &mut out, |o| o.extend_from_slice(b"third "));
        assert_eq!(out, b"first first first second third ");
        // Another run with the same values has its own text.
        out.clear();
        append(next_run_id(), reads, &e, &mut out, |o| {
            o.extend_from_slice(b"other")
        });
        assert_eq!(out, b"other");
        // A text too long to keep is rendered each time.
        let long = vec![b'x'; MAX_KEPT + 1];
        let run = next_run_id();
        out.clear();
        append(run, reads, &e, &mut out, |o| o.extend_from_slice(&long));
        append(run, reads, &e, &mut out, |o| o.extend_from_slice(b"again"));
        assert_eq!(&out[MAX_KEPT + 1..], b"again");
        // So is a short text of a long value (a format that cuts it).
        let route = "r".repeat(MAX_KEPT + 1);
        e.route = &route;
        out.clear();
        append(run, reads, &e, &mut out, |o| o.extend_from_slice(b"cut "));
        append(run, reads, &e, &mut out, |o| {
            o.extend_from_slice(b"cut again")
        });
        assert_eq!(out, b"cut cut again");
    }
}
