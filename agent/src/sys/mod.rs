//! The seam to the kernel: network namespaces, socket options, netlink,
//! mounts, the allocator's heap. Everything above this module is ordinary
//! async Rust; everything that needs root or a particular kernel feature
//! is here, and its errors say which call failed and why.

pub mod bpf;
pub mod heap;
pub mod mounts;
pub mod netlink;
pub mod netns;
pub mod sockopt;
pub mod splice;

pub use netns::Netns;

/// The IPv4 addresses of the calling thread's network namespace, loopback
/// excluded.
pub fn local_ipv4_addresses() -> std::io::Result<Vec<std::net::Ipv4Addr>> {
    let mut ips: Vec<std::net::Ipv4Addr> = nix::ifaddrs::getifaddrs()
        .map_err(std::io::Error::from)?
        .filter_map(|ifaddr| ifaddr.address)
        .filter_map(|addr| addr.as_sockaddr_in().map(|sin| sin.ip()))
        .filter(|ip| !ip.is_loopback())
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the programs'
/// `bpf_ktime_get_ns`, so the two can be subtracted.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
