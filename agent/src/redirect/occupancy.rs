//! How full the maps are, for the scrape: entries and capacity of each map
//! the agent loads, counted in the background.
//!
//! The data path holds the [`Redirector`](super::Redirector)'s map locks
//! (e.g. `take_original_dst` on every accepted connection), so counting
//! never touches them: at load, each map's file descriptor is duplicated
//! into a handle of its own (the same kernel map), and a thread of its own
//! walks the keys on those handles every [`COUNT_INTERVAL`]. A scrape reads
//! the last counts from a cache and never waits for a walk (the LRU maps
//! hold up to 65,536 entries: a walk is one syscall per key).

use std::{
    collections::HashSet,
    hash::Hash,
    os::fd::AsFd,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use aya::{
    Ebpf, Pod,
    maps::{HashMap, Map, MapData, MapError, SockHash},
    sys::SyscallError,
};
use weft_ebpf_common::{
    DeliveryKey, MAP_DELIVERY, MAP_DST_BY_COOKIE, MAP_DST_BY_PORT, MAP_ENROLLED, MAP_HOST_SOURCES,
    MAP_INBOUND_LISTENERS, MAP_INBOUND_PODS, OrigDst, PodRedirect, PortKey,
};

use super::RedirectError;

/// How often the maps are counted.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(10);

/// One map's occupancy at the last count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOccupancy {
    /// The map's name, as declared in the programs and pinned.
    pub map: &'static str,
    /// Keys in the map.
    pub entries: u64,
    /// The map's `max_entries`, as the kernel reports it.
    pub capacity: u64,
}

/// A second handle on one map, typed to walk its keys.
enum Handle {
    Enrolled(HashMap<MapData, u64, PodRedirect>),
    DstByCookie(HashMap<MapData, u64, OrigDst>),
    DstByPort(HashMap<MapData, PortKey, OrigDst>),
    Ipv4(HashMap<MapData, u32, u8>),
    Delivery(HashMap<MapData, DeliveryKey, u8>),
    Sockets(SockHash<MapData, u32>),
}

struct Counted {
    name: &'static str,
    capacity: u64,
    handle: Handle,
}

impl Counted {
    fn count(&self) -> Result<u64, MapError> {
        let capacity = self.capacity;
        match &self.handle {
            Handle::Enrolled(map) => distinct_keys(map.keys(), capacity),
            Handle::DstByCookie(map) => distinct_keys(map.keys(), capacity),
            Handle::DstByPort(map) => distinct_keys(map.keys(), capacity),
            Handle::Ipv4(map) => distinct_keys(map.keys(), capacity),
            Handle::Delivery(map) => distinct_keys(map.keys(), capacity),
            Handle::Sockets(map) => distinct_keys(map.keys(), capacity),
        }
    }
}

/// Counts the keys of a walk. When the key the walk stands on is deleted
/// meanwhile (the data path deletes all the time), the kernel restarts the
/// walk from the first key: keys are counted once however often they are
/// seen, and the walk is bounded, so a map that changes fast still yields
/// a count, never above `capacity`.
fn distinct_keys<K: Pod + Eq + Hash>(
    keys: impl Iterator<Item = Result<K, MapError>>,
    capacity: u64,
) -> Result<u64, MapError> {
    let bound =
        usize::try_from(capacity.saturating_mul(2).saturating_add(16)).unwrap_or(usize::MAX);
    let mut seen = HashSet::new();
    for key in keys.take(bound) {
        seen.insert(key?);
    }
    Ok((seen.len() as u64).min(capacity))
}

/// The counts, shared by the counting thread and the scrapes.
pub(super) type Cache = Arc<Mutex<Vec<MapOccupancy>>>;

