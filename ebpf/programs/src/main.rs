//! weft's eBPF programs.
//!
//! Outbound capture, attached to the node's pod cgroup (every pod's cgroup
//! is below it):
//!
//! * `weft_connect4` / `weft_connect6` (`cgroup/connect4`, `cgroup/connect6`):
//!   a TCP `connect()` from an enrolled pod's network namespace is rewritten
//!   to the proxy's outbound listener on the pod's own loopback
//!   (`127.0.0.1:15001`), and the original destination is recorded by socket
//!   cookie.
//! * `weft_sockops` (`sockops`): when that connection sends its SYN, the
//!   time is recorded by (netns cookie, source port); when it is
//!   established, the destination record is re-keyed the same way, which is
//!   what the proxy sees when it accepts.
//!
//! Inbound steering, attached to each enrolled pod's network namespace:
//!
//! * `weft_sk_lookup` (`sk_lookup`): a new plaintext TCP connection to an
//!   enrolled pod's IP, on any port but 15008, is handed to the proxy's
//!   inbound listener (15006) with `bpf_sk_assign`; the accepted socket
//!   keeps the original destination as its local address. Not steered: the
//!   proxy's own delivery connections (listed in `WEFT_DELIVERY`) and
//!   connections from the node's own addresses (kubelet probes). With the
//!   listener gone (agent restarting) the connection is dropped.
//!
//! What is never captured: sockets outside enrolled netns, the proxy's own
//! sockets (they carry `OUTBOUND_MARK` or `DELIVERY_MARK`), non-TCP sockets,
//! and loopback destinations (which also makes a second attached copy of
//! these programs, as during an agent upgrade, a no-op).
//!
//! Verdicts: `1` lets the `connect()` proceed (with the rewritten address if
//! any); `0` fails it with `EPERM`, which is what an enrolled pod gets if its
//! connection cannot be captured (fail closed).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        EbpfContext,
        bindings::{
            BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock_addr,
            sk_action,
        },
        helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns},
        macros::{cgroup_sock_addr, map, sk_lookup, sock_ops},
        maps::{HashMap, LruHashMap, SockHash},
        programs::{SkLookupContext, SockAddrContext, SockOpsContext},
    };
    use aya_log_ebpf::debug;
    use weft_ebpf_common::{
        DELIVERY_MARK, DeliveryKey, FAMILY_INET, FAMILY_INET6, HBONE_PORT, OUTBOUND_MARK,
        OUTBOUND_PORT, OrigDst, PodRedirect, PortKey, REDIRECT_OUTBOUND, SYN_SHIFT,
    };

    const ALLOW: i32 = 1;
    const DENY: i32 = 0;
    const IPPROTO_TCP: u32 = 6;

    /// Network-namespace cookie of each enrolled pod. Written by the agent.
    #[map]
    static WEFT_ENROLLED: HashMap<u64, PodRedirect> = HashMap::pinned(16_384, 0);

    /// Socket cookie → original destination, between `connect()` and
    /// established. LRU so that connections that never establish age out.
    #[map]
    static WEFT_DST_COOKIE: LruHashMap<u64, OrigDst> = LruHashMap::pinned(65_536, 0);

    /// (netns cookie, source port) → original destination, between
    /// established and the proxy's `accept()`.
    #[map]
    static WEFT_DST_PORT: LruHashMap<PortKey, OrigDst> = LruHashMap::pinned(65_536, 0);

    /// `0`: no capture timestamps in `OrigDst::syn_sent` (the agent's
    /// `--mesh-waits=false`). A
    /// global the agent sets at load; the verifier drops the dead branch.
    #[unsafe(no_mangle)]
    static WEFT_CAPTURE_TIMES: u8 = 1;

    /// Pod IPs enrolled for inbound steering.
    #[map]
    static WEFT_IN_PODS: HashMap<u32, u8> = HashMap::pinned(16_384, 0);

    /// Pod IP → the proxy's inbound plaintext listener in that pod. Not
    /// pinned: the sockets belong to the running agent.
    #[map]
    static WEFT_INBOUND: SockHash<u32> = SockHash::with_max_entries(16_384, 0);

    /// The proxy's own delivery connections, registered before `connect()`.
    #[map]
    static WEFT_DELIVERY: LruHashMap<DeliveryKey, u8> = LruHashMap::pinned(65_536, 0);

    /// The node's own addresses.
    #[map]
    static WEFT_HOST_SRC: HashMap<u32, u8> = HashMap::pinned(64, 0);

    const AF_INET: u32 = 2;

    #[sk_lookup]
    pub fn weft_sk_lookup(ctx: SkLookupContext) -> u32 {
        match try_sk_lookup(&ctx) {
            Ok(verdict) => verdict,
            Err(_) => sk_action::SK_DROP,
        }
    }

    fn try_sk_lookup(ctx: &SkLookupContext) -> Result<u32, i32> {
        let lookup = unsafe { &*ctx.lookup };
        if lookup.family != AF_INET || lookup.protocol != IPPROTO_TCP {
            return Ok(sk_action::SK_PASS);
        }
        let local_ip = lookup.local_ip4;
        let local_port = lookup.local_port as u16;
        if local_port == HBONE_PORT || unsafe { WEFT_IN_PODS.get(&local_ip) }.is_none() {
            return Ok(sk_action::SK_PASS);
        }
        let remote_ip = lookup.remote_ip4;
        if unsafe { WEFT_HOST_SRC.get(&remote_ip) }.is_some() {
            return Ok(sk_action::SK_PASS);
        }
        let key = DeliveryKey {
            remote_ip,
            local_ip,
            remote_port: u16::from_be(lookup.remote_port),
            local_port,
        };
        if unsafe { WEFT_DELIVERY.get(&key) }.is_some() {
            return Ok(sk_action::SK_PASS);
        }
        // Steer to the proxy; no listener (agent restarting): refuse.
        match WEFT_INBOUND.redirect_sk_lookup(ctx, local_ip, 0) {
            Ok(()) => Ok(sk_action::SK_PASS),
            Err(_) => Ok(sk_action::SK_DROP),
        }
    }

    #[cgroup_sock_addr(connect4)]
    pub fn weft_connect4(ctx: SockAddrContext) -> i32 {
        match try_connect4(&ctx) {
            Ok(verdict) => verdict,
            Err(_) => DENY,
        }
    }

    #[cgroup_sock_addr(connect6)]
    pub fn weft_connect6(ctx: SockAddrContext) -> i32 {
        match try_connect6(&ctx) {
            Ok(verdict) => verdict,
            Err(_) => DENY,
        }
    }

    #[sock_ops]
    pub fn weft_sockops(ctx: SockOpsContext) -> u32 {
        match ctx.op() {
            // Nothing useful to do on failure: the proxy finds no record and
            // closes the connection, which the app sees as a reset.
            BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
                let _ = try_established(&ctx);
            }
            // A lost timestamp only leaves the connection out of the
            // capture histogram.
            BPF_SOCK_OPS_TCP_CONNECT_CB => {
                let _ = try_syn_sent(&ctx);
            }
            _ => {}
        }
        // 1: success. Anything else makes the kernel ignore the reply of
        // every `sockops` program on the socket's cgroup path for this
        // callback (its timeout, window and ECN answers).
        1
    }

    /// Whether this `connect()` is one weft captures: TCP, from an enrolled
    /// netns, not from one of the proxy's own sockets.
    fn should_capture(ctx: &SockAddrContext, sa: &bpf_sock_addr) -> bool {
        if sa.protocol != IPPROTO_TCP {
            return false;
        }
        let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
        match unsafe { WEFT_ENROLLED.get(&netns) } {
            Some(pod) if pod.flags & REDIRECT_OUTBOUND != 0 => {}
            _ => return false,
        }
        let mark = unsafe { (*sa.__bindgen_anon_1.sk).mark };
        mark != OUTBOUND_MARK && mark != DELIVERY_MARK
    }

    fn record(ctx: &SockAddrContext, dst: &OrigDst) -> Result<(), i32> {
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        WEFT_DST_COOKIE.insert(&cookie, dst, 0)
    }

    /// `user_port` holds the port in network order in its low 16 bits.
    fn user_port(sa: &bpf_sock_addr) -> u16 {
        u16::from_be(sa.user_port as u16)
    }

    fn try_connect4(ctx: &SockAddrContext) -> Result<i32, i32> {
        let sa = unsafe { &mut *ctx.sock_addr };
        if !should_capture(ctx, sa) {
            return Ok(ALLOW);
        }
        let ip = sa.user_ip4.to_ne_bytes();
        if ip[0] == 127 {
            return Ok(ALLOW);
        }
        let port = user_port(sa);
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&ip);
        record(
            ctx,
            &OrigDst {
                addr,
                port,
                family: FAMILY_INET,
                syn_sent: 0,
            },
        )?;
        sa.user_ip4 = u32::from_ne_bytes([127, 0, 0, 1]);
        sa.user_port = u32::from(OUTBOUND_PORT.to_be());
        debug!(
            ctx,
            "captured connect4 to {:i}:{}",
            u32::from_be_bytes(ip),
            port
        );
        Ok(ALLOW)
    }

    fn try_connect6(ctx: &SockAddrContext) -> Result<i32, i32> {
        let sa = unsafe { &mut *ctx.sock_addr };
        if !should_capture(ctx, sa) {
            return Ok(ALLOW);
        }
        let ip6 = sa.user_ip6;
        let v4_mapped =
            ip6[0] == 0 && ip6[1] == 0 && ip6[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        let loopback6 =
            ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && ip6[3] == u32::from_ne_bytes([0, 0, 0, 1]);
        if loopback6 || (v4_mapped && ip6[3].to_ne_bytes()[0] == 127) {
            return Ok(ALLOW);
        }
        let port = user_port(sa);
        let mut dst = OrigDst {
            addr: [0u8; 16],
            port,
            family: FAMILY_INET6,
            syn_sent: 0,
        };
        if v4_mapped {
            dst.family = FAMILY_INET;
            dst.addr[..4].copy_from_slice(&ip6[3].to_ne_bytes());
        } else {
            for (i, word) in ip6.iter().enumerate() {
                dst.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
        }
        record(ctx, &dst)?;
        if v4_mapped {
            sa.user_ip6[3] = u32::from_ne_bytes([127, 0, 0, 1]);
        } else {
            sa.user_ip6[0] = 0;
            sa.user_ip6[1] = 0;
            sa.user_ip6[2] = 0;
            sa.user_ip6[3] = u32::from_ne_bytes([0, 0, 0, 1]);
        }
        sa.user_port = u32::from(OUTBOUND_PORT.to_be());
        debug!(ctx, "captured connect6, port {}", port);
        Ok(ALLOW)
    }

    /// A captured connection sends its SYN: stamps the time in its
    /// record, in place, for the proxy to see how long the connection
    /// waited for its `accept()` (no map write of its own: the record
    /// moves to `WEFT_DST_PORT` with it at established).
    fn try_syn_sent(ctx: &SockOpsContext) -> Result<(), i32> {
        if unsafe { core::ptr::read_volatile(&WEFT_CAPTURE_TIMES) } == 0 {
            return Ok(());
        }
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let Some(dst) = WEFT_DST_COOKIE.get_ptr_mut(&cookie) else {
            return Ok(());
        };
        let now = unsafe { bpf_ktime_get_ns() };
        // 0 means "not stamped": a stamp that wraps to 0 becomes 1.
        let stamp = ((now >> SYN_SHIFT) as u32).max(1);
        unsafe { (*dst).syn_sent = stamp };
        Ok(())
    }

    fn try_established(ctx: &SockOpsContext) -> Result<(), i32> {
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let dst = match unsafe { WEFT_DST_COOKIE.get(&cookie) } {
            Some(dst) => *dst,
            None => return Ok(()),
        };
        let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
        // `local_port` is in host order.
        let key = PortKey::new(netns, ctx.local_port() as u16);
        WEFT_DST_PORT.insert(&key, &dst, 0)?;
        WEFT_DST_COOKIE.remove(&cookie)?;
        Ok(())
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

/// Built for the host (e.g. by `cargo clippy --workspace`), the crate is
/// empty: the programs only exist for the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
