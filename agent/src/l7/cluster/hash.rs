//! Consistent hashing: a request's hash ([`request_hash`]) and the tables
//! that map hashes to endpoints (ring hash and Maglev).
//!
//! Every hash is xxHash64 with seed 0 (the function Envoy uses), so it is
//! the same in every process and on every node: two node agents with the
//! same endpoint list send the same key to the same endpoint.

use std::{fmt::Write as _, net::IpAddr, net::SocketAddr, time::Duration};

use http::{HeaderMap, HeaderValue, header::COOKIE};
use xxhash_rust::xxh64::xxh64;

use super::{HashAlgorithm, HashKey, MAX_RING_SIZE, balance::Rng};

/// A cookie to add to the response (`set-cookie`), generated because a
/// cookie hash key with a TTL found no cookie in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    /// The whole `set-cookie` value: `name=value; Max-Age=..; Path=..; HttpOnly`.
    pub header: HeaderValue,
    /// The generated value (the request was hashed with it).
    pub value: String,
}

/// The hash of a request for a consistent-hash policy, and the cookie to
/// set when one was generated.
///
/// * Header: the header's value; several values are hashed in sorted
///   order, one after the other.
/// * Cookie: the named cookie's value (surrounding quotes removed). Absent
///   and with a TTL, a value is generated from `roll` (16 hex digits; the
///   caller derives it from the downstream connection's address, as Envoy
///   does, so that one connection's requests get one value),
///   hashed, and returned to set, for `ttl` (0: a session cookie) and
///   `path` (if any). Absent without a TTL: no hash.
/// * Source IP: the address as text (`10.0.0.1`, `fd00::1`).
/// * Query parameter: the first parameter of that name, value as sent
///   (not percent-decoded); present with no `=`, the empty value.
///
/// No hash (`None`) makes [`Cluster::pick`](super::Cluster::pick) pick at
/// random, as Envoy does.
pub fn request_hash(
    key: &HashKey,
    headers: &HeaderMap,
    path_and_query: &str,
    source_ip: IpAddr,
    roll: u64,
) -> (Option<u64>, Option<SetCookie>) {
    match key {
        HashKey::Header(name) => {
            let mut values: Vec<&[u8]> =
                headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
            if values.is_empty() {
                return (None, None);
            }
            values.sort_unstable();
            let hash = values.iter().fold(0, |seed, v| xxh64(v, seed));
            (Some(hash), None)
        }
        HashKey::Cookie { name, path, ttl } => match cookie(headers, name) {
            Some(value) => (Some(xxh64(value, 0)), None),
            None => match ttl {
                Some(ttl) => {
                    let value = format!("{:016x}", Rng::new(roll).next());
                    let hash = xxh64(value.as_bytes(), 0);
                    (Some(hash), set_cookie(name, value, path, *ttl))
                }
                None => (None, None),
            },
        },
        HashKey::SourceIp => (Some(ip_hash(source_ip)), None),
        HashKey::QueryParameter(name) => (query(path_and_query, name).map(|v| xxh64(v, 0)), None),
    }
}

/// The hash of an address's text (as Envoy hashes it), written on the
/// stack: an L4 connection under `useSourceIp` hashes one, and allocates
/// nothing for it.
pub fn ip_hash(ip: IpAddr) -> u64 {
    // The longest text of an address: an IPv6 one with an embedded IPv4.
    let mut text = [0u8; 45];
    let mut out = &mut text[..];
    let written = match std::io::Write::write_fmt(&mut out, format_args!("{ip}")) {
        Ok(()) => 45 - out.len(),
        Err(_) => 0,
    };
    xxh64(&text[..written], 0)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|h| h.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| {
                let v = pair[eq + 1..].trim_ascii();
                match v {
                    [b'"', inner @ .., b'"'] => inner,
                    v => v,
                }
            })
        })
}

