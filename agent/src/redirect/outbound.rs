//! Outbound capture: which pods' `connect()`s are captured, and the
//! original destination of a captured connection.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::{AtomicBool, Ordering},
};

use aya::maps::{HashMap, MapData, MapError};
use weft_ebpf_common::{
    FAMILY_INET, MAP_ENROLLED, OrigDst, PodRedirect, PortKey, REDIRECT_OUTBOUND, SYN_SHIFT,
};

use super::{RedirectError, Redirector};
use crate::sys;

impl Redirector {
    /// Starts capturing outbound connections of the pod whose network
    /// namespace has this cookie.
    pub fn enrol(&self, netns_cookie: u64) -> Result<(), RedirectError> {
        let value = PodRedirect {
            flags: REDIRECT_OUTBOUND,
            _pad: 0,
        };
        self.enrolled
            .lock()
            .expect("map lock")
            .insert(netns_cookie, value, 0)
            .map_err(|source| RedirectError::Map {
                map: MAP_ENROLLED,
                source: Box::new(source),
            })
    }

    /// Stops capturing for this namespace. Not an error if it wasn't.
    pub fn unenrol(&self, netns_cookie: u64) -> Result<(), RedirectError> {
        match self
            .enrolled
            .lock()
            .expect("map lock")
            .remove(&netns_cookie)
        {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(RedirectError::Map {
                map: MAP_ENROLLED,
                source: Box::new(source),
            }),
        }
    }

    /// Removes enrolments of namespaces not in `live` (pods that went away
    /// while no agent was running).
    pub fn retain_enrolled(
        &self,
        live: &std::collections::HashSet<u64>,
    ) -> Result<usize, RedirectError> {
        let mut map = self.enrolled.lock().expect("map lock");
        let stale: Vec<u64> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|cookie| !live.contains(cookie))
            .collect();
        for cookie in &stale {
            let _ = map.remove(cookie);
        }
        Ok(stale.len())
    }

    /// What the programs recorded of a captured connection, found from the
    /// proxy's side: the pod's netns and the client's source port. The
    /// records are consumed. `None` when there is no destination. With
    /// `accepted_ns` (when the accept returned, `0` without the agent's
    /// `--mesh-waits`, which also has the programs stamp), the SYN's time
    /// too, read against it.
    pub fn take_capture(
        &self,
        netns_cookie: u64,
        source_port: u16,
        accepted_ns: u64,
    ) -> Option<Capture> {
        let key = PortKey::new(netns_cookie, source_port);
        let dst = take(&self.dst_by_port, &key)?;
        Some(Capture {
            original_dst: orig_dst_addr(&dst),
            syn_sent_ns: (accepted_ns != 0)
                .then(|| syn_sent_ns(dst.syn_sent, accepted_ns))
                .flatten(),
        })
    }
}

/// Reads and removes `key`'s entry; a failed call is as if there were none
/// (and the first failure is logged: every captured connection would then
/// be reset for want of a destination).
fn take<V: aya::Pod>(map: &HashMap<MapData, PortKey, V>, key: &PortKey) -> Option<V> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    sys::bpf::lookup_and_delete(map, key).unwrap_or_else(|err| {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "cannot take a capture record (BPF_MAP_LOOKUP_AND_DELETE_ELEM needs Linux 5.14+); captured connections find no destination");
        }
        None
    })
}

/// The monotonic time in ns, to 1.024 µs, of a SYN stamped `stamp`
/// ([`OrigDst::syn_sent`]: the low 32 bits of the clock in units of
/// `1 << SYN_SHIFT` ns), seen at `now_ns`; `None` if not stamped.
fn syn_sent_ns(stamp: u32, now_ns: u64) -> Option<u64> {
    if stamp == 0 {
        return None;
    }
    let now = now_ns >> SYN_SHIFT;
    let ago = u64::from((now as u32).wrapping_sub(stamp));
    now.checked_sub(ago).map(|units| units << SYN_SHIFT)
}

/// A captured connection, as the programs recorded it.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    /// What the app dialled.
    pub original_dst: SocketAddr,
    /// When its SYN left the app ([`crate::sys::monotonic_ns`]'s clock, to
    /// 1.024 µs); `None` if not recorded (timestamps off, or a record an
    /// older agent's programs wrote).
    pub syn_sent_ns: Option<u64>,
}

fn orig_dst_addr(dst: &OrigDst) -> SocketAddr {
    let ip = if dst.family == FAMILY_INET {
        IpAddr::V4(Ipv4Addr::new(
            dst.addr[0],
            dst.addr[1],
            dst.addr[2],
            dst.addr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(dst.addr))
    };
    SocketAddr::new(ip, dst.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syn_stamp_gives_its_time_back_across_the_wrap() {
        let unit = 1u64 << SYN_SHIFT;
        assert_eq!(syn_sent_ns(0, 5_000_000), None, "not stamped");
        // 3 units ago, the clock's low bits as the program keeps them.
        let now = 1_000_000 * unit + 17;
        let syn = now - 3 * unit;
        let stamp = (syn >> SYN_SHIFT) as u32;
        assert_eq!(
            syn_sent_ns(stamp, now),
            Some((syn >> SYN_SHIFT) << SYN_SHIFT)
        );
        // The low 32 bits wrapped between the SYN and now.
        let now = (1u64 << (32 + SYN_SHIFT)) + 2 * unit;
        let syn = now - 5 * unit;
        let stamp = (syn >> SYN_SHIFT) as u32;
        assert_eq!(stamp, u32::MAX - 2);
        assert_eq!(syn_sent_ns(stamp, now), Some(syn));
        // A wait is never negative: a stamp "from the future" (a stale
        // record) reads as about 73 minutes ago, not after now.
        assert!(syn_sent_ns(stamp.wrapping_add(10), now).is_some_and(|t| t <= now));
    }
}
