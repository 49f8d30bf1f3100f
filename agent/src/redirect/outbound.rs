//! Outbound capture: which pods' `connect()`s are captured, and the
//! original destination of a captured connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::maps::MapError;
use weft_ebpf_common::{
    FAMILY_INET, MAP_ENROLLED, OrigDst, PodRedirect, PortKey, REDIRECT_OUTBOUND,
};

use super::{RedirectError, Redirector};

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

    /// The destination a captured connection asked for, found from the
    /// proxy's side: the pod's netns and the client's source port. The
    /// record is consumed.
    pub fn take_original_dst(&self, netns_cookie: u64, source_port: u16) -> Option<SocketAddr> {
        let key = PortKey::new(netns_cookie, source_port);
        let mut map = self.dst_by_port.lock().expect("map lock");
        let dst = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(orig_dst_addr(&dst))
    }
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
