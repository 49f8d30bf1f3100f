//! Inbound steering: plaintext connections to an enrolled pod go to the
//! proxy's 15006 listener (sk_lookup), except the proxy's own deliveries
//! and the node's own traffic.

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
};

use aya::programs::{SkLookup, links::FdLink};
use weft_ebpf_common::{
    DeliveryKey, MAP_DELIVERY, MAP_HOST_SOURCES, MAP_INBOUND_LISTENERS, MAP_INBOUND_PODS,
};

use super::{
    RedirectError, Redirector,
    loader::{SK_LOOKUP_PROGRAM, program, replace_pinned_link_at},
};

/// An IPv4 address as the programs read it: network-order bytes in a `u32`.
pub fn ipv4_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn pin_name(netns_cookie: u64) -> String {
    format!("inbound_{netns_cookie}")
}

impl Redirector {
    /// Steers plaintext connections to `pod_ip` inside the pod's namespace
    /// to `listener` (the pod's 15006): fills the maps, then attaches the
    /// sk_lookup program to the namespace (pinned as
    /// `links/inbound_<netns cookie>`).
    pub fn steer_inbound(
        &self,
        netns: &impl AsFd,
        netns_cookie: u64,
        pod_ip: Ipv4Addr,
        listener: &impl AsRawFd,
    ) -> Result<(), RedirectError> {
        let key = ipv4_key(pod_ip);
        self.inbound_listeners
            .lock()
            .expect("map lock")
            .insert(key, listener.as_raw_fd(), 0)
            .map_err(|source| RedirectError::Map {
                map: MAP_INBOUND_LISTENERS,
                source: Box::new(source),
            })?;
        self.inbound_pods
            .lock()
            .expect("map lock")
            .insert(key, 1, 0)
            .map_err(|source| RedirectError::Map {
                map: MAP_INBOUND_PODS,
                source: Box::new(source),
            })?;
        let name = SK_LOOKUP_PROGRAM;
        let mut ebpf = self.ebpf.lock().expect("ebpf lock");
        let program: &mut SkLookup = program(&mut ebpf, name)?;
        let prog_err = |source| RedirectError::Program {
            name,
            source: Box::new(source),
        };
        let id = program.attach(netns).map_err(prog_err)?;
        let link = program.take_link(id).map_err(prog_err)?;
        replace_pinned_link_at(
            name,
            FdLink::from(link),
            &self.links_dir,
            &pin_name(netns_cookie),
        )
    }

    /// Stops steering for a pod: detaches its sk_lookup link (by removing
    /// the pin) and clears its map entries.
    pub fn stop_inbound(&self, netns_cookie: u64, pod_ip: Ipv4Addr) {
        let key = ipv4_key(pod_ip);
        let _ = self.inbound_pods.lock().expect("map lock").remove(&key);
        let _ = self
            .inbound_listeners
            .lock()
            .expect("map lock")
            .remove(&key);
        let _ = std::fs::remove_file(self.links_dir.join(pin_name(netns_cookie)));
    }

    /// Removes inbound pins and entries of pods that are gone: only the
    /// namespaces in `live_cookies` and the IPs in `live_ips` stay.
    pub fn retain_inbound(&self, live_cookies: &HashSet<u64>, live_ips: &[Ipv4Addr]) {
        if let Ok(entries) = std::fs::read_dir(&self.links_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(cookie) = name
                    .strip_prefix("inbound_")
                    .and_then(|c| c.parse::<u64>().ok())
                    && !live_cookies.contains(&cookie)
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let live: Vec<u32> = live_ips.iter().map(|ip| ipv4_key(*ip)).collect();
        let mut pods = self.inbound_pods.lock().expect("map lock");
        let stale: Vec<u32> = pods
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !live.contains(key))
            .collect();
        for key in stale {
            let _ = pods.remove(&key);
        }
    }

    /// Lets a delivery connection (client address → app, inside the pod)
    /// reach the app instead of being steered back to the proxy. Call after
    /// bind and before connect; undo with [`Self::unregister_delivery`].
    pub fn register_delivery(&self, key: DeliveryKey) -> Result<(), RedirectError> {
        self.delivery
            .lock()
            .expect("map lock")
            .insert(key, 1, 0)
            .map_err(|source| RedirectError::Map {
                map: MAP_DELIVERY,
                source: Box::new(source),
            })
    }

    pub fn unregister_delivery(&self, key: &DeliveryKey) {
        let _ = self.delivery.lock().expect("map lock").remove(key);
    }

    /// The node's own addresses, whose plaintext reaches apps directly
    /// (kubelet probes). Replaces the previous set.
    pub fn set_host_sources(&self, ips: &[Ipv4Addr]) -> Result<(), RedirectError> {
        let mut map = self.host_sources.lock().expect("map lock");
        let old: Vec<u32> = map.keys().filter_map(Result::ok).collect();
        for key in old {
            let _ = map.remove(&key);
        }
        for ip in ips {
            map.insert(ipv4_key(*ip), 1, 0)
                .map_err(|source| RedirectError::Map {
                    map: MAP_HOST_SOURCES,
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }
}