fn set_cookie(name: &str, value: String, path: &str, ttl: Duration) -> Option<SetCookie> {
    let mut header = format!("{name}={value}");
    if !ttl.is_zero() {
        // A sub-second TTL must not become Max-Age=0 (delete the cookie).
        let _ = write!(header, "; Max-Age={}", ttl.as_secs().max(1));
    }
    if !path.is_empty() {
        let _ = write!(header, "; Path={path}");
    }
    header.push_str("; HttpOnly");
    // Name and path were checked when the policy was compiled; a failure
    // here only loses the cookie, not the request.
    let header = HeaderValue::try_from(header).ok()?;
    Some(SetCookie { header, value })
}

fn query<'a>(path_and_query: &'a str, name: &str) -> Option<&'a [u8]> {
    let (_, query) = path_and_query.split_once('?')?;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// Points per unit of weight the ring hash aims at (times the minimum
/// ring size) is capped so the ring stays within this many points.
const RING_POINTS_BUDGET: u64 = 1 << 16;

/// Weights past this (relative to the smallest) are scaled down for
/// Maglev, bounding how many rounds the table takes to fill.
const MAX_MAGLEV_WEIGHT: u64 = 1 << 16;

/// A hash → endpoint table, built for one list of (address, weight); its
/// lookups return indices into that list.
#[derive(Debug)]
pub(super) struct HashTable {
    key: Vec<(SocketAddr, u32)>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Sorted points and, at the same index, the endpoint each belongs to.
    Ring { points: Vec<u64>, owners: Vec<u32> },
    /// `table[hash % len]` is the endpoint.
    Maglev { table: Vec<u32> },
}

impl HashTable {
    /// Builds the table for `key` (addresses with weights ≥ 1, not empty).
    pub(super) fn build(algorithm: &HashAlgorithm, key: Vec<(SocketAddr, u32)>) -> HashTable {
        let kind = match algorithm {
            HashAlgorithm::RingHash { minimum_ring_size } => ring(&key, *minimum_ring_size),
            HashAlgorithm::Maglev { table_size } => maglev(&key, *table_size),
        };
        HashTable { key, kind }
    }

    /// Whether the table was built for this list.
    pub(super) fn built_for(
        &self,
        mut key: impl ExactSizeIterator<Item = (SocketAddr, u32)>,
    ) -> bool {
        key.len() == self.key.len() && self.key.iter().all(|k| key.next() == Some(*k))
    }

    /// The index (in the list built for) of the endpoint for `hash`, at
    /// host selection attempt `attempt` (0: the hash's own endpoint; then,
    /// as Envoy's `chooseHost(hash, attempt)`, the ring's `attempt`th point
    /// after it, or the Maglev entry of the hash with its high bits
    /// flipped).
    pub(super) fn lookup(&self, hash: u64, attempt: u32) -> usize {
        match &self.kind {
            Kind::Ring { points, owners } => {
                // The first point at or after the hash, wrapping around.
                let i = points.partition_point(|p| *p < hash);
                let i = if i == points.len() { 0 } else { i };
                let i = (i + attempt as usize) % points.len().max(1);
                owners.get(i).map_or(0, |o| *o as usize)
            }
            Kind::Maglev { table } => {
                let len = table.len() as u64;
                let hash = match attempt {
                    0 => hash,
                    // Many bits set, so that each attempt lands far away.
                    n => hash ^ (!0u64).wrapping_sub(u64::from(n)).wrapping_add(1),
                };
                table
                    .get((hash % len.max(1)) as usize)
                    .map_or(0, |o| *o as usize)
            }
        }
    }
}