/// Opens the second handles (before the loader takes the maps out of
/// `ebpf`) and reads each map's capacity from the kernel.
fn open(ebpf: &Ebpf) -> Result<Vec<Counted>, RedirectError> {
    let mut counted = Vec::new();
    for name in [
        MAP_ENROLLED,
        MAP_DST_BY_COOKIE,
        MAP_DST_BY_PORT,
        MAP_INBOUND_PODS,
        MAP_INBOUND_LISTENERS,
        MAP_DELIVERY,
        MAP_HOST_SOURCES,
    ] {
        let map_err = |source| RedirectError::Map {
            map: name,
            source: Box::new(source),
        };
        let data = match ebpf.map(name).ok_or(RedirectError::MissingMap(name))? {
            Map::HashMap(data) | Map::LruHashMap(data) | Map::SockHash(data) => data,
            _ => return Err(RedirectError::MissingMap(name)),
        };
        let capacity = u64::from(data.info().map_err(map_err)?.max_entries());
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
            map_err(MapError::SyscallError(SyscallError {
                call: "dup",
                io_error,
            }))
        })?;
        let map = Map::from_map_data(MapData::from_fd(fd).map_err(map_err)?).map_err(map_err)?;
        let handle = match name {
            MAP_ENROLLED => Handle::Enrolled(map.try_into().map_err(map_err)?),
            MAP_DST_BY_COOKIE => Handle::DstByCookie(map.try_into().map_err(map_err)?),
            MAP_DST_BY_PORT => Handle::DstByPort(map.try_into().map_err(map_err)?),
            MAP_DELIVERY => Handle::Delivery(map.try_into().map_err(map_err)?),
            MAP_INBOUND_LISTENERS => Handle::Sockets(map.try_into().map_err(map_err)?),
            _ => Handle::Ipv4(map.try_into().map_err(map_err)?),
        };
        counted.push(Counted {
            name,
            capacity,
            handle,
        });
    }
    Ok(counted)
}

fn count_all(maps: &[Counted], cache: &Mutex<Vec<MapOccupancy>>, failing: &mut HashSet<&str>) {
    let mut counts = Vec::with_capacity(maps.len());
    for map in maps {
        match map.count() {
            Ok(entries) => {
                if failing.remove(map.name) {
                    tracing::info!(map = map.name, "counting the map's entries works again");
                }
                counts.push(MapOccupancy {
                    map: map.name,
                    entries,
                    capacity: map.capacity,
                });
            }
            // Left out of the scrape until a count succeeds; logged once.
            Err(err) => {
                if failing.insert(map.name) {
                    tracing::warn!(map = map.name, error = %err, "cannot count the map's entries");
                }
            }
        }
    }
    *cache.lock().expect("occupancy cache") = counts;
}

/// Stops the counting thread when dropped (with the `Redirector`).
pub(super) struct Counter {
    _stop: mpsc::Sender<()>,
}

/// Opens the handles and starts the counting thread: a count at once, then
/// every [`COUNT_INTERVAL`], until the returned [`Counter`] is dropped.
pub(super) fn start(ebpf: &Ebpf) -> Result<(Counter, Cache), RedirectError> {
    let maps = open(ebpf)?;
    let cache = Cache::default();
    let (stop, stopped) = mpsc::channel::<()>();
    let shared = cache.clone();
    std::thread::Builder::new()
        .name("weft-map-count".into())
        .spawn(move || {
            let mut failing = HashSet::new();
            loop {
                count_all(&maps, &shared, &mut failing);
                match stopped.recv_timeout(COUNT_INTERVAL) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })
        .map_err(|source| RedirectError::Thread { source })?;
    Ok((Counter { _stop: stop }, cache))
}

impl super::Redirector {
    /// Entries and capacity of each map, as last counted (every
    /// [`COUNT_INTERVAL`], in the background): returns at once, takes no
    /// lock of the data path. A map whose last count failed is left out.
    pub fn map_occupancy(&self) -> Vec<MapOccupancy> {
        self.occupancy.lock().expect("occupancy cache").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(keys: &[u32]) -> impl Iterator<Item = Result<u32, MapError>> + '_ {
        keys.iter().copied().map(Ok)
    }

    #[test]
    fn keys_seen_again_after_a_restarted_walk_count_once() {
        // The kernel restarted the walk from the first key after 3.
        assert_eq!(distinct_keys(walk(&[1, 2, 3, 1, 2, 3, 4]), 16).unwrap(), 4);
        assert_eq!(distinct_keys(walk(&[]), 16).unwrap(), 0);
    }

    #[test]
    fn a_walk_that_keeps_restarting_ends_and_stays_within_capacity() {
        let endless = (0u32..).map(|i| Ok(i % 3));
        assert_eq!(distinct_keys(endless, 2).unwrap(), 2);
        let growing = (0u32..).map(Ok);
        assert_eq!(distinct_keys(growing, 4).unwrap(), 4);
    }

    #[test]
    fn a_failing_walk_is_an_error() {
        let failing = [Ok(1u32), Err(MapError::KeyNotFound)].into_iter();
        assert!(distinct_keys(failing, 4).is_err());
    }
}
