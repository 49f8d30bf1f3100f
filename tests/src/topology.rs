//! The cluster's addresses, and building its fabric: a bridge in a
//! "fabric" namespace with every node and the control plane attached.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::cleanup::RunId;
use crate::netns::Netns;

/// The bridge in the fabric namespace.
pub const BRIDGE: &str = "br0";

/// A cluster's address plan. Clusters live in disjoint namespaces, so
/// equal plans could not collide; distinct plans only make captures and
/// logs of parallel runs easier to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// Second octet of the fabric subnet `10.<fabric>.0.0/24`.
    pub fabric: u8,
    /// Second octet of the pod range: node n gets `10.<pods>.<n>.0/24`.
    pub pods: u8,
    /// Second octet of the service range `10.<services>.0.0/16`.
    pub services: u8,
}

// === impl Addressing ===

impl Addressing {
    /// A plan derived from the run id (second octets 20..=229).
    pub fn for_run(run: &RunId) -> Addressing {
        let seq: u32 = run
            .as_str()
            .rsplit('n')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let slot = (run.pid().wrapping_add(seq.wrapping_mul(7)) % 70) as u8;
        let fabric = 20 + 3 * slot;
        Addressing {
            fabric,
            pods: fabric + 1,
            services: fabric + 2,
        }
    }

    /// Node `n`'s IP on the fabric (n starts at 1).
    pub fn node_ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.fabric, 0, n)
    }

    /// The control plane's IP on the fabric.
    pub fn control_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.fabric, 0, 200)
    }

    /// Network address of node `n`'s pod /24.
    pub fn pod_net(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.pods, n, 0)
    }

    /// The service CIDR.
    pub fn service_cidr(&self) -> String {
        format!("10.{}.0.0/16", self.services)
    }

    /// Service VIP number `i` (0-based), from `10.<services>.0.10` on.
    pub fn service_ip(&self, i: u32) -> Option<Ipv4Addr> {
        let host = 10 + i;
        (host < 65_535).then(|| Ipv4Addr::new(10, self.services, (host >> 8) as u8, host as u8))
    }
}

/// Creates the fabric namespace and its bridge.
pub fn create_fabric(run: &RunId) -> Result<Netns> {
    let fabric = Netns::create(&run.netns("fabric"))?;
    fabric.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    fabric.ip(&["link", "set", BRIDGE, "up"])?;
    Ok(fabric)
}

/// Creates namespace `name` with `eth0` = `ip/24` on the bridge; the
/// fabric side of the veth is called `port`.
pub fn attach_to_fabric(fabric: &Netns, port: &str, name: &str, ip: Ipv4Addr) -> Result<Netns> {
    let ns = Netns::create(name)?;
    fabric.ip(&[
        "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name,
    ])?;
    fabric.ip(&["link", "set", port, "master", BRIDGE, "up"])?;
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(ns)
}

/// Makes a node namespace route: forwarding on, no reverse-path filter
/// (transparent delivery uses addresses that are not the node's).
pub fn make_router(ns: &Netns) -> Result<()> {
    ns.set_sysctl("ipv4/ip_forward", "1")?;
    ns.set_sysctl("ipv4/conf/all/rp_filter", "0")?;
    ns.set_sysctl("ipv4/conf/default/rp_filter", "0")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_stay_in_range_and_apart() {
        for pid in [1u32, 69, 70, 4_194_303] {
            for seq in 0..5 {
                let run = RunId::from_prefix(&format!("w{pid}n{seq}")).unwrap();
                let a = Addressing::for_run(&run);
                assert!((20..=227).contains(&a.fabric), "{a:?}");
                assert_eq!(a.services, a.fabric + 2);
            }
        }
        let a = Addressing::for_run(&RunId::from_prefix("w100n0").unwrap());
        let b = Addressing::for_run(&RunId::from_prefix("w100n1").unwrap());
        assert_ne!(a, b);
        assert_eq!(a.service_ip(0).unwrap().octets()[2..], [0, 10]);
        assert_eq!(a.service_ip(300).unwrap().octets()[2..], [1, 54]);
    }
}