/// Weights divided by their greatest common divisor, so that (100, 100)
/// builds the same ring as (1, 1).
fn reduced_weights(key: &[(SocketAddr, u32)]) -> Vec<u64> {
    let gcd = key
        .iter()
        .fold(0u64, |g, (_, w)| gcd(g, u64::from(*w).max(1)));
    key.iter()
        .map(|(_, w)| u64::from(*w).max(1) / gcd.max(1))
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The ring: each endpoint owns `weight × per_unit` points, the xxHash64
/// of `"<addr>_<i>"` for i = 0, 1, ...
///
/// Unlike Envoy, which spreads about `minimum_ring_size` points over all
/// endpoints (so any change to the list moves a share of every endpoint's
/// keys), each unit of weight gets `minimum_ring_size` points while the ring
/// stays within [`RING_POINTS_BUDGET`]: an endpoint's points then depend
/// only on its address and weight, and adding or removing one moves only
/// the keys that land on it. Past the budget, points per unit shrink (never
/// below what keeps the ring at `minimum_ring_size`).
fn ring(key: &[(SocketAddr, u32)], minimum_ring_size: u64) -> Kind {
    let mut weights = reduced_weights(key);
    let mut total: u64 = weights.iter().sum::<u64>().max(1);
    if total > MAX_RING_SIZE {
        // Extreme weights: scale them down so the ring stays within
        // Envoy's largest ring (plus one point per endpoint at most).
        for w in &mut weights {
            *w = (u128::from(*w) * u128::from(MAX_RING_SIZE) / u128::from(total)).max(1) as u64;
        }
        total = weights.iter().sum();
    }
    let min = minimum_ring_size.max(1);
    let per_unit = min
        .min(RING_POINTS_BUDGET / total)
        .max(min.div_ceil(total))
        .max(1);
    let mut points: Vec<(u64, u32)> = Vec::with_capacity((total * per_unit) as usize);
    let mut name = String::new();
    for (i, ((addr, _), w)) in key.iter().zip(&weights).enumerate() {
        name.clear();
        let _ = write!(name, "{addr}_");
        let prefix = name.len();
        for n in 0..w * per_unit {
            name.truncate(prefix);
            let _ = write!(name, "{n}");
            points.push((xxh64(name.as_bytes(), 0), i as u32));
        }
    }
    // Ties (two points with one hash) go to the smaller address, so the
    // ring does not depend on the list's order.
    points.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then(key[a.1 as usize].0.cmp(&key[b.1 as usize].0))
    });
    let (points, owners) = points.into_iter().unzip();
    Kind::Ring { points, owners }
}

/// Maglev (Eisenbud et al., NSDI 2016): each endpoint has a permutation of
/// the table's slots (offset and skip from two hashes of its address; a
/// prime size makes every skip a full cycle) and endpoints take turns
/// claiming their next free preferred slot. Weighted: per round, an
/// endpoint takes `weight / max weight` of a turn, so slots end up shared
/// in proportion to weight. Endpoints take turns in address order, so the
/// table does not depend on the list's order.
fn maglev(key: &[(SocketAddr, u32)], table_size: u64) -> Kind {
    let size = table_size.max(1);
    let mut weights = reduced_weights(key);
    let mut max_weight = weights.iter().copied().max().unwrap_or(1);
    if max_weight > MAX_MAGLEV_WEIGHT {
        // Bound the rounds an endpoint may wait for its turn.
        for w in &mut weights {
            *w = (*w * MAX_MAGLEV_WEIGHT / max_weight).max(1);
        }
        max_weight = MAX_MAGLEV_WEIGHT;
    }
    let mut order: Vec<usize> = (0..key.len()).collect();
    order.sort_by_key(|i| key[*i].0);
    let perms: Vec<(u64, u64)> = key
        .iter()
        .map(|(addr, _)| {
            let name = addr.to_string();
            let offset = xxh64(name.as_bytes(), 0) % size;
            let skip = if size > 1 {
                xxh64(name.as_bytes(), 1) % (size - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; key.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    let mut round = 0u64;
    // The check on `next` only stops a size that is not prime (compile
    // refuses those), where permutations may not reach every slot.
    while filled < size && next.iter().any(|n| *n < size) {
        round += 1;
        for &i in &order {
            // Turns earned by this round minus those earned before it.
            if round * weights[i] / max_weight == (round - 1) * weights[i] / max_weight {
                continue;
            }
            let (offset, skip) = perms[i];
            while next[i] < size {
                let slot = ((offset + next[i] * skip) % size) as usize;
                next[i] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break;
            }
        }
    }
    for (slot, owner) in table.iter_mut().enumerate() {
        if *owner == u32::MAX {
            *owner = order
                .get(slot % order.len().max(1))
                .map_or(0, |o| *o as u32);
        }
    }
    Kind::Maglev { table }
}
